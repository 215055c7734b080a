"""Model families: the one place that knows how a diffusion model is laid out and where adapters hook in.

A family recognises a ComfyUI diffusion model from its structure, lists its hook keys in adapter-layer order,
and owns its weight tables. Adding a family = one module here plus an entry in FAMILIES; the nodes, the
format detection and the attention maths do not change.

hook "attn2": ComfyUI's cross-attention replace, keys (block, id, transformer_index) (UNet models).
hook "dit": ComfyUI's DiT block replace, keys ("double_block", i) / ("single_block", i) (Flux; SD3.5's MMDiT
calls its joint blocks "double_block").
"""
from ..errors import IncompatibleModelError, InvalidInputError
from .flux import FLUX
from .sd3 import SD3
from .unet import SD15, SDXL

FAMILIES = {family.name: family for family in (SD15, SDXL, FLUX, SD3)}


def get(name):
    """The family called name ('SD1.5', 'SDXL', 'Flux', 'SD3.5')."""
    family = FAMILIES.get(name)
    if family is None:
        raise InvalidInputError(f"unknown model family {name!r}; expected one of: {', '.join(FAMILIES)}")
    return family


def recognise(diffusion_model):
    """The family of a ComfyUI diffusion model (torch module), or IncompatibleModelError naming what it is."""
    for family in FAMILIES.values():
        if family.matches(diffusion_model):
            return family
    found = "; ".join(f"{f.name}: {f.mismatch(diffusion_model)}" for f in FAMILIES.values())
    raise IncompatibleModelError(
        f"this model ({type(diffusion_model).__name__}) is none of the families IP-Adapter works on here "
        f"({found}). Use an SD1.5, SDXL, Flux.1 or SD3.5 Large checkpoint.")


def for_layers(hook, count):
    """The family whose hook and layer count an adapter file's layer list fits, or None."""
    return next((f for f in FAMILIES.values() if f.hook == hook and count in f.adapter_layer_counts), None)
