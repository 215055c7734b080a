"""The decoupled cross-attention: text attention + sum of weighted, masked attentions over image tokens.

One IPAdapterPatch object serves every attn2 key of a model; it holds all image prompts stacked on that
model (several apply nodes) and never changes after it is installed. Image K/V are projected once per
device/dtype and cached; nothing in __call__ reads tensor values on the host.
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .blocks import layer_of_key
from .errors import InvalidInputError

EMBEDS_SCALING = ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")
C_PENALTY_WIDTH = 1280.0  # the "C penalty" modes scale by layer width / 1280 (IPAdapter_plus's convention)


@dataclass(frozen=True, eq=False)
class ImagePrompt:
    """One adapter's image prompt as an apply node installs it: R references of T tokens each."""

    weights: object  # IPAdapterWeights (its to_k_ip / to_v_ip)
    cond: torch.Tensor  # (R, T, cross) image tokens
    uncond: torch.Tensor  # (R, T, cross) tokens of the negative image / zero embeds
    layer_weights: tuple  # multiplier per adapter layer (weight x weight type)
    ref_weights: tuple = (1.0,)  # multiplier per reference
    masks: Optional[torch.Tensor] = None  # (R, H, W) in [0, 1], or None
    inverted_layers: frozenset = frozenset()  # layers where the image steers the negative pass only
    embeds_scaling: str = "V only"
    sigma_range: Optional[tuple] = None  # (sigma_start, sigma_end): active while end <= sigma <= start
    unfold_batch: bool = False  # reference r conditions latent r (mod R) instead of every latent
    frame_weights: Optional[tuple] = None  # multiplier per latent of the batch (animations), cycled

    def __post_init__(self):
        if self.embeds_scaling not in EMBEDS_SCALING:
            raise InvalidInputError(f"embeds_scaling {self.embeds_scaling!r} is not one of {EMBEDS_SCALING}.")
        if self.cond.shape != self.uncond.shape or self.cond.ndim != 3:
            raise InvalidInputError(f"image tokens {tuple(self.cond.shape)} and negative tokens "
                                    f"{tuple(self.uncond.shape)} must both be (references, tokens, width).")
        if self.frame_weights is not None and not self.frame_weights:
            raise InvalidInputError("frame_weights is empty; give one weight per frame.")
        if len(self.ref_weights) != self.cond.shape[0]:
            raise InvalidInputError(f"{len(self.ref_weights)} reference weights for {self.cond.shape[0]} references.")
        if self.masks is not None and self.masks.shape[0] != self.cond.shape[0]:
            raise InvalidInputError(f"{self.masks.shape[0]} masks for {self.cond.shape[0]} references; give one mask "
                                    "per reference image (or one mask for all).")

    @property
    def references(self):
        return self.cond.shape[0]

    def active_layers(self):
        return {i for i, w in enumerate(self.layer_weights) if w != 0 and any(r != 0 for r in self.ref_weights)}


def scaled_kv(prompt, layer, tokens, k_weight, v_weight):
    """K and V of one layer for tokens (R, T, C) with the layer and reference weights folded in."""
    k = tokens @ k_weight.t()
    v = tokens @ v_weight.t()
    eff = prompt.layer_weights[layer] * torch.tensor(prompt.ref_weights, device=k.device, dtype=k.dtype).view(-1, 1, 1)
    mode = prompt.embeds_scaling
    if mode == "V only":
        return k, v * eff
    if mode != "K+V":
        eff = eff * (k.shape[-1] / C_PENALTY_WIDTH)
    if mode == "K+mean(V) w/ C penalty":
        mean = v.mean(dim=1, keepdim=True)
        return k * eff, (v - mean) + mean * eff
    return k * eff, v * eff


