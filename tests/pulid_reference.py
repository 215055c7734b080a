"""PuLID reference modules, re-implemented from the original code for the tests to compare the pack's modules with.

IDEncoder: cubiq PuLID_ComfyUI encoders.py (PuLID v1 for SDXL). PerceiverAttention, PerceiverAttentionCA, IDFormer:
ToTheBeginning/PuLID pulid/encoders_transformer.py (PuLID-Flux v0.9.x, v1.1). The reference hard-codes the 1024-wide
EVA and hidden widths and 1280-wide id_cond; here they are arguments with the real sizes as defaults. PulidFlux holds
the two modules of the reference pipeline so that one strict load_state_dict covers the whole flat Flux file.
"""
import math

import torch


def mlp(d_in, h1, h2, d_out):
    return torch.nn.Sequential(torch.nn.Linear(d_in, h1), torch.nn.LayerNorm(h1), torch.nn.LeakyReLU(),
                               torch.nn.Linear(h1, h2), torch.nn.LayerNorm(h2), torch.nn.LeakyReLU(),
                               torch.nn.Linear(h2, d_out))


class IDEncoder(torch.nn.Module):
    """cubiq PuLID_ComfyUI encoders.py IDEncoder (PuLID v1): 5 ID tokens from id_cond, 1 per EVA hidden state."""

    def __init__(self, width=1280, context_dim=2048, num_token=5, eva_width=1024, mapping_hidden=1024):
        super().__init__()
        self.num_token, self.context_dim = num_token, context_dim
        h1, h2 = min(context_dim * num_token // 4, 1024), min(context_dim * num_token // 2, 1024)
        self.body = mlp(width, h1, h2, context_dim * num_token)
        for i in range(5):
            setattr(self, f"mapping_{i}", mlp(eva_width, mapping_hidden, mapping_hidden, context_dim))
            setattr(self, f"mapping_patch_{i}", mlp(eva_width, mapping_hidden, mapping_hidden, context_dim))

    def forward(self, x, hidden):
        tokens = [self.body(x).reshape(-1, self.num_token, self.context_dim)]
        for i, h in enumerate(hidden):
            tokens.append(getattr(self, f"mapping_{i}")(h[:, :1])
                          + getattr(self, f"mapping_patch_{i}")(h[:, 1:]).mean(dim=1, keepdim=True))
        return torch.cat(tokens, dim=1)


def attention(q, k, v, heads):
    """Multi-head attention as the reference computes it: q and k each scaled by dim_head^-1/4, softmax in float32."""
    b, n, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
    weight = torch.softmax(((q * scale) @ (k * scale).transpose(-2, -1)).float(), dim=-1).to(q.dtype)
    return (weight @ v).transpose(1, 2).reshape(b, n, -1)


class PerceiverAttention(torch.nn.Module):
    def __init__(self, dim, dim_head=64, heads=8):
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.to_q = torch.nn.Linear(dim, inner, bias=False)
        self.to_kv = torch.nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = torch.nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        return self.to_out(attention(self.to_q(latents), k, v, self.heads))


class PerceiverAttentionCA(torch.nn.Module):
    """Flux cross-attention from the image tokens (queries, width dim) to the ID tokens (width kv_dim); no residual."""

    def __init__(self, dim=3072, dim_head=128, heads=16, kv_dim=2048):
        super().__init__()
        self.heads = heads
        inner = dim_head * heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(kv_dim), torch.nn.LayerNorm(dim)
        self.to_q = torch.nn.Linear(dim, inner, bias=False)
        self.to_kv = torch.nn.Linear(kv_dim, 2 * inner, bias=False)
        self.to_out = torch.nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        x, latents = self.norm1(x), self.norm2(latents)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        return self.to_out(attention(self.to_q(latents), k, v, self.heads))


class IDFormer(torch.nn.Module):
    """PuLID-Flux / v1.1 IDFormer: 32 learned queries plus 5 ID tokens per image, depth // 5 layers per EVA scale."""

    def __init__(self, dim=1024, depth=10, dim_head=64, heads=16, num_id_token=5, num_queries=32, output_dim=2048,
                 ff_mult=4, id_cond=1280, id_hidden=1024, eva_width=1024, mapping_hidden=1024):
        super().__init__()
        assert depth % 5 == 0
        self.num_id_token, self.dim, self.num_queries, self.per_scale = num_id_token, dim, num_queries, depth // 5
        self.latents = torch.nn.Parameter(torch.randn(1, num_queries, dim) * dim ** -0.5)
        self.proj_out = torch.nn.Parameter(torch.randn(dim, output_dim) * dim ** -0.5)
        self.layers = torch.nn.ModuleList(torch.nn.ModuleList([
            PerceiverAttention(dim, dim_head, heads),
            torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, dim * ff_mult, bias=False),
                                torch.nn.GELU(), torch.nn.Linear(dim * ff_mult, dim, bias=False))])
            for _ in range(depth))
        for i in range(5):
            setattr(self, f"mapping_{i}", mlp(eva_width, mapping_hidden, mapping_hidden, dim))
        self.id_embedding_mapping = mlp(id_cond, id_hidden, id_hidden, dim * num_id_token)

    def forward(self, x, hidden):
        images = x.shape[1] if x.ndim == 3 else 1
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.id_embedding_mapping(x).reshape(-1, self.num_id_token * images, self.dim)
        latents = torch.cat((latents, x), dim=1)
        for i in range(5):
            ctx = torch.cat((x, getattr(self, f"mapping_{i}")(hidden[i])), dim=1)
            for attn, ff in self.layers[i * self.per_scale:(i + 1) * self.per_scale]:
                latents = attn(ctx, latents) + latents
                latents = ff(latents) + latents
        return latents[:, :self.num_queries] @ self.proj_out


class PulidFlux(torch.nn.Module):
    """The two modules of the reference pipeline, so one strict load_state_dict covers the whole flat file."""

    def __init__(self, encoder, ca, count=20):
        super().__init__()
        self.pulid_encoder = encoder
        self.pulid_ca = torch.nn.ModuleList(ca() for _ in range(count))
