"""API-format prompts for the tiny models, built as plain dicts."""
from tinymodels.world import CHECKPOINT_FLUX, CHECKPOINT_SD15, CHECKPOINT_SD35, CHECKPOINT_SDXL


def txt2img(seed=1, steps=4, size=64, prefix="plain", checkpoint=CHECKPOINT_SD15):
    """A text-to-image graph on a tiny UNet checkpoint (SD1.5 unless told); node "model" feeds the sampler through
    "sampler_model"."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def sdxl_txt2img(seed=1, steps=4, size=64, prefix="sdxl"):
    """API-format SDXL text-to-image on the tiny sd_xl_base_1.0 checkpoint: CLIPTextEncode feeds both text encoders
    (and the pooled output the UNet's size conditioning is appended to), EmptyLatentImage gives the 4-channel latent."""
    return txt2img(seed, steps, size, prefix, checkpoint=CHECKPOINT_SDXL)


def flux_txt2img(seed=1, steps=4, size=64, prefix="flux"):
    """API-format Flux text-to-image on the tiny checkpoint (cfg 1 with FluxGuidance, as Flux.1-dev is run)."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_FLUX}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["ckpt", 1]}},
        "guide": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["pos", 0], "guidance": 3.5}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": 1.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": ["guide", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def sd35_txt2img(seed=1, steps=4, size=64, prefix="sd35"):
    """API-format SD3.5 Large text-to-image on the tiny all-in-one checkpoint, as ComfyUI's SD3.5 template runs it
    (EmptySD3LatentImage, cfg 4, euler / sgm_uniform)."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_SD35}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptySD3LatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": 4.0, "sampler_name": "euler",
            "scheduler": "sgm_uniform", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }
