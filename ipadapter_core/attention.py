"""The decoupled cross-attention: text attention + sum of weighted, masked attentions over image tokens.

ImageAttention holds every image prompt stacked on one model (several apply nodes) and adds their attention
to a query; it is family-agnostic. IPAdapterPatch is its UNet hook (one object serves every attn2 key); the
DiT families wrap it in their block hooks (families/). A patch never changes after it is installed. Image K/V
are projected when a layer's table is built and kept in that table only (cache_bytes() says how much); nothing on
the call path reads tensor values on the host.

Hot path (docs/benchmarks.md): per layer, every prompt and reference with the same token count is fused into
one table of image keys/values laid out per head (built once per layer and batch layout, one row per distinct
batch row, then cached), so a call costs one matmul for the scores, one softmax per small group, and one matmul
that accumulates into the text attention's output in place, whatever the number of adapters and references.
Small groups are scored with the queries innermost, so that the softmax runs along the queries whatever the
group's size. q is used through strided per-head views (no copies); the output is ComfyUI's attention output left
per head where its attention function can (skip_output_reshape), else a strided per-head view. Calls with many
queries go one batch row at a time; with few, the batch rows go together (per-op costs dominate there).
"""
import inspect
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .errors import IncompatibleModelError, InvalidInputError, counted
from .pulid import PROJECTIONS, identity_mass, joined_term

# transformer_options entry (set by the UNet families' model wrapper) holding the attn2 replace table in use:
# ComfyUI keeps patches_replace out of a patch's extra_options
ATTN2_TABLE_KEY = "ipadapter_kit.attn2_replace"
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
    unfold_batch: bool = False  # reference r conditions latent r (the last one past R) instead of every latent
    frame_weights: Optional[tuple] = None  # multiplier per latent of the batch (animations), last one held
    joined: bool = False  # cond holds encoder outputs whose per-step tokens join into one reference (concat, SD3.5)
    projection: str = "none"  # PuLID: how the term joins the text attention output (pulid.PROJECTIONS)

    def __post_init__(self):
        if self.projection not in PROJECTIONS:
            raise InvalidInputError(f"projection {self.projection!r} is not one of {PROJECTIONS}.")
        if self.projection != "none" and (self.embeds_scaling != "V only" or self.unfold_batch):
            raise InvalidInputError("PuLID's projections take one identity for every latent with the weight on V "
                                    "(embeds_scaling 'V only', no unfold_batch).")
        if self.embeds_scaling not in EMBEDS_SCALING:
            raise InvalidInputError(f"embeds_scaling {self.embeds_scaling!r} is not one of {EMBEDS_SCALING}.")
        if self.cond.shape != self.uncond.shape or self.cond.ndim != 3:
            raise InvalidInputError(f"image tokens {tuple(self.cond.shape)} and negative tokens "
                                    f"{tuple(self.uncond.shape)} must both be (references, tokens, width).")
        if self.frame_weights is not None and not self.frame_weights:
            raise InvalidInputError("frame_weights is empty; give one weight per frame.")
        if len(self.ref_weights) != self.references:
            raise InvalidInputError(f"{counted(len(self.ref_weights), 'reference weight')} for "
                                    f"{counted(self.references, 'reference')}.")
        if self.masks is not None and self.masks.shape[0] != self.references:
            raise InvalidInputError(f"{counted(self.masks.shape[0], 'mask')} for {counted(self.references, 'reference')}; give one mask "
                                    "per reference image (or one mask for all).")

    @property
    def references(self):
        return 1 if self.joined else self.cond.shape[0]

    def active_layers(self):
        """Layers the adapter has where this prompt's weight is not 0."""
        if not any(r != 0 for r in self.ref_weights):
            return set()
        return {i for i, w in enumerate(self.layer_weights[:self.weights.spec.num_layers]) if w != 0}


def rms_per_head(x, head_dim, eps=1e-5):
    """RMS-normalise (..., heads * head_dim) over each head's channels (no affine), in float32."""
    shaped = x.float().unflatten(-1, (-1, head_dim))
    return (shaped * torch.rsqrt(shaped.pow(2).mean(-1, keepdim=True) + eps)).flatten(-2).to(x.dtype)


