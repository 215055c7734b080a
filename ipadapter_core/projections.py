"""Image projections: CLIP-vision or InsightFace embeddings -> image tokens. Attribute names = checkpoint keys."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .pulid import IDEncoder


class LinearProjection(nn.Module):
    """image_embeds (B, C) -> (B, tokens, cross): the base SD1.5/SDXL adapters."""

    def __init__(self, clip_dim, cross_dim, tokens):
        super().__init__()
        self.tokens, self.cross_dim = tokens, cross_dim
        self.proj = nn.Linear(clip_dim, cross_dim * tokens)
        self.norm = nn.LayerNorm(cross_dim)

    def forward(self, embeds):
        return self.norm(self.proj(embeds).reshape(-1, self.tokens, self.cross_dim))


class MLPProjection(nn.Module):
    """hidden states (B, T, C) -> (B, T, cross): the full-face adapter, one token per encoder token."""

    def __init__(self, clip_dim, cross_dim):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(clip_dim, clip_dim), nn.GELU(), nn.Linear(clip_dim, cross_dim),
                                  nn.LayerNorm(cross_dim))

    def forward(self, hidden):
        return self.proj(hidden)


class PerceiverAttention(nn.Module):
    """Latents attend to [inputs, latents]; heads of 64."""

    def __init__(self, dim, heads, head_dim=64):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        return self.attend(self.norm1(x), self.norm2(latents))

    def attend(self, x, latents):
        """Attention of normed latents over [normed inputs, normed latents]."""
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        b = q.shape[0]
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, self.heads * q.shape[-1]))


def feed_forward(dim, mult):
    """LayerNorm -> Linear -> GELU -> Linear, keys .0 .1 .3 like the releases."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverStack(nn.Module):
    """proj_in -> depth x (attention, feed-forward) over given latents -> proj_out -> norm_out."""

    def __init__(self, in_dim, dim, out_dim, depth, heads, ff_mult):
        super().__init__()
        self.proj_in = nn.Linear(in_dim, dim)
        self.proj_out = nn.Linear(dim, out_dim)
        self.norm_out = nn.LayerNorm(out_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads), feed_forward(dim, ff_mult)]) for _ in range(depth))

    def run(self, latents, x):
        x = self.proj_in(x)
        for attention, ff in self.layers:
            latents = attention(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class Resampler(PerceiverStack):
    """hidden states (B, T, C) -> (B, queries, cross): plus, plus-face, Kolors and composition adapters."""

    def __init__(self, clip_dim, dim, cross_dim, depth, heads, ff_mult, queries):
        super().__init__(clip_dim, dim, cross_dim, depth, heads, ff_mult)
        self.latents = nn.Parameter(torch.zeros(1, queries, dim))

    def forward(self, hidden):
        return self.run(self.latents.expand(hidden.shape[0], -1, -1), hidden)


class IDResampler(Resampler):
    """ArcFace embedding (B, 512) -> (B, queries, cross): InstantID's resampler, over one input token."""

    def forward(self, id_embeds):
        return super().forward(id_embeds.unsqueeze(1) if id_embeds.ndim == 2 else id_embeds)


def timestep_embedding(timesteps, dim, max_period=10000.0):
    """Sinusoidal embedding (B,) -> (B, dim), cosines first (flip_sin_to_cos, no frequency shift), on t's device."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=timesteps.device, dtype=torch.float32) * (-math.log(max_period) / half))
    angles = timesteps.float()[:, None] * freqs[None]
    return torch.cat((torch.cos(angles), torch.sin(angles)), dim=-1)


class TimestepMLP(nn.Module):
    """time_embedding.linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeResampler(nn.Module):
    """SigLIP hidden states (B, T, C) and timesteps (B,) -> (B, queries, cross), and the timestep embedding.

    InstantX's SD3.5 resampler: a Perceiver whose latent norms are modulated by the timestep (layers.{i}.2 gives
    shift/scale for the attention and the feed-forward), with the timestep embedding also added to the inputs.
    """

    def __init__(self, clip_dim, dim, cross_dim, depth, heads, ff_mult, queries, timestep_dim):
        super().__init__()
        self.timestep_dim = timestep_dim
        self.latents = nn.Parameter(torch.zeros(1, queries, dim))
        self.proj_in = nn.Linear(clip_dim, dim)
        self.proj_out = nn.Linear(dim, cross_dim)
        self.norm_out = nn.LayerNorm(cross_dim)
        self.time_embedding = TimestepMLP(timestep_dim, dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, heads), feed_forward(dim, ff_mult),
                           nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim))]) for _ in range(depth))

    def forward(self, hidden, timesteps):
        t_emb = self.time_embedding(timestep_embedding(timesteps, self.timestep_dim).to(hidden.dtype))
        x = self.proj_in(hidden) + t_emb[:, None]
        latents = self.latents.expand(hidden.shape[0], -1, -1)
        for attention, ff, modulation in self.layers:
            shift_attn, scale_attn, shift_ff, scale_ff = modulation(t_emb)[:, None].chunk(4, dim=-1)
            normed = torch.addcmul(shift_attn, attention.norm2(latents), 1 + scale_attn)
            latents = attention.attend(attention.norm1(x), normed) + latents
            normed = torch.addcmul(shift_ff, ff[0](latents), 1 + scale_ff)
            latents = ff[3](ff[2](ff[1](normed))) + latents
        return self.norm_out(self.proj_out(latents)), t_emb


