"""FaceID adapters, their embedded and file LoRAs, and the unified FaceID loader, in-process."""
import pytest
import torch

import comfy.lora
import comfy.sd
from ipadapter_kit.ipadapter_core import lora as core_lora
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import faceid, faces, model_cache
from test_invariants import sample
from tinymodels import comfy_models
from tinymodels.world import face_image

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


@pytest.fixture(scope="module")
def analyzer(world_paths):
    return faces.load_analyzer("buffalo_l", "CPU", 640)


def apply_faceid(model, adapter, analyzer, image, weight=1.0, plus_version="v2 (shortcut)", clip_vision=None,
                 embeddings="normalized", combine="concat", **optional):
    from ipadapter_kit.nodes.presets import load_clip_vision

    clip_vision = clip_vision or load_clip_vision(CLIP_H)
    return faceid.ApplyFaceID.execute(model, adapter, analyzer, image, weight, "linear", 0.0, 1.0, 1.0, plus_version,
                                      embeddings, combine, "V only", False, clip_vision=clip_vision,
                                      **optional).result


@pytest.mark.parametrize("name", ["ip-adapter-faceid_sd15.bin", "ip-adapter-faceid-plusv2_sd15.bin",
                                  "ip-adapter-faceid-portrait-v11_sd15.bin"])
def test_faceid_changes_output_and_weight_zero_does_not(sd15, world_paths, analyzer, name):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter(name)
    image = face_image(world_paths)
    patched, crops = apply_faceid(model, adapter, analyzer, image)
    assert crops.shape == (1, 224, 224, 3)
    base = sample(model, pos, neg)
    assert not torch.allclose(sample(patched, pos, neg), base, atol=1e-3)
    zero, _ = apply_faceid(model, adapter, analyzer, image, weight=0.0)
    assert torch.equal(sample(zero, pos, neg), base)


def test_plus_v1_and_v2_differ(sd15, world_paths, analyzer):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid-plusv2_sd15.bin")
    v1, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths), plus_version="v1")
    v2, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths), plus_version="v2 (shortcut)")
    assert not torch.allclose(sample(v1, pos, neg), sample(v2, pos, neg), atol=1e-3)


def test_portrait_takes_several_photos_of_one_person(sd15, world_paths, analyzer):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid-portrait-v11_sd15.bin")
    both = torch.cat([face_image(world_paths, 0), face_image(world_paths, 1)])
    patched, crops = apply_faceid(model, adapter, analyzer, both)
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    assert crops.shape[0] == 2 and patch.prompts[0].cond.shape == (1, 32, 64)  # 2 photos x 16 tokens, concatenated


def test_clip_adapter_is_refused_by_the_faceid_node(sd15, world_paths, analyzer):
    with pytest.raises(InvalidInputError, match="not FaceID"):
        apply_faceid(sd15[0], model_cache.load_adapter("ip-adapter_sd15.safetensors"), analyzer,
                     face_image(world_paths))


@pytest.mark.parametrize("name, arch", [("ip-adapter-faceid_sd15.bin", "sd15"),
                                        ("ip-adapter-faceid-plusv2_sdxl.bin", "sdxl")])
def test_embedded_lora_maps_every_key_onto_the_unet(world_paths, name, arch):
    model = comfy_models.tiny_unet(arch)
    adapter = model_cache.load_adapter(name)
    lora = core_lora.embedded_lora(adapter.weights.ip_adapter.state_dict(), adapter.spec.arch)
    layers = adapter.spec.num_layers
    assert len(lora) == layers * 2 * 4 * 3  # attn1+attn2, q/k/v/out, down/up/alpha
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    loaded = comfy.lora.load_lora(lora, key_map)
    assert len(loaded) == layers * 2 * 4


