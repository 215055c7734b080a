"""Embeds, image helpers, style & composition, tiles, regions and block weights, in-process."""
import pytest
import torch
from safetensors.torch import save_file

from ipadapter_kit.ipadapter_core import image_ops, weight_types
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import apply, composite, embeds_nodes, image_nodes, model_cache, weights_nodes
from ipadapter_kit.nodes.presets import load_clip_vision
from test_invariants import reference, sample

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


def encode(name, image, **kw):
    return apply.Encode.execute(model_cache.load_adapter(name), image, clip_vision=load_clip_vision(CLIP_H),
                                **kw).result[0]


def attn2(model):
    return model.model_options["transformer_options"]["patches_replace"]["attn2"]


def test_encode_weight_and_mask(world_paths):
    plain = encode("ip-adapter_sd15.safetensors", reference(1))
    assert torch.allclose(encode("ip-adapter_sd15.safetensors", reference(1), weight=0.5).cond, 0.5 * plain.cond)
    ones = encode("ip-adapter_sd15.safetensors", reference(1), mask=torch.ones(1, 10, 10))
    assert torch.equal(ones.cond, plain.cond)
    half = torch.ones(1, 10, 10)
    half[:, :, 5:] = 0
    assert not torch.allclose(encode("ip-adapter_sd15.safetensors", reference(1), mask=half).cond, plain.cond)


def test_combine_embeds(world_paths):
    a = encode("ip-adapter_sd15.safetensors", reference(1))
    b = encode("ip-adapter_sd15.safetensors", reference(2))
    concat = embeds_nodes.CombineEmbeds.execute(a, "concat", embed2=b).result[0]
    assert concat.cond.shape == (2, 24)
    average = embeds_nodes.CombineEmbeds.execute(a, "average", embed2=b).result[0]
    assert torch.allclose(average.cond, (a.cond + b.cond) / 2) and average.uncond.shape == (1, 24)
    plus = encode("ip-adapter-plus_sd15.safetensors", reference(1))
    with pytest.raises(InvalidInputError, match="different shapes"):
        embeds_nodes.CombineEmbeds.execute(a, "concat", embed2=plus)


def test_saved_embeds_load_back_and_apply_identically(sd15, tmp_path, monkeypatch):
    import folder_paths

    model, pos, neg = sd15
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path))
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    adapter = model_cache.load_adapter("ip-adapter-plus_sd15.safetensors")
    embeds = encode("ip-adapter-plus_sd15.safetensors", reference(1))
    path = embeds_nodes.SaveEmbeds.execute(embeds, "kit").result[0]
    loaded = embeds_nodes.LoadEmbeds.execute(path.rsplit("/", 1)[-1]).result[0]
    assert torch.equal(loaded.cond, embeds.cond) and loaded.clip_output == "penultimate_hidden_states"

    def run(e):
        return sample(apply.ApplyAdvanced.execute(model, adapter, 1.0, "linear", 0.0, 1.0, 1.0, "concat", "V only",
                                                  embeds=e).result[0], pos, neg)
    assert torch.equal(run(loaded), run(embeds))
    base = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    with pytest.raises(IncompatibleModelError, match="encoded for another kind"):
        apply.ApplyAdvanced.execute(model, base, 1.0, "linear", 0.0, 1.0, 1.0, "concat", "V only", embeds=loaded)


def test_load_embeds_refuses_other_files(tmp_path):
    other = tmp_path / "x.safetensors"
    save_file({"cond": torch.zeros(1, 4)}, str(other))
    with pytest.raises(InvalidInputError, match="not an IPAdapter Kit embeds file"):
        embeds_nodes.read_embeds(str(other))
    bad = tmp_path / "nan.safetensors"
    save_file({"cond": torch.full((1, 4), float("nan")), "uncond": torch.zeros(1, 4)}, str(bad),
              metadata={"format": embeds_nodes.FORMAT})
    with pytest.raises(InvalidInputError, match="NaN"):
        embeds_nodes.read_embeds(str(bad))


@pytest.mark.parametrize("position", image_ops.CROP_POSITIONS)
def test_prep_image(position):
    wide = torch.zeros(1, 100, 300, 3)
    wide[:, :, :100] = 1.0  # white left third
    out = image_nodes.PrepImage.execute(wide, "bicubic", position, 0.0, 224).result[0]
    assert out.shape == (1, 224, 224, 3)
    mean = out.mean().item()
    if position == "left":
        assert mean > 0.99
    elif position in ("right", "center"):
        assert mean < 0.01
    elif position == "pad":  # the whole 300px width kept on a 300px square: white third of the middle band
        assert abs(mean - 1 / 9) < 0.02


