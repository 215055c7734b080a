"""Kolors FaceID-Plus (detection, projection formula, Apply FaceID) and every unified-loader preset's file picks;
Kolors FaceID-Plus and IP-Adapter Plus through the server on the tiny Kolors."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import folder_paths
from ipadapter_kit.ipadapter_core import adapter as core_adapter
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import clip_encode, faceid, faces, model_cache, presets
from test_sdxl import sample as sample_sdxl
from tinymodels import comfy_models, ipadapter_files
from tinymodels.world import (CLIP_VISION_FILES, FACE_IMAGES, KOLORS_CHATGLM, KOLORS_UNET, REFERENCE_IMAGES, SDXL_VAE,
                              face_image)

KOLORS = ipadapter_files.KOLORS_FACEID
CLIP_L336 = CLIP_VISION_FILES["vit-l-336"]


@pytest.fixture(scope="module")
def antelope(world_paths):
    return faces.load_analyzer("antelopev2", "CPU", 640)


def kolors_unet(seed=0):
    """The tiny SDXL-layout UNet with a Kolors encoder_hid_proj (ChatGLM width -> context width), as Kolors loaders
    leave it on the diffusion model."""
    model = comfy_models.tiny_unet("sdxl")
    torch.manual_seed(seed)
    model.model.diffusion_model.encoder_hid_proj = torch.nn.Linear(ipadapter_files.KOLORS_TOKEN_WIDTH,
                                                                   ipadapter_files.context_dim("sdxl"))
    return model


def apply_kolors(model, analyzer, image, weight=1.0, weight_faceidv2=1.0, weight_kolors=1.0, image_negative=None,
                 combine="concat"):
    adapter = model_cache.load_adapter(KOLORS)
    return faceid.ApplyFaceID.execute(model, adapter, analyzer, image, weight, "linear", 0.0, 1.0, weight_faceidv2,
                                      "v1", "normalized", combine, "V only", False,
                                      clip_vision=presets.load_clip_vision(CLIP_L336), weight_kolors=weight_kolors,
                                      image_negative=image_negative).result


def prompt_of(patched, key=("input", 4, 0)):
    return patched.model_options["transformer_options"]["patches_replace"]["attn2"][key].prompts[0]


def test_kolors_faceid_is_detected_by_its_shapes(world_paths, tmp_path):
    nested = ipadapter_files.kolors_faceid_state_dict(seed=4)
    path = ipadapter_files.save(tmp_path / "renamed_adapter.safetensors", nested)  # the name says nothing
    spec = core_adapter.load(str(path)).spec
    context = ipadapter_files.context_dim("sdxl")
    assert (spec.kind, spec.arch, spec.tokens, spec.cross_dim, spec.token_dim) == (
        "faceid_plus", "SDXL", ipadapter_files.KOLORS_FACEID_TOKENS, context, ipadapter_files.KOLORS_TOKEN_WIDTH)
    assert spec.clip_dim == ipadapter_files.clip_dims("vit-l-336")[1] and spec.lora_rank == 0
    plus_sd = ipadapter_files.state_dict(*ipadapter_files.catalog()["ip-adapter-faceid-plusv2_sdxl.bin"])
    plus = core_adapter.load(str(ipadapter_files.save(tmp_path / "plus.bin", plus_sd)))
    assert plus.spec.token_dim is None  # K/V reading the token width: an ordinary FaceID Plus


def test_kolors_faceid_with_wider_kv_than_tokens_is_refused(tmp_path):
    nested = ipadapter_files.kolors_faceid_state_dict(seed=4)
    width = ipadapter_files.KOLORS_TOKEN_WIDTH * 2
    nested["ip_adapter"] = {k: torch.zeros(v.shape[0], width) for k, v in nested["ip_adapter"].items()}
    with pytest.raises(Exception, match="does not|do not belong"):
        core_adapter.load(str(ipadapter_files.save(tmp_path / "bad.bin", nested)))


def reference_attention(w, x, latents, heads):
    """Perceiver attention written out: latents attend to [x, latents] (both layer-normed), softmax(q k^T / sqrt d)."""
    x = F.layer_norm(x, x.shape[-1:], w["norm1.weight"], w["norm1.bias"])
    latents = F.layer_norm(latents, latents.shape[-1:], w["norm2.weight"], w["norm2.bias"])
    q = latents @ w["to_q.weight"].T
    k, v = (torch.cat([x, latents], 1) @ w["to_kv.weight"].T).chunk(2, dim=-1)
    split = (lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2))
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)
    return out @ w["to_out.weight"].T


def reference_kolors_tokens(sd, ids, hidden, hid_weight, hid_bias, scale_v2, weight_kolors):
    """Kolors FaceID-Plus as IPAdapter_plus computes it, from the raw state dict: ProjModelFaceIdPlus with the v2
    shortcut, then the UNet's encoder_hid_proj with weight and bias multiplied by weight_kolors."""
    proj = {k: v.float() for k, v in sd["image_proj"].items()}
    width, tokens = ipadapter_files.KOLORS_TOKEN_WIDTH, ipadapter_files.KOLORS_FACEID_TOKENS
    x = F.gelu(ids @ proj["proj.0.weight"].T + proj["proj.0.bias"]) @ proj["proj.2.weight"].T + proj["proj.2.bias"]
    x = F.layer_norm(x.reshape(-1, tokens, width), (width,), proj["norm.weight"], proj["norm.bias"])
    p = "perceiver_resampler."
    inputs = hidden @ proj[p + "proj_in.weight"].T + proj[p + "proj_in.bias"]
    latents = x
    for i in range(4):
        attention = {k[len(f"{p}layers.{i}.0."):]: v for k, v in proj.items() if k.startswith(f"{p}layers.{i}.0.")}
        latents = reference_attention(attention, inputs, latents, width // 64) + latents
        h = F.layer_norm(latents, (width,), proj[f"{p}layers.{i}.1.0.weight"], proj[f"{p}layers.{i}.1.0.bias"])
        latents = F.gelu(h @ proj[f"{p}layers.{i}.1.1.weight"].T) @ proj[f"{p}layers.{i}.1.3.weight"].T + latents
    out = latents @ proj[p + "proj_out.weight"].T + proj[p + "proj_out.bias"]
    out = F.layer_norm(out, (width,), proj[p + "norm_out.weight"], proj[p + "norm_out.bias"])
    refined = x + scale_v2 * out
    return refined @ (hid_weight * weight_kolors).T + hid_bias * weight_kolors


def test_kolors_faceid_tokens_equal_the_reference_formula(world_paths, antelope):
    model = kolors_unet()
    image = face_image(world_paths)
    patched, crops = apply_kolors(model, antelope, image, weight_faceidv2=0.7, weight_kolors=1.3)
    assert crops.shape == (1, faceid.KOLORS_CROP_SIZE, faceid.KOLORS_CROP_SIZE, 3)
    result = faces.analyze(antelope, image)
    hidden = clip_encode.encode(presets.load_clip_vision(CLIP_L336), crops, "penultimate_hidden_states")
    sd = torch.load(model_cache.resolve("ipadapter", KOLORS), weights_only=True)
    hid = model.model.diffusion_model.encoder_hid_proj
    expected = reference_kolors_tokens(sd, result.normed.float(), hidden, hid.weight.detach(), hid.bias.detach(),
                                       0.7, 1.3)
    prompt = prompt_of(patched)
    assert prompt.cond.shape == (1, ipadapter_files.KOLORS_FACEID_TOKENS, ipadapter_files.context_dim("sdxl"))
    assert torch.allclose(prompt.cond.float(), expected, atol=1e-4)
    black = clip_encode.encode(presets.load_clip_vision(CLIP_L336), torch.zeros(1, 224, 224, 3),
                               "penultimate_hidden_states")
    expected_uncond = reference_kolors_tokens(sd, torch.zeros_like(result.normed), black, hid.weight.detach(),
                                              hid.bias.detach(), 0.7, 1.3)
    assert torch.allclose(prompt.uncond.float(), expected_uncond, atol=1e-4)


def test_kolors_faceid_changes_the_output_and_weight_kolors_matters(world_paths, antelope):
    model = kolors_unet()
    image = face_image(world_paths)
    base = sample_sdxl(model)
    patched, _ = apply_kolors(model, antelope, image)
    out = sample_sdxl(patched)
    assert not torch.allclose(out, base, atol=1e-3)
    stronger, _ = apply_kolors(model, antelope, image, weight_kolors=2.0)
    assert not torch.allclose(sample_sdxl(stronger), out, atol=1e-4)
    zero, _ = apply_kolors(model, antelope, image, weight=0.0)
    assert torch.equal(sample_sdxl(zero), base)


def test_kolors_faceid_needs_the_unets_encoder_hid_proj(world_paths, antelope):
    with pytest.raises(IncompatibleModelError, match="encoder_hid_proj"):
        apply_kolors(comfy_models.tiny_unet("sdxl"), antelope, face_image(world_paths))


def test_kolors_faceid_on_sd15_reports_the_family_before_looking_for_faces(sd15, antelope):
    blank = torch.zeros(1, 64, 64, 3)  # no face: the family error must come first
    with pytest.raises(IncompatibleModelError, match="SDXL adapter"):
        apply_kolors(sd15[0], antelope, blank)


SD15_PICKS = {
    "LIGHT - SD1.5 only (low strength)": ("ip-adapter_sd15_light_v11.bin", "vit-h"),
    "STANDARD (medium strength)": ("ip-adapter_sd15.safetensors", "vit-h"),
    "VIT-G (medium strength)": ("ip-adapter_sd15_vit-G.safetensors", "vit-bigg"),
    "PLUS (high strength)": ("ip-adapter-plus_sd15.safetensors", "vit-h"),
    "PLUS FACE (portraits)": ("ip-adapter-plus-face_sd15.safetensors", "vit-h"),
    "FULL FACE - SD1.5 only (portraits stronger)": ("ip-adapter-full-face_sd15.safetensors", "vit-h"),
    "COMPOSITION (SD1.5 / SDXL)": ("ip_plus_composition_sd15.safetensors", "vit-h"),
}
SDXL_PICKS = {
    "STANDARD (medium strength)": ("ip-adapter_sdxl_vit-h.safetensors", "vit-h"),
    "VIT-G (medium strength)": ("ip-adapter_sdxl.safetensors", "vit-bigg"),
    "PLUS (high strength)": ("ip-adapter-plus_sdxl_vit-h.safetensors", "vit-h"),
    "PLUS FACE (portraits)": ("ip-adapter-plus-face_sdxl_vit-h.safetensors", "vit-h"),
    "COMPOSITION (SD1.5 / SDXL)": ("ip_plus_composition_sdxl.safetensors", "vit-h"),
    "KOLORS PLUS (Kolors only)": ("Kolors-IP-Adapter-Plus.bin", "vit-l-336"),
}


def test_every_preset_has_a_pick_here_and_the_community_presets_come_last():
    assert set(presets.PRESETS) == set(SD15_PICKS) | set(SDXL_PICKS)
    assert list(presets.PRESETS)[-2:] == ["COMPOSITION (SD1.5 / SDXL)", "KOLORS PLUS (Kolors only)"]
    for preset, arches in presets.PRESETS.items():
        assert ("SD1.5" in arches) == (preset in SD15_PICKS) and ("SDXL" in arches) == (preset in SDXL_PICKS)


@pytest.mark.parametrize("arch, preset", [("sd15", p) for p in SD15_PICKS] + [("sdxl", p) for p in SDXL_PICKS])
def test_unified_loader_preset_resolves_to_the_release_files(sd15, world_paths, arch, preset):
    model = sd15[0] if arch == "sd15" else comfy_models.tiny_unet("sdxl")
    adapter_name, encoder = (SD15_PICKS if arch == "sd15" else SDXL_PICKS)[preset]
    out_model, adapter, clip_vision = presets.UnifiedLoader.execute(model, preset).result
    assert out_model is model and adapter.name == adapter_name
    assert clip_vision is presets.load_clip_vision(CLIP_VISION_FILES[encoder]) and adapter.clip_vision is clip_vision


def test_sd15_only_presets_refuse_sdxl_and_kolors_refuses_sd15(sd15):
    with pytest.raises(IncompatibleModelError, match="no SDXL release"):
        presets.UnifiedLoader.execute(comfy_models.tiny_unet("sdxl"), "LIGHT - SD1.5 only (low strength)")
    with pytest.raises(IncompatibleModelError, match="no SD1.5 release"):
        presets.UnifiedLoader.execute(sd15[0], "KOLORS PLUS (Kolors only)")


@pytest.mark.parametrize("preset, folder, wanted, url", [
    ("KOLORS PLUS (Kolors only)", "ipadapter", "Kolors-IP-Adapter-Plus.bin", "huggingface.co/Kwai-Kolors"),
    ("COMPOSITION (SD1.5 / SDXL)", "ipadapter", "ip_plus_composition_sdxl.safetensors", "huggingface.co/ostris"),
    ("KOLORS PLUS (Kolors only)", "clip_vision", "clip-vit-large-patch14-336.bin",
     "huggingface.co/openai/clip-vit-large-patch14-336"),
    ("STANDARD (medium strength)", "ipadapter", "ip-adapter_sdxl_vit-h.safetensors",
     "huggingface.co/h94/IP-Adapter/tree/main/sdxl_models"),
    ("VIT-G (medium strength)", "clip_vision", "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors",
     "huggingface.co/h94/IP-Adapter/tree/main/sdxl_models/image_encoder"),
])
def test_missing_preset_files_are_named_with_folder_and_url(world_paths, monkeypatch, preset, folder, wanted, url):
    listing = folder_paths.get_filename_list

    def without(name):
        return [] if name == folder else listing(name)

    monkeypatch.setattr(folder_paths, "get_filename_list", without)
    with pytest.raises(InvalidInputError) as info:
        presets.UnifiedLoader.execute(comfy_models.tiny_unet("sdxl"), preset)
    assert wanted in str(info.value) and f"models/{folder}/" in str(info.value) and url in str(info.value)


FACEID_PICKS = {
    ("FACEID", "sd15"): "ip-adapter-faceid_sd15.bin",
    ("FACEID", "sdxl"): "ip-adapter-faceid_sdxl.bin",
    ("FACEID PLUS - SD1.5 only", "sd15"): "ip-adapter-faceid-plus_sd15.bin",
    ("FACEID PLUS V2", "sd15"): "ip-adapter-faceid-plusv2_sd15.bin",
    ("FACEID PLUS V2", "sdxl"): "ip-adapter-faceid-plusv2_sdxl.bin",
    ("FACEID PORTRAIT (style transfer)", "sd15"): "ip-adapter-faceid-portrait-v11_sd15.bin",
    ("FACEID PORTRAIT (style transfer)", "sdxl"): "ip-adapter-faceid-portrait_sdxl.bin",
    ("FACEID PORTRAIT UNNORM - SDXL only (strong)", "sdxl"): "ip-adapter-faceid-portrait_sdxl_unnorm.bin",
}


def test_every_faceid_preset_release_has_a_pick_here():
    listed = {(p, {"SD1.5": "sd15", "SDXL": "sdxl"}[a]) for p, arches in faceid.PRESETS.items() for a in arches}
    assert listed == set(FACEID_PICKS)


@pytest.mark.parametrize("preset, arch", sorted(FACEID_PICKS))
def test_unified_faceid_loader_preset_resolves_to_the_release(sd15, world_paths, preset, arch):
    model = sd15[0] if arch == "sd15" else comfy_models.tiny_unet("sdxl")
    out_model, adapter, analyzer, clip_vision = faceid.UnifiedFaceIDLoader.execute(
        model, preset, 0.0, faceid.LORA_SOURCES[0], "CPU", 640).result
    assert adapter.name == FACEID_PICKS[preset, arch] and out_model is model and analyzer is not None
    plus = adapter.spec.kind == "faceid_plus"
    assert (clip_vision is presets.load_clip_vision(CLIP_VISION_FILES["vit-h"])) == plus
    assert (clip_vision is None) == (not plus) and adapter.clip_vision is clip_vision
    assert adapter.plus_v2 == (preset == "FACEID PLUS V2")
    assert adapter.unnorm == (preset == "FACEID PORTRAIT UNNORM - SDXL only (strong)")


def test_converter_maps_the_community_loader_and_faceid_kolors_keeping_image_negative():
    from ipadapter_kit.migrate import convert

    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "kolors.safetensors"}},
        "2": {"class_type": "IPAdapterUnifiedLoaderCommunity", "inputs": {"model": ["1", 0], "preset": "Kolors"}},
        "3": {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": KOLORS}},
        "4": {"class_type": "IPAdapterInsightFaceLoader", "inputs": {"provider": "CPU", "model_name": "antelopev2"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "face.png"}},
        "6": {"class_type": "IPAdapterFaceIDKolors",
              "inputs": {"model": ["1", 0], "ipadapter": ["3", 0], "image": ["5", 0], "image_negative": ["5", 0],
                         "insightface": ["4", 0], "weight": 0.9, "weight_faceidv2": 0.8, "weight_kolors": 1.4,
                         "weight_type": "linear", "combine_embeds": "average", "start_at": 0.0, "end_at": 1.0,
                         "embeds_scaling": "V only"}},
        "7": {"class_type": "IPAdapterUnifiedLoaderCommunity", "inputs": {"model": ["1", 0], "preset": "Composition"}},
        "8": {"class_type": "IPAdapterFaceID",
              "inputs": {"model": ["1", 0], "ipadapter": ["3", 0], "image": ["5", 0], "image_negative": ["5", 0],
                         "insightface": ["4", 0], "weight": 1.0, "weight_faceidv2": 1.0, "weight_type": "linear",
                         "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"}},
    }
    result = convert(prompt)
    out = result.workflow
    assert [out[i]["class_type"] for i in ("2", "6", "7", "8")] == [
        "IPAKitUnifiedLoader", "IPAKitApplyFaceID", "IPAKitUnifiedLoader", "IPAKitApplyFaceID"]
    assert out["2"]["inputs"]["preset"] == "KOLORS PLUS (Kolors only)"
    assert out["7"]["inputs"]["preset"] == "COMPOSITION (SD1.5 / SDXL)"
    kolors = out["6"]["inputs"]
    assert (kolors["weight"], kolors["weight_faceidv2"], kolors["weight_kolors"], kolors["combine_embeds"]) == (
        0.9, 0.8, 1.4, "average")
    assert kolors["image_negative"] == ["5", 0] and out["8"]["inputs"]["image_negative"] == ["5", 0]
    assert not [line for line in result.report if line.startswith(("lossy:", "unmapped:"))], result.report


