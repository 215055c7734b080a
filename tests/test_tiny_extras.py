"""The tiny ControlNet and LoRA work through ComfyUI's own loaders and core nodes."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import comfy.cldm.cldm
import comfy.controlnet
import comfy.lora
import comfy.sd
import comfy.utils
import folder_paths
import nodes
from tinymodels import extras
from tinymodels.world import CHECKPOINT_SD15

CONTROLNET = "control_v11p_sd15_canny_fp16.safetensors"
LORA = "style_lora_sd15.safetensors"


@pytest.fixture(scope="module")
def sd15(world):
    """(model, clip, positive, negative, hint image) on the tiny checkpoint."""
    folder_paths.add_model_folder_path("loras", str(world / "models" / "loras"))
    model, clip = comfy.sd.load_checkpoint_guess_config(str(world / "models" / "checkpoints" / CHECKPOINT_SD15))[:2]
    hint = torch.from_numpy(np.asarray(Image.open(world / "input" / "reference_a.png").convert("RGB")) / 255.0)
    return model, clip, _encode(clip, "a photo of a cat"), _encode(clip, "blurry"), hint[None].float()


def _encode(clip, text):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def _sample(model, positive, negative):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return nodes.common_ksampler(model, 3, 2, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def _with_controlnet(world, sd15, strength):
    model, _, positive, negative, hint = sd15
    control = comfy.controlnet.load_controlnet(str(world / "models" / "controlnet" / CONTROLNET))
    positive, negative = nodes.ControlNetApplyAdvanced().apply_controlnet(
        positive, negative, control, hint, strength, 0.0, 1.0)
    return _sample(model, positive, negative)


def test_controlnet_is_detected_as_a_tiny_sd15_controlnet(world, caplog):
    with caplog.at_level(logging.WARNING):
        control = comfy.controlnet.load_controlnet(str(world / "models" / "controlnet" / CONTROLNET))
    assert isinstance(control, comfy.controlnet.ControlNet), caplog.text
    assert isinstance(control.control_model, comfy.cldm.cldm.ControlNet)
    assert "missing controlnet keys" not in caplog.text
    zero_convs = control.control_model.zero_convs
    assert len(zero_convs) == 12 and all(zc[0].weight.abs().sum() > 0 for zc in zero_convs)


def test_controlnet_changes_sampling_and_strength_zero_does_not(world, sd15):
    model, _, positive, negative, _ = sd15
    plain = _sample(model, positive, negative)
    controlled = _with_controlnet(world, sd15, 1.0)
    assert torch.isfinite(controlled).all()
    assert (controlled - plain).abs().max() > 1e-3
    assert torch.equal(_with_controlnet(world, sd15, 0.0), plain)


def test_every_lora_key_maps_onto_the_tiny_model(sd15):
    model, clip = sd15[:2]
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, comfy.lora.model_lora_keys_unet(model.model, {}))
    lora = comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("loras", LORA))
    patches = comfy.lora.load_lora(lora, key_map, log_missing=False)
    assert len(patches) == len(extras.lora_shapes()) and len(lora) == 3 * len(patches)
    assert any(k.startswith("diffusion_model.") for k in patches)
    assert any("transformer.text_model" in k for k in patches)


def test_lora_loader_changes_output_and_strength_zero_does_not(sd15, caplog):
    model, clip, positive, negative, _ = sd15
    plain = _sample(model, positive, negative)
    with caplog.at_level(logging.WARNING):
        model_l, clip_l = nodes.LoraLoader().load_lora(model, clip, LORA, 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    lora_unet = _sample(model_l, positive, negative)
    assert (lora_unet - plain).abs().max() > 1e-3
    assert (_encode(clip_l, "a photo of a cat")[0][0] - positive[0][0]).abs().max() > 1e-4
    model_0, clip_0 = nodes.LoraLoader().load_lora(model, clip, LORA, 0.0, 0.0)
    assert torch.equal(_sample(model_0, positive, negative), plain)


def test_lora_and_controlnet_graph_runs_in_the_server(comfy_server):
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_SD15}},
        "lora": {"class_type": "LoraLoader", "inputs": {
            "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": LORA, "strength_model": 0.8,
            "strength_clip": 0.8}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo of a cat", "clip": ["lora", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["lora", 1]}},
        "hint": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "cn": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}},
        "apply": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["hint", 0],
            "strength": 0.9, "start_percent": 0.0, "end_percent": 1.0}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["lora", 0], "seed": 5, "steps": 3, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["apply", 0], "negative": ["apply", 1], "latent_image": ["latent", 0], "denoise": 1.0}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": "e2e_cn_lora"}},
    }
    entry = comfy_server.run(prompt)
    assert entry["status"]["status_str"] == "success", (entry["status"], comfy_server.log_tail())
    paths = comfy_server.output_images(entry)
    assert len(paths) == 1 and paths[0].exists()
    assert np.asarray(Image.open(paths[0])).shape == (64, 64, 3)
    assert "lora key not loaded" not in comfy_server.log_tail(100_000)
