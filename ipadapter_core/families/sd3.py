"""SD3.5 Large (InstantX SD3.5-Large-IP-Adapter): ComfyUI's MMDiT, an adapter layer on each of its 38 joint blocks.

The image term is no small decoupled attention: per block, the block's own image queries attend over the block's
image keys and values joined with the adapter's keys and values of the step's image tokens, in one softmax (the
release's processor), and the result, times the weight, joins the image half of the joint attention's output before
the block's output projection. The tokens come from a timestep-conditioned resampler (projections.TimeResampler):
computed once per model call, on the device, from the timesteps the model sees (record_step, a keyed APPLY_MODEL
wrapper that lets other wrappers run, notes them).

Hook: ComfyUI's `dit` replace ("double_block", i) on joint block i. ComfyUI does not tell an MMDiT block replace
its index, so each key gets its own small callable (JointBlockHook). The block's query and keys are read inside an
attention override scoped to that block call, where they arrive QK-normed by the block: both RMS norms have eps
1e-6, so the release's norm of the raw vector is the block's output times (release scale / block scale), exactly.
"""
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import TokenLayout, frame_entry, layout_masks, mask_grid, sigma_gate
from ..errors import InvalidInputError
from . import dit

JOINT_BLOCKS = 38  # SD3.5 Large; the only MMDiT an adapter was released for
RMS_EPS = 1e-6  # the processor's RMSNorms and the image tokens' LayerNorm
STEP_KEY = "ipadapter_kit.sd3_step"  # transformer_options entry written by record_step
BLOCK_WEIGHTS_EXAMPLE = "0:1.0, 1:1.0, 20:0.5"


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

    def image_kv(self, tokens, t_emb, heads):
        """The image tokens' keys (normed) and values (B, heads, T, head_dim) at t_emb (B, D)."""
        normed = self.norm_ip(tokens, t_emb)
        split = (lambda x: x.unflatten(-1, (heads, -1)).transpose(1, 2))
        return self.norm_ip_k(split(self.to_k_ip(normed))), split(self.to_v_ip(normed))

    def image_term(self, q, k, v, tokens, t_emb):
        """(B, N, width): raw image q, k, v (B, heads, N, head_dim) and image tokens (B, T, width) at t_emb (B, D)."""
        ip_k, ip_v = self.image_kv(tokens, t_emb, q.shape[1])
        return joint_image_attention(self.norm_q(q), self.norm_k(k), v, ip_k, ip_v).transpose(1, 2).flatten(2)


def joint_image_attention(q, k, v, ip_k, ip_v):
    """One softmax of the image queries over the block's image keys and the adapter's keys (all normed)."""
    return F.scaled_dot_product_attention(q, torch.cat((k, ip_k.to(k.dtype)), dim=2),
                                          torch.cat((v, ip_v.to(v.dtype)), dim=2))


@dataclass
class StepState:
    """What one model call tells the joint-block hooks: its timesteps, its latent size, and the tokens made from
    them (filled by the first block that needs them, so the resampler runs once per call)."""

    timesteps: torch.Tensor  # (B,) as the model sees them (1000 x sigma)
    latent: tuple  # (h, w) of the latent
    tokens: dict = field(default_factory=dict)


def record_step(executor, x, sigma, *args, **kwargs):
    """APPLY_MODEL wrapper (ComfyUI's MMDiT runs no DIFFUSION_MODEL wrappers): note this call's timesteps, as the
    model computes them from sigma, and its latent size for the joint-block hooks."""
    options = kwargs.get("transformer_options", args[3] if len(args) > 3 else None)
    if isinstance(options, dict):
        timesteps = executor.class_obj.model_sampling.timestep(sigma).float()
        options[STEP_KEY] = StepState(timesteps, tuple(x.shape[-2:]))
    return executor(x, sigma, *args, **kwargs)