def project_kv(tokens, kv, head_dim):
    """Image K and V (R, T, width) of tokens through one layer's KVProjection."""
    k = tokens @ kv.k_weight.t()
    v = tokens @ kv.v_weight.t()
    if kv.k_bias is not None:
        k, v = k + kv.k_bias, v + kv.v_bias
    if kv.rms_eps is not None:
        k, v = rms_per_head(k, head_dim, kv.rms_eps), rms_per_head(v, head_dim, kv.rms_eps)
    return k, v


def scaled_kv(prompt, layer, tokens, kv, head_dim):
    """K and V of one layer for tokens (R, T, C) with the layer and reference weights folded in."""
    k, v = project_kv(tokens, kv, head_dim)
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


def sigma_gate(sigma_range, sigmas, batch, device, dtype):
    """(B,) 1 where the step's sigma lies in sigma_range (start >= sigma >= end), else 0; ones without a range."""
    if sigma_range is None:
        return torch.ones(batch, device=device, dtype=dtype)
    start, end = sigma_range
    gate = ((sigmas <= start) & (sigmas >= end)).to(device, dtype)
    return gate if gate.shape[0] == batch else gate[:1].expand(batch)


def _group_softmax(scores):
    """Softmax over the last dim of fresh (..., T) scores, in float32."""
    if scores.dtype != torch.float32:
        scores = scores.float()  # q's dtype may be half; the float32 copy is ours
    return scores.softmax(dim=-1)


def _unit_softmax(scores, masks=None, in_place=True):
    """Softmax over dim 2 of fresh (heads, U, T, N) scores, in float32, times masks (U, 1, N) when given."""
    # queries innermost: every pass runs along N, vectorised, whatever T (torch's softmax over a last dim of 4 runs
    # ~8x slower, docs/benchmarks.md)
    if scores.dtype != torch.float32:
        scores = scores.float()
    if not in_place or not scores.is_cpu or scores.shape[-1] < ELEMENTWISE_FROM:
        probs = scores.softmax(dim=2)
        return probs if masks is None else probs.mul_(masks) if in_place else probs * masks
    scores -= scores.amax(dim=2, keepdim=True)
    scores.exp_()
    scale = scores.sum(dim=2, keepdim=True).reciprocal_()
    return scores.mul_(scale if masks is None else scale.mul_(masks))  # masks fold into the normalisation


# from this many queries on, _unit_softmax's elementwise passes beat torch's CPU softmax over dim 2 (and fold the
# masks in without a pass of their own); below it the single softmax kernel call costs less
ELEMENTWISE_FROM = 256
# image token counts below this run with the queries innermost (_unit_softmax); larger ones with the image tokens
# innermost, where torch's softmax kernel is fastest
UNIT_LAYOUT_BELOW = 16
# below this many queries a call's per-op costs outweigh its work: the batch rows then share one score buffer and
# one output product (_add_group_rows_together, ~10% less at 64 queries, ~40% at 16; ~5% more from 256 on)
ROWS_TOGETHER_BELOW = 128


@dataclass(frozen=True, eq=False)
class _FusedGroup:
    """Image K/V of every (prompt, reference) unit with `tokens` tokens on one layer, laid out per head: one row per
    distinct batch row (cond, uncond, a frame's reference), each batch row a view of its row."""

    tokens: int  # T: image tokens per unit (one softmax per unit)
    units: int  # U
    heads: int
    k: torch.Tensor  # (D, heads, U*T, head_dim), scaled by head_dim ** -0.5, layer and reference weights folded in
    v: torch.Tensor  # (D, heads, U*T, head_dim), layer, reference and frame weights folded in
    masks: Optional[torch.Tensor]  # float32 (M, U, 1, N) (unit layout) or (M, 1, N, U, 1), or None
    row_of: tuple  # per batch row: its row of k / v
    gates: Optional[tuple]  # ((sigma_range or None, units), ...) per prompt, or None when no prompt is gated
    k_rows: tuple  # per batch row: a view of its row of k, (heads, U*T, head_dim)
    v_rows: tuple
    mask_rows: Optional[tuple]  # per batch row: a view of its row of masks

    @property
    def unit_layout(self):
        """Whether scores run (heads, U*T, N) (queries innermost) rather than (heads, N, U*T)."""
        return self.tokens < UNIT_LAYOUT_BELOW

    def tensors(self):
        """The tensors this group holds (the per-row views share their storage)."""
        return (self.k, self.v) + (() if self.masks is None else (self.masks,))


