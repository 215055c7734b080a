"""A tiny SD3.5 Large (MMDiT, CLIP-L + CLIP-G + T5, taesd3) built from ComfyUI's own classes.

Real SD3.5 Large: 38 joint blocks of width 2432 (38 heads of 64), context 4096, pooled 2048, pos_embed 192x192.
Tiny: 38 joint blocks of width 128 (2 heads of 64: ComfyUI's MMDiT fixes the head width), context 48, pooled 32,
pos_embed 32x32. See host_support.tiny_configs.SD3_MMDIT.
"""
import inspect

import torch

import comfy.ldm.modules.diffusionmodules.mmdit as mmdit  # noqa: E402  (import conftest first: it selects the CPU)
import comfy.model_patcher  # noqa: E402
from host_support import TinySD35, TinySD3ClipModel, tiny_configs  # noqa: E402
from tinymodels.extras import write_all_in_one  # noqa: E402
from tinymodels.weights import init_module  # noqa: E402

TAESD3_SCALE, TAESD3_SHIFT = 1.5305, 0.0609  # what ComfyUI's VAELoader sets on taesd3


def model_config(**overrides):
    """The tiny supported-model config ComfyUI detects for the tiny SD3.5 file (fields the host's MMDiT takes)."""
    accepted = set(inspect.signature(mmdit.MMDiT.__init__).parameters)
    fields = {k: v for k, v in {**tiny_configs.SD3_MMDIT, **overrides}.items() if k in accepted}
    return TinySD35(fields)


def tiny_sd35(seed=0):
    """A ModelPatcher around a tiny SD3.5 Large MMDiT with the real 38 joint blocks."""
    model = model_config().get_model({}, device="cpu")
    dit = model.diffusion_model
    init_module(dit, seed)
    size = tiny_configs.SD3_MMDIT["pos_embed_max_size"]
    with torch.no_grad():  # the fixed sin-cos table Stability stores as the pos_embed buffer (left empty by init)
        dit.pos_embed.copy_(torch.from_numpy(mmdit.get_2d_sincos_pos_embed(dit.hidden_size, size)).float()[None])
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def write_sd35_checkpoint(path, seed=0):
    """One all-in-one file as Comfy-Org ships sd3.5_large_fp8_scaled: model.diffusion_model.* (Stability's MMDiT
    names), text_encoders.{clip_l,clip_g,t5xxl}.transformer.*, and a 16-channel taesd3 under first_stage_model.*."""
    dit = tiny_sd35(seed).model.diffusion_model.state_dict()
    return write_all_in_one(path, dit, TinySD3ClipModel(dtype=torch.float32), "first_stage_model", TAESD3_SCALE,
                            TAESD3_SHIFT, seed)
