"""SDXL-family adapters (base, vit-h, plus, composition, Kolors) on the tiny SDXL UNet, in-process."""
import pytest
import torch

import comfy.sample
from host_support import tiny_configs
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError
from ipadapter_kit.nodes import apply, model_cache, patching
from ipadapter_kit.nodes.presets import load_clip_vision
from tinymodels import comfy_models

ENCODERS = {"vit-h": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
            "vit-bigg": "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
            "vit-l-336": "clip-vit-large-patch14-336.bin"}
ADAPTERS = {
    "ip-adapter_sdxl.safetensors": "vit-bigg",
    "ip-adapter_sdxl_vit-h.safetensors": "vit-h",
    "ip-adapter-plus_sdxl_vit-h.safetensors": "vit-h",
    "ip_plus_composition_sdxl.safetensors": "vit-h",
    "Kolors-IP-Adapter-Plus.bin": "vit-l-336",
}


@pytest.fixture(scope="module")
def sdxl(world_paths):
    return comfy_models.tiny_unet("sdxl")


def sample(model, steps=2):
    gen = torch.Generator().manual_seed(3)
    context = torch.randn(1, 77, tiny_configs.SDXL_UNET["context_dim"], generator=gen)
    pooled = torch.randn(1, tiny_configs.SDXL_UNET["adm_in_channels"] - 6 * 256, generator=gen)
    cond = [[context, {"pooled_output": pooled}]]
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", cond, cond, torch.zeros(1, 4, 8, 8),
                               seed=0, disable_pbar=True)


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_sdxl_adapter_changes_output_and_weight_zero_does_not(sdxl, name):
    adapter = model_cache.load_adapter(name)
    image = torch.rand(1, 80, 80, 3, generator=torch.Generator().manual_seed(1))
    cond, uncond = apply.encode_pair(adapter, image, load_clip_vision(ENCODERS[ADAPTERS[name]]))
    base = sample(sdxl)
    assert torch.equal(sample(patching.apply_embeds(sdxl, adapter, cond, uncond, weight=0.0)), base)
    weight_type = "composition" if "composition" in name else "linear"
    patched = patching.apply_embeds(sdxl, adapter, cond, uncond, weight=1.0, weight_type=weight_type)
    assert not torch.allclose(sample(patched), base, atol=1e-3)


def test_style_transfer_patches_only_the_style_block(sdxl):
    adapter = model_cache.load_adapter("ip-adapter_sdxl_vit-h.safetensors")
    cond, uncond = apply.encode_pair(adapter, torch.rand(1, 64, 64, 3), load_clip_vision(ENCODERS["vit-h"]))
    patched = patching.apply_embeds(sdxl, adapter, cond, uncond, weight_type="style transfer")
    keys = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
    assert keys == {("output", 1, i) for i in range(10)}


def test_sd15_adapter_on_sdxl_model_is_refused(sdxl):
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    cond, uncond = apply.encode_pair(adapter, torch.rand(1, 64, 64, 3), load_clip_vision(ENCODERS["vit-h"]))
    with pytest.raises(IncompatibleModelError, match=r"SD1\.5 adapter .* model is SDXL"):
        patching.apply_embeds(sdxl, adapter, cond, uncond)