class SD3Family:
    name = "SD3.5"
    hook = "dit"
    example_adapter = "InstantX SD3.5-Large-IP-Adapter ip-adapter.bin"
    adapter_layer_counts = (JOINT_BLOCKS,)
    wrapper_type = "apply_model"  # ComfyUI's WrappersMP.APPLY_MODEL
    model_wrapper = staticmethod(record_step)

    def keys(self):
        """dit keys of the joint blocks, in adapter layer order."""
        return [("double_block", i) for i in range(JOINT_BLOCKS)]

    @staticmethod
    def _blocks(diffusion_model):
        blocks = getattr(diffusion_model, "joint_blocks", None)
        return None if blocks is None or not hasattr(diffusion_model, "x_embedder") else blocks

    @staticmethod
    def _rms_qk(block):
        x_block = block.x_block
        return type(x_block.attn.ln_q).__name__ == "RMSNorm" and not getattr(x_block, "x_block_self_attn", False)

    def matches(self, diffusion_model):
        blocks = self._blocks(diffusion_model)
        return blocks is not None and len(blocks) == JOINT_BLOCKS and self._rms_qk(blocks[0])

    def mismatch(self, diffusion_model):
        blocks = self._blocks(diffusion_model)
        if blocks is None:
            return "an MMDiT (this model has no joint blocks)"
        if len(blocks) == JOINT_BLOCKS:
            return "SD3.5 Large joint blocks with RMS QK-norm (this MMDiT's blocks differ: SD3 / SD3.5 Medium?)"
        return f"an MMDiT with {JOINT_BLOCKS} joint blocks, SD3.5 Large (this model has {len(blocks)})"

    def context_dim(self, diffusion_model):
        """Width of the image tokens the adapter must produce: the joint blocks' hidden size."""
        return diffusion_model.joint_blocks[0].x_block.attn.qkv.in_features

    def block_width(self, diffusion_model):
        return self.context_dim(diffusion_model)

    def layer_weights(self, weight_type, weight, weight_composition=None, layers=JOINT_BLOCKS):
        return dit.layer_weights(self, weight_type, weight, layers, BLOCK_WEIGHTS_EXAMPLE)

    def inverted_layers(self, weight_type):
        return frozenset()

    def parse_block_weights(self, text):
        """Per-layer weights from '<i>:<w>' (joint block i; '*:<w>' for all); others are 0."""
        return dit.parse_block_weights(self, text, {"": ("joint block", JOINT_BLOCKS, 0)}, BLOCK_WEIGHTS_EXAMPLE)

    def make_patch(self, prompts, diffusion_model, base_patches, models, **host):
        return JointBlockPatch(prompts, diffusion_model, base_patches, models)

    def owner(self, installed):
        """Our patch behind an installed dit replace, or None for another pack's."""
        return installed.patch if isinstance(installed, JointBlockHook) else None


SD3 = SD3Family()


class JointBlockHook:
    """The dit replace installed at one joint block's key: calls its patch with the key."""

    def __init__(self, patch, key):
        self.patch, self.key = patch, key

    def __call__(self, args, extra):
        return self.patch(self.key, args, extra)

    def models(self):
        """The adapter weights' patchers, so ComfyUI loads and offloads them with the model."""
        return self.patch.models()

    def to(self, device):
        return self

    def __deepcopy__(self, memo):
        return self  # immutable once installed; ComfyUI 0.3.x deep-copies model_options on every clone


