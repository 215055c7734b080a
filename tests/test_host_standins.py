"""The test host's stand-ins for other packs' nodes (tests/host_support: ComfyUI_essentials, ComfyUI_FaceAnalysis,
ComfyUI-Kolors-MZ) do what the originals do, and the tiny Kolors is consistent with the Kolors adapters."""
import pytest
import torch

from host_support import essentials, face_analysis, kolors_mz, tiny_configs
from ipadapter_kit.ipadapter_core import adapter as core_adapter
from ipadapter_kit.nodes import model_cache
from tinymodels import ipadapter_files, kolors_models
from tinymodels.world import KOLORS_CHATGLM, KOLORS_UNET


@pytest.fixture(scope="module")
def kolors_paths(world_paths):
    import folder_paths

    for name in ("unet", "LLM"):
        folder_paths.add_model_folder_path(name, str(world_paths / "models" / name))
    folder_paths.filename_list_cache.clear()
    return world_paths


@pytest.mark.parametrize("expression, a, b, expected", [
    ("a*224", 3, 0.0, (672, 672.0)), ("3", 0.0, 0.0, (3, 3.0)), ("(a + b) / 4", 1, "2.0", (1, 0.75)),
    ("max(a, b) ** 2 - a % 2", 3, 2, (8, 8.0)), ("a > b", 1, 2, (0, 0.0))])
def test_simple_math_evaluates_over_a_and_b(expression, a, b, expected):
    assert essentials.SimpleMath().execute(expression, a=a, b=b) == expected


def test_simple_math_refuses_anything_but_arithmetic():
    with pytest.raises(ValueError, match="not supported"):
        essentials.SimpleMath().execute("__import__('os').getcwd()", a=1)


def test_masks_from_rgbcmybw_pick_each_corner_colour_within_its_threshold():
    colours = torch.tensor([essentials.CORNERS[name] for name in essentials.COLOURS], dtype=torch.float32)
    image = (colours * 0.9 + 0.05)[None, None]  # (1, 1, 8, 3): each colour 0.05 inside its corner
    masks = essentials.MaskFromRGBCMYBW().execute(image, 0.1, 0.1, 0.1, 0, False)
    assert torch.equal(torch.stack([m[0, 0] for m in masks]), torch.eye(8))
    none = essentials.MaskFromRGBCMYBW().execute(image, 0.04, 0.04, 0.04, 0, False)
    assert all(m.sum() == 0 for m in none)


def test_cas_sharpening_leaves_flat_images_and_steepens_edges():
    flat = torch.full((1, 6, 6, 3), 0.4)
    assert torch.allclose(essentials.ImageCAS().execute(flat, 0.8)[0], flat, atol=1e-6)
    edge = torch.full((1, 6, 6, 3), 0.3)
    edge[:, :, 3:] = 0.7
    out = essentials.ImageCAS().execute(edge, 0.8)[0]
    assert (out[0, 2, 2] < 0.3).all() and (out[0, 2, 3] > 0.7).all()  # overshoot on both sides of the step
    assert out.min() >= 0 and out.max() <= 1


def test_image_list_to_batch_resizes_to_the_first_image():
    first, second = torch.rand(1, 8, 8, 3), torch.rand(2, 16, 16, 3)
    (batch,) = essentials.ImageListToBatch().execute([first, second])
    assert batch.shape == (3, 8, 8, 3) and torch.equal(batch[:1], first)


def test_conditioning_combine_multiple_keeps_every_entry_in_order():
    parts = [[[torch.full((1, 2, 4), float(i)), {"i": i}]] for i in range(3)]
    (combined,) = essentials.ConditioningCombineMultiple().execute(*parts)
    assert [entry[1]["i"] for entry in combined] == [0, 1, 2]


def test_random_transform_repeats_and_follows_its_seed():
    image = torch.rand(2, 24, 32, 3, generator=torch.Generator().manual_seed(0))
    node = essentials.ImageRandomTransform()
    (out,) = node.execute(image, 5, 3, 0.3)
    assert out.shape == (6, 24, 32, 3) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(node.execute(image, 5, 3, 0.3)[0], out)
    assert not torch.equal(node.execute(image, 6, 3, 0.3)[0], out)


