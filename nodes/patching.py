"""Putting an image prompt on a MODEL clone (ComfyUI side of ipadapter_core.attention)."""

import dataclasses

import torch

import comfy.ldm.modules.attention
import comfy.model_management
import comfy.patcher_extension

from ..ipadapter_core import embeds as core_embeds
from ..ipadapter_core import families
from ..ipadapter_core.attention import ImagePrompt
from ..ipadapter_core.errors import IncompatibleModelError, InvalidInputError, counted
from . import model_cache

WRAPPER_KEY = "ipadapter_kit"


def model_family(model):
    """The family of a MODEL (families.recognise) and its text context width."""
    diffusion_model = model.model.diffusion_model
    family = families.recognise(diffusion_model)
    return family, family.context_dim(diffusion_model)


def model_arch(model):
    """(family name, context width) of a MODEL: 'SD1.5', 'SDXL', 'Flux' or 'SD3.5'."""
    family, context = model_family(model)
    return family.name, context


def check_model(model, adapter):
    """The model's family; IncompatibleModelError for an adapter of another family or context width."""
    family, context = model_family(model)
    spec = adapter.spec
    if spec.arch != family.name or spec.cross_dim != context:
        raise IncompatibleModelError(
            f"{adapter.name} is an {spec.arch} adapter (context width {spec.cross_dim}) but the model is "
            f"{family.name} (context width {context}). Use the {family.name} version of this adapter (e.g. "
            f"{family.example_adapter}) "
            f"or an {spec.arch} checkpoint." + model_cache.shadowed("ipadapter", adapter.name))
    if family.hook == "dit":
        width = family.block_width(model.model.diffusion_model)
        if width != spec.layer_widths[0]:
            raise IncompatibleModelError(f"{adapter.name} projects image K/V to width {spec.layer_widths[0]} but this "
                                         f"{family.name} model's blocks are {width} wide.")
    return family


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
        raise InvalidInputError(f"{what}: {counted(len(values), 'value')} for {counted(count, 'reference')}; give one value per reference "
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
        raise InvalidInputError(f"{what}: {counted(mask.shape[0], 'mask')} for {counted(count, 'reference')}. {hint}")
    return mask.float()


def layer_weights(family, weight, weight_type, weight_composition, block_weights, layers):
    """Per-layer weights: free per-block weights (scaled by weight) when given, else the weight type."""
    if block_weights and block_weights.strip():
        return tuple(weight * w for w in family.parse_block_weights(block_weights))
    return family.layer_weights(weight_type, weight, weight_composition, layers)


def sigma_range(model, start_at, end_at):
    """(sigma_start, sigma_end) for the schedule fractions, or None when the prompt covers all of it."""
    if start_at <= 0.0 and end_at >= 1.0:
        return None
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_at)), float(sampling.percent_to_sigma(end_at))


def linear_rows(linear, x, start, stop):
    """Rows start:stop of a ComfyUI Linear's output. Plain float weights (fp32 / fp16 / bf16 / fp8, on any device)
    are sliced and cast as ComfyUI's manual cast would; weights ComfyUI patches on the fly (low-VRAM LoRA) or stores
    scaled / quantised run the whole layer, so those stay exact."""
    weight, bias = linear.weight, linear.bias
    patched = getattr(linear, "weight_function", None) or getattr(linear, "bias_function", None)
    plain = type(weight) in (torch.Tensor, torch.nn.Parameter) and weight.is_floating_point() and \
        not hasattr(linear, "scale_weight")
    if patched or not plain:
        return linear(x)[..., start:stop]
    rows = weight[start:stop].to(x.device, x.dtype)
    return torch.nn.functional.linear(x, rows, None if bias is None else bias[start:stop].to(x.device, x.dtype))


def _installed(clone, family):
    """(our patch or None, {key: foreign patch}) at the family's hook of a clone."""
    replace = clone.model_options["transformer_options"].get("patches_replace", {})
    existing = replace.get(family.hook, {})
    ours = next((o for o in map(family.owner, existing.values()) if o is not None), None)
    return ours, {key: p for key, p in existing.items() if family.owner(p) is None}


def install(model, adapter, prompt, family):
    """A clone of model with prompt added to its IP-Adapter patch (other packs' patches at those keys wrapped)."""
    if not prompt.active_layers():
        return model.clone()
    return _installed_with(model, adapter, family, prompts=[prompt])


def install_identity(model, adapter, identity):
    """A clone of a Flux model with a PuLID identity added to its block patch (after the blocks with a cross-attention)."""
    return _installed_with(model, adapter, families.get("Flux"), identities=[identity])


def _installed_with(model, adapter, family, prompts=(), identities=()):
    clone = model.clone()
    extra = {"identities": identities} if identities else {}
    ours, foreign = _installed(clone, family)
    if ours is not None:
        patch = ours.extended(prompts, models=[adapter.patcher], base_patches=foreign, **extra)
    else:
        patch = family.make_patch(prompts, model.model.diffusion_model, foreign, [adapter.patcher],
                                  attention=comfy.ldm.modules.attention.optimized_attention, linear_rows=linear_rows,
                                  **extra)
    if family.hook == "attn2":
        for block, number, index in patch.keys():
            clone.set_model_attn2_replace(patch, block, number, index)
    else:
        for block, number in patch.keys():
            clone.set_model_patch_replace(patch.replace_for((block, number)), "dit", block, number)
    wrappers = getattr(comfy.patcher_extension.WrappersMP, family.wrapper_type.upper())
    if not clone.get_wrappers(wrappers, WRAPPER_KEY):
        clone.add_wrapper_with_key(wrappers, WRAPPER_KEY, family.model_wrapper)
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
    family = check_model(model, adapter)
    if adapter.spec.kind == "pulid":
        raise InvalidInputError(f"{adapter.name} is PuLID's adapter: its identity tokens need EVA-CLIP features of the "
                                "face. Use IPAdapter Kit: Apply PuLID.")
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
    joined = False
    if adapter.spec.step_tokens:  # the tokens depend on the step: the patch projects the encoder outputs
        (cond_tokens,), (uncond_tokens,) = cond, uncond
        joined = combine == "concat" and cond_tokens.shape[0] > 1
    else:
        cond_tokens, uncond_tokens = project_tokens(adapter, cond, uncond, combine, projector)
    references = 1 if joined else cond_tokens.shape[0]
    prompt = ImagePrompt(
        weights=adapter.weights, cond=cond_tokens, uncond=uncond_tokens,
        layer_weights=layer_weights(family, weight, weight_type, weight_composition, block_weights,
                                    adapter.spec.num_layers),
        ref_weights=tuple(parse_number_list(reference_weights, "reference_weights", references)),
        masks=prepare_masks(attn_mask, references),
        inverted_layers=family.inverted_layers(weight_type),  # kept with block_weights, as IPAdapter_plus does
        embeds_scaling=embeds_scaling, sigma_range=sigma_range(model, start_at, end_at), unfold_batch=unfold_batch,
        frame_weights=None if frame_weights is None else tuple(float(w) for w in frame_weights), joined=joined)
    return install(model, adapter, prompt, family)


@dataclasses.dataclass(frozen=True)
class EncodedReferences:
    """Encoder outputs of references (R, ...) and their negatives, as the Encode node hands them on."""

    cond: torch.Tensor
    uncond: torch.Tensor
    clip_output: str = ""  # which CLIP-vision output these are (image_embeds / penultimate_hidden_states)