def mask_grid(original_shape, tokens):
    """(h, w) of the token grid at this attention resolution, following the latent's aspect ratio."""
    height, width = original_shape[-2], original_shape[-1]
    for down in (1, 2, 4, 8, 16, 32, 64):
        h, w = math.ceil(height / down), math.ceil(width / down)
        if h * w == tokens:
            return h, w
    h = max(1, round(height / math.sqrt(height * width / tokens)))
    return h, max(1, tokens // h)


class TokenLayout(NamedTuple):
    """Where a query's tokens lie: `prefix` unmasked tokens (text), then an h x w image grid, `tokens` in all."""

    prefix: int
    h: int
    w: int
    tokens: int

    @classmethod
    def unet(cls, original_shape, tokens):
        """The layout of a UNet attention at this resolution (grid follows the latent's aspect ratio)."""
        return cls(0, *mask_grid(original_shape, tokens), tokens)


def layout_masks(masks, layout):
    """Masks (R, H, W) -> (R, tokens): resized to the grid (padded or cropped if odd), ones on the prefix."""
    grid_tokens = layout.tokens - layout.prefix
    flat = F.interpolate(masks.unsqueeze(1), size=(layout.h, layout.w), mode="bilinear",
                         align_corners=False).flatten(1)
    if flat.shape[1] < grid_tokens:
        flat = F.pad(flat, (0, grid_tokens - flat.shape[1]))
    flat = flat[:, :grid_tokens]
    return F.pad(flat, (layout.prefix, 0), value=1.0) if layout.prefix else flat


def resize_masks(masks, original_shape, tokens):
    """Masks (R, H, W) -> (R, tokens) at a UNet attention resolution."""
    return layout_masks(masks, TokenLayout.unet(original_shape, tokens))


class QueryCall(NamedTuple):
    """What one hook call tells about its query besides q itself."""

    heads: int
    chunks: tuple  # cond_or_uncond: 0 cond, 1 uncond, one entry per chunk of the batch
    sigmas: Optional[torch.Tensor]
    layout: Optional[TokenLayout]  # needed only where masks apply
    frames: Optional[tuple] = None  # absolute frame of each latent of a chunk (context windows); None: its position


def _window_frames(options):
    """The absolute frames a context window's latents are, from transformer_options, or None (no window)."""
    ad_params = options.get("ad_params")  # AnimateDiff-Evolved: sub_idxs is None when it runs the whole batch
    if isinstance(ad_params, dict) and ad_params.get("sub_idxs") is not None:
        return tuple(int(i) for i in ad_params["sub_idxs"])
    window = options.get("context_window")  # ComfyUI's own context windows (an IndexListContextWindow)
    if window is None or getattr(window, "dim", 0) != 0:
        return None  # windows over another dimension (video models) leave the batch rows as they are
    frames = [int(i) for i in window.index_list]
    anchor = getattr(window, "causal_anchor_index", None)  # newer ComfyUI runs the frame before the window first
    return tuple(([int(anchor)] if anchor is not None and anchor >= 0 else []) + frames)


def frame_indices(options, batch, chunks):
    """The absolute frame of each latent in a cond/uncond chunk when the sampler runs a context window (AnimateDiff-
    Evolved's ad_params, ComfyUI's context_window), or None when the batch is the whole animation."""
    frames = _window_frames(options)
    if frames is None:
        return None
    per_chunk = batch // max(1, len(chunks))
    if len(frames) != per_chunk:
        raise InvalidInputError(f"the sampler's context window lists {len(frames)} frames but the model got "
                                f"{per_chunk} latents per cond/uncond chunk; frame weights and unfold_batch cannot "
                                "tell which frame each latent is: check the context options' length.")
    return frames


def frame_entry(frame, count):
    """The entry of a per-frame list (references, weights) a frame reads: its own, the last one past the end (as
    IPAdapter_plus pads a short list with its last entry)."""
    return min(frame, count - 1)


def chunk_frames(batch, chunks, frames=None):
    """The frame of each latent of one cond/uncond chunk: the given absolute frames, else 0, 1, 2, ..."""
    return frames if frames is not None else range(batch // len(chunks))


class ImageAttention:
    """Every image prompt stacked on one model; adds their attention to a per-head query (any family)."""

    def __init__(self, prompts, models=()):
        self.prompts = tuple(prompts)
        self._models = tuple(models)
        self._active = [p.active_layers() for p in self.prompts]
        self._masks = {}  # resized masks of the projected (PuLID) prompts, per layout
        self._fused = {}
        self._windowed = {}  # per batch layout: (frames, groups) of the latest context window
        self._all_active = frozenset().union(*self._active)
        self._projected = frozenset(i for i, p in enumerate(self.prompts) if p.projection != "none")
        self._plain = frozenset(range(len(self.prompts))) - self._projected
        # prompts whose K/V or weight depends on the latent's frame (they follow a context window's frames)
        self.framed = any(p.unfold_batch or p.frame_weights is not None for p in self.prompts)
        self._masked_layers = {layer for i, p in enumerate(self.prompts) if p.masks is not None for layer in
                               self._active[i]}

    def active_layers(self):
        """Adapter layers where some prompt acts."""
        return self._all_active

    def masked(self, layer):
        """Whether some prompt's mask applies on this layer (the caller then gives a TokenLayout)."""
        return layer in self._masked_layers

    def models(self):
        return list(self._models)

    def __deepcopy__(self, memo):
        return self  # immutable once installed; ComfyUI 0.3.x deep-copies model_options on every clone

    def to(self, device):
        return self

    def cached_tensors(self):
        """Every tensor the patch keeps between calls (image K/V tables, resized masks), each storage once."""
        groups = [g for groups in self._fused.values() for g in groups]
        groups += [g for _, groups in self._windowed.values() for g in groups]
        tensors = [t for g in groups for t in g.tensors()] + list(self._masks.values())
        seen, unique = set(), []
        for t in tensors:
            if t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                unique.append(t)
        return unique

    def cache_bytes(self):
        """Bytes of what the patch keeps between calls (docs/benchmarks.md's K/V cache column)."""
        return sum(t.untyped_storage().nbytes() for t in self.cached_tensors())

    def cache_entries(self):
        """How many tables the patch has built (one per layer and batch layout, plus resized masks)."""
        return len(self._fused) + len(self._windowed) + len(self._masks)

    def add_image_attention(self, out_heads, q_heads, layer, call, only=None):
        """out_heads += the image attention of the prompts on layer (all, or the indices in `only`); both
        (B, heads, N, head_dim). False if none."""
        groups = self._fused_groups(layer, q_heads, call, self._plain if only is None else only)
        for group in groups:
            self._add_group(out_heads, q_heads, group, call.sigmas)
        return bool(groups)

    def projected_terms(self, text_out, q_heads, layer, call):
        """[(B, N, C)] the PuLID terms of the projected prompts on layer, against the text attention output."""
        terms = []
        batch, heads, tokens, head_dim = q_heads.shape
        for i in sorted(self._projected):
            if layer not in self._active[i]:
                continue
            prompt = self.prompts[i]
            only = frozenset((i,))
            image = torch.zeros_like(q_heads)
            self.add_image_attention(image, q_heads, layer, call, only=only)
            image = image.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
            mass = None
            if prompt.projection == "ortho_v2":
                (group,) = self._fused_groups(layer, q_heads, call, only)
                count = group.tokens  # reference 0 of cond / uncond; the table's keys carry the 1/sqrt(d) scale
                keys = group.k[list(group.row_of), :, :count].float() * head_dim ** 0.5
                mass = identity_mass(q_heads, keys)
            term = joined_term(text_out, image, prompt.projection, mass)
            if prompt.masks is not None:
                term = term * self._resized_masks(i, prompt, call.layout, q_heads.device, term.dtype)[0].view(1, -1, 1)
            terms.append(term.to(text_out.dtype))
        return terms

    def _layer_kv(self, prompt, layer, device, dtype, head_dim):
        """(K, V) of one prompt on one layer, each (2, R, T, C): cond, uncond (not kept: the fused tables are)."""
        kv = prompt.weights.kv_projection(layer).to(device, dtype)
        cond = prompt.cond.to(device, dtype)
        if layer in prompt.inverted_layers:
            cond, uncond = torch.zeros_like(cond), cond
        else:
            uncond = prompt.uncond.to(device, dtype)
        kc, vc = scaled_kv(prompt, layer, cond, kv, head_dim)
        ku, vu = scaled_kv(prompt, layer, uncond, kv, head_dim)
        return torch.stack((kc, ku)), torch.stack((vc, vu))

    @staticmethod
    def _batch_rows(prompt, chunks, batch, frames=None):
        """Per batch row: (its row of the prompt's (2, R) K/V table, or its cond/uncond kind; frame weight or None)."""
        rows = []
        for chunk in chunks:
            kind = 1 if chunk == 1 else 0
            for frame in chunk_frames(batch, chunks, frames):
                row = kind * prompt.references + frame_entry(frame, prompt.references) if prompt.unfold_batch \
                    else kind
                weights = prompt.frame_weights
                rows.append((row, None if weights is None else weights[frame_entry(frame, len(weights))]))
        return rows

    def _resized_masks(self, i, prompt, layout, device, dtype):
        key = (i, layout, device, dtype)
        hit = self._masks.get(key)
        if hit is None:
            hit = layout_masks(prompt.masks.to(device, torch.float32), layout).to(dtype)
            self._masks[key] = hit
        return hit

    def _fused_groups(self, layer, q_heads, call, only=None):
        """The layer's _FusedGroups for this batch layout (cached: built on the first call only)."""
        batch, heads, tokens, head_dim = q_heads.shape
        layout = call.layout if layer in self._masked_layers else None
        key = (layer, q_heads.device, q_heads.dtype, heads, head_dim, call.chunks, batch, tokens if layout else None,
               layout, only)
        if call.frames is not None:
            # context windows: one entry per layer layout holding the latest window, so that the cache stays the
            # size of one batch however many windows the animation has (each new window rebuilds it once)
            frames, hit = self._windowed.get(key, (None, None))
            if frames != call.frames:
                self._windowed.pop(key, None)  # the old window's tables go before the new ones are made
                hit = self._build_groups(layer, q_heads, call.chunks, layout, only, call.frames)
                self._windowed[key] = (call.frames, hit)
            return hit
        hit = self._fused.get(key)
        if hit is None:
            hit = self._build_groups(layer, q_heads, call.chunks, layout, only)
            self._fused[key] = hit
        return hit

    def _build_groups(self, layer, q_heads, chunks, layout, only=None, frames=None):
        """One _FusedGroup per image token count: K/V projected here, each distinct batch row's table made once."""
        batch, heads, tokens, head_dim = q_heads.shape
        by_tokens = {}  # T -> [(prompt index, per batch row (table row, frame weight))]
        for i, prompt in enumerate(self.prompts):
            if layer not in self._active[i] or (only is not None and i not in only):
                continue
            by_tokens.setdefault(prompt.cond.shape[1], []).append((i, self._batch_rows(prompt, chunks, batch, frames)))
        return tuple(self._build_group(layer, q_heads, count, members, layout)
                     for count, members in by_tokens.items())

    def _build_group(self, layer, q_heads, count, members, layout):
        batch, heads, tokens, head_dim = q_heads.shape
        device, dtype = q_heads.device, q_heads.dtype
        signatures = [tuple(rows[b] for _, rows in members) for b in range(batch)]
        distinct = list(dict.fromkeys(signatures))  # batch rows that see the same K/V share one table row
        row_of = tuple(distinct.index(s) for s in signatures)
        keys, values, masks, gates = [], [], [], []
        for m, (i, _) in enumerate(members):
            prompt = self.prompts[i]
            k, v = self._layer_kv(prompt, layer, device, dtype, head_dim)
            picked = [signature[m][0] for signature in distinct]
            if prompt.unfold_batch:  # one reference per latent
                k, v = k.flatten(0, 1)[picked].unsqueeze(1), v.flatten(0, 1)[picked].unsqueeze(1)
            else:  # every reference for every latent, one softmax each
                k, v = k[picked], v[picked]
            if prompt.frame_weights is not None:  # per-latent weight: static for this batch layout, so into V
                v = v * torch.tensor([signature[m][1] for signature in distinct], device=device,
                                     dtype=dtype).view(-1, 1, 1, 1)
            keys.append(k)
            values.append(v)
            gates.append((prompt.sigma_range, k.shape[1]))
            masks.append(self._unit_masks(prompt, layout, device, distinct, m, k.shape[1]))
        k, v = torch.cat(keys, dim=1), torch.cat(values, dim=1)  # (D, U, T, C)
        rows, units = k.shape[:2]
        # contiguous per head (the projection's (rows, U*T, C) layout would be a strided view): dense matrices let
        # torch run each product over the heads as one batched BLAS call instead of one call per head
        k = (k * head_dim ** -0.5).view(rows, units * count, heads, head_dim).transpose(1, 2).contiguous()
        v = v.reshape(rows, units * count, heads, head_dim).transpose(1, 2).contiguous()
        table, mask_of = None, None
        if any(mk is not None for mk in masks):
            mask_rows = max(mk.shape[0] for mk in masks if mk is not None)  # rows when some masked prompt unfolds
            table = torch.cat([(torch.ones(1, tokens, n, device=device) if mk is None else mk).expand(mask_rows, -1, -1)
                               for mk, (_, n) in zip(masks, gates)], dim=-1)  # (M, N, U)
            mask_of = row_of if mask_rows > 1 else (0,) * batch
            table = (table.transpose(1, 2).unsqueeze(2) if count < UNIT_LAYOUT_BELOW else
                     table.view(mask_rows, 1, tokens, units, 1)).contiguous()
        gated = tuple(gates) if any(r is not None for r, _ in gates) else None
        return _FusedGroup(count, units, heads, k, v, table, row_of, gated, tuple(k[r] for r in row_of),
                           tuple(v[r] for r in row_of), None if table is None else tuple(table[r] for r in mask_of))

    def _unit_masks(self, prompt, layout, device, distinct, m, units):
        """(M, N, units) float32 masks of one member per table row (M = 1 when they are the same for all), or None."""
        if prompt.masks is None or prompt.projection != "none":  # PuLID masks its joined term instead
            return None
        resized = layout_masks(prompt.masks.to(device, torch.float32), layout)  # (R, N)
        if prompt.unfold_batch:
            return resized[[signature[m][0] % prompt.references for signature in distinct]].unsqueeze(-1)
        return resized.t().unsqueeze(0)

    def _add_group(self, out_heads, q_heads, group, sigmas):
        """out_heads += the group's image attention, on strided per-head views of q and the output."""
        batch, heads, tokens, head_dim = q_heads.shape
        units, count = group.units, group.tokens
        gate = None
        if group.gates is not None:  # start/end: a 0/1 gate per batch row and prompt, folded into V
            gate = torch.cat([sigma_gate(sigma_range, sigmas, batch, group.v.device, group.v.dtype).view(batch, 1)
                              .expand(batch, n) for sigma_range, n in group.gates], dim=1)
        in_place = not (q_heads.requires_grad and torch.is_grad_enabled())  # autograd needs the probabilities kept
        if tokens < ROWS_TOGETHER_BELOW and in_place:
            self._add_group_rows_together(out_heads, q_heads, group, gate)
            return
        unit_layout = group.unit_layout
        # per batch row (heads, head_dim, N) or (heads, N, head_dim) views of q
        q_rows = (q_heads.transpose(2, 3) if unit_layout else q_heads).unbind(0)
        cast = out_heads.dtype != torch.float32
        for b in range(batch):
            k, v = group.k_rows[b], group.v_rows[b]  # (heads, U*T, head_dim)
            if gate is not None:
                v = (v.view(heads, units, count, head_dim) * gate[b].view(1, units, 1, 1)).view(heads, -1, head_dim)
            masks = None if group.mask_rows is None else group.mask_rows[b]
            if unit_layout:
                scores = torch.bmm(k, q_rows[b])  # (heads, U*T, N)
                probs = _unit_softmax(scores.view(heads, units, count, tokens), masks, in_place)
                probs = probs.view(heads, units * count, tokens).transpose(1, 2)
            else:
                scores = torch.bmm(q_rows[b], k.transpose(1, 2))  # (heads, N, U*T)
                probs = _group_softmax(scores.view(heads, tokens, units, count))
                if masks is not None:
                    probs = probs.mul_(masks) if in_place else probs * masks
                probs = probs.view(heads, tokens, units * count)
            out_heads[b].baddbmm_(probs.to(out_heads.dtype) if cast else probs, v)  # unbind's views refuse in-place

    @staticmethod
    def _add_group_rows_together(out_heads, q_heads, group, gate):
        """_add_group for few queries (where per-op costs outweigh the work): every batch row's scores in one buffer,
        one softmax and mask product, and one output product for the whole batch."""
        batch, heads, tokens, head_dim = q_heads.shape
        units, count = group.units, group.tokens
        together = group.k.shape[0] == batch  # every batch row has its own table row, in order: no gathering
        k = group.k if together else torch.stack(group.k_rows)  # (B, heads, U*T, head_dim)
        v = group.v if together else torch.stack(group.v_rows)
        if gate is not None:
            v = v.view(batch, heads, units, count, head_dim) * gate.view(batch, 1, units, 1, 1)
        if group.unit_layout:
            scores = torch.empty(batch, heads, units * count, tokens, device=q_heads.device, dtype=q_heads.dtype)
            for row, k_row, q_row in zip(scores.unbind(0), k.unbind(0), q_heads.transpose(2, 3).unbind(0)):
                torch.bmm(k_row, q_row, out=row)
            probs = _unit_softmax(scores.view(batch * heads, units, count, tokens), None)
        else:
            scores = torch.empty(batch, heads, tokens, units * count, device=q_heads.device, dtype=q_heads.dtype)
            for row, k_row, q_row in zip(scores.unbind(0), k.unbind(0), q_heads.unbind(0)):
                torch.bmm(q_row, k_row.transpose(1, 2), out=row)
            probs = _group_softmax(scores.view(batch, heads, tokens, units, count))
        if group.mask_rows is not None:  # one row broadcasts over the batch; several are stacked per batch row
            per_row = group.masks.shape[0] > 1
            masks = torch.stack(group.mask_rows) if per_row else group.mask_rows[0]
            grid = (units, count, tokens) if group.unit_layout else (tokens, units, count)
            probs.view(batch, heads, *grid).mul_(masks.unsqueeze(1) if per_row and group.unit_layout else masks)
        probs = probs.view(batch * heads, units * count, tokens).transpose(1, 2) if group.unit_layout \
            else probs.view(batch * heads, tokens, units * count)
        if probs.dtype != v.dtype:
            probs = probs.to(v.dtype)
        v = v.reshape(batch * heads, units * count, head_dim)
        if out_heads.is_contiguous():  # the attention's own per-head output: one batched accumulating product
            out_heads.view(batch * heads, tokens, head_dim).baddbmm_(probs, v)
        else:
            out_heads.add_(torch.bmm(probs, v).view(batch, heads, tokens, head_dim))


def takes_keyword(function, name):
    """Whether function accepts the keyword argument name (by name or through **kwargs)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class IPAdapterPatch(ImageAttention):
    """attn2 replacement (UNet families): `attention(q, k, v) + sum over prompts of the image attention`."""

    def __init__(self, arch, prompts, attention, base_patches=None, models=()):
        from .families import get as family  # noqa: PLC0415  (families import this module)

        super().__init__(prompts, models)
        self.arch = arch
        self.attention = attention
        self.base_patches = dict(base_patches or {})  # foreign attn2 patches this one wraps, per key
        self._layer_of = {key: i for i, key in enumerate(family(arch).keys())}
        self._layouts = {}
        self._per_head_output = takes_keyword(attention, "skip_output_reshape")

    def keys(self):
        """The attn2 keys this patch must be installed on."""
        layers = self.active_layers()
        return [key for key, layer in self._layer_of.items() if layer in layers]

    def extended(self, prompts, models=(), base_patches=None):
        """A new patch with more prompts and foreign patches to wrap (this one is left as it is)."""
        return IPAdapterPatch(self.arch, self.prompts + tuple(prompts), self.attention,
                              {**self.base_patches, **(base_patches or {})},
                              self._models + tuple(m for m in models if m not in self._models))

    def add(self, callback, **kwargs):
        """IPAdapter_plus stacks onto a taken key by changing the patch there in place: refused, saying what works."""
        raise IncompatibleModelError(
            "a ComfyUI_IPAdapter_plus node tried to add its adapter to IPAdapter Kit's patch on the same attention "
            "(on SDXL both packs use the same keys) because it runs after IPAdapter Kit's Apply on this MODEL. "
            "IPAdapter Kit's patch is shared with the MODEL it was applied to, so it is never changed in place. "
            "Connect the IPAdapter_plus node before IPAdapter Kit's Apply (then both adapters apply), or apply both "
            "adapters with IPAdapter Kit.")

    def inner_patch(self, key, extra_options):
        """Another pack's patch to run as this key's attention, or None: the one we replaced at this exact key, else
        the (block, id) patch our (block, id, index) key shadows, whether registered before or after ours."""
        exact = self.base_patches.get(key)
        if exact is not None:
            return exact
        table = extra_options.get(ATTN2_TABLE_KEY)
        if table is None:  # run without the model wrapper: the (block, id) patches seen at install time
            return self.base_patches.get(key[:2])
        shorter = table.get(key[:2])
        return None if isinstance(shorter, IPAdapterPatch) else shorter

    def _unet_layout(self, original_shape, tokens):
        """TokenLayout.unet, kept per latent shape and token count (the same few on every call)."""
        key = (tuple(original_shape[-2:]), tokens)
        hit = self._layouts.get(key)
        if hit is None:
            hit = self._layouts[key] = TokenLayout.unet(original_shape, tokens)
        return hit

    def _query_call(self, q, layer, extra_options):
        """The QueryCall of this hook call and q as (B, heads, N, head_dim) strided per-head views."""
        batch, tokens, width = q.shape
        heads = extra_options["n_heads"]
        layout = self._unet_layout(extra_options["original_shape"], tokens) if self.masked(layer) else None
        chunks = tuple(extra_options.get("cond_or_uncond", [0]))
        frames = frame_indices(extra_options, batch, chunks) if self.framed else None
        call = QueryCall(heads, chunks, extra_options.get("sigmas"), layout, frames)
        return call, q.reshape(batch, tokens, heads, width // heads).transpose(1, 2)

    def __call__(self, q, k, v, extra_options):
        key = (extra_options["block"][0], extra_options["block"][1], extra_options.get("block_index", 0))
        base = self.inner_patch(key, extra_options)
        layer = self._layer_of.get(key)
        active = layer is not None and layer in self.active_layers()
        if base is not None:
            out = base(q, k, v, extra_options)
        elif active and self._per_head_output and not self._projected:
            # ComfyUI's attention functions can leave their output per head, (B, heads, N, head_dim) contiguous: the
            # image term then accumulates with one batched product (a strided output takes one per head), and the
            # transpose they would have made is made after it
            out = self.attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                 transformer_options=extra_options, skip_output_reshape=True)
            if out.ndim == 4 and out.dtype == q.dtype and not out.requires_grad:
                call, q_heads = self._query_call(q, layer, extra_options)
                self.add_image_attention(out, q_heads, layer, call)
                return out.transpose(1, 2).reshape(q.shape)
            if out.ndim == 4:  # an output we must not change in place (autograd)
                out = out.transpose(1, 2).reshape(q.shape)
        else:
            out = self.attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                 transformer_options=extra_options)
        if not active:
            return out
        batch, tokens, width = q.shape
        heads = extra_options["n_heads"]
        call, q_heads = self._query_call(q, layer, extra_options)
        projected = self.projected_terms(out, q_heads, layer, call) if self._projected else []
        # accumulate in place into the attention output we just made; a foreign patch's output (which it might
        # keep) or an odd one gets the image term added as a separate tensor instead
        own = base is None and out.is_contiguous() and out.dtype == q.dtype and not out.requires_grad
        image = out if own else torch.zeros(q.shape, device=q.device, dtype=q.dtype)
        added = self.add_image_attention(image.view(batch, tokens, heads, -1).transpose(1, 2), q_heads, layer, call)
        out = out if own or not added else out + image
        return sum(projected, out) if projected else out