class JointBlockPatch:
    """Every SD3.5 image prompt stacked on one model; the image term of each joint block."""

    def __init__(self, prompts, diffusion_model, base_patches=None, models=()):
        self.prompts = tuple(prompts)
        for prompt in self.prompts:
            if prompt.embeds_scaling != "V only":
                raise InvalidInputError(f"embeds_scaling {prompt.embeds_scaling!r}: the SD3.5 adapter's weight scales "
                                        "its whole image term; use 'V only' (the K/V scalings are for UNet and Flux "
                                        "adapters).")
        self.diffusion_model = diffusion_model
        self.base_patches = dict(base_patches or {})  # other packs' block replaces this one wraps, per key
        self._models = tuple(models)
        self._active = [p.active_layers() for p in self.prompts]
        self._all_active = frozenset().union(*self._active)
        self._embeds, self._rows, self._masks = {}, {}, {}

    def active_layers(self):
        return self._all_active

    def keys(self):
        return [key for key in SD3.keys() if key[1] in self._all_active]

    def replace_for(self, key):
        return JointBlockHook(self, key)

    def models(self):
        return list(self._models)

    def to(self, device):
        return self

    def __deepcopy__(self, memo):
        return self

    def extended(self, prompts, models=(), base_patches=None):
        return JointBlockPatch(self.prompts + tuple(prompts), self.diffusion_model,
                               {**self.base_patches, **(base_patches or {})},
                               self._models + tuple(m for m in models if m not in self._models))

    def __call__(self, key, args, extra):
        base = self.base_patches.get(key)
        run = (lambda a: base(a, extra)) if base is not None else extra["original_block"]
        layer = key[1]
        indices = [i for i, active in enumerate(self._active) if layer in active]
        if not indices:
            return run(args)
        options = args["transformer_options"]
        step = options.get(STEP_KEY)
        if not isinstance(step, StepState):
            raise InvalidInputError("the SD3.5 IP-Adapter found no timestep for this model call (its model wrapper "
                                    f"'{STEP_KEY}' did not run). Another node may call the model in a way this "
                                    "pack does not know; please report it with your graph.")
        call = (layer, tuple(indices), step, tuple(options.get("cond_or_uncond", [0])), options.get("sigmas"))
        return run(dict(args, transformer_options=self.attention_override(options, args["txt"].shape[1], call)))

    def attention_override(self, options, text, call):
        """A copy of transformer_options whose first attention (the joint one) gets the image term added."""
        previous = options.get("optimized_attention_override")
        done = []

        def attend(func, *args, **kwargs):
            out = previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)
            if not done:
                done.append(True)
                heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
                q, k, v = args[:3]
                if kwargs.get("skip_reshape") or heads is None or q.ndim != 3 or out.ndim != 3 or \
                        out.shape[:2] != q.shape[:2] or out.shape[1] <= text:
                    raise InvalidInputError(
                        f"the SD3.5 joint attention was called with q {tuple(q.shape)} and returned "
                        f"{tuple(out.shape)}; expected (batch, text + image tokens, width) with more than {text} "
                        "tokens. This ComfyUI version changed its MMDiT attention; please report it with your "
                        "ComfyUI version.")
                split = (lambda t: t.reshape(q.shape[0], q.shape[1], heads, -1)[:, text:].transpose(1, 2))
                image = out[:, text:]
                self.add_image_terms(image.view(*image.shape[:2], heads, -1), split(q), split(k), split(v), *call)
            return out

        return dict(options, optimized_attention_override=attend)

    def add_image_terms(self, out, q, k, v, layer, indices, step, chunks, sigmas):
        """out (B, N, heads, head_dim) += the weighted image terms of the prompts on this block, from the block's
        QK-normed q, k and its v (B, heads, N, head_dim)."""
        batch, heads, tokens, head_dim = q.shape
        attn = self.diffusion_model.joint_blocks[layer].x_block.attn
        block_q = attn.ln_q.weight.to(q.device, torch.float32)
        block_k = attn.ln_k.weight.to(q.device, torch.float32)
        for i in indices:
            prompt = self.prompts[i]
            adapter = prompt.weights.ip_adapter[str(layer)]
            # scores use q.(k * rk) = (q * rk).k: one rescaled copy of q, none of k; the adapter's keys get 1 / rk
            rq = adapter.norm_q.weight.to(q.device, torch.float32) / block_q
            rk = adapter.norm_k.weight.to(q.device, torch.float32) / block_k
            qn = q * (rq * rk).to(q.dtype)
            key_scale = torch.where(rk == 0, torch.ones_like(rk), rk)  # rk_d = 0: q's channel d is 0 anyway
            gate = sigma_gate(prompt.sigma_range, sigmas, batch, q.device, torch.float32)
            for unit_tokens, t_emb, scale, mask in self.step_units(i, step, chunks, batch, tokens):
                ip_k, ip_v = adapter.image_kv(unit_tokens, t_emb, heads)
                ip_k = (ip_k.to(q.device, torch.float32) / key_scale).to(q.dtype)
                term = joint_image_attention(qn, k, v, ip_k, ip_v.to(q.device, q.dtype))  # (B, heads, N, d)
                factor = (prompt.layer_weights[layer] * scale.to(q.device) * gate).view(batch, 1, 1, 1)
                if mask is not None:
                    factor = factor * mask.to(q.device).view(mask.shape[0], 1, tokens, 1)
                out += term.mul_(factor.to(term.dtype)).transpose(1, 2).to(out.dtype)

    def step_units(self, i, step, chunks, batch, tokens):
        """[(tokens (B, T, width), t_emb (B, D), scale (B,), mask (B or 1, N) or None)] of prompt i in this call:
        one per reference, or one for all (concat; unfold_batch: reference per latent). Cached for the call."""
        prompt = self.prompts[i]
        hit = step.tokens.get(prompt)
        if hit is not None:
            return hit
        projection = prompt.weights.image_proj
        device = projection.latents.device
        embeds = self._embeds.get((i, device))
        if embeds is None:  # (2R, T, E): cond rows, then uncond rows
            embeds = torch.cat((prompt.cond, prompt.uncond)).to(device, projection.latents.dtype)
            self._embeds[(i, device)] = embeds
        rows, frames = self._row_index(prompt, chunks, batch, device)
        timesteps = step.timesteps.to(device).expand(batch) if step.timesteps.numel() == 1 else \
            step.timesteps.to(device)
        out, t_emb = projection(embeds[rows.flatten()], timesteps.repeat(rows.shape[0]))
        out = out.unflatten(0, rows.shape)  # (units or references, B, T, width)
        t_emb = t_emb[:batch]
        ref_weights = torch.tensor(prompt.ref_weights, device=device)
        frame_weights = torch.ones(batch, device=device) if prompt.frame_weights is None else torch.tensor(
            [prompt.frame_weights[frame_entry(f, len(prompt.frame_weights))] for f in frames], device=device)
        masks = None if prompt.masks is None else self._resized_masks(i, prompt, step, tokens, device)
        if prompt.unfold_batch:
            refs = torch.tensor([f % prompt.cond.shape[0] for f in frames], device=device)
            units = [(out[0], ref_weights[refs] * frame_weights, None if masks is None else masks[refs])]
        elif prompt.joined:
            units = [(torch.cat(tuple(out), dim=1), ref_weights[0] * frame_weights, None if masks is None else
                      masks[:1])]
        else:
            units = [(out[r], ref_weights[r] * frame_weights, None if masks is None else masks[r:r + 1])
                     for r in range(out.shape[0])]
        hit = [(t, t_emb, s, m) for t, s, m in units]
        step.tokens[prompt] = hit
        return hit

    def _row_index(self, prompt, chunks, batch, device):
        """(units, B) rows of the embeds table each latent reads, and each latent's frame within its chunk."""
        key = (prompt, chunks, batch, device)
        hit = self._rows.get(key)
        if hit is None:
            per_chunk = batch // len(chunks)
            kinds = [1 if chunk == 1 else 0 for chunk in chunks for _ in range(per_chunk)]
            frames = [frame for _ in chunks for frame in range(per_chunk)]
            references = prompt.cond.shape[0]
            if prompt.unfold_batch:
                rows = [[kind * references + frame_entry(frame, references) for kind, frame in zip(kinds, frames)]]
            else:
                rows = [[kind * references + r for kind in kinds] for r in range(references)]
            hit = torch.tensor(rows, device=device), frames
            self._rows[key] = hit
        return hit

    def _resized_masks(self, i, prompt, step, tokens, device):
        """Masks (R, N) on the latent's token grid."""
        h, w = mask_grid(step.latent, tokens)
        key = (i, h, w, tokens, device)
        hit = self._masks.get(key)
        if hit is None:
            hit = layout_masks(prompt.masks.to(device, torch.float32), TokenLayout(0, h, w, tokens))
            self._masks[key] = hit
        return hit
