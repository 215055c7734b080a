"""Putting an image prompt on a MODEL clone (ComfyUI side of ipadapter_core.attention)."""

import dataclasses

import torch

import comfy.ldm.modules.attention
import comfy.model_management

from ..ipadapter_core import embeds as core_embeds
from ..ipadapter_core import weight_types
from ..ipadapter_core.attention import ImagePrompt, IPAdapterPatch
from ..ipadapter_core.errors import IncompatibleModelError, InvalidInputError


def model_arch(model):
    """'SD1.5' / 'SDXL' from the number of cross-attention layers of a MODEL, with its context width."""
    unet = model.model.diffusion_model
    layers = sum(1 for name, _ in unet.named_modules() if name.endswith(".attn2"))
    context = model.model.model_config.unet_config.get("context_dim")
    arch = {16: "SD1.5", 70: "SDXL"}.get(layers)
    if arch is None:
        raise IncompatibleModelError(
            f"this model has {layers} UNet cross-attention layers ({type(model.model).__name__}); IP-Adapter works on "
            "SD1.5 (16) and SDXL (70) UNets here. Use an SD1.5 or SDXL checkpoint.")
    return arch, context


def check_model(model, adapter):
    """Raise IncompatibleModelError for an adapter of another family than the model."""
    arch, context = model_arch(model)
    spec = adapter.spec
    if spec.arch != arch or spec.cross_dim != context:
        raise IncompatibleModelError(
            f"{adapter.name} is an {spec.arch} adapter (context width {spec.cross_dim}) but the model is {arch} "
            f"(context width {context}). Use the {arch} version of this adapter (e.g. "
            f"{'ip-adapter_sdxl_vit-h' if arch == 'SDXL' else 'ip-adapter_sd15'}) or an {spec.arch} checkpoint.")
    return arch


def parse_number_list(text, what, count):
    """'1, 0.5' -> [1.0, 0.5], broadcast from one value; errors name the input."""
    text = (text or "").strip()
    if not text:
        return [1.0] * count
    try:
        values = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError(f"{what}: '{text}' is not a comma-separated list of numbers (e.g. '1.0, 0.5').")
    if not all(torch.isfinite(torch.tensor(values))):
        raise InvalidInputError(f"{what}: '{text}' contains a non-finite number.")
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InvalidInputError(f"{what}: {len(values)} values for {count} references; give one value per reference "
                                "image, or a single value for all.")
    return values


SEPARATE_HINT = ("Give one mask (shared), or one per reference image with combine_embeds 'separate' (other combine "
                 "modes merge the references into one).")


def prepare_masks(attn_mask, count, what="attn_mask", hint=SEPARATE_HINT):
    """MASK (H, W) or (B, H, W) -> (count, H, W) floats; a single mask is shared by all."""
    if attn_mask is None:
        return None
    mask = attn_mask if attn_mask.ndim == 3 else attn_mask.unsqueeze(0)
    if mask.ndim != 3 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise InvalidInputError(f"{what}: expected a MASK (H, W) or (B, H, W), got {tuple(attn_mask.shape)}.")
    if not torch.isfinite(mask).all():
        raise InvalidInputError(f"{what} contains NaN or infinite values; expected values from 0 to 1.")
    if mask.shape[0] == 1:
        return mask.expand(count, -1, -1).float()
    if mask.shape[0] != count:
        raise InvalidInputError(f"{what}: {mask.shape[0]} masks for {count} references. {hint}")
    return mask.float()


def layer_weights(arch, weight, weight_type, weight_composition, block_weights):
    """Per-layer weights: free per-block weights (scaled by weight) when given, else the weight type."""
    if block_weights and block_weights.strip():
        table = weight_types.parse_block_weights(block_weights, arch)
        return tuple(weight * table[i] for i in range(len(table)))
    return tuple(weight_types.layer_weights(weight_type, arch, weight, weight_composition))


def sigma_range(model, start_at, end_at):
    """(sigma_start, sigma_end) for the schedule fractions, or None when the prompt covers all of it."""
    if start_at <= 0.0 and end_at >= 1.0:
        return None
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_at)), float(sampling.percent_to_sigma(end_at))