def test_weight_kolors_on_another_adapter_is_reported_and_changes_nothing(sd15, world_paths, caplog):
    from test_faceid import apply_faceid

    analyzer = faces.load_analyzer("buffalo_l", "CPU", 640)
    adapter = model_cache.load_adapter("ip-adapter-faceid-plusv2_sd15.bin")
    plain, _ = apply_faceid(sd15[0], adapter, analyzer, face_image(world_paths))
    with caplog.at_level("WARNING"):
        scaled, _ = apply_faceid(sd15[0], adapter, analyzer, face_image(world_paths), weight_kolors=2.0)
    assert "weight_kolors only acts on Kolors FaceID-Plus" in caplog.text
    key = ("input", 1, 0)
    assert torch.equal(prompt_of(scaled, key).cond, prompt_of(plain, key).cond)


# ---------------------------------------------------------------------------------------------------------------
# Through the server on the tiny Kolors that the ComfyUI-Kolors-MZ stand-ins load (tests/host_support/kolors_mz.py):
# MZ's V2 loader keeps encoder_hid_proj on the diffusion model (what Kolors FaceID-Plus reads), its legacy loader
# hands it to the ChatGLM3 text encode instead.
def kolors_graph(legacy=False, seed=3):
    """Tiny Kolors text-to-image (3 steps, 64 px); node "unet" feeds the sampler through "sampler_model"."""
    unet = ("MZ_KolorsUNETLoader" if legacy else "MZ_KolorsUNETLoaderV2", {"unet_name": KOLORS_UNET})
    text = {"chatglm3_model": ["glm", 0]} | ({"hid_proj": ["unet", 1]} if legacy else {})
    encode = "MZ_ChatGLM3" if legacy else "MZ_ChatGLM3_V2"
    nodes = {
        "unet": unet,
        "glm": ("MZ_ChatGLM3Loader", {"chatglm3_checkpoint": KOLORS_CHATGLM}),
        "pos": (encode, {**text, "text": "closeup photo of a woman"}),
        "neg": (encode, {**text, "text": "blurry"}),
        "vae": ("VAELoader", {"vae_name": SDXL_VAE}),
        "latent": ("EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 1}),
        "sampler": ("KSampler", {"model": ["unet", 0], "seed": seed, "steps": 3, "cfg": 5.0,
                                 "sampler_name": "euler", "scheduler": "normal", "positive": ["pos", 0],
                                 "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}),
        "decode": ("VAEDecode", {"samples": ["sampler", 0], "vae": ["vae", 0]}),
        "save": ("SaveImage", {"images": ["decode", 0], "filename_prefix": "kolors"}),
    }
    return {key: {"class_type": kind, "inputs": inputs} for key, (kind, inputs) in nodes.items()}


def with_adapter(prompt, apply_kind, inputs, object_info):
    """The graph with an apply node between the loader and the sampler; its other required inputs at their
    defaults."""
    required = object_info[apply_kind]["input"]["required"]
    defaults = {name: spec[1]["default"] for name, spec in required.items()
                if len(spec) > 1 and isinstance(spec[1], dict) and "default" in spec[1]}
    prompt = {**prompt, "apply": {"class_type": apply_kind, "inputs": {**defaults, "model": ["unet", 0], **inputs}}}
    prompt["sampler"] = {**prompt["sampler"], "inputs": {**prompt["sampler"]["inputs"], "model": ["apply", 0]}}
    return prompt


def server_image(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    (path,) = server.output_images(entry)
    with Image.open(path) as image:
        return np.asarray(image).astype(np.int16)


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


def test_kolors_faceid_through_the_server_on_the_tiny_kolors(comfy_server, object_info):
    """IPAKitApplyFaceID with Kolors FaceID-Plus on MZ's V2 Kolors UNet: weight 0 is the plain picture, 1 differs."""
    plain = kolors_graph()
    shared = {
        "adapter": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": KOLORS}},
        "face": {"class_type": "LoadImage", "inputs": {"image": FACE_IMAGES[0]}},
        "insightface": {"class_type": "IPAKitInsightFaceLoader",
                        "inputs": {"pack": "antelopev2", "provider": "CPU", "det_size": 640}},
        "clip_vision": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_L336}},
    }

    def faceid(weight):
        inputs = {"ipadapter": ["adapter", 0], "insightface": ["insightface", 0], "image": ["face", 0],
                  "clip_vision": ["clip_vision", 0], "weight": weight, "weight_faceidv2": 1.0, "weight_kolors": 1.0}
        return with_adapter({**plain, **shared}, "IPAKitApplyFaceID", inputs, object_info)

    without = server_image(comfy_server, plain)
    assert np.array_equal(server_image(comfy_server, faceid(0.0)), without)
    assert np.abs(server_image(comfy_server, faceid(1.0)) - without).max() > 0
    legacy = {**faceid(1.0), **{key: node for key, node in kolors_graph(legacy=True).items() if key != "sampler"}}
    entry = comfy_server.run(legacy)  # MZ's legacy loader leaves no encoder_hid_proj on the model
    status = json.dumps(entry["status"])
    assert entry["status"]["status_str"] == "error" and "KolorsUNETLoaderV2" in status, status[:3000]


def test_kolors_ip_adapter_plus_through_the_server_on_the_legacy_loader(comfy_server, object_info):
    """IPAKitApplyAdvanced with Kolors-IP-Adapter-Plus on MZ's legacy loader (encoder_hid_proj applied by the text
    encode): weight 0 is the plain picture, 1 differs; the plain picture is the V2 loader's (same tiny Kolors)."""
    plain = kolors_graph(legacy=True)
    shared = {
        "adapter": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": "Kolors-IP-Adapter-Plus.bin"}},
        "reference": {"class_type": "LoadImage", "inputs": {"image": REFERENCE_IMAGES[0]}},
        "clip_vision": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_L336}},
    }

    def plus(weight):
        inputs = {"ipadapter": ["adapter", 0], "image": ["reference", 0], "clip_vision": ["clip_vision", 0],
                  "weight": weight}
        return with_adapter({**plain, **shared}, "IPAKitApplyAdvanced", inputs, object_info)

    without = server_image(comfy_server, plain)
    assert np.array_equal(server_image(comfy_server, kolors_graph()), without)
    assert np.array_equal(server_image(comfy_server, plus(0.0)), without)
    assert np.abs(server_image(comfy_server, plus(1.0)) - without).max() > 0
