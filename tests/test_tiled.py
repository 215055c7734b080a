"""Apply Tiled as IPAdapter_plus's Tiled and ClipVision Enhancer, and per-frame inputs of the composite nodes."""
import math

import pytest
import torch

from ipadapter_kit.ipadapter_core import tiles
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import clip_encode, composite, model_cache, patching
from ipadapter_kit.nodes.presets import load_clip_vision
from test_invariants import reference, sample

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
PLUS = "ip-adapter-plus_sd15.safetensors"
BASE = "ip-adapter_sd15.safetensors"


def picture(seed, height, width, batch=1):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# Reference re-implementation of IPAdapter_plus's enhancer embedding (utils.encode_image_masked), element by element.
def reference_grid(image, n):
    """Tile (i, j) of each image: rows i*h..(i+1)*h, columns j*w..(j+1)*w, h = H // n, w = W // n."""
    h, w = image.shape[1] // n, image.shape[2] // n
    return [[image[:, i * h:(i + 1) * h, j * w:(j + 1) * w] for j in range(n)] for i in range(n)]


def reference_merge_map(maps, n):
    """maps[i][j]: (s, s, E) -> (s, s, E): the n x n mosaic of the maps, each output cell the mean of an n x n block."""
    s = maps[0][0].shape[0]
    out = torch.zeros_like(maps[0][0])
    for a in range(s):
        for b in range(s):
            cells = []
            for u in range(n):
                for v in range(n):
                    row, col = a * n + u, b * n + v
                    cells.append(maps[row // s][col // s][row % s, col % s])
            out[a, b] = torch.stack(cells).mean(dim=0)
    return out


def reference_merge_hidden(states, n):
    """states[i][j]: (1 + s*s, E) -> merged (1 + s*s, E)."""
    s = math.isqrt(states[0][0].shape[0] - 1)
    cls = torch.stack([states[i][j][0] for i in range(n) for j in range(n)]).mean(dim=0)
    maps = [[states[i][j][1:].reshape(s, s, -1) for j in range(n)] for i in range(n)]
    return torch.cat([cls[None], reference_merge_map(maps, n).reshape(s * s, -1)])


def reference_enhanced(encode, image, n, ratio):
    """IPAdapter_plus's embeds for a batch of images: whole images, tiles merged per image, then ratio."""
    whole = encode(image)
    grid = reference_grid(image, n)
    merged = []
    for b in range(image.shape[0]):
        states = [[encode(grid[i][j][b:b + 1])[0] for j in range(n)] for i in range(n)]
        if whole.ndim == 3:
            merged.append(reference_merge_hidden(states, n))
        elif math.isqrt(whole.shape[-1]) ** 2 == whole.shape[-1]:
            side = math.isqrt(whole.shape[-1])
            merged.append(reference_merge_map([[e.reshape(side, side, 1) for e in row] for row in states],
                                              n).reshape(-1))
        else:  # IPAdapter_plus cannot reshape a non-square width; here the tiles' mean
            merged.append(torch.stack([e for row in states for e in row]).mean(dim=0))
    merged = torch.stack(merged)
    if image.shape[0] > 1:
        return whole * ratio + merged * (1 - ratio)
    return torch.cat([whole * ratio, merged])


@pytest.mark.parametrize("n", [2, 3])
def test_merge_matches_the_reference_on_plain_tensors(n):
    s, width = 4, 5
    states = torch.randn(2 * n * n, 1 + s * s, width, generator=torch.Generator().manual_seed(n))
    merged = tiles.merge_tiles(states, n)
    for b in range(2):
        group = states[b * n * n:(b + 1) * n * n]
        expected = reference_merge_hidden([[group[i * n + j] for j in range(n)] for i in range(n)], n)
        assert torch.allclose(merged[b], expected, atol=1e-6)
    siglip = torch.randn(n * n, s * s, width)  # no class token
    expected = reference_merge_map([[siglip[i * n + j].reshape(s, s, -1) for j in range(n)] for i in range(n)], n)
    assert torch.allclose(tiles.merge_tiles(siglip, n)[0], expected.reshape(s * s, -1), atol=1e-6)
    with pytest.raises(InvalidInputError, match="not a square grid"):
        tiles.merge_tiles(torch.randn(n * n, 7, width), n)
    pooled = torch.randn(n * n, 16, generator=torch.Generator().manual_seed(9))  # square width: the 4 x 4 map
    expected = reference_merge_map([[pooled[i * n + j].reshape(4, 4, 1) for j in range(n)] for i in range(n)], n)
    assert torch.allclose(tiles.merge_tiles(pooled, n)[0], expected.reshape(-1), atol=1e-6)
    odd = torch.randn(n * n, 24)  # not a square width: the tiles' mean
    assert torch.allclose(tiles.merge_tiles(odd, n)[0], odd.mean(dim=0))


def test_grid_tiles_cut_any_aspect():
    image = picture(1, 50, 91)
    cut = tiles.grid_tiles(image, 3)
    assert cut.shape == (9, 16, 30, 3)
    assert torch.equal(cut[5], image[0, 16:32, 60:90])
    with pytest.raises(InvalidInputError, match="too small"):
        tiles.grid_tiles(picture(1, 10, 10), 16)


def captured_embeds(monkeypatch):
    """Records the cond / uncond the composite nodes hand to apply_embeds."""
    seen = []
    original = patching.apply_embeds

    def record(model, adapter, cond, uncond, **kw):
        seen.append((cond, uncond, kw))
        return original(model, adapter, cond, uncond, **kw)

    monkeypatch.setattr(composite.patching, "apply_embeds", record)
    return seen


def run_tiled(model, adapter, image, mode="enhance whole image", ratio=0.5, **kw):
    return composite.ApplyTiled.execute(model, adapter, image, 1.0, "linear", mode, kw.pop("overlap", 0.0), ratio,
                                        0.0, 1.0, "V only", clip_vision=load_clip_vision(CLIP_H), **kw).result


@pytest.mark.parametrize("name", [PLUS, BASE])
@pytest.mark.parametrize("size, n, ratio, batch", [((96, 96), 2, 0.5, 1), ((80, 130), 2, 1.0, 1),
                                                   ((96, 64), 3, 0.0, 1), ((72, 120), 2, 0.3, 2)])
def test_enhancer_embeds_match_ipadapter_plus(sd15, monkeypatch, name, size, n, ratio, batch):
    adapter = model_cache.load_adapter(name)
    clip_vision = load_clip_vision(CLIP_H)
    image = picture(3, *size, batch=batch)
    seen = captured_embeds(monkeypatch)
    run_tiled(sd15[0], adapter, image, ratio=ratio, enhance_tiles=n)
    cond, uncond, kw = seen[0]
    expected = reference_enhanced(lambda x: clip_encode.encode(clip_vision, x, adapter.spec.clip_output), image, n,
                                  ratio)
    assert cond.shape == expected.shape and torch.allclose(cond, expected, atol=1e-5)
    assert uncond.shape[0] == cond.shape[0] and kw["combine"] == "concat"
    if batch == 1 and ratio == 0.0:
        assert torch.count_nonzero(cond[0]) == 0  # the whole image is weighted out, only its tiles speak


def test_enhancer_with_one_tile_is_the_plain_encoding(sd15, monkeypatch):
    adapter = model_cache.load_adapter(PLUS)
    image = picture(4, 96, 96)
    seen = captured_embeds(monkeypatch)
    _, grid, _ = run_tiled(sd15[0], adapter, image, ratio=0.2, enhance_tiles=1)
    assert torch.equal(seen[0][0], clip_encode.encode(load_clip_vision(CLIP_H), image, adapter.spec.clip_output))
    assert torch.equal(grid, image)


def test_enhancer_changes_a_square_reference(sd15):
    """The issue: with a square reference enhance used to change the output by under 1% of the adapter's effect."""
    model, pos, neg = sd15
    adapter = model_cache.load_adapter(PLUS)
    image = reference(5)
    base = sample(model, pos, neg)
    plain = sample(run_tiled(model, adapter, image, enhance_tiles=1)[0], pos, neg)
    enhanced = sample(run_tiled(model, adapter, image, enhance_tiles=2)[0], pos, neg)
    assert (enhanced - plain).norm() > 0.05 * (plain - base).norm()


# ---------------------------------------------------------------------------------------------------------------
# Tiled: IPAdapter_plus's framing and tile layout.
def ipadapter_plus_starts(length, tile=256):
    """IPAdapter_plus's tile starts along one side of the framed image (IPAdapterTiled.apply_tiled)."""
    count = math.ceil(length / tile)
    overlap = max(0, (count * tile - length) / (count - 1 if count > 1 else 1))
    return [int(i * (tile - overlap)) for i in range(count)]


@pytest.mark.parametrize("height, width, framed", [(100, 100, (512, 512)), (90, 110, (512, 512)),
                                                   (100, 250, (256, 640)), (300, 100, (768, 256)),
                                                   (50, 300, (256, 1024)), (64, 100, (256, 400))])
def test_tiled_frames_and_cuts_as_ipadapter_plus(height, width, framed):
    image, mask = tiles.frame_reference(picture(2, height, width), torch.ones(2, height, width))
    assert image.shape[1:3] == framed and mask.shape == (2, *framed)
    layout = tiles.tile_layout(*framed)
    assert layout == [(t, left) for t in ipadapter_plus_starts(framed[0]) for left in ipadapter_plus_starts(framed[1])]
    assert tiles.tile_layout(256, 640, 0.5)[-1] == (0, 384) and len(tiles.tile_layout(256, 640, 0.5)) == 4


def test_tiles_with_several_images_and_a_mask(sd15, monkeypatch):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter(BASE)
    images = torch.cat([picture(6, 100, 250), picture(7, 100, 250)])
    seen = captured_embeds(monkeypatch)
    patched, cut, masks = run_tiled(model, adapter, images, mode="tiles with masks", combine_embeds="average")
    assert cut.shape == (3 * 2, 256, 256, 3) and masks.shape == (3, 256, 640)
    framed, _ = tiles.frame_reference(images)
    clip_vision = load_clip_vision(CLIP_H)
    for (cond, _, kw), (top, left) in zip(seen, tiles.tile_layout(256, 640)):
        expected = clip_encode.encode(clip_vision, framed[:, top:top + 256, left:left + 256], "image_embeds")
        assert torch.allclose(cond, expected) and kw["combine"] == "average"
        assert torch.equal(kw["attn_mask"][0, :, left:left + 256], torch.ones(256, 256))
        assert kw["attn_mask"].sum() == 256 * 256
    prompts = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)].prompts
    assert len(prompts) == 3 and all(p.references == 1 for p in prompts)
    ones = run_tiled(model, adapter, images, mode="tiles with masks", attn_mask=torch.ones(1, 40, 100))[0]
    unmasked = run_tiled(model, adapter, images, mode="tiles with masks")[0]
    assert torch.allclose(sample(ones, pos, neg), sample(unmasked, pos, neg), rtol=1e-5, atol=1e-3)
    left_half = torch.zeros(1, 40, 100)
    left_half[..., :50] = 1
    _, _, half_masks = run_tiled(model, adapter, images, mode="tiles with masks", attn_mask=left_half)
    assert half_masks[0, :, :256].min() > 0.99 and half_masks[0, :, 256:].max() == 0  # tile 0: left of the middle
    assert half_masks[2].max() < 1e-3  # the right tile lies outside the mask