def test_noise_images_differ_by_type():
    images = [image_nodes.NoiseImage.execute(kind, 0.5, 1).result[0] for kind in image_ops.NOISE_TYPES]
    assert all(i.shape == (1, 224, 224, 3) for i in images)
    assert all(not torch.equal(images[i], images[j]) for i in range(4) for j in range(i + 1, 4))
    gray = torch.full((1, 32, 32, 3), 0.5)
    assert torch.equal(image_nodes.NoiseImage.execute("fade", 0.0, 1, image=gray).result[0], gray)


def test_style_and_composition_use_their_blocks(sd15):
    model = sd15[0]
    adapter = model_cache.load_adapter("ip-adapter-plus_sd15.safetensors")
    patched = composite.StyleComposition.execute(model, adapter, reference(1), reference(2), 1.0, 0.8, False,
                                                 "average", 0.0, 1.0, "V only",
                                                 clip_vision=load_clip_vision(CLIP_H)).result[0]
    patch = attn2(patched)[("input", 1, 0)]
    style, composition = patch.prompts
    assert style.active_layers() == {i for i, w in enumerate(weight_types.layer_weights("style transfer", "SD1.5",
                                                                                        1.0)) if w}
    assert composition.active_layers() == {i for i, w in enumerate(weight_types.layer_weights("composition",
                                                                                              "SD1.5", 0.8)) if w}


def test_tiled_reference(sd15):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    wide = torch.rand(1, 96, 256, 3)
    patched, tiles, masks = composite.ApplyTiled.execute(model, adapter, wide, 1.0, "linear", "tiles with masks",
                                                         0.15, 0.5, 0.0, 1.0, "V only",
                                                         clip_vision=load_clip_vision(CLIP_H)).result
    assert tiles.shape[0] == masks.shape[0] >= 3 and tiles.shape[1:] == (256, 256, 3)
    assert masks.sum(0).min() >= 1  # every column of the picture belongs to some tile
    prompts = attn2(patched)[("input", 1, 0)].prompts
    assert len(prompts) == tiles.shape[0] and all(p.masks is not None for p in prompts)
    enhanced = composite.ApplyTiled.execute(model, adapter, wide, 1.0, "linear", "enhance whole image", 0.15, 0.5,
                                            0.0, 1.0, "V only", clip_vision=load_clip_vision(CLIP_H)).result[0]
    assert attn2(enhanced)[("input", 1, 0)].prompts[0].references == 1
    assert not torch.allclose(sample(patched, pos, neg), sample(enhanced, pos, neg), atol=1e-3)


def test_regions_apply_in_one_node(sd15):
    model, pos, _ = sd15
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    left = torch.zeros(1, 64, 64)
    left[:, :, :32] = 1
    a, pos_a, _ = composite.RegionalConditioning.execute(reference(1), 1.0, 1.0, "linear", 0.0, 1.0, mask=left,
                                                         positive=pos).result
    b, _, _ = composite.RegionalConditioning.execute(reference(2), 0.7, 1.0, "style transfer", 0.0, 1.0,
                                                     mask=1 - left).result
    params = composite.CombineParams.execute(a, b).result[0]
    patched = composite.ApplyRegions.execute(model, adapter, params, "concat", "V only",
                                             clip_vision=load_clip_vision(CLIP_H)).result[0]
    prompts = attn2(patched)[("input", 1, 0)].prompts
    assert len(prompts) == 2 and torch.equal(prompts[0].masks[0], left[0])
    assert torch.equal(pos_a[0][1]["mask"], left)


@pytest.mark.parametrize("arch", ["SD1.5", "SDXL"])
def test_block_weights_presets_round_trip(arch):
    text, preview = weights_nodes.BlockWeights.execute(arch, "InstantStyle: style only", "").result
    parsed = weight_types.parse_block_weights(text, arch)
    assert [parsed[i] for i in range(len(parsed))] == weight_types.layer_weights("style transfer", arch, 1.0)
    assert preview.shape[0] == 1 and preview.shape[-1] == 3
    custom, _ = weights_nodes.BlockWeights.execute(arch, "custom", "3:0.5").result
    assert weight_types.parse_block_weights(custom, arch) == weight_types.parse_block_weights("3:0.5", arch)


def test_frame_weights_fade_the_prompt_per_latent(sd15):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    weights, _ = weights_nodes.FrameWeights.execute("1.0, 0.0", "linear", 2, 0).result
    patched = apply.ApplyAdvanced.execute(model, adapter, 1.0, "linear", 0.0, 1.0, 1.0, "concat", "V only",
                                          image=reference(1), clip_vision=load_clip_vision(CLIP_H),
                                          frame_weights=weights).result[0]
    out, plain = sample(patched, pos, neg, batch=2), sample(model, pos, neg, batch=2)
    assert not torch.allclose(out[0], plain[0], atol=1e-3)
    assert torch.equal(out[1], plain[1])  # weight 0 on the last frame: that latent is untouched