def mask_grid(original_shape, tokens):
    """(h, w) of the token grid at this attention resolution, following the latent's aspect ratio."""
    height, width = original_shape[-2], original_shape[-1]
    for down in (1, 2, 4, 8, 16, 32, 64):
        h, w = math.ceil(height / down), math.ceil(width / down)
        if h * w == tokens:
            return h, w
    h = max(1, round(height / math.sqrt(height * width / tokens)))
    return h, max(1, tokens // h)


def resize_masks(masks, original_shape, tokens):
    """Masks (R, H, W) -> (R, tokens) at the attention resolution (padded or cropped if the grid is odd)."""
    h, w = mask_grid(original_shape, tokens)
    flat = F.interpolate(masks.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).flatten(1)
    if flat.shape[1] < tokens:
        flat = F.pad(flat, (0, tokens - flat.shape[1]))
    return flat[:, :tokens]


class IPAdapterPatch:
    """attn2 replacement: `attention(q, k, v) + sum over prompts of the image attention`."""

    def __init__(self, arch, prompts, attention, base_patches=None, models=()):
        self.arch = arch
        self.prompts = tuple(prompts)
        self.attention = attention
        self.base_patches = dict(base_patches or {})  # foreign attn2 patches this one wraps, per key
        self._models = tuple(models)
        self._layer_of = layer_of_key(arch)
        self._active = [p.active_layers() for p in self.prompts]
        self._kv = {}
        self._masks = {}
        self._index = {}
        self._frames = {}

    def keys(self):
        """The attn2 keys this patch must be installed on."""
        layers = set().union(*self._active) if self._active else set()
        return [key for key, layer in self._layer_of.items() if layer in layers]

    def extended(self, prompts, models=(), base_patches=None):
        """A new patch with more prompts and foreign patches to wrap (this one is left as it is)."""
        return IPAdapterPatch(self.arch, self.prompts + tuple(prompts), self.attention,
                              {**self.base_patches, **(base_patches or {})},
                              self._models + tuple(m for m in models if m not in self._models))

    def models(self):
        return list(self._models)

    def __deepcopy__(self, memo):
        return self  # immutable once installed; ComfyUI 0.3.x deep-copies model_options on every clone

    def to(self, device):
        return self

    def __call__(self, q, k, v, extra_options):
        key = (extra_options["block"][0], extra_options["block"][1], extra_options.get("block_index", 0))
        base = self.base_patches.get(key) or self.base_patches.get(key[:2])  # ComfyUI also matches (block, id)
        if base is not None:
            out = base(q, k, v, extra_options)
        else:
            out = self.attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                 transformer_options=extra_options)
        layer = self._layer_of.get(key)
        if layer is None:
            return out
        for i, prompt in enumerate(self.prompts):
            if layer in self._active[i]:
                out = out + self._image_attention(i, prompt, layer, q, extra_options)
        return out

    def _layer_kv(self, i, prompt, layer, device, dtype):
        key = (i, layer, device, dtype)
        hit = self._kv.get(key)
        if hit is None:
            module = prompt.weights.ip_adapter[str(2 * layer + 1)]
            kw = module.to_k_ip.weight.to(device, dtype)
            vw = module.to_v_ip.weight.to(device, dtype)
            cond = prompt.cond.to(device, dtype)
            if layer in prompt.inverted_layers:
                cond, uncond = torch.zeros_like(cond), cond
            else:
                uncond = prompt.uncond.to(device, dtype)
            kc, vc = scaled_kv(prompt, layer, cond, kw, vw)
            ku, vu = scaled_kv(prompt, layer, uncond, kw, vw)
            hit = (torch.stack((kc, ku)), torch.stack((vc, vu)))  # (2, R, T, C): cond, uncond
            self._kv[key] = hit
        return hit

    def _batch_index(self, prompt, cond_or_uncond, batch, device):
        """Row of the (2*R) K/V table for each batch element (cond/uncond chunk, and frame when unfolding)."""
        key = (tuple(cond_or_uncond), batch, prompt.unfold_batch, prompt.references, device)
        hit = self._index.get(key)
        if hit is None:
            per_chunk = batch // len(cond_or_uncond)
            rows = []
            for chunk in cond_or_uncond:
                kind = 1 if chunk == 1 else 0
                for frame in range(per_chunk):
                    rows.append(kind * prompt.references + frame % prompt.references if prompt.unfold_batch else kind)
            hit = torch.tensor(rows, device=device)
            self._index[key] = hit
        return hit

    def _frame_scale(self, i, prompt, cond_or_uncond, batch, device, dtype):
        """(B, 1, 1) multiplier: the weight of each latent's frame (position inside its cond/uncond chunk)."""
        key = (i, tuple(cond_or_uncond), batch, device, dtype)
        hit = self._frames.get(key)
        if hit is None:
            per_chunk = batch // len(cond_or_uncond)
            weights = prompt.frame_weights
            rows = [weights[frame % len(weights)] for _ in cond_or_uncond for frame in range(per_chunk)]
            hit = torch.tensor(rows, device=device, dtype=dtype).view(-1, 1, 1)
            self._frames[key] = hit
        return hit

    def _resized_masks(self, i, prompt, original_shape, tokens, device, dtype):
        key = (i, tuple(original_shape[-2:]), tokens, device, dtype)
        hit = self._masks.get(key)
        if hit is None:
            hit = resize_masks(prompt.masks.to(device, torch.float32), original_shape, tokens).to(dtype)
            self._masks[key] = hit
        return hit

    def _image_attention(self, i, prompt, layer, q, extra_options):
        batch, tokens, width = q.shape
        heads = extra_options["n_heads"]
        head_dim = width // heads
        k, v = self._layer_kv(i, prompt, layer, q.device, q.dtype)
        rows = self._batch_index(prompt, extra_options.get("cond_or_uncond", [0]), batch, q.device)
        refs = prompt.references
        if prompt.unfold_batch:  # one reference per latent: (B, T, C)
            k = k.flatten(0, 1)[rows]
            v = v.flatten(0, 1)[rows]
            groups = 1
        else:  # every reference for every latent, one softmax each: (B, R*T, C)
            k = k[rows].flatten(1, 2)
            v = v[rows].flatten(1, 2)
            groups = refs
        qh = q.view(batch, tokens, heads, head_dim).transpose(1, 2)
        kh = k.view(batch, -1, heads, head_dim).permute(0, 2, 3, 1)
        vh = v.view(batch, -1, heads, head_dim).transpose(1, 2)
        scores = (qh @ kh) * head_dim ** -0.5  # (B, H, N, groups*T)
        probs = scores.float().view(batch, heads, tokens, groups, -1).softmax(dim=-1)
        if prompt.masks is not None:
            masks = self._resized_masks(i, prompt, extra_options["original_shape"], tokens, q.device, torch.float32)
            if prompt.unfold_batch:
                frames = rows % refs
                probs = probs * masks[frames].view(batch, 1, tokens, 1, 1)
            else:
                probs = probs * masks.t().reshape(1, 1, tokens, refs, 1)
        out = probs.to(q.dtype).view(batch, heads, tokens, -1) @ vh
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        if prompt.frame_weights is not None:
            out = out * self._frame_scale(i, prompt, extra_options.get("cond_or_uncond", [0]), batch, q.device,
                                          q.dtype)
        if prompt.sigma_range is not None:
            sigmas = extra_options["sigmas"]
            start, end = prompt.sigma_range
            gate = ((sigmas <= start) & (sigmas >= end)).to(out.dtype)
            out = out * (gate.view(-1, 1, 1) if gate.shape[0] == batch else gate[:1].view(1, 1, 1))
        return out