def reference_cas(image, amount):
    """Contrast-adaptive sharpening pixel by pixel (zero border), as IPAdapter_plus's contrast_adaptive_sharpening."""
    x = torch.nn.functional.pad(image, (1, 1, 1, 1))
    out = torch.zeros_like(image)
    for c in range(image.shape[0]):
        for y in range(image.shape[1]):
            for z in range(image.shape[2]):
                p = x[c, y:y + 3, z:z + 3]
                cross = torch.stack([p[0, 1], p[1, 0], p[1, 1], p[1, 2], p[2, 1]])
                diag = torch.stack([p[0, 0], p[0, 2], p[2, 0], p[2, 2]])
                low = cross.min().clamp(min=0) + diag.min().clamp(min=0)
                high = cross.max().clamp(max=1) + diag.max().clamp(max=1)
                amp = torch.sqrt(torch.minimum(low, 2 - high) / high)
                w = -amp * (amount * (1 / 5 - 1 / 8) + 1 / 8)
                value = ((p[0, 1] + p[1, 0] + p[1, 2] + p[2, 1]) * w + p[1, 1]) / (1 + 4 * w)
                out[c, y, z] = torch.nan_to_num(value).clamp(0, 1)
    return out


def test_sharpening(sd15, monkeypatch):
    image = picture(8, 6, 7)
    sharp = tiles.contrast_adaptive_sharpening(image, 0.7)
    assert torch.allclose(sharp[0].permute(2, 0, 1), reference_cas(image[0].permute(2, 0, 1), 0.7), atol=1e-6)
    assert torch.equal(tiles.contrast_adaptive_sharpening(image, 0.0), image)
    adapter = model_cache.load_adapter(BASE)
    wide = picture(9, 100, 250)
    none = run_tiled(sd15[0], adapter, wide, mode="tiles with masks")[1]
    assert torch.equal(run_tiled(sd15[0], adapter, wide, mode="tiles with masks", sharpening=0.0)[1], none)
    assert not torch.allclose(run_tiled(sd15[0], adapter, wide, mode="tiles with masks", sharpening=0.8)[1], none)