def install(model, adapter, prompt, arch):
    """A clone of model with prompt added to its IP-Adapter patch (other packs' attn2 patches wrapped)."""
    clone = model.clone()
    if not prompt.active_layers():
        return clone
    existing = clone.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    ours = next((p for p in existing.values() if isinstance(p, IPAdapterPatch)), None)
    foreign = {key: p for key, p in existing.items() if not isinstance(p, IPAdapterPatch)}
    if ours is None:
        patch = IPAdapterPatch(arch, [prompt], comfy.ldm.modules.attention.optimized_attention, foreign,
                               models=[adapter.patcher])
    else:
        patch = ours.extended([prompt], models=[adapter.patcher], base_patches=foreign)
    for block, number, index in patch.keys():
        clone.set_model_attn2_replace(patch, block, number, index)
    return clone


def _parts(embeds):
    return embeds if isinstance(embeds, tuple) else (embeds,)


def project_tokens(adapter, cond, uncond, combine, projector):
    """Image tokens for positive and negative embeds, computed where ComfyUI keeps the adapter."""
    comfy.model_management.load_model_gpu(adapter.patcher)
    device = adapter.patcher.load_device
    dtype = next(adapter.weights.parameters()).dtype

    def run(embeds):
        parts = [None if p is None else p.to(device, dtype) for p in _parts(embeds)]
        return projector(adapter.weights, *parts, combine)

    return run(cond), run(uncond)


def combine_references(cond, uncond, combine):
    """Combine each part of the positive embeds; the negative keeps one row per resulting reference."""
    cond = tuple(None if p is None else core_embeds.combine(p, combine) for p in _parts(cond))
    count = cond[0].shape[0]
    uncond = tuple(None if p is None else (p if p.shape[0] == count else p[:1].expand(count, *p.shape[1:]))
                   for p in _parts(uncond))
    return cond, uncond


def apply_embeds(model, adapter, cond, uncond, weight=1.0, weight_type="linear", weight_composition=None,
                 block_weights="", start_at=0.0, end_at=1.0, combine="concat", embeds_scaling="V only",
                 reference_weights="", attn_mask=None, unfold_batch=False, frame_weights=None,
                 projector=core_embeds.project):
    """Patched clone of model for embeds cond/uncond: (R, ...) tensors, or tuples of them (FaceID parts)."""
    arch = check_model(model, adapter)
    if not isinstance(cond, tuple):
        core_embeds.check_encoder(adapter.spec, cond, adapter.name)
        core_embeds.check_encoder(adapter.spec, uncond, adapter.name)
    for what, embeds in (("embeds", cond), ("negative embeds", uncond)):
        if any(p is not None and not torch.isfinite(p).all() for p in _parts(embeds)):
            raise InvalidInputError(f"the {what} contain NaN or infinite values; expected finite encoder outputs. "
                                    "Encode the references again, or check the node that produced these embeds.")
    if end_at <= start_at:
        return model.clone()
    if unfold_batch:
        combine = "separate"  # one reference per latent frame
    cond, uncond = combine_references(cond, uncond, combine)
    cond_tokens, uncond_tokens = project_tokens(adapter, cond, uncond, combine, projector)
    references = cond_tokens.shape[0]
    prompt = ImagePrompt(
        weights=adapter.weights, cond=cond_tokens, uncond=uncond_tokens,
        layer_weights=layer_weights(arch, weight, weight_type, weight_composition, block_weights),
        ref_weights=tuple(parse_number_list(reference_weights, "reference_weights", references)),
        masks=prepare_masks(attn_mask, references),
        inverted_layers=frozenset() if block_weights.strip() else weight_types.inverted_layers(weight_type, arch),
        embeds_scaling=embeds_scaling, sigma_range=sigma_range(model, start_at, end_at), unfold_batch=unfold_batch,
        frame_weights=None if frame_weights is None else tuple(float(w) for w in frame_weights))
    return install(model, adapter, prompt, arch)


@dataclasses.dataclass(frozen=True)
class EncodedReferences:
    """Encoder outputs of references (R, ...) and their negatives, as the Encode node hands them on."""

    cond: torch.Tensor
    uncond: torch.Tensor
    clip_output: str = ""  # which CLIP-vision output these are (image_embeds / penultimate_hidden_states)
