"""Tiny checkpoints, CLIP-vision files and UNets built from ComfyUI's own classes."""
import json
import pathlib
import tempfile

import torch
from safetensors.torch import save_file

import comfy.clip_vision  # noqa: E402  (import conftest first: it selects the CPU)
import comfy.model_patcher  # noqa: E402
import comfy.taesd.taesd  # noqa: E402
from host_support import TinySD15, TinySDXL, TinySD1ClipModel, TinySDXLClipModel, tiny_configs  # noqa: E402
from tinymodels.weights import init_module  # noqa: E402

ARCHS = {"sd15": (TinySD15, tiny_configs.SD15_UNET), "sdxl": (TinySDXL, tiny_configs.SDXL_UNET)}


def model_config(arch):
    """The tiny supported-model config ComfyUI detects for this arch."""
    cls, unet = ARCHS[arch]
    return cls(dict(unet))


def tiny_unet(arch="sd15", seed=0):
    """A ModelPatcher around a tiny UNet with the real block layout of arch."""
    model = model_config(arch).get_model({}, device="cpu")
    init_module(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


TAESDXL_SCALE, TAESDXL_SHIFT = 0.13025, 0.0  # what ComfyUI's VAELoader sets on taesdxl


def _text_encoders(arch, seed):
    """The tiny text encoder(s) under the real single-file checkpoint's key names.

    sd15: cond_stage_model.transformer.text_model.* (CLIP-L). sdxl: conditioner.embedders.0.transformer.text_model.*
    (CLIP-L, no projection) and conditioner.embedders.1.model.* (OpenCLIP bigG: transformer.resblocks.*, fused
    attn.in_proj_*, text_projection, ln_final, positional_embedding, logit_scale), converted by ComfyUI's own
    SDXL saving code (what its CheckpointSave writes)."""
    if arch == "sd15":
        clip = init_module(TinySD1ClipModel(dtype=torch.float32), seed)
        return {k.replace("clip_l.", "cond_stage_model.", 1): v for k, v in clip.state_dict().items()}
    clip = init_module(TinySDXLClipModel(dtype=torch.float32), seed)
    return model_config(arch).process_clip_state_dict_for_saving(clip.state_dict())


def write_checkpoint(path, arch="sd15", seed=0):
    """A single-file checkpoint (UNet, text encoder(s), TAESD VAE) that CheckpointLoaderSimple loads, with the key
    layout of v1-5-pruned-emaonly (sd15) or sd_xl_base_1.0 (sdxl)."""
    if arch not in ARCHS:
        raise ValueError(f"no tiny checkpoint for {arch!r}; one of {sorted(ARCHS)}")
    sd = {}
    unet = tiny_unet(arch, seed).model.diffusion_model
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    sd.update(_text_encoders(arch, seed + 1))
    vae = init_module(comfy.taesd.taesd.TAESD(), seed + 2)
    with torch.no_grad():
        vae.vae_scale.fill_(1.0 if arch == "sd15" else TAESDXL_SCALE)
        vae.vae_shift.fill_(0.0 if arch == "sd15" else TAESDXL_SHIFT)
    sd.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def clip_vision_model(encoder="vit-h", seed=0):
    """A tiny comfy ClipVisionModel (257 tokens at 224px like the real ones)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(tiny_configs.CLIP_VISION[encoder], f)
    try:
        clip = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        pathlib.Path(f.name).unlink()
    init_module(clip.model, seed)
    return clip


def write_clip_vision(path, encoder="vit-h", seed=0):
    """Save a tiny CLIP-vision model in ComfyUI's (transformers-key) format."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in clip_vision_model(encoder, seed).get_sd().items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path