def test_wrong_family_is_reported_before_encoding(sd15, monkeypatch):
    adapter = model_cache.load_adapter("ip-adapter_sdxl.safetensors")
    monkeypatch.setattr(clip_encode, "encode", lambda *a, **k: pytest.fail("encoded before checking the model"))
    for mode in composite.TILE_MODES:
        with pytest.raises(IncompatibleModelError, match="SDXL adapter"):
            run_tiled(sd15[0], adapter, picture(1, 64, 64), mode=mode)
    with pytest.raises(IncompatibleModelError, match="SDXL adapter"):
        composite.StyleComposition.execute(sd15[0], adapter, reference(1), reference(2), 1.0, 1.0, False, "average",
                                           0.0, 1.0, "V only", clip_vision=load_clip_vision(CLIP_H))


# ---------------------------------------------------------------------------------------------------------------
# Per-frame inputs: frame weight 0 leaves that latent to the plain model; unfold gives latent i reference i.
def two_latents(model, pos, neg):
    return sample(model, pos, neg, batch=2)


def test_frame_weights_on_the_composite_nodes(sd15):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter(PLUS)
    clip_vision = load_clip_vision(CLIP_H)
    plain = two_latents(model, pos, neg)
    style = composite.StyleComposition.execute(model, adapter, reference(1), reference(2), 1.0, 1.0, False,
                                               "average", 0.0, 1.0, "V only", clip_vision=clip_vision,
                                               frame_weights=(0.0, 1.0)).result[0]
    tiled = run_tiled(model, adapter, picture(3, 96, 200), mode="tiles with masks", frame_weights=(1.0, 0.0))[0]
    region = composite.RegionalConditioning.execute(reference(1), 1.0, 1.0, "linear", 0.0, 1.0,
                                                    frame_weights=(0.0, 1.0)).result[0]
    regions = composite.ApplyRegions.execute(model, adapter, region, "concat", "V only",
                                             clip_vision=clip_vision).result[0]
    for patched, silent in ((style, 0), (tiled, 1), (regions, 0)):
        out = two_latents(patched, pos, neg)
        assert torch.allclose(out[silent], plain[silent], atol=1e-5)
        assert not torch.allclose(out[1 - silent], plain[1 - silent], atol=1e-3)


