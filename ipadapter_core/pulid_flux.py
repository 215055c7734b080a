"""PuLID for Flux (pulid_flux_v0.9.x): the IDFormer that turns a face into identity tokens, and the cross-attentions
(PerceiverCA) that add those tokens to Flux's image stream.

The file's keys are flat: pulid_encoder.* (IDFormer) and pulid_ca.{k}.* (one PerceiverCA per k); the attribute names
below are those keys, so the file loads strictly (adapter.PuLIDFluxWeights). Every size comes from the tensors
(formats.detect), except the head widths, which the file does not store: 64 in the IDFormer and 128 in the
cross-attentions of the release (ToTheBeginning/PuLID pulid/encoders_transformer.py).

IDFormer: id_cond = cat(ArcFace embedding, EVA02-CLIP feature) -> id_embedding_mapping -> 5 ID tokens per photo,
appended to the learned queries (latents). For each of the 5 EVA hidden states h_i, the context is cat(ID tokens,
mapping_i(h_i)) and depth // 5 layers run [PerceiverAttention (keys = context + latents) + residual, FeedForward +
residual]. Output: the first `queries` latents @ proj_out. PerceiverCA(id_tokens, image): LayerNorm'd image tokens
query the LayerNorm'd ID tokens; no residual (the caller adds weight x the output to the image stream).
The IDFormer's layers are the IP-Adapter resampler's own (projections.PerceiverAttention, feed_forward: same keys and
maths); the cross-attentions scale q and k each by head_dim^-1/4 and take the softmax in float32, as the reference.
"""
import torch
from torch import nn

from .projections import PerceiverAttention, feed_forward
from .pulid import ID_TOKENS, mlp

ENCODER_HEAD_DIM = 64  # IDFormer(dim_head=64) in the release; not stored in the file
CA_HEAD_DIM = 128  # PerceiverAttentionCA(dim_head=128) in the release; not stored in the file
EVA_SCALES = 5  # EVA hidden states the IDFormer reads (mapping_0 .. mapping_4)
CA_DOUBLE_INTERVAL, CA_SINGLE_INTERVAL = 2, 4  # a CA after every 2nd double and every 4th single Flux block


def ca_count(double_blocks, single_blocks):
    """How many cross-attentions the reference places on a Flux model with these block counts."""
    return -(-double_blocks // CA_DOUBLE_INTERVAL) + -(-single_blocks // CA_SINGLE_INTERVAL)


def attend(q, k, v, heads):
    """Multi-head attention (B, N, heads x d) with q and k each scaled by d^-1/4 and the softmax in float32."""
    b, n, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    scale = q.shape[-1] ** -0.25
    logits = (q * scale) @ (k * scale).transpose(-2, -1)
    weight = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
    return (weight @ v).transpose(1, 2).reshape(b, n, -1)


class IDFormer(nn.Module):
    """pulid_encoder: id_cond (B, A) or (B, R, A) for R photos, EVA hidden states [(B, T, V)] x 5 -> (B, queries,
    out_dim). With R photos the hidden states hold the photos' tokens one after another (T = R x (1 + P))."""

    def __init__(self, dim, depth, heads, queries, out_dim, id_cond, id_hidden, vision_width, mapping_hidden,
                 ff_mult=4, id_tokens=ID_TOKENS):
        super().__init__()
        if depth % EVA_SCALES:
            raise ValueError(f"IDFormer depth {depth} is not a multiple of {EVA_SCALES} (layers per EVA scale)")
        self.dim, self.queries, self.id_tokens, self.per_scale = dim, queries, id_tokens, depth // EVA_SCALES
        self.latents = nn.Parameter(torch.randn(1, queries, dim) * dim ** -0.5)
        self.proj_out = nn.Parameter(torch.randn(dim, out_dim) * dim ** -0.5)
        self.layers = nn.ModuleList(nn.ModuleList([PerceiverAttention(dim, heads), feed_forward(dim, ff_mult)])
                                    for _ in range(depth))
        for i in range(EVA_SCALES):
            setattr(self, f"mapping_{i}", mlp((vision_width, *mapping_hidden, dim)))
        self.id_embedding_mapping = mlp((id_cond, *id_hidden, dim * id_tokens))

    def forward(self, id_cond, vision_hidden):
        """Identity tokens (B, queries, out_dim) of the photos in id_cond and vision_hidden."""
        if len(vision_hidden) != EVA_SCALES:
            raise ValueError(f"{len(vision_hidden)} EVA hidden states for an IDFormer of {EVA_SCALES}")
        photos = id_cond.shape[1] if id_cond.ndim == 3 else 1
        ids = self.id_embedding_mapping(id_cond).reshape(-1, self.id_tokens * photos, self.dim)
        latents = torch.cat((self.latents.expand(ids.shape[0], -1, -1), ids), dim=1)
        for i, hidden in enumerate(vision_hidden):
            context = torch.cat((ids, getattr(self, f"mapping_{i}")(hidden)), dim=1)
            for attn, ff in self.layers[i * self.per_scale:(i + 1) * self.per_scale]:
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, :self.queries] @ self.proj_out


class PerceiverCA(nn.Module):
    """pulid_ca.{k}: the image tokens (width) query the identity tokens (id_width); no bias, no residual."""

    def __init__(self, width, id_width, heads, head_dim=CA_HEAD_DIM):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.norm1, self.norm2 = nn.LayerNorm(id_width), nn.LayerNorm(width)
        self.to_q = nn.Linear(width, inner, bias=False)
        self.to_kv = nn.Linear(id_width, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, width, bias=False)

    def forward(self, id_tokens, image):
        """(B, N, width): the attention of image (B, N, width) on id_tokens (B, T, id_width)."""
        ids, image = self.norm1(id_tokens), self.norm2(image)
        k, v = self.to_kv(ids).chunk(2, dim=-1)
        return self.to_out(attend(self.to_q(image), k, v, self.heads))
