"""PuLID: identity tokens from an ArcFace embedding and EVA-CLIP features, and how its term joins the text attention.

SDXL (ip-adapter_pulid_sdxl): `IDEncoder` (keys image_proj.body / mapping_i / mapping_patch_i) makes 5 tokens from
the joined ArcFace + EVA feature and one token per EVA hidden state; the 70 cross-attentions take them through
to_k_ip / to_v_ip like an IP-Adapter. Its methods change how the image term i joins the text attention output o,
per batch row, with one coefficient per channel c summed over the sequence (PuLID's processor):

    proj = (sum_n o[n, c] i[n, c] / sum_n o[n, c]^2) * o
    neutral:  o + w i            style (ortho):  o + w (i - proj)            fidelity (ortho_v2):  o + w (i + (a - 1) proj)

where a[n] is the attention mass the query puts on the first 5 identity tokens (unscaled logits, averaged over the
heads). Zero tokens appended to the identity tokens (16 for style, 8 for fidelity) act as attention sinks. A prompt
with `projection` set (attention.ImagePrompt) gets this term in the attn2 patch, against the text attention output
(other prompts' terms are not part of o), its mask applied after the projection.
"""
import torch
from torch import nn

PROJECTIONS = ("none", "ortho", "ortho_v2")
ID_TOKENS = 5  # tokens the ID embedding makes; ortho_v2 measures the attention on them


def mlp(widths):
    """Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear (keys .0 .1 .3 .4 .6)."""
    first, hidden, second, out = widths
    return nn.Sequential(nn.Linear(first, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(),
                         nn.Linear(hidden, second), nn.LayerNorm(second), nn.LeakyReLU(), nn.Linear(second, out))


class IDEncoder(nn.Module):
    """image_proj of PuLID SDXL: ArcFace + EVA feature (B, W) and EVA hidden states [(B, 1 + P, V)] * layers ->
    (B, tokens + layers, context). Sizes as read from the file (formats.projection_fields)."""

    def __init__(self, width, body_hidden, context_dim, vision_width, mapping_hidden, tokens=ID_TOKENS,
                 layers=ID_TOKENS):
        super().__init__()
        self.tokens, self.context_dim, self.layers = tokens, context_dim, layers
        self.body = mlp((width, *body_hidden, context_dim * tokens))
        for i in range(layers):
            setattr(self, f"mapping_{i}", mlp((vision_width, *mapping_hidden, context_dim)))
            setattr(self, f"mapping_patch_{i}", mlp((vision_width, *mapping_hidden, context_dim)))

    def forward(self, id_cond, vision_hidden):
        if len(vision_hidden) != self.layers:
            raise ValueError(f"{len(vision_hidden)} EVA hidden states for an encoder of {self.layers}")
        tokens = [self.body(id_cond).reshape(-1, self.tokens, self.context_dim)]
        for i, hidden in enumerate(vision_hidden):
            cls = getattr(self, f"mapping_{i}")(hidden[:, :1])
            patches = getattr(self, f"mapping_patch_{i}")(hidden[:, 1:]).mean(dim=1, keepdim=True)
            tokens.append(cls + patches)
        return torch.cat(tokens, dim=1)


def projection_coefficient(o, i):
    """(B, 1, C): sum over the sequence of o * i / o^2, per batch row and channel, in float32 (o, i: (B, N, C))."""
    o, i = o.float(), i.float()
    return (o * i).sum(dim=-2, keepdim=True) / (o * o).sum(dim=-2, keepdim=True)


def identity_mass(q_heads, k_heads, tokens=ID_TOKENS):
    """(B, N, 1): the softmax mass of unscaled logits q.k on the first `tokens` keys, averaged over the heads
    (q_heads (B, H, N, d), k_heads (B, H, T, d))."""
    probs = (q_heads.float() @ k_heads.float().transpose(-1, -2)).softmax(dim=-1)
    return probs[..., :tokens].sum(dim=-1).mean(dim=1).unsqueeze(-1)


def joined_term(o, i, projection, mass=None):
    """The image term (B, N, C) to add to the text attention output o for a weighted image output i."""
    if projection == "none":
        return i
    proj = projection_coefficient(o, i) * o.float()
    if projection == "ortho":
        return (i.float() - proj).to(i.dtype)
    return (i.float() + (mass - 1.0) * proj).to(i.dtype)


def identity_tokens(encoder, arcface, eva_feature, eva_hidden, noise=0.0, zero_tokens=0, generator=None):
    """(cond, uncond) identity tokens (1, T + zero_tokens, C) of R photos of one person: the encoder's tokens of each
    photo averaged; the negative is the encoder of zeros (or noise x uniform noise); zero tokens (or noise) appended.

    arcface (R, 512) raw embeddings, eva_feature (R, E) L2-normalised, eva_hidden [(R, 1 + P, V)] per EVA layer."""
    def fill(like):
        if noise == 0:
            return torch.zeros_like(like)
        return noise * torch.rand(like.shape, generator=generator, dtype=like.dtype).to(like.device)

    id_cond = torch.cat((arcface, eva_feature), dim=-1)
    cond = encoder(id_cond, eva_hidden).mean(dim=0, keepdim=True)
    uncond = encoder(fill(id_cond), [fill(h) for h in eva_hidden]).mean(dim=0, keepdim=True)
    if zero_tokens:
        extra = fill(cond[:, :1].expand(1, zero_tokens, cond.shape[-1]))
        cond, uncond = torch.cat((cond, extra), dim=1), torch.cat((uncond, extra), dim=1)
    return cond, uncond