def test_unfold_batch_on_the_composite_nodes(sd15):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter(PLUS)
    clip_vision = load_clip_vision(CLIP_H)
    pair = torch.cat([reference(1), reference(2)])

    def style(image, unfold):
        return two_latents(composite.StyleComposition.execute(
            model, adapter, image, image, 1.0, 1.0, False, "concat", 0.0, 1.0, "V only", clip_vision=clip_vision,
            unfold_batch=unfold).result[0], pos, neg)

    def regions(image, unfold):
        params = composite.RegionalConditioning.execute(image, 1.0, 1.0, "linear", 0.0, 1.0,
                                                        unfold_batch=unfold).result[0]
        return two_latents(composite.ApplyRegions.execute(model, adapter, params, "concat", "V only",
                                                          clip_vision=clip_vision).result[0], pos, neg)

    def tiled(image, unfold):
        return two_latents(run_tiled(model, adapter, torch.cat([image, image], dim=2), mode="tiles with masks",
                                     unfold_batch=unfold)[0], pos, neg)

    for run in (style, regions, tiled):
        unfolded = run(pair, True)
        assert torch.allclose(unfolded[0], run(pair[:1], False)[0], atol=1e-5)
        assert torch.allclose(unfolded[1], run(pair[1:], False)[1], atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# The converter: IPAdapter_plus's widgets carry over to Apply Tiled / Style & Composition.
def converted(class_type, **widgets):
    from ipadapter_kit.migrate import convert

    inputs = {"model": ["1", 0], "ipadapter": ["2", 0], "image": ["3", 0], "weight": 0.8, "weight_type": "ease in",
              "start_at": 0.1, "end_at": 0.9, "embeds_scaling": "K+V", **widgets}
    result = convert({"7": {"class_type": class_type, "inputs": inputs}})
    assert [line for line in result.report if line.startswith(("lossy:", "unmapped:"))] == []
    out = result.workflow["7"]
    return out["class_type"], {k: v for k, v in out["inputs"].items() if k not in ("model", "ipadapter", "image")}


SCHEDULE = {"weight": 0.8, "weight_type": "ease in", "start_at": 0.1, "end_at": 0.9, "embeds_scaling": "K+V"}


@pytest.mark.parametrize("class_type, widgets, expected", [
    ("IPAdapterTiled", {"combine_embeds": "average", "sharpening": 0.3, "attn_mask": ["4", 0]},
     {"mode": "tiles with masks", "overlap": 0.0, "combine_embeds": "average", "sharpening": 0.3,
      "attn_mask": ["4", 0]}),
    ("IPAdapterTiledBatch", {"sharpening": 0.2, "encode_batch_size": 8},
     {"mode": "tiles with masks", "overlap": 0.0, "sharpening": 0.2, "unfold_batch": True}),
    ("IPAdapterClipVisionEnhancer", {"combine_embeds": "add", "enhance_tiles": 3, "enhance_ratio": 0.7,
                                     "attn_mask": ["4", 0]},
     {"mode": "enhance whole image", "combine_embeds": "add", "enhance_tiles": 3, "enhance_ratio": 0.7,
      "attn_mask": ["4", 0]}),
    ("IPAdapterClipVisionEnhancerBatch", {"enhance_tiles": 4, "enhance_ratio": 0.25, "encode_batch_size": 0},
     {"mode": "enhance whole image", "enhance_tiles": 4, "enhance_ratio": 0.25, "unfold_batch": True}),
])
def test_ipadapter_plus_tiled_and_enhancer_convert(class_type, widgets, expected):
    target, inputs = converted(class_type, **widgets)
    assert target == "IPAKitApplyTiled"
    assert {k: inputs[k] for k in {**SCHEDULE, **expected}} == {**SCHEDULE, **expected}
    assert "encode_batch_size" not in inputs


def test_style_composition_batch_converts_unfolded():
    from ipadapter_kit.migrate import convert

    inputs = {"model": ["1", 0], "ipadapter": ["2", 0], "image_style": ["3", 0], "image_composition": ["4", 0],
              "weight_style": 1.2, "weight_composition": 0.7, "expand_style": True, "start_at": 0.0, "end_at": 1.0,
              "embeds_scaling": "V only"}
    result = convert({"7": {"class_type": "IPAdapterStyleCompositionBatch", "inputs": inputs}})
    assert [line for line in result.report if line.startswith(("lossy:", "unmapped:"))] == []
    out = result.workflow["7"]["inputs"]
    assert result.workflow["7"]["class_type"] == "IPAKitStyleComposition"
    assert out["unfold_batch"] is True and out["weight_style"] == 1.2 and out["expand_style"] is True
