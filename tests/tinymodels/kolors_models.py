"""A tiny Kolors for the MZ stand-ins (tests/host_support/kolors_mz.py): the UNet in Kwai-Kolors' diffusers layout
(encoder_hid_proj included), the tiny ChatGLM3 stand-in's weights and an SDXL VAE file (a tiny TAESDXL)."""
import pathlib

import torch
from safetensors.torch import save_file

import comfy.taesd.taesd  # noqa: E402  (import conftest first: it selects the CPU)
import comfy.utils  # noqa: E402
from host_support import kolors_mz, tiny_configs  # noqa: E402
from tinymodels.comfy_models import TAESDXL_SCALE, TAESDXL_SHIFT  # noqa: E402
from tinymodels.weights import init_module  # noqa: E402

UNET_FILE = "diffusion_pytorch_model.fp16.safetensors"  # Kwai-Kolors/Kolors unet/, in models/unet/
CHATGLM_FILE = "chatglm3-8bit.safetensors"  # MZ's quantized ChatGLM3, in models/LLM/
VAE_FILE = "sdxl_vae.safetensors"  # Kolors uses the SDXL VAE, in models/vae/


def _save(tensors, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def kolors_diffusion_model(seed=0):
    """The tiny Kolors diffusion model (ComfyUI layout) with its encoder_hid_proj."""
    model = kolors_mz.kolors_config(keep_hid_proj=True).get_model({}, device="cpu")
    return init_module(model.diffusion_model, seed)


def write_unet(path, seed=0):
    """The tiny Kolors UNet under diffusers key names, as Kwai-Kolors ships unet/diffusion_pytorch_model*."""
    weights = kolors_diffusion_model(seed).state_dict()
    names = comfy.utils.unet_to_diffusers(kolors_mz.kolors_config().unet_config)
    sd = {diffusers: weights[comfy_key] for diffusers, comfy_key in names.items()
          if comfy_key in weights and not diffusers.startswith("class_embedding.")}  # SDXL's y: add_embedding
    sd.update({key: weights[key] for key in kolors_mz.HID_PROJ_KEYS})
    return _save(sd, path)


def write_chatglm(path, seed=0):
    """Weights of the tiny ChatGLM3 stand-in: a byte embedding and two square layers of the ChatGLM width."""
    gen = torch.Generator().manual_seed(seed)
    width = tiny_configs.KOLORS_CHATGLM_WIDTH
    sd = {"embedding.weight": torch.randn(256, width, generator=gen)}
    for i in (0, 1):
        sd[f"layers.{i}.weight"] = torch.randn(width, width, generator=gen) / width ** 0.5
        sd[f"layers.{i}.bias"] = torch.randn(width, generator=gen) * 0.1
    return _save(sd, path)


def write_vae(path, seed=0):
    """A standalone tiny TAESDXL (what VAELoader reads from models/vae) with the SDXL latent scale."""
    vae = init_module(comfy.taesd.taesd.TAESD(), seed)
    with torch.no_grad():
        vae.vae_scale.fill_(TAESDXL_SCALE)
        vae.vae_shift.fill_(TAESDXL_SHIFT)
    return _save(vae.state_dict(), path)


def write_all(models, seed=0):
    """Kolors UNet in models/unet, ChatGLM3 stand-in in models/LLM, SDXL VAE in models/vae."""
    models = pathlib.Path(models)
    write_unet(models / "unet" / UNET_FILE, seed)
    write_chatglm(models / "LLM" / CHATGLM_FILE, seed + 1)
    write_vae(models / "vae" / VAE_FILE, seed + 2)
