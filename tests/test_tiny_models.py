"""The tiny fixtures are what they claim: real layouts, real formats, runnable in ComfyUI."""
import torch
from safetensors.torch import load_file

import comfy.sample
import comfy.samplers
import comfy.sd
from host_support import tiny_configs
from tinymodels import comfy_models, ipadapter_files


def _sample(patcher, context, pooled=None, steps=2):
    latent = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    cond = [[context, {} if pooled is None else {"pooled_output": pooled}]]
    return comfy.sample.sample(patcher, noise, steps, 5.0, "euler", "normal", cond, cond, latent, seed=0,
                               disable_pbar=True)


def test_tiny_sd15_and_sdxl_unets_sample():
    sd15 = comfy_models.tiny_unet("sd15")
    out = _sample(sd15, torch.randn(1, 77, tiny_configs.SD15_UNET["context_dim"]))
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all() and out.std() > 0
    sdxl = comfy_models.tiny_unet("sdxl")
    pooled = torch.randn(1, tiny_configs.SDXL_UNET["adm_in_channels"] - 6 * 256)  # size embeddings fill the rest
    out = _sample(sdxl, torch.randn(1, 77, tiny_configs.SDXL_UNET["context_dim"]), pooled=pooled)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_unets_have_the_real_number_of_cross_attentions():
    for arch, expected in (("sd15", 16), ("sdxl", 70)):
        unet = comfy_models.tiny_unet(arch).model.diffusion_model
        attn2 = [n for n, _ in unet.named_modules() if n.endswith(".attn2")]
        assert len(attn2) == expected == len(ipadapter_files.cross_attn_widths(arch))


def test_checkpoint_loads_through_comfy_detection(world):
    path = world / "models" / "checkpoints" / "v1-5-pruned-emaonly.safetensors"
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    assert type(model.model.model_config).__name__ == "TinySD15"
    cond = clip.encode_from_tokens(clip.tokenize("a cat"))
    assert cond.shape == (1, 77, tiny_configs.SD15_UNET["context_dim"])
    image = vae.decode(torch.zeros(1, 4, 8, 8))
    assert image.shape == (1, 64, 64, 3)


def test_adapter_files_in_both_on_disk_formats(world):
    folder = world / "models" / "ipadapter"
    flat = load_file(str(folder / "ip-adapter_sd15.safetensors"))
    assert "image_proj.proj.weight" in flat and "ip_adapter.1.to_k_ip.weight" in flat
    assert "ip_adapter.31.to_v_ip.weight" in flat and "ip_adapter.33.to_k_ip.weight" not in flat
    nested = torch.load(folder / "ip-adapter_sd15_light_v11.bin", weights_only=True)
    assert set(nested) == {"image_proj", "ip_adapter"}
    assert nested["ip_adapter"]["1.to_k_ip.weight"].shape == (32, 64)
    faceid = torch.load(folder / "ip-adapter-faceid_sd15.bin", weights_only=True)
    assert "0.to_q_lora.down.weight" in faceid["ip_adapter"]
