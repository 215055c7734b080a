"""Flux.1 (dev, schnell, Kontext): ComfyUI's Flux DiT, adapters on its 19 double and 38 single blocks.

Hook: ComfyUI's `dit` block replace. Before a block runs, the image query is taken from the block's own
modules (its modulation, pre-norm, the query rows of its qkv projection and its QK-norm: the query the block's
attention uses, before RoPE); the image attention is computed from it and enters either
- at the attention output (InstantX), through an attention override scoped to this block call, so the block's
  output projection, gate and MLP see it as in the release; or
- after the block, added to the image stream (XLabs).
Only the generated image's tokens are steered (Kontext reference tokens are not), plus the text tokens where a
release steers them (InstantX's single blocks).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ..attention import ImageAttention, QueryCall, TokenLayout, layout_masks, sigma_gate
from ..errors import InvalidInputError
from . import dit

DOUBLE_BLOCKS, SINGLE_BLOCKS = 19, 38
LATENT_KEY = "ipadapter_kit.flux_latent"  # transformer_options entry written by record_latent
BLOCK_WEIGHTS_EXAMPLE = "d0:1.0, d1:1.0, s10:0.5"


def default_linear_rows(linear, x, start, stop):
    """x @ W[start:stop].T + b[start:stop]: a slice of a Linear's outputs, without the other rows."""
    bias = None if linear.bias is None else linear.bias[start:stop]
    return F.linear(x, linear.weight[start:stop], bias)


