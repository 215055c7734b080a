"""EVA02-CLIP vision tower (PuLID's EVA02-CLIP-L-14-336), in plain torch.

    tokens = cat(cls_token, patch_embed(pixels)) + pos_embed                   # (B, 1 + P, width)
    block:  x += attn(norm1(x));  x += mlp(norm2(x))                           # LayerNorm eps 1e-6
    attn:   q = q_proj x + q_bias, k = k_proj x (no bias), v = v_proj x + v_bias; 2-D rotary embedding on the
            patch tokens of q and k (CLS excluded, interleaved pairs); softmax(q k^T / sqrt(64)) v;
            proj(inner_attn_ln(heads joined))
    mlp:    w3(ffn_ln(silu(w1 x) * w2 x))                                      # SwiGLU, hidden 2730
    feature = normalize(head(norm(x)[:, 0]))                                   # (B, 768), L2 norm 1

PuLID reads the hidden states after blocks 3, 7, 11, 15, 19 (CLS included, not normed) and the feature.
Module attributes equal the released checkpoint's `visual.*` keys (QuanSun/EVA-CLIP
EVA02_CLIP_L_336_psz14_s6B.pt), so it loads with `strict=True` and no renaming. The rotary tables are recomputed
(`rope_table`), never loaded: the file's `rope.freqs_cos/sin` keys are dropped, as eva_clip does on load.
Imports torch only, never the host.
"""
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidInputError, UnknownFormatError, listing

PULID_LAYERS = (3, 7, 11, 15, 19)  # blocks whose outputs PuLID reads (eva_clip's inputs to blocks 4, 8, .., 20)
HEAD_WIDTH = 64  # head_width of every EVA02-CLIP config; the head count is not stored in the file
ROPE_REF_GRID = 16  # pt_hw_seq_len: the 224 px / patch 14 pretraining grid the rotary positions are scaled to
ROPE_THETA = 10000.0
LAYER_NORM_EPS = 1e-6
ROPE_KEY = re.compile(r"(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)")
VISUAL_PREFIX = "visual."
FILE_HINT = ("Use the EVA-CLIP checkpoint PuLID loads: EVA02_CLIP_L_336_psz14_s6B.pt from QuanSun/EVA-CLIP "
             "(the full CLIP: visual.*, text.*, logit_scale).")


@dataclass(frozen=True)
class EVAConfig:
    """Sizes of an EVA02-CLIP vision tower; the defaults are EVA02-CLIP-L-14-336."""

    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_hidden: int = 2730  # int(1024 * 2.6667)
    embed_dim: int = 768
    rope_ref_grid: int = ROPE_REF_GRID
    eps: float = LAYER_NORM_EPS

    @property
    def grid(self):
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def head_width(self):
        """Channels per attention head."""
        return self.width // self.heads


def rope_table(grid, head_width, ref_grid=ROPE_REF_GRID, device=None):
    """(cos, sin), each (grid * grid, head_width) float32: rows in row-major patch order, channels the row
    angles then the column angles, each frequency twice (interleaved pairs); positions arange(grid) / grid *
    ref_grid, frequencies 1 / 10000^(arange(0, head_width / 2, 2) / (head_width / 2))."""
    axis_dim = head_width // 2
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, axis_dim, 2, device=device).float() / axis_dim))
    positions = torch.arange(grid, device=device).float() / grid * ref_grid
    angles = (positions[:, None] * freqs[None, :]).repeat_interleave(2, dim=-1)  # (grid, axis_dim)
    rows = angles[:, None, :].expand(grid, grid, axis_dim)
    cols = angles[None, :, :].expand(grid, grid, axis_dim)
    table = torch.cat((rows, cols), dim=-1).reshape(grid * grid, head_width)
    return table.cos(), table.sin()


