"""A models/ folder of tiny stand-ins under the real file names users have, built once and reused."""
import hashlib
import pathlib
import shutil

import numpy as np
import torch
from safetensors.torch import save_file
from PIL import Image

from tinymodels import (comfy_models, extras, flux_adapter_files, flux_models, insightface_pack, instantid_files,
                        ipadapter_files, kolors_models, pulid_files, sd3_adapter_files, sd3_models)

# Bump when any generator changes, so cached folders are rebuilt.
VERSION = "10"
CHECKPOINT_SD15 = "v1-5-pruned-emaonly.safetensors"
# Stability's sd_xl_base_1.0 single file: model.diffusion_model.*, conditioner.embedders.{0,1}.* (CLIP-L, OpenCLIP bigG)
# and first_stage_model.* (a tiny TAESD here).
CHECKPOINT_SDXL = "sd_xl_base_1.0.safetensors"
CLIP_VISION_FILES = {
    "vit-h": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
    "vit-bigg": "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
    "vit-l-336": "clip-vit-large-patch14-336.bin",
}
CHECKPOINT_FLUX = "flux1-dev-fp8.safetensors"  # the all-in-one Flux dev checkpoint users load
FLUX_CLIP_VISION_FILES = {  # the encoders of the XLabs and InstantX Flux IP-Adapters
    "vit-l": "clip-vit-large-patch14.safetensors",
    "siglip-384": "siglip-so400m-patch14-384.safetensors",
}
FLUX_LORA = "flux_style_lora.safetensors"
# The all-in-one SD3.5 Large (MMDiT + CLIP-L/G + T5 + VAE) ComfyUI's sd3.5_simple_example template loads, from
# Comfy-Org/stable-diffusion-3.5-fp8; the tiny one is float32 under that name.
CHECKPOINT_SD35 = "sd3.5_large_fp8_scaled.safetensors"
SD35_IPADAPTER = sd3_adapter_files.WORLD_FILE  # in models/ipadapter/
FLUX_CONTROLNET = "flux-canny-controlnet-tiny.safetensors"
# InstantX/InstantID (SDXL): the face adapter in models/instantid/, the IdentityNet ControlNet in a subfolder of
# models/controlnet/ (ComfyUI lists it as "instantid/diffusion_pytorch_model.safetensors").
INSTANTID_ADAPTER = instantid_files.ADAPTER_FILE
INSTANTID_CONTROLNET = instantid_files.CONTROLNET_FILE
# PuLID in models/pulid/ (cubiq's PuLID_ComfyUI and balazik's PuLID-Flux folder): huchenlei's SDXL v1 conversion
# (float16) and PuLID-Flux v0.9.1 (bfloat16), flat keys.
PULID_SDXL = pulid_files.SDXL_FILE
PULID_FLUX = pulid_files.FLUX_FILE
EVA_CLIP = pulid_files.EVA_FILE
FACE_PARSER = pulid_files.PARSER_FILE
REFERENCE_IMAGES = ("reference_a.png", "reference_b.png")
FACE_IMAGES = ("face_a.png", "face_b.png")
EMBEDS_FILE = "reference_embeds.safetensors"  # penultimate hidden states of the tiny ViT-H (plus adapters)
# Kolors as MZ's loaders read it: UNet in models/unet, ChatGLM3 in models/LLM, the SDXL VAE in models/vae.
KOLORS_UNET = kolors_models.UNET_FILE
KOLORS_CHATGLM = kolors_models.CHATGLM_FILE
SDXL_VAE = kolors_models.VAE_FILE
FACEID_LORAS = ("ip-adapter-faceid_sd15_lora.safetensors", "ip-adapter-faceid-plusv2_sd15_lora.safetensors")


def _fingerprint():
    here = pathlib.Path(__file__).parent
    sources = sorted(here.glob("*.py")) + [here.parent / "host_support" / name
                                           for name in ("tiny_configs.py", "kolors_mz.py")]
    digest = hashlib.sha1(VERSION.encode())
    for src in sources:
        digest.update(src.read_bytes())
    return digest.hexdigest()