def test_face_bounding_box_gives_one_box_per_image_as_lists():
    image = torch.rand(3, 20, 30, 3)
    models = face_analysis.FaceAnalysisModels().load_models("dlib", "CPU")[0]
    faces, xs, ys, widths, heights = face_analysis.FaceBoundingBox().bbox(models, image, 30, -1)
    assert [tuple(face.shape) for face in faces] == [(1, 20, 30, 3)] * 3 and widths == [30] * 3 and heights == [20] * 3
    picked = face_analysis.FaceBoundingBox().bbox(models, image, 0, 7)[0]
    assert len(picked) == 1 and torch.equal(picked[0], image[2:3])


def test_tiny_kolors_unet_file_loads_back_to_the_weights_written(kolors_paths):
    model, hid_proj = kolors_mz.load_kolors_unet(KOLORS_UNET, keep_hid_proj=True)
    written = kolors_models.kolors_diffusion_model(seed=200).state_dict()  # world.build's seed for Kolors
    loaded = model.model.diffusion_model.state_dict()
    assert loaded.keys() == written.keys()
    assert all(torch.equal(loaded[key], written[key]) for key in written)
    assert torch.equal(hid_proj.weight, written["encoder_hid_proj.weight"])


def test_tiny_kolors_fits_the_kolors_adapters(kolors_paths):
    """encoder_hid_proj maps the ChatGLM width to the context that the Kolors adapters' image K/V read."""
    model, _ = kolors_mz.load_kolors_unet(KOLORS_UNET, keep_hid_proj=True)
    hid = model.model.diffusion_model.encoder_hid_proj
    faceid = model_cache.load_adapter(ipadapter_files.KOLORS_FACEID).spec
    assert tuple(hid.weight.shape) == (faceid.cross_dim, faceid.token_dim)
    plus = core_adapter.load(str(model_cache.resolve("ipadapter", "Kolors-IP-Adapter-Plus.bin"))).spec
    assert plus.cross_dim == tiny_configs.KOLORS_UNET["context_dim"] == hid.weight.shape[0]


def test_legacy_loader_with_text_projection_equals_the_v2_loader(kolors_paths):
    """MZ's two ways of running Kolors: encoder_hid_proj on the text (legacy) or in the UNet's forward (V2)."""
    glm = kolors_mz.MZ_ChatGLM3Loader().load_chatglm3(KOLORS_CHATGLM)[0]
    legacy, hid_proj = kolors_mz.MZ_KolorsUNETLoader().load_unet(KOLORS_UNET)
    (v2,) = kolors_mz.MZ_KolorsUNETLoaderV2().load_unet(KOLORS_UNET)
    projected = kolors_mz.MZ_ChatGLM3TextEncode().encode(glm, "a warrior", hid_proj)[0][0]
    raw = kolors_mz.MZ_ChatGLM3TextEncodeV2().encode(glm, "a warrior")[0][0]
    assert raw[0].shape == (1, tiny_configs.KOLORS_CHATGLM_TOKENS, tiny_configs.KOLORS_CHATGLM_WIDTH)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500.0])
    with torch.no_grad():
        a = legacy.model.apply_model(x, t, c_crossattn=projected[0], y=legacy.model.encode_adm(**projected[1]))
        b = v2.model.apply_model(x, t, c_crossattn=raw[0], y=v2.model.encode_adm(**raw[1]))
    assert torch.allclose(a, b, atol=1e-5)
    other = kolors_mz.MZ_ChatGLM3TextEncodeV2().encode(glm, "a castle")[0][0]
    assert not torch.allclose(other[0], raw[0])


def test_mask_cleanup_removes_isolated_pixels_and_fills_holes():
    image = torch.zeros(1, 9, 9, 3)
    image[0, 0, 0, 0] = 1.0  # an isolated red pixel
    image[0, 3:8, 3:8, 0] = 1.0  # a red square with a hole
    image[0, 5, 5, 0] = 0.0
    node = essentials.MaskFromRGBCMYBW()
    raw = node.execute(image, 0.15, 0.15, 0.15, 0, False)[0][0]
    assert raw[0, 0] == 1 and raw[5, 5] == 0
    opened = node.execute(image, 0.15, 0.15, 0.15, 2, False)[0][0]
    assert opened[0, 0] == 0 and opened[3:8, 3].sum() == 5
    filled = node.execute(image, 0.15, 0.15, 0.15, 0, True)[0][0]
    assert filled[5, 5] == 1 and filled[0, 0] == 1
