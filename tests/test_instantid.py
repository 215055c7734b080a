"""InstantID on the tiny SDXL: detection, the identity resampler against diffusers, the keypoints hint, IdentityNet
reading the identity tokens, the invariants of both halves, stacking, and typed errors; in-process."""
import pytest
import torch

import comfy.controlnet
import comfy.sample
import folder_paths
from host_support import tiny_configs
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import apply, faceid, faces, instantid, model_cache, patching
from tinymodels import comfy_models, insightface_pack
from tinymodels.world import INSTANTID_ADAPTER, INSTANTID_CONTROLNET, face_image

CONTEXT = tiny_configs.SDXL_UNET["context_dim"]
POOLED = tiny_configs.SDXL_UNET["adm_in_channels"] - 6 * 256


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: one thread is far faster here


@pytest.fixture(scope="module")
def sdxl(world_paths):
    return comfy_models.tiny_unet("sdxl", seed=4)


@pytest.fixture(scope="module")
def antelope(world_paths):
    return faces.load_analyzer("antelopev2", "CPU", 640)


@pytest.fixture(scope="module")
def identitynet(world_paths):
    return comfy.controlnet.load_controlnet(folder_paths.get_full_path("controlnet", INSTANTID_CONTROLNET))


@pytest.fixture(scope="module")
def adapter(world_paths):
    return model_cache.load_adapter(INSTANTID_ADAPTER, "instantid")


def conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, CONTEXT, generator=gen), {"pooled_output": torch.randn(1, POOLED, generator=gen)}]]


def sample(model, positive, negative, steps=2):
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    return comfy.sample.sample(model, noise, steps, 5.0, "euler", "normal", positive, negative,
                               torch.zeros(1, 4, 8, 8), seed=0, disable_pbar=True)


def run(sdxl, adapter, antelope, identitynet, image, ip_weight=0.8, cn_strength=0.8, **kw):
    positive, negative = conditioning(1), conditioning(2)
    patched, pos, neg, kps = instantid.apply_instantid(sdxl, positive, negative, adapter, antelope, identitynet,
                                                       image, ip_weight, cn_strength, kw.pop("start_at", 0.0),
                                                       kw.pop("end_at", 1.0), kw.pop("noise", 0.0),
                                                       kw.pop("combine", "average"), **kw)
    return sample(patched, pos, neg), kps


def test_instantid_file_is_detected_and_not_mistaken_for_faceid_plus(adapter, world_paths):
    spec = adapter.spec
    assert (spec.kind, spec.arch, spec.tokens, spec.id_dim, spec.clip_dim, spec.num_layers, spec.cross_dim) == \
        ("instantid", "SDXL", 16, 512, None, 70, CONTEXT)
    assert (spec.resampler_depth, spec.resampler_heads, spec.ff_mult) == (4, 2, 4)
    plus = model_cache.load_adapter("ip-adapter-faceid-plusv2_sdxl.bin").spec
    assert plus.kind == "faceid_plus" and plus.id_dim == 512  # also reads a 512-wide embedding
    assert INSTANTID_ADAPTER in folder_paths.get_filename_list("instantid")


def test_identity_resampler_equals_diffusers_ip_adapter_plus_projection(adapter):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=CONTEXT,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                                norm_num_groups=8, sample_size=8)
    state = {k: v.clone() for k, v in adapter.weights.image_proj.state_dict().items()}
    theirs = unet._convert_ip_adapter_image_proj_to_diffusers(state, low_cpu_mem_usage=False).eval()
    embeds = torch.randn(3, 512, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = adapter.weights.image_proj(embeds)
        expected = theirs(embeds.unsqueeze(1))
    assert ours.shape == (3, 16, CONTEXT)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_keypoints_image_marks_the_five_detected_keypoints(world_paths, antelope):
    image = face_image(world_paths)
    kps = instantid.keypoint_images(antelope, image)
    assert kps.shape == image.shape[:3] + (3,)
    points = faces.analyze(antelope, image).kps[0]
    colours = torch.tensor([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1)], dtype=torch.float32)
    for (x, y), colour in zip(points.round().long().tolist(), colours):
        torch.testing.assert_close(kps[0, y, x], colour)
    assert kps[0, 0, 0].eq(0).all()  # black away from the face


