"""Bad inputs give typed errors that say what was received, what was expected and how to fix it."""
import json

import pytest
import torch

import folder_paths
import graphs
from comfy_server import execution_error
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import apply, model_cache, patching, presets

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
CLIP_G = "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"


def encode(name, image, clip=CLIP_H):
    adapter = model_cache.load_adapter(name)
    return adapter, *apply.encode_pair(adapter, image, presets.load_clip_vision(clip))


def image(batch=1, channels=3):
    return torch.rand(batch, 64, 64, channels)


def test_sdxl_adapter_on_sd15_model(sd15):
    adapter, cond, uncond = encode("ip-adapter_sdxl_vit-h.safetensors", image())
    with pytest.raises(IncompatibleModelError, match=r"SDXL adapter .* model is SD1\.5.*ip-adapter_sd15"):
        patching.apply_embeds(sd15[0], adapter, cond, uncond)


def test_vit_h_adapter_with_bigg_encoder(sd15):
    with pytest.raises(IncompatibleModelError, match=r"width 24.*gave width 28.*ViT-H"):
        encode("ip-adapter_sd15.safetensors", image(), clip=CLIP_G)


def test_bigg_adapter_with_vit_h_encoder(sd15):
    with pytest.raises(IncompatibleModelError, match="gave width 24"):
        encode("ip-adapter_sd15_vit-G.safetensors", image(), clip=CLIP_H)


def test_faceid_adapter_in_the_clip_apply_node(sd15):
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    with pytest.raises(InvalidInputError, match="FaceID"):
        apply.encode_pair(adapter, image(), presets.load_clip_vision(CLIP_H))


def test_missing_clip_vision_says_what_to_connect(sd15):
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    with pytest.raises(InvalidInputError, match="Load CLIP Vision"):
        apply.Apply.execute(sd15[0], adapter, image(), 1.0, "linear", 0.0, 1.0)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(0, 64, 64, 3), "empty"),
    (torch.rand(1, 64, 64, 2), "2 channels"),
    (torch.full((1, 64, 64, 3), float("nan")), "NaN"),
    (torch.rand(64, 64, 3), "expected an IMAGE batch"),
])
def test_bad_images(bad, message, sd15):
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    with pytest.raises(InvalidInputError, match=message):
        apply.encode_pair(adapter, bad, presets.load_clip_vision(CLIP_H))


@pytest.mark.parametrize("channels", [1, 4])
def test_gray_and_rgba_images_are_accepted(channels, sd15):
    adapter, cond, _ = encode("ip-adapter_sd15.safetensors", image(channels=channels))
    assert cond.shape == (1, 24)


def test_large_reference_is_encoded(sd15):
    adapter, cond, _ = encode("ip-adapter-plus_sd15.safetensors", torch.rand(1, 1024, 768, 3))
    assert cond.shape == (1, 257, 32)


def test_mask_count_must_match_references(sd15):
    adapter, cond, uncond = encode("ip-adapter_sd15.safetensors", image(batch=2))
    with pytest.raises(InvalidInputError, match="3 masks for 2 references"):
        patching.apply_embeds(sd15[0], adapter, cond, uncond, combine="separate", attn_mask=torch.ones(3, 8, 8))
    with pytest.raises(InvalidInputError, match="2 masks for 1 reference\\. "):
        patching.apply_embeds(sd15[0], adapter, cond, uncond, combine="concat", attn_mask=torch.ones(2, 8, 8))


def test_reference_weights_must_parse_and_match(sd15):
    adapter, cond, uncond = encode("ip-adapter_sd15.safetensors", image(batch=2))
    with pytest.raises(InvalidInputError, match="not a comma-separated list"):
        patching.apply_embeds(sd15[0], adapter, cond, uncond, combine="separate", reference_weights="1, x")
    with pytest.raises(InvalidInputError, match="3 values for 2 references"):
        patching.apply_embeds(sd15[0], adapter, cond, uncond, combine="separate", reference_weights="1, 1, 1")


def test_unified_loader_names_the_missing_file(sd15, monkeypatch):
    real = folder_paths.get_filename_list
    monkeypatch.setattr(folder_paths, "get_filename_list",
                        lambda folder: [] if folder == "ipadapter" else real(folder))
    with pytest.raises(InvalidInputError, match=r"ip-adapter-plus_sd15\.safetensors.*models/ipadapter"):
        presets.UnifiedLoader.execute(sd15[0], "PLUS (high strength)")


def test_unified_loader_refuses_sd15_only_preset_on_sdxl(world_paths):
    from tinymodels import comfy_models

    with pytest.raises(IncompatibleModelError, match="no SDXL release"):
        presets.UnifiedLoader.execute(comfy_models.tiny_unet("sdxl"), "LIGHT - SD1.5 only (low strength)")


def _ipadapter_prompt(adapter_file):
    prompt = graphs.txt2img(prefix="errors")
    prompt.update({
        "ipa": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": adapter_file}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_H}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "apply": {"class_type": "IPAKitApply", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": ["img", 0], "clip_vision": ["cv", 0],
            "weight": 1.0, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0}},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def test_error_reaches_the_user_and_the_server_keeps_working(comfy_server):
    entry = comfy_server.run(_ipadapter_prompt("ip-adapter_sdxl_vit-h.safetensors"))
    error = execution_error(entry)
    assert error is not None, json.dumps(entry["status"])[:2000]
    assert error["exception_type"].endswith("IncompatibleModelError")
    assert "SDXL adapter" in error["exception_message"] and "SD1.5" in error["exception_message"]
    assert error["node_type"] == "IPAKitApply"
    entry = comfy_server.run(_ipadapter_prompt("ip-adapter_sd15.safetensors"))
    assert entry["status"]["status_str"] == "success"


@pytest.mark.parametrize("node", ["Apply", "ApplyAdvanced"])
def test_adapter_of_another_family_reports_the_family_before_the_encoder(sd15, node):
    """Kolors' adapter wants ViT-L/336 on SDXL: on SD1.5 with ViT-H the family is what to fix first."""
    adapter = model_cache.load_adapter("Kolors-IP-Adapter-Plus.bin")
    clip_vision = presets.load_clip_vision(CLIP_H)
    with pytest.raises(IncompatibleModelError, match=r"SDXL adapter .* model is SD1\.5"):
        if node == "Apply":
            apply.Apply.execute(sd15[0], adapter, image(), 1.0, "linear", 0.0, 1.0, clip_vision=clip_vision)
        else:
            apply.ApplyAdvanced.execute(sd15[0], adapter, 1.0, "linear", 0.0, 1.0, 1.0, "concat", "V only",
                                        image=image(), clip_vision=clip_vision)


def test_refused_pickle_names_the_object_in_plain_text(tmp_path):
    import os

    from ipadapter_kit.ipadapter_core.errors import UnsafeFileError
    from ipadapter_kit.ipadapter_core.loading import read_state_dict

    class Payload:
        def __reduce__(self):
            return os.getcwd, ()

    path = tmp_path / "payload.bin"
    torch.save({"weight": torch.zeros(2), "config": Payload()}, path)
    with pytest.raises(UnsafeFileError) as caught:
        read_state_dict(str(path))
    message = str(caught.value)
    assert f"the Python object {os.getcwd.__module__}.getcwd besides tensors" in message, message
    assert message.endswith("Use the .safetensors release of this model.")
    assert all(ch.isprintable() for ch in message) and "weights_only" not in message, message