def test_embedded_lora_adds_up_times_down(world_paths):
    model = comfy_models.tiny_unet("sd15")  # not shared with the sampler, so its weights are the file's
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    patched = faceid.FaceIDLoRA.execute(model, adapter, 0.5).result[0]
    key = "diffusion_model.output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"
    base = model.model.state_dict()[key].clone()
    patched.patch_model()
    try:
        merged = patched.model.state_dict()[key].clone()
    finally:
        patched.unpatch_model()
    slot = adapter.weights.ip_adapter["13"].to_k_lora  # layer 6 = ("output", 3, 0), cross-attention
    expected = base + 0.5 * slot.up.weight @ slot.down.weight
    assert torch.allclose(merged, expected, atol=1e-6)
    assert faceid.FaceIDLoRA.execute(model, adapter, 0.0).result[0].patches == model.patches == {}


def test_unified_faceid_loader_picks_files_and_lora(sd15, world_paths):
    model, pos, neg = sd15
    out = faceid.UnifiedFaceIDLoader.execute(model, "FACEID PLUS V2", 0.7, faceid.LORA_SOURCES[1], "CPU", 640).result
    patched_model, adapter, analyzer, clip_vision = out
    assert adapter.name == "ip-adapter-faceid-plusv2_sd15.bin" and adapter.plus_v2 is True
    assert clip_vision is not None and analyzer is not None
    assert patched_model.patches and not torch.allclose(sample(patched_model, pos, neg), sample(model, pos, neg))
    embedded = faceid.UnifiedFaceIDLoader.execute(model, "FACEID PLUS V2", 0.7, faceid.LORA_SOURCES[2], "CPU",
                                                  640).result[0]
    assert set(embedded.patches) == set(patched_model.patches)  # same modules, from the file or from the adapter


def test_unified_faceid_loader_errors(sd15, world_paths):
    with pytest.raises(IncompatibleModelError, match="no SDXL release"):
        faceid.UnifiedFaceIDLoader.execute(comfy_models.tiny_unet("sdxl"), "FACEID PLUS - SD1.5 only", 0.6,
                                           faceid.LORA_SOURCES[0], "CPU", 640)
    with pytest.raises(InvalidInputError, match="ip-adapter-faceid-plus_sd15_lora.safetensors from "
                                                "https://huggingface.co/h94/IP-Adapter-FaceID"):
        faceid.UnifiedFaceIDLoader.execute(sd15[0], "FACEID PLUS - SD1.5 only", 0.6, faceid.LORA_SOURCES[1], "CPU",
                                           640)



@pytest.mark.parametrize("name, embeddings", [("ip-adapter-faceid-plusv2_sdxl.bin", "normalized"),
                                              ("ip-adapter-faceid-portrait_sdxl_unnorm.bin",
                                               "unnormalized (portrait unnorm)")])
def test_sdxl_faceid(world_paths, analyzer, name, embeddings):
    from test_sdxl import sample as sample_sdxl

    model = comfy_models.tiny_unet("sdxl")
    adapter = model_cache.load_adapter(name)
    patched, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths), embeddings=embeddings)
    assert not torch.allclose(sample_sdxl(patched), sample_sdxl(model), atol=1e-3)


def test_separate_faces_with_their_own_weights(sd15, world_paths, analyzer):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    both = torch.cat([face_image(world_paths, 0), face_image(world_paths, 1)])
    from ipadapter_kit.nodes.presets import load_clip_vision

    patched, _ = faceid.ApplyFaceID.execute(model, adapter, analyzer, both, 1.0, "linear", 0.0, 1.0, 1.0,
                                            "v1", "normalized", "separate", "V only", False,
                                            reference_weights="1.0, 0.5", clip_vision=load_clip_vision(CLIP_H)).result
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    assert patch.prompts[0].ref_weights == (1.0, 0.5) and patch.prompts[0].cond.shape == (2, 4, 64)


def prompt_of(patched, key=("input", 1, 0)):
    return patched.model_options["transformer_options"]["patches_replace"]["attn2"][key].prompts[0]