def record_latent(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: note the latent's size and reference latents' sizes for the block hooks."""
    x = args[0]
    refs = args[5] if len(args) > 5 else kwargs.get("ref_latents")
    options = args[7] if len(args) > 7 else kwargs.get("transformer_options")
    if isinstance(options, dict):
        options[LATENT_KEY] = (tuple(x.shape[-2:]), tuple(tuple(r.shape[-2:]) for r in refs or ()))
    return executor(*args, **kwargs)


class FluxFamily:
    name = "Flux"
    hook = "dit"
    wrapper_type = "diffusion_model"  # ComfyUI's WrappersMP.DIFFUSION_MODEL
    model_wrapper = staticmethod(record_latent)
    example_adapter = "XLabs flux-ip-adapter or InstantX FLUX.1-dev ip-adapter.bin"
    adapter_layer_counts = (DOUBLE_BLOCKS, DOUBLE_BLOCKS + SINGLE_BLOCKS)  # XLabs: doubles; InstantX: all

    def keys(self):
        """dit keys in adapter layer order: double blocks, then single blocks."""
        return [("double_block", i) for i in range(DOUBLE_BLOCKS)] + [("single_block", i) for i in range(SINGLE_BLOCKS)]

    @staticmethod
    def _counts(diffusion_model):
        double = getattr(diffusion_model, "double_blocks", None)
        single = getattr(diffusion_model, "single_blocks", None)
        if double is None or single is None or not hasattr(diffusion_model, "img_in"):
            return None
        return len(double), len(single), bool(len(double)) and hasattr(double[0], "img_mod")

    def matches(self, diffusion_model):
        return self._counts(diffusion_model) == (DOUBLE_BLOCKS, SINGLE_BLOCKS, True)

    def mismatch(self, diffusion_model):
        counts = self._counts(diffusion_model)
        if counts is None:
            return "a Flux DiT (this model has no double/single blocks)"
        double, single, own_modulation = counts
        if not own_modulation:
            return "Flux.1 blocks with their own modulation (this is a Chroma / Flux 2 style model)"
        return f"{DOUBLE_BLOCKS} double and {SINGLE_BLOCKS} single blocks (this model has {double} and {single})"

    def context_dim(self, diffusion_model):
        return diffusion_model.txt_in.in_features

    def block_width(self, diffusion_model):
        return diffusion_model.double_blocks[0].hidden_size

    def make_patch(self, prompts, diffusion_model, base_patches, models, linear_rows=default_linear_rows, identities=(),
                   **host):
        return FluxBlockPatch(prompts, diffusion_model, linear_rows, base_patches, models, identities)

    def owner(self, installed):
        """Our patch behind an installed dit replace, or None for another pack's."""
        return installed if isinstance(installed, FluxBlockPatch) else None

    def layer_weights(self, weight_type, weight, weight_composition=None, layers=DOUBLE_BLOCKS + SINGLE_BLOCKS):
        """Per-layer weights: the same weight everywhere, or a curve over the adapter's layers in run order."""
        return dit.layer_weights(self, weight_type, weight, layers, BLOCK_WEIGHTS_EXAMPLE)

    def inverted_layers(self, weight_type):
        return frozenset()

    def parse_block_weights(self, text):
        """Per-layer weights from 'd<i>:<w>, s<i>:<w>' (d* / s* for all double / single blocks); others are 0."""
        return dit.parse_block_weights(self, text, {"d": ("double block", DOUBLE_BLOCKS, 0),
                                                    "s": ("single block", SINGLE_BLOCKS, DOUBLE_BLOCKS)},
                                       BLOCK_WEIGHTS_EXAMPLE)


FLUX = FluxFamily()


def _latent_tokens(options, diffusion_model):
    """(generated image tokens, reference tokens, (h, w) grid of the generated image), or None if not recorded."""
    latent = options.get(LATENT_KEY)
    if latent is None:
        return None
    size = getattr(diffusion_model, "patch_size", 2)
    cells = [((h + size // 2) // size, (w + size // 2) // size) for h, w in (latent[0],) + latent[1]]
    return cells[0][0] * cells[0][1], sum(h * w for h, w in cells[1:]), cells[0]


def _aspect_grid(tokens, masks_hw):
    """A grid of `tokens` cells with the masks' aspect ratio (when the latent size was not recorded)."""
    mh, mw = masks_hw or (1, 1)
    h = max(1, round((tokens * mh / mw) ** 0.5))
    return h, max(1, tokens // h)


def pulid_ca_keys():
    """The blocks after which PuLID's cross-attentions run, in the release's order: every 2nd double block, then
    every 4th single block (20 for Flux.1)."""
    return [("double_block", i) for i in range(0, DOUBLE_BLOCKS, 2)] + \
        [("single_block", i) for i in range(0, SINGLE_BLOCKS, 4)]


@dataclass(frozen=True, eq=False)
class IdentityPrompt:
    """A PuLID-Flux identity: its cross-attentions (pulid_ca) and the identity tokens of the positive and negative."""

    weights: object  # PuLIDFluxWeights: .pulid_ca[k](id_tokens, image) -> (B, N, hidden)
    cond: torch.Tensor  # (1, T, width)
    uncond: torch.Tensor  # (1, T, width)
    weight: float = 1.0
    masks: Optional[torch.Tensor] = None  # (1, H, W)
    sigma_range: Optional[tuple] = None


class FluxBlockPatch(ImageAttention):
    """dit block replace for ("double_block", i) / ("single_block", i) of one Flux model (one object, all keys):
    IP-Adapter prompts inside the blocks, PuLID identities after the blocks that have a cross-attention."""

    def __init__(self, prompts, diffusion_model, linear_rows=default_linear_rows, base_patches=None, models=(),
                 identities=()):
        super().__init__(prompts, models)
        self.identities = tuple(identities)
        self._ca_of = {key: k for k, key in enumerate(pulid_ca_keys())}
        self._identity_tokens = {}
        self.diffusion_model = diffusion_model
        self.linear_rows = linear_rows  # the host's way to run part of a (possibly cast / patched) Linear
        self.base_patches = dict(base_patches or {})  # other packs' block replaces this one wraps, per key
        self._layer_of = {key: i for i, key in enumerate(FLUX.keys())}
        self._by_injection = {}  # where each prompt's term enters the block: prompt indices per injection point
        for i, p in enumerate(self.prompts):
            self._by_injection.setdefault(p.weights.spec.injection, set()).add(i)
        self._by_injection = {k: frozenset(v) for k, v in self._by_injection.items()}

    def keys(self):
        layers = self.active_layers()
        ca = set(self._ca_of) if self.identities else set()
        return [key for key, layer in self._layer_of.items() if layer in layers or key in ca]

    def replace_for(self, key):
        return self  # one object serves every key (Flux tells a block replace its index)

    def extended(self, prompts, models=(), base_patches=None, identities=()):
        return FluxBlockPatch(self.prompts + tuple(prompts), self.diffusion_model, self.linear_rows,
                              {**self.base_patches, **(base_patches or {})},
                              self._models + tuple(m for m in models if m not in self._models),
                              self.identities + tuple(identities))

    def __call__(self, args, extra):
        out = self._with_prompts(args, extra)
        key = (f"{args['transformer_options']['block_type']}_block", args["transformer_options"]["block_index"])
        if self.identities and key in self._ca_of:
            self.add_identities(out, key, args)
        return out

    def add_identities(self, out, key, args):
        """out["img"]'s generated-image tokens += weight x PuLID's cross-attention of the identity tokens."""
        options = args["transformer_options"]
        stream = out["img"]
        latent = _latent_tokens(options, self.diffusion_model)
        image_tokens = latent[0] if latent else stream.shape[1]
        start = 0 if key[0] == "double_block" else (stream.shape[1] - latent[0] - latent[1] if latent else 0)
        image = stream[:, start:start + image_tokens]
        chunks = tuple(options.get("cond_or_uncond", [0]))
        batch = stream.shape[0]
        terms = []  # every identity reads the block's own output, not another identity's
        for identity in self.identities:
            tokens = self._tokens_for(identity, chunks, batch, stream.device, stream.dtype)
            ca = identity.weights.pulid_ca[self._ca_of[key]]
            delta = ca(tokens.to(next(ca.parameters()).dtype), image.to(next(ca.parameters()).dtype)).to(stream.dtype)
            factor = identity.weight * sigma_gate(identity.sigma_range, options.get("sigmas"), batch, stream.device,
                                                   stream.dtype).view(batch, 1, 1)
            if identity.masks is not None:
                h, w = latent[2] if latent else _aspect_grid(image_tokens, tuple(identity.masks.shape[-2:]))
                mask = layout_masks(identity.masks.to(stream.device, torch.float32), TokenLayout(0, h, w, image_tokens))
                factor = factor * mask.to(stream.dtype).view(1, image_tokens, 1)
            terms.append(delta * factor)
        for term in terms:
            image += term

    def _tokens_for(self, identity, chunks, batch, device, dtype):
        """(B, T, width): the positive's identity tokens for cond rows, the negative's for uncond rows (cached)."""
        key = (identity, chunks, batch, device, dtype)
        hit = self._identity_tokens.get(key)
        if hit is None:
            per_chunk = batch // len(chunks)
            rows = [identity.uncond if chunk == 1 else identity.cond for chunk in chunks for _ in range(per_chunk)]
            hit = torch.cat(rows).to(device, dtype)
            self._identity_tokens[key] = hit
        return hit

    def _with_prompts(self, args, extra):
        """The block's output with the IP-Adapter prompts' terms."""
        options = args["transformer_options"]
        key = (f"{options['block_type']}_block", options["block_index"])
        base = self.base_patches.get(key)
        run = (lambda a: base(a, extra)) if base is not None else extra["original_block"]
        layer = self._layer_of.get(key)
        if layer is None or layer not in self.active_layers():
            return run(args)
        double = key[0] == "double_block"
        block = (self.diffusion_model.double_blocks if double else self.diffusion_model.single_blocks)[key[1]]
        stream = args["img"]  # double: [image, references]; single: [text, image, references]
        latent = _latent_tokens(options, self.diffusion_model)
        image_tokens = latent[0] if latent else stream.shape[1]
        if double:
            text = args["txt"].shape[1]
        else:
            text = stream.shape[1] - latent[0] - latent[1] if latent else 0
        queries, terms = {}, {}
        for injection, indices in self._by_injection.items():
            if not any(layer in self._active[i] for i in indices):
                continue
            # InstantX's single blocks steer the text tokens too (its query covers the whole stream)
            prefix = text if injection == "attention" and not double else 0
            start = 0 if double else text - prefix
            count = prefix + image_tokens
            if (start, count) not in queries:
                queries[start, count] = self.query(block, double, args["vec"], stream[:, start:start + count])
            q = queries[start, count]
            layout = None
            if self.masked(layer):
                masks_hw = next(tuple(p.masks.shape[-2:]) for p in self.prompts if p.masks is not None)
                layout = TokenLayout(prefix, *(latent[2] if latent else _aspect_grid(image_tokens, masks_hw)), count)
            call = QueryCall(q.shape[1], tuple(options.get("cond_or_uncond", [0])), options.get("sigmas"), layout)
            batch, heads, tokens, head_dim = q.shape
            image = torch.zeros(batch, tokens, heads, head_dim, device=q.device, dtype=q.dtype)
            self.add_image_attention(image.transpose(1, 2), q, layer, call, indices)
            terms[injection] = (image.flatten(2), start)
        if "attention" in terms:
            image, _ = terms["attention"]
            offset = (0 if getattr(block, "flipped_img_txt", False) else text) if double else 0
            args = dict(args, transformer_options=self.attention_override(options, image, offset))
        out = run(args)
        if "block_output" in terms:
            image, start = terms["block_output"]
            target = out["img"]
            target[:, start:start + image.shape[1]] += image.to(target.dtype)
        return out

    def query(self, block, double, vec, tokens):
        """(B, heads, N, head_dim): the block's attention query for these stream tokens, before RoPE."""
        if double:
            mod = block.img_mod(vec)[0]
            x, qkv, norm = block.img_norm1(tokens), block.img_attn.qkv, block.img_attn.norm
        else:
            mod = block.modulation(vec)[0]
            x, qkv, norm = block.pre_norm(tokens), block.linear1, block.norm
        x = torch.addcmul(mod.shift, x, 1 + mod.scale)
        heads = block.num_heads
        width = x.shape[-1]
        q = self.linear_rows(qkv, x, 0, width).view(x.shape[0], x.shape[1], heads, width // heads).transpose(1, 2)
        return norm.query_norm(q).to(q.dtype)

    @staticmethod
    def attention_override(options, image, offset):
        """A copy of transformer_options whose attention adds image (B, N, width) at tokens offset.. once."""
        previous = options.get("optimized_attention_override")
        done = []

        def add_image(func, *args, **kwargs):
            out = previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)
            if not done:
                done.append(True)
                if out.ndim != 3 or out.shape[1] < offset + image.shape[1] or out.shape[-1] != image.shape[-1]:
                    raise InvalidInputError(
                        f"the Flux attention returned {tuple(out.shape)}; expected (batch, tokens, "
                        f"{image.shape[-1]}) with at least {offset + image.shape[1]} tokens. This ComfyUI version "
                        "changed its Flux attention; please report it with your ComfyUI version.")
                out[:, offset:offset + image.shape[1]] += image.to(out.dtype)
            return out

        return dict(options, optimized_attention_override=add_image)