def rotate_pairs(x):
    """(x0, x1, x2, x3, ..) -> (-x1, x0, -x3, x2, ..) over the last dim (EVA's interleaved rotate_half)."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def apply_rope(x, cos, sin):
    """Rotary embedding on the patch tokens of (B, heads, 1 + P, head_width), in float32; CLS passes unchanged."""
    patches = x[:, :, 1:].float()
    patches = patches * cos + rotate_pairs(patches) * sin
    return torch.cat((x[:, :, :1], patches.to(x.dtype)), dim=2)


class PatchEmbed(nn.Module):
    """Conv patchify: (B, 3, H, W) -> (B, P, width)."""

    def __init__(self, cfg, dtype=None, device=None):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size, dtype=dtype, device=device)

    def forward(self, pixels):
        return self.proj(pixels).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """EVA attention: q/v biases, no k bias, rotary q/k on patch tokens, LayerNorm on the joined heads."""

    def __init__(self, cfg, dtype=None, device=None):
        super().__init__()
        dd = dict(dtype=dtype, device=device)
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width, bias=False, **dd)
        self.k_proj = nn.Linear(cfg.width, cfg.width, bias=False, **dd)
        self.v_proj = nn.Linear(cfg.width, cfg.width, bias=False, **dd)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width, **dd))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width, **dd))
        self.inner_attn_ln = nn.LayerNorm(cfg.width, eps=cfg.eps, **dd)
        self.proj = nn.Linear(cfg.width, cfg.width, **dd)

    def split_heads(self, x):
        """(B, N, width) -> (B, heads, N, head_width)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x, cos, sin):
        q = self.split_heads(F.linear(x, self.q_proj.weight, self.q_bias))
        k = self.split_heads(self.k_proj(x))
        v = self.split_heads(F.linear(x, self.v_proj.weight, self.v_bias))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1 / sqrt(head_width)
        return self.proj(self.inner_attn_ln(out.transpose(1, 2).flatten(2)))


class SwiGLU(nn.Module):
    """w3(ffn_ln(silu(w1 x) * w2 x))."""

    def __init__(self, cfg, dtype=None, device=None):
        super().__init__()
        dd = dict(dtype=dtype, device=device)
        self.w1 = nn.Linear(cfg.width, cfg.mlp_hidden, **dd)
        self.w2 = nn.Linear(cfg.width, cfg.mlp_hidden, **dd)
        self.ffn_ln = nn.LayerNorm(cfg.mlp_hidden, eps=cfg.eps, **dd)
        self.w3 = nn.Linear(cfg.mlp_hidden, cfg.width, **dd)

    def forward(self, x):
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    """Pre-norm transformer block, no layer scale."""

    def __init__(self, cfg, dtype=None, device=None):
        super().__init__()
        dd = dict(dtype=dtype, device=device)
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.eps, **dd)
        self.attn = Attention(cfg, **dd)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.eps, **dd)
        self.mlp = SwiGLU(cfg, **dd)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class EVAVisionTower(nn.Module):
    """EVA02-CLIP visual tower: normalised pixels (B, 3, S, S) -> (L2-normalised feature (B, embed_dim),
    [hidden states (B, 1 + P, width) after each block in `layers`])."""

    def __init__(self, cfg=EVAConfig(), dtype=None, device=None):
        super().__init__()
        dd = dict(dtype=dtype, device=device)
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.grid ** 2, cfg.width, **dd))
        self.patch_embed = PatchEmbed(cfg, **dd)
        self.blocks = nn.ModuleList(Block(cfg, **dd) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.eps, **dd)
        self.head = nn.Linear(cfg.width, cfg.embed_dim, **dd)

    def check_pixels(self, pixels):
        """Raise InvalidInputError unless pixels is (B, 3, image_size, image_size)."""
        size = self.cfg.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise InvalidInputError(
                f"EVA-CLIP vision tower: pixels of shape {tuple(pixels.shape)}, expected (batch, 3, {size}, {size}): "
                f"resize the face crop to {size} px and normalise it with the OpenAI CLIP mean and std first.")

    def check_layers(self, layers):
        """Raise ValueError unless every index in layers names a block."""
        bad = [i for i in layers if not 0 <= i < self.cfg.depth]
        if bad:
            raise ValueError(f"EVA-CLIP vision tower has blocks 0..{self.cfg.depth - 1}; asked for {bad}")

    def embed(self, pixels):
        """Patch tokens with the CLS token in front, plus the absolute position embedding."""
        x = self.patch_embed(pixels)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat((cls, x), dim=1) + self.pos_embed

    def forward(self, pixels, layers=PULID_LAYERS):
        self.check_pixels(pixels)
        self.check_layers(layers)
        weight = self.patch_embed.proj.weight
        x = self.embed(pixels.to(device=weight.device, dtype=weight.dtype))
        cos, sin = rope_table(self.cfg.grid, self.cfg.head_width, self.cfg.rope_ref_grid, device=weight.device)
        hidden = {}
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin)
            if i in layers:
                hidden[i] = x
        feature = F.normalize(self.head(self.norm(x)[:, 0]), dim=-1)
        return feature, [hidden[i] for i in layers]