def test_image_negative_is_the_clip_negative_of_faceid_plus(sd15, world_paths, analyzer):
    from ipadapter_kit.nodes import clip_encode
    from ipadapter_kit.nodes.presets import load_clip_vision

    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid-plusv2_sd15.bin")
    negative = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(4))
    plain, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths))
    patched, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths), image_negative=negative)
    assert torch.equal(prompt_of(patched).cond, prompt_of(plain).cond)
    hidden = clip_encode.encode(load_clip_vision(CLIP_H), negative, "penultimate_hidden_states")
    with torch.no_grad():  # the identity's negative stays zero; the negative image is encoded whole, not face-cropped
        expected = adapter.weights.image_proj(torch.zeros(1, 512), hidden, shortcut=True, scale=1.0)
    assert torch.allclose(prompt_of(patched).uncond, expected, atol=1e-5)
    assert not torch.allclose(prompt_of(patched).uncond, prompt_of(plain).uncond, atol=1e-4)
    assert not torch.allclose(sample(patched, pos, neg), sample(plain, pos, neg), atol=1e-4)


def test_image_negative_on_plain_faceid_warns_and_changes_nothing(sd15, world_paths, analyzer, caplog):
    model = sd15[0]
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    plain, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths))
    with caplog.at_level("WARNING"):
        patched, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths),
                                  image_negative=torch.rand(1, 64, 64, 3))
    assert "image_negative has no effect" in caplog.text
    assert torch.equal(prompt_of(patched).uncond, prompt_of(plain).uncond)
    state_dict = torch.load(model_cache.resolve("ipadapter", adapter.name), weights_only=True)
    assert torch.allclose(prompt_of(patched).uncond, faceid_formula(state_dict, torch.zeros(1, 512), 4), atol=1e-5)


def test_unfold_batch_gives_each_latent_its_own_face(sd15, world_paths, analyzer):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    both = torch.cat([face_image(world_paths, 0), face_image(world_paths, 1)])
    unfolded, _ = apply_faceid(model, adapter, analyzer, both, unfold_batch=True)
    assert prompt_of(unfolded).unfold_batch and prompt_of(unfolded).cond.shape[0] == 2
    out = sample(unfolded, pos, neg, batch=2)
    alone = [sample(apply_faceid(model, adapter, analyzer, face_image(world_paths, i))[0], pos, neg, batch=2)
             for i in range(2)]
    for index in range(2):
        mine, other = (alone[index] - out)[index].abs().max(), (alone[1 - index] - out)[index].abs().max()
        assert mine < 1e-2 and other > 100 * mine  # latent i follows face i (up to float noise), not the other face


def test_frame_weights_fade_the_face_per_latent(sd15, world_paths, analyzer):
    from ipadapter_kit.nodes import weights_nodes

    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    weights, _ = weights_nodes.FrameWeights.execute("1.0, 0.0", "linear", 2, 0).result
    patched, _ = apply_faceid(model, adapter, analyzer, face_image(world_paths), frame_weights=weights)
    out, plain = sample(patched, pos, neg, batch=2), sample(model, pos, neg, batch=2)
    assert not torch.allclose(out[0], plain[0], atol=1e-3)
    assert torch.equal(out[1], plain[1])


def faceid_formula(state_dict, ids, tokens):
    """MLPProjModelFaceId written out: LayerNorm(Linear(GELU(Linear(id))) reshaped to tokens)."""
    proj = {k: v.float() for k, v in state_dict["image_proj"].items()}
    x = torch.nn.functional.gelu(ids @ proj["proj.0.weight"].T + proj["proj.0.bias"])
    x = (x @ proj["proj.2.weight"].T + proj["proj.2.bias"]).reshape(ids.shape[0], tokens, -1)
    return torch.nn.functional.layer_norm(x, x.shape[-1:], proj["norm.weight"], proj["norm.bias"])