def test_instantid_changes_the_image_and_both_zero_is_bitwise_plain(sdxl, adapter, antelope, identitynet,
                                                                      world_paths):
    image = face_image(world_paths)
    plain = sample(sdxl, conditioning(1), conditioning(2))
    full, kps = run(sdxl, adapter, antelope, identitynet, image)
    assert torch.isfinite(full).all() and not torch.allclose(full, plain, atol=1e-4)
    none, _ = run(sdxl, adapter, antelope, identitynet, image, ip_weight=0.0, cn_strength=0.0)
    assert torch.equal(none, plain)
    attention_only, _ = run(sdxl, adapter, antelope, identitynet, image, cn_strength=0.0)
    controlnet_only, _ = run(sdxl, adapter, antelope, identitynet, image, ip_weight=0.0)
    for half in (attention_only, controlnet_only):
        assert not torch.allclose(half, plain, atol=1e-4) and not torch.allclose(half, full, atol=1e-4)


def test_identitynet_reads_the_identity_tokens_of_each_pass(sdxl, adapter, antelope, identitynet, world_paths):
    image = face_image(world_paths)
    patched, tokens = instantid.apply_attention(sdxl, adapter, antelope, image, 0.8, 0.0, 1.0, 0.0, "average")
    kps = instantid.keypoint_images(antelope, image)
    positive, negative = instantid.apply_controlnet(tokens, identitynet, kps, conditioning(1), conditioning(2), 0.8,
                                                    0.0, 1.0)
    contexts = []
    control_model = positive[0][1]["control"].control_model
    hook = control_model.register_forward_pre_hook(lambda m, args, kwargs: contexts.append(kwargs["context"].clone()),
                                                   with_kwargs=True)
    try:
        sample(patched, positive, negative)
    finally:
        hook.remove()
    embeds = faces.analyze(antelope, image).raw
    expected_cond = adapter.weights.image_proj(embeds)
    expected_uncond = adapter.weights.image_proj(torch.zeros_like(embeds))
    assert contexts and all(c.shape[1:] == (16, CONTEXT) for c in contexts)  # the tokens, not the 77 text tokens
    rows = [row for c in contexts for row in c]
    assert any(torch.allclose(r, expected_cond[0], atol=1e-5) for r in rows)
    assert any(torch.allclose(r, expected_uncond[0], atol=1e-5) for r in rows)
    assert all(torch.allclose(r, expected_cond[0], atol=1e-5) or torch.allclose(r, expected_uncond[0], atol=1e-5)
               for r in rows)


def test_pose_from_another_image_and_noise_change_the_result(sdxl, adapter, antelope, identitynet, world_paths):
    own, own_kps = run(sdxl, adapter, antelope, identitynet, face_image(world_paths, 0))
    posed, posed_kps = run(sdxl, adapter, antelope, identitynet, face_image(world_paths, 0),
                           image_kps=face_image(world_paths, 1))
    assert not torch.equal(own_kps, posed_kps) and not torch.allclose(own, posed, atol=1e-4)
    noisy, _ = run(sdxl, adapter, antelope, identitynet, face_image(world_paths, 0), noise=0.35)
    assert not torch.allclose(own, noisy, atol=1e-4)


def test_several_references_average_into_one_identity(sdxl, adapter, antelope, world_paths):
    both = torch.cat((face_image(world_paths, 0), face_image(world_paths, 1)))
    _, tokens = instantid.apply_attention(sdxl, adapter, antelope, both, 0.8, 0.0, 1.0, 0.0, "average")
    embeds = faces.analyze(antelope, both).raw
    torch.testing.assert_close(tokens.cond[0], adapter.weights.image_proj(embeds.mean(0, keepdim=True))[0],
                               atol=1e-5, rtol=1e-5)
    _, joined = instantid.apply_attention(sdxl, adapter, antelope, both, 0.8, 0.0, 1.0, 0.0, "concat")
    assert joined.cond.shape == (1, 32, CONTEXT)