class FaceIDProjection(nn.Module):
    """InsightFace embedding (B, 512) -> (B, tokens, cross): FaceID and FaceID Portrait."""

    def __init__(self, id_dim, cross_dim, tokens):
        super().__init__()
        self.tokens, self.cross_dim = tokens, cross_dim
        self.proj = nn.Sequential(nn.Linear(id_dim, id_dim * 2), nn.GELU(), nn.Linear(id_dim * 2, cross_dim * tokens))
        self.norm = nn.LayerNorm(cross_dim)

    def forward(self, id_embeds):
        return self.norm(self.proj(id_embeds).reshape(-1, self.tokens, self.cross_dim))


class FaceIDPlusProjection(FaceIDProjection):
    """FaceID tokens refined by CLIP hidden states; shortcut adds the raw ID tokens back (Plus v2)."""

    def __init__(self, id_dim, cross_dim, tokens, clip_dim, depth, heads, ff_mult):
        super().__init__(id_dim, cross_dim, tokens)
        self.perceiver_resampler = PerceiverStack(clip_dim, cross_dim, cross_dim, depth, heads, ff_mult)

    def forward(self, id_embeds, clip_hidden, shortcut=False, scale=1.0):
        id_tokens = super().forward(id_embeds)
        out = self.perceiver_resampler.run(id_tokens, clip_hidden)
        return id_tokens + scale * out if shortcut else out


def through_context_projection(tokens, weight, bias, scale):
    """Kolors FaceID-Plus tokens (B, T, 4096) -> (B, T, 2048) through the UNet's encoder_hid_proj, scaled as a whole.

    IPAdapter_plus's weight_kolors multiplies that projection's weight and bias, i.e. scale * (W x + b).
    """
    return scale * F.linear(tokens, weight.to(tokens), bias.to(tokens))


def build_projection(spec):
    """The projection module for an AdapterSpec."""
    if spec.kind == "linear":
        return LinearProjection(spec.clip_dim, spec.cross_dim, spec.tokens)
    if spec.kind == "mlp":
        return MLPProjection(spec.clip_dim, spec.cross_dim)
    if spec.kind == "resampler":
        return Resampler(spec.clip_dim, spec.resampler_dim, spec.cross_dim, spec.resampler_depth,
                         spec.resampler_heads, spec.ff_mult, spec.tokens)
    if spec.kind == "faceid":
        return FaceIDProjection(spec.id_dim, spec.cross_dim, spec.tokens)
    if spec.kind == "pulid":
        h1, h2, m1, m2 = spec.hidden_widths
        return IDEncoder(spec.id_dim, (h1, h2), spec.cross_dim, spec.clip_dim, (m1, m2),
                         spec.tokens - spec.resampler_depth, spec.resampler_depth)
    if spec.kind == "instantid":
        return IDResampler(spec.id_dim, spec.resampler_dim, spec.cross_dim, spec.resampler_depth,
                           spec.resampler_heads, spec.ff_mult, spec.tokens)
    if spec.kind == "time_resampler":
        return TimeResampler(spec.clip_dim, spec.resampler_dim, spec.cross_dim, spec.resampler_depth,
                             spec.resampler_heads, spec.ff_mult, spec.tokens, spec.timestep_dim)
    if spec.kind == "pooled_mlp":  # InstantX Flux: FaceID's projection layout over a pooled image embedding
        return FaceIDProjection(spec.clip_dim, spec.cross_dim, spec.tokens)
    if spec.kind == "faceid_plus":  # Kolors: tokens of ChatGLM's width (token_dim), mapped by the model later
        return FaceIDPlusProjection(spec.id_dim, spec.token_dim or spec.cross_dim, spec.tokens, spec.clip_dim,
                                    spec.resampler_depth, spec.resampler_heads, spec.ff_mult)
    raise ValueError(f"no projection for kind {spec.kind!r}")