def test_portrait_unnorm_really_uses_the_raw_embedding(world_paths, analyzer):
    name = "ip-adapter-faceid-portrait_sdxl_unnorm.bin"
    model = comfy_models.tiny_unet("sdxl")
    adapter = model_cache.load_adapter(name)
    image = face_image(world_paths)
    normed, _ = apply_faceid(model, adapter, analyzer, image)
    raw, _ = apply_faceid(model, adapter, analyzer, image, embeddings="unnormalized (portrait unnorm)")
    key = ("input", 4, 0)
    result = faces.analyze(analyzer, image)
    assert not torch.allclose(result.raw, result.normed)  # the tiny ArcFace's raw embedding is not unit length
    state_dict = torch.load(model_cache.resolve("ipadapter", name), weights_only=True)
    assert torch.allclose(prompt_of(raw, key).cond, faceid_formula(state_dict, result.raw.float(), 16), atol=1e-5)
    assert torch.allclose(prompt_of(normed, key).cond, faceid_formula(state_dict, result.normed.float(), 16),
                          atol=1e-5)
    assert not torch.allclose(prompt_of(raw, key).cond, prompt_of(normed, key).cond, atol=1e-3)
    unified = faceid.UnifiedFaceIDLoader.execute(model, "FACEID PORTRAIT UNNORM - SDXL only (strong)", 0.0,
                                                 faceid.LORA_SOURCES[0], "CPU", 640).result[1]
    by_preset, _ = apply_faceid(model, unified, analyzer, image)  # the preset implies raw embeddings
    assert torch.equal(prompt_of(by_preset, key).cond, prompt_of(raw, key).cond)


def test_block_weights_on_apply_faceid(sd15, world_paths, analyzer):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    image = face_image(world_paths)
    base = sample(model, pos, neg)
    plain, _ = apply_faceid(model, adapter, analyzer, image, weight=0.8)
    every_block = ", ".join(f"{i}:1" for i in range(16))  # SD1.5: 16 blocks with cross-attention
    ones, _ = apply_faceid(model, adapter, analyzer, image, weight=0.8, block_weights=every_block)
    assert torch.allclose(sample(ones, pos, neg), sample(plain, pos, neg), atol=1e-6)
    zero, _ = apply_faceid(model, adapter, analyzer, image, block_weights="0:0")
    assert torch.allclose(sample(zero, pos, neg), base, atol=1e-6)
    one_block, _ = apply_faceid(model, adapter, analyzer, image, block_weights="6:1")
    one_block_out = sample(one_block, pos, neg)
    assert not torch.allclose(one_block_out, base, atol=1e-4)
    assert not torch.allclose(one_block_out, sample(plain, pos, neg), atol=1e-4)


def test_attn_mask_on_apply_faceid(sd15, world_paths, analyzer):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter-faceid-plusv2_sd15.bin")
    image = face_image(world_paths)
    plain, _ = apply_faceid(model, adapter, analyzer, image)
    ones, _ = apply_faceid(model, adapter, analyzer, image, attn_mask=torch.ones(64, 64))
    assert torch.allclose(sample(ones, pos, neg), sample(plain, pos, neg), atol=1e-6)
    zeros, _ = apply_faceid(model, adapter, analyzer, image, attn_mask=torch.zeros(64, 64))
    assert torch.allclose(sample(zeros, pos, neg), sample(model, pos, neg), atol=1e-6)
    half = torch.zeros(64, 64)
    half[:, :32] = 1.0
    left, _ = apply_faceid(model, adapter, analyzer, image, attn_mask=half)
    out = sample(left, pos, neg)
    assert not torch.allclose(out, sample(plain, pos, neg), atol=1e-4)
    assert not torch.allclose(out, sample(model, pos, neg), atol=1e-4)


def test_wrong_family_is_reported_before_face_detection(world_paths, analyzer):
    adapter = model_cache.load_adapter("ip-adapter-faceid_sd15.bin")
    with pytest.raises(IncompatibleModelError, match="SD1.5 adapter"):
        apply_faceid(comfy_models.tiny_unet("sdxl"), adapter, analyzer, torch.zeros(1, 64, 64, 3))