def visual_state_dict(state_dict, prefix=VISUAL_PREFIX, name="state dict"):
    """The `visual.*` tensors of a full EVA-CLIP state dict, prefix stripped, rotary tables dropped."""
    visual = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not visual:
        keys = sorted(state_dict)
        sample = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "") if keys else "no tensors"
        raise UnknownFormatError(
            f"{name}: no {prefix}* tensors, so not an EVA-CLIP checkpoint; found {len(keys)} keys ({sample}). "
            + FILE_HINT)
    return {k: v for k, v in visual.items() if not ROPE_KEY.fullmatch(k)}


def _shape(visual, key, ndim, prefix, name):
    """The shape of visual[key], or UnknownFormatError naming the key when it is absent or not ndim-D."""
    tensor = visual.get(key)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != ndim:
        found = "missing" if tensor is None else f"shape {tuple(getattr(tensor, 'shape', ()))}"
        raise UnknownFormatError(
            f"{name}: {prefix}{key} is {found}, expected a {ndim}-D tensor of an EVA02-CLIP vision tower. "
            + FILE_HINT)
    return tuple(tensor.shape)


def config_from_state_dict(visual, head_width=HEAD_WIDTH, rope_ref_grid=ROPE_REF_GRID, prefix=VISUAL_PREFIX,
                           name="state dict"):
    """EVAConfig read from the shapes of a prefix-stripped visual state dict (heads = width / head_width)."""
    width, _, patch, _ = _shape(visual, "patch_embed.proj.weight", 4, prefix, name)
    tokens = _shape(visual, "pos_embed", 3, prefix, name)[1] - 1
    grid = math.isqrt(max(tokens, 0))
    if grid * grid != tokens or grid == 0:
        raise UnknownFormatError(
            f"{name}: {prefix}pos_embed has {tokens + 1} tokens, expected 1 + a square number of patches. "
            + FILE_HINT)
    q_width = _shape(visual, "blocks.0.attn.q_proj.weight", 2, prefix, name)[0]
    if q_width != width or width % head_width:
        raise UnknownFormatError(
            f"{name}: {prefix}blocks.0.attn.q_proj.weight has {q_width} rows for width {width}; expected the width, "
            f"a multiple of the head width {head_width}. " + FILE_HINT)
    depth = 1 + max(int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, visual) if m)
    return EVAConfig(
        image_size=grid * patch, patch_size=patch, width=width, depth=depth, heads=width // head_width,
        mlp_hidden=_shape(visual, "blocks.0.mlp.w1.weight", 2, prefix, name)[0],
        embed_dim=_shape(visual, "head.weight", 2, prefix, name)[0], rope_ref_grid=rope_ref_grid)


def check_visual_state_dict(visual, tower, prefix=VISUAL_PREFIX, name="state dict"):
    """UnknownFormatError naming the missing, unexpected or misshaped keys against the tower's own."""
    expected = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    missing, extra = set(expected) - set(visual), set(visual) - set(expected)
    if missing or extra:
        raise UnknownFormatError(
            f"{name}: not the EVA02-CLIP vision layout of {prefix}* keys: missing "
            f"{listing(missing, prefix) or 'nothing'}; unexpected {listing(extra, prefix) or 'nothing'}. "
            + FILE_HINT)
    wrong = {k: tuple(getattr(v, "shape", ())) for k, v in visual.items()}
    wrong = {k: shape for k, shape in wrong.items() if shape != expected[k]}
    if wrong:
        key, got = sorted(wrong.items())[0]
        raise UnknownFormatError(
            f"{name}: {prefix}{key} has shape {got}, expected {expected[key]} for the tower read from the file's "
            f"shapes ({len(wrong)} tensors differ). The file is damaged or not an EVA02-CLIP model. " + FILE_HINT)


def load_visual(state_dict, head_width=HEAD_WIDTH, rope_ref_grid=ROPE_REF_GRID, dtype=torch.float32,
                device="cpu", prefix=VISUAL_PREFIX, name="state dict"):
    """EVAVisionTower loaded strictly from a full EVA-CLIP state dict (visual.* used, rope tables dropped)."""
    visual = visual_state_dict(state_dict, prefix, name)
    cfg = config_from_state_dict(visual, head_width, rope_ref_grid, prefix, name)
    tower = EVAVisionTower(cfg, dtype=dtype, device="meta")
    check_visual_state_dict(visual, tower, prefix, name)
    tower = tower.to_empty(device=device)
    tower.load_state_dict(visual, strict=True)
    return tower.eval().requires_grad_(False)
