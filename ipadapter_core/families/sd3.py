"""SD3.5 (InstantX SD3.5-Large IP-Adapter): the per-joint-block image term, as its release computes it.

Not registered in FAMILIES yet: the hook (ComfyUI's `dit` replace on the MMDiT joint blocks), the per-step tokens
of projections.TimeResampler and the nodes come next (issue 11). Unlike the UNet and Flux adapters, the image
term is no small decoupled attention: per block, the block's own raw image queries attend over the block's raw
image keys and values joined with the adapter's keys and values of the image tokens, in one softmax.
"""
import torch
import torch.nn.functional as F
from torch import nn

RMS_EPS = 1e-6  # the processor's RMSNorms and the image tokens' LayerNorm


class RMSScale(nn.Module):
    """An RMSNorm's learnt scale (`norm_q.weight` ...), applied per head."""

    def __init__(self, head_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), RMS_EPS)


class AdaNorm(nn.Module):
    """`norm_ip`: LayerNorm (no affine) shifted and scaled by the timestep embedding (shift first)."""

    def __init__(self, timestep_dim, width):
        super().__init__()
        self.linear = nn.Linear(timestep_dim, 2 * width)

    def forward(self, x, t_emb):
        shift, scale = self.linear(F.silu(t_emb))[:, None].chunk(2, dim=-1)
        return torch.addcmul(shift, F.layer_norm(x, (x.shape[-1],), eps=RMS_EPS), 1 + scale)


class JointBlockAdapter(nn.Module):
    """ip_adapter.{n} of the release: one joint block's image-token norm, K/V projections and QK norms."""

    def __init__(self, width, timestep_dim, head_dim=64):
        super().__init__()
        self.norm_ip = AdaNorm(timestep_dim, width)
        self.to_k_ip = nn.Linear(width, width, bias=False)
        self.to_v_ip = nn.Linear(width, width, bias=False)
        self.norm_q = RMSScale(head_dim)
        self.norm_k = RMSScale(head_dim)
        self.norm_ip_k = RMSScale(head_dim)

    def image_term(self, q, k, v, tokens, t_emb):
        """(B, N, width): raw image q, k, v (B, heads, N, head_dim) and image tokens (B, T, width) at t_emb (B, D)."""
        batch, heads, _, head_dim = q.shape
        normed = self.norm_ip(tokens, t_emb)
        split = (lambda x: x.view(batch, -1, heads, head_dim).transpose(1, 2))
        keys = torch.cat((self.norm_k(k), self.norm_ip_k(split(self.to_k_ip(normed)))), dim=2)
        values = torch.cat((v, split(self.to_v_ip(normed))), dim=2)
        out = F.scaled_dot_product_attention(self.norm_q(q), keys, values)
        return out.transpose(1, 2).flatten(2)
