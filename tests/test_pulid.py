"""PuLID on the tiny SDXL through the pack's nodes: the whole face pipeline (antelopev2, alignment, parsing, EVA-CLIP,
ID encoder) feeds identity tokens to the attn2 patch; methods, invariants, stacking, masks and typed errors."""
import pytest
import torch

import comfy.sample
from host_support import tiny_configs
from ipadapter_kit.ipadapter_core import eva_clip, face_parsing
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import faces, model_cache, patching, pulid
from tinymodels import comfy_models, insightface_pack
from tinymodels.world import EVA_CLIP, FACE_PARSER, PULID_SDXL, face_image

pytestmark = pytest.mark.usefixtures("one_thread")
CONTEXT = tiny_configs.SDXL_UNET["context_dim"]
POOLED = tiny_configs.SDXL_UNET["adm_in_channels"] - 6 * 256


@pytest.fixture(scope="module")
def sdxl(world_paths):
    return comfy_models.tiny_unet("sdxl", seed=5)


@pytest.fixture(scope="module")
def parts(world_paths):
    adapter = model_cache.load_adapter(PULID_SDXL, "pulid")
    eva = pulid.load_eva(EVA_CLIP, FACE_PARSER)
    return adapter, eva, faces.load_analyzer("antelopev2", "CPU", 640)


def conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, CONTEXT, generator=gen), {"pooled_output": torch.randn(1, POOLED, generator=gen)}]]


def sample(model):
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 4, 8, 8, generator=gen)
    return comfy.sample.sample(model, noise, 2, 5.0, "euler", "normal", conditioning(1), conditioning(2),
                               torch.zeros(1, 4, 8, 8), seed=0, disable_pbar=True)


def applied(sdxl, parts, image, method="fidelity", weight=1.0, **kw):
    adapter, eva, analyzer = parts
    return pulid.ApplyPuLID.execute(sdxl, adapter, eva, analyzer, image, method, weight, kw.pop("start_at", 0.0),
                                    kw.pop("end_at", 1.0), **kw).result[0]


def test_the_loaders_read_the_files_by_their_tensors(parts):
    adapter, eva, _ = parts
    assert adapter.spec.kind == "pulid" and adapter.spec.arch == "SDXL"
    assert isinstance(eva.tower, eva_clip.EVAVisionTower) and isinstance(eva.parser, face_parsing.BiSeNet)
    assert pulid.PuLIDLoader.execute(PULID_SDXL).result[0] is adapter


def test_identity_tokens_come_from_the_whole_face_pipeline(parts, world_paths):
    adapter, eva, analyzer = parts
    image = face_image(world_paths)
    result = faces.analyze(analyzer, image)
    pixels = pulid.face_pictures(eva, image, result)
    size = eva.tower.cfg.image_size
    assert pixels.shape == (1, 3, size, size)
    feature, hidden = eva.tower(pixels, eva_clip.PULID_LAYERS)
    torch.testing.assert_close(feature.norm(dim=-1), torch.ones(1))
    cond, uncond = pulid.identity(adapter, eva, analyzer, image, 0.0, 8)
    expected = adapter.weights.image_proj(torch.cat((result.raw, feature), dim=-1), hidden)
    assert cond.shape == (1, adapter.spec.tokens + 8, CONTEXT)
    torch.testing.assert_close(cond[:, :adapter.spec.tokens], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(cond, uncond)


def test_pulid_changes_the_image_methods_differ_and_weight_zero_is_plain(sdxl, parts, world_paths):
    image = face_image(world_paths)
    plain = sample(sdxl)
    results = {m: sample(applied(sdxl, parts, image, m)) for m in pulid.METHODS}
    for out in results.values():
        assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)
    assert not torch.allclose(results["fidelity"], results["style"], atol=1e-5)
    assert not torch.allclose(results["style"], results["neutral"], atol=1e-5)
    assert torch.equal(sample(applied(sdxl, parts, image, weight=0.0)), plain)
    assert torch.equal(sample(applied(sdxl, parts, image, start_at=0.6, end_at=0.2)), plain)
    assert torch.equal(sample(sdxl), plain)  # clone-safe


def test_several_photos_average_and_masks_and_stacking(sdxl, parts, world_paths):
    adapter, eva, analyzer = parts
    both = torch.cat((face_image(world_paths, 0), face_image(world_paths, 1)))
    one_each = [pulid.identity(adapter, eva, analyzer, both[i:i + 1], 0.0, 0)[0] for i in range(2)]
    averaged, _ = pulid.identity(adapter, eva, analyzer, both, 0.0, 0)
    torch.testing.assert_close(averaged, (one_each[0] + one_each[1]) / 2, atol=1e-5, rtol=1e-5)
    image = face_image(world_paths)
    full = sample(applied(sdxl, parts, image, "style"))
    assert torch.equal(sample(applied(sdxl, parts, image, "style", attn_mask=torch.ones(32, 32))), full)
    half = torch.zeros(32, 32)
    half[:, :16] = 1.0
    assert not torch.equal(sample(applied(sdxl, parts, image, "style", attn_mask=half)), full)
    stacked = applied(applied(sdxl, parts, image, "style"), parts, image, "neutral", weight=0.0)
    assert torch.equal(sample(stacked), full)
    assert not torch.equal(sample(applied(applied(sdxl, parts, image, "style"), parts, image, "neutral")), full)


def test_advanced_node_matches_the_methods(sdxl, parts, world_paths):
    adapter, eva, analyzer = parts
    image = face_image(world_paths)
    advanced = pulid.ApplyPuLIDAdvanced.execute(sdxl, adapter, eva, analyzer, image, 1.0, "ortho", 16, 0.0, 0.0,
                                                1.0).result[0]
    assert torch.equal(sample(advanced), sample(applied(sdxl, parts, image, "style")))


def test_typed_errors(sd15, sdxl, parts, world_paths):
    adapter, eva, analyzer = parts
    image = face_image(world_paths)
    with pytest.raises(IncompatibleModelError, match="works on SDXL models only, and this model is SD1.5"):
        applied(sd15[0], parts, image)
    no_face = torch.from_numpy(insightface_pack.dark_image()[None].copy()).float() / 255
    with pytest.raises(InvalidInputError, match="reference 1 of 1: no face found"):
        applied(sdxl, parts, no_face)
    with pytest.raises(InvalidInputError, match="eva_clip: connect"):
        pulid.apply_pulid(sdxl, adapter, "not eva", analyzer, image, 1.0, "ortho", 16, 0.0, 0.0, 1.0)
    with pytest.raises(InvalidInputError, match="not PuLID"):
        pulid.check_pulid(model_cache.load_adapter("ip-adapter_sdxl_vit-h.safetensors"), sdxl)
    with pytest.raises(InvalidInputError, match="not found in models/clip or models/clip_vision"):
        pulid.load_eva("missing.pt", FACE_PARSER)
    with pytest.raises(InvalidInputError, match="Apply PuLID"):
        patching.apply_embeds(sdxl, adapter, torch.zeros(1, 512), torch.zeros(1, 512))


def test_the_projected_terms_read_nothing_on_the_host(sdxl, parts, world_paths, monkeypatch):
    from ipadapter_kit.ipadapter_core.attention import ImageAttention
    from test_pulid_flux import _refusing

    patched = applied(sdxl, parts, face_image(world_paths), "fidelity", start_at=0.2, attn_mask=torch.ones(32, 32))
    _refusing(monkeypatch, ImageAttention, "projected_terms")
    assert torch.isfinite(sample(patched)).all()