def face_image(root, index=0):
    """One of the world's face pictures as a ComfyUI IMAGE (1, H, W, 3) in 0..1."""
    array = np.asarray(Image.open(pathlib.Path(root) / "input" / FACE_IMAGES[index]).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array / 255)[None]


def reference_image(seed, size=96):
    """A colourful RGB test image (smooth gradients plus seeded blobs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([x, y, 1 - x * y], axis=-1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 1, 3)
    return (img * 255).astype(np.uint8)


def write_embeds(path, seed=5):
    """An embeds file in the pack's Save Embeds format (257 hidden-state tokens of width 32)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {"cond": torch.randn(1, 257, 32, generator=gen), "uncond": torch.zeros(1, 257, 32)}
    save_file(tensors, str(path), metadata={"format": "ipadapter_kit.embeds/1",
                                            "clip_output": "penultimate_hidden_states"})


def build(root):
    """Write (or reuse) the tiny models/ and input/ folders under root; returns root."""
    root = pathlib.Path(root)
    stamp = root / ".stamp"
    key = _fingerprint()
    if stamp.exists() and stamp.read_text() == key:
        return root
    if root.exists():
        shutil.rmtree(root)
    models = root / "models"
    comfy_models.write_checkpoint(models / "checkpoints" / CHECKPOINT_SD15, "sd15")
    comfy_models.write_checkpoint(models / "checkpoints" / CHECKPOINT_SDXL, "sdxl", seed=180)
    for i, (encoder, name) in enumerate(sorted(CLIP_VISION_FILES.items())):
        comfy_models.write_clip_vision(models / "clip_vision" / name, encoder, seed=100 + i)
    ipadapter_files.write_all(models / "ipadapter")
    ipadapter_files.write_kolors_faceid(models / "ipadapter")
    extras.write_controlnet(models / "controlnet" / "control_v11p_sd15_canny_fp16.safetensors")
    extras.write_lora(models / "loras" / "style_lora_sd15.safetensors")
    for i, name in enumerate(FACEID_LORAS):
        extras.write_lora(models / "loras" / name, seed=20 + i, unet_only=True)
    flux_models.write_flux_checkpoint(models / "checkpoints" / CHECKPOINT_FLUX)
    comfy_models.write_clip_vision(models / "clip_vision" / FLUX_CLIP_VISION_FILES["vit-l"], "vit-l", seed=110)
    flux_models.write_siglip(models / "clip_vision" / FLUX_CLIP_VISION_FILES["siglip-384"], seed=111)
    flux_adapter_files.write_all(models, seed=120)
    flux_models.write_flux_lora(models / "loras" / FLUX_LORA, seed=130)
    flux_models.write_flux_controlnet(models / "controlnet" / FLUX_CONTROLNET, seed=140)
    sd3_models.write_sd35_checkpoint(models / "checkpoints" / CHECKPOINT_SD35, seed=150)
    sd3_adapter_files.write_all(models, seed=160)
    instantid_files.write_all(models, seed=170)
    pulid_files.write_all(models, seed=190)
    kolors_models.write_all(models, seed=200)
    for pack in ("buffalo_l", "antelopev2"):
        insightface_pack.write_pack(models / "insightface", pack)
    (root / "input").mkdir(parents=True)
    for i, name in enumerate(REFERENCE_IMAGES):
        Image.fromarray(reference_image(i)).save(root / "input" / name)
    write_embeds(root / "input" / EMBEDS_FILE)
    for i, name in enumerate(FACE_IMAGES):
        bgr = insightface_pack.bright_face_image(size=(256, 256), box=(56 + 8 * i, 48, 200, 208), seed=i + 1)
        Image.fromarray(bgr[..., ::-1].copy()).save(root / "input" / name)
    stamp.write_text(key)
    return root