def test_attention_half_stacks_with_ip_adapter_and_faceid_and_masks_apply(sdxl, adapter, antelope, world_paths):
    from test_sdxl import ENCODERS
    from ipadapter_kit.nodes.presets import load_clip_vision

    positive, negative = conditioning(1), conditioning(2)
    image = face_image(world_paths)
    ours, _ = instantid.apply_attention(sdxl, adapter, antelope, image, 0.8, 0.0, 1.0, 0.0, "average")
    base = sample(ours, positive, negative)
    ipa = model_cache.load_adapter("ip-adapter_sdxl_vit-h.safetensors")
    cond, uncond = apply.encode_pair(ipa, image, load_clip_vision(ENCODERS["vit-h"]))
    assert torch.equal(sample(patching.apply_embeds(ours, ipa, cond, uncond, weight=0.0), positive, negative), base)
    assert not torch.equal(sample(patching.apply_embeds(ours, ipa, cond, uncond), positive, negative), base)
    buffalo = faces.load_analyzer("buffalo_l", "CPU", 640)
    face_id = model_cache.load_adapter("ip-adapter-faceid_sdxl.bin")

    def with_faceid(weight):
        return faceid.ApplyFaceID.execute(ours, face_id, buffalo, image, weight, "linear", 0.0, 1.0, 1.0,
                                          "v2 (shortcut)", "normalized", "concat", "V only", False).result[0]

    assert torch.equal(sample(with_faceid(0.0), positive, negative), base)
    assert not torch.equal(sample(with_faceid(0.8), positive, negative), base)
    assert torch.equal(sample(ours, positive, negative), base)  # the earlier model is unchanged
    ones, _ = instantid.apply_attention(sdxl, adapter, antelope, image, 0.8, 0.0, 1.0, 0.0, "average",
                                        torch.ones(32, 32))
    assert torch.equal(sample(ones, positive, negative), base)
    half = torch.zeros(32, 32)
    half[:, :16] = 1.0
    masked, _ = instantid.apply_attention(sdxl, adapter, antelope, image, 0.8, 0.0, 1.0, 0.0, "average", half)
    assert not torch.equal(sample(masked, positive, negative), base)


def test_typed_errors(sd15, sdxl, adapter, antelope, identitynet, world_paths):
    image = face_image(world_paths)
    with pytest.raises(IncompatibleModelError, match="InstantID works on SDXL models only; this model is SD1.5"):
        instantid.apply_attention(sd15[0], adapter, antelope, image, 0.8, 0.0, 1.0, 0.0, "average")
    no_face = torch.from_numpy(insightface_pack.dark_image()[None].copy()).float() / 255  # dark noise only
    with pytest.raises(InvalidInputError, match="reference 2 of 2: no face found"):
        instantid.apply_attention(sdxl, adapter, antelope, torch.cat((image, no_face)), 0.8, 0.0, 1.0, 0.0,
                                  "average")
    with pytest.raises(InvalidInputError, match="image_kps: reference 1 of 1: no face found"):
        run(sdxl, adapter, antelope, identitynet, image, image_kps=no_face)
    plain_ipa = model_cache.load_adapter("ip-adapter_sdxl_vit-h.safetensors")
    with pytest.raises(InvalidInputError, match="not InstantID"):
        instantid.apply_attention(sdxl, plain_ipa, antelope, image, 0.8, 0.0, 1.0, 0.0, "average")
    with pytest.raises(InvalidInputError, match="Apply InstantID"):
        apply.encode_pair(adapter, image, None)
    with pytest.raises(InvalidInputError, match="Apply InstantID"):
        faceid.check_faceid(adapter)
    with pytest.raises(InvalidInputError, match="CONTROL_NET"):
        instantid.apply_controlnet(instantid.IdentityTokens(torch.zeros(1, 16, CONTEXT), torch.zeros(1, 16, CONTEXT)),
                                   "not a controlnet", image, conditioning(1), conditioning(2), 0.8, 0.0, 1.0)
