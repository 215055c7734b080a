"""Flux adapters through the pack's nodes on the tiny Flux.1-dev checkpoint, in-process."""
import pytest
import torch

import comfy.controlnet
import comfy.patcher_extension
import comfy.sd
import comfy.utils
import folder_paths
import nodes as comfy_nodes
from ipadapter_kit.ipadapter_core import attention
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.nodes import apply, clip_vision, model_cache, patching

XLABS, XLABS_V2, INSTANTX = "flux-ip-adapter.safetensors", "flux-ip-adapter-v2.safetensors", "ip-adapter.bin"
CLIP_L, SIGLIP = "clip-vit-large-patch14.safetensors", "siglip-so400m-patch14-384.safetensors"
ENCODER = {XLABS: CLIP_L, XLABS_V2: CLIP_L, INSTANTX: SIGLIP}
STEPS = 2


def sample(model, positive, negative, seed=3, cfg=1.0):
    latent = {"samples": torch.zeros(1, 16, 8, 12)}
    return comfy_nodes.common_ksampler(model, seed, STEPS, cfg, "euler", "simple", positive, negative, latent)[0][
        "samples"]


def reference(seed, size=96):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def encoder(name):
    return clip_vision.load(model_cache.resolve("clip_vision", name))


def applied(model, name, weight=1.0, image=None, **kw):
    adapter = model_cache.load_adapter(name)
    cond, uncond = apply.encode_pair(adapter, reference(1) if image is None else image, encoder(ENCODER[name]))
    return patching.apply_embeds(model, adapter, cond, uncond, weight=weight, **kw)


def test_flux_adapters_are_found_in_the_flux_packs_folders(world_paths):
    names = folder_paths.get_filename_list("ipadapter")
    assert {XLABS, XLABS_V2, INSTANTX} <= set(names)
    specs = {name: model_cache.load_adapter(name).spec for name in (XLABS, XLABS_V2, INSTANTX)}
    assert {n: (s.arch, s.layout, s.tokens, s.num_layers, s.injection) for n, s in specs.items()} == {
        XLABS: ("Flux", "xlabs", 4, 19, "block_output"), XLABS_V2: ("Flux", "xlabs", 16, 19, "block_output"),
        INSTANTX: ("Flux", "tencent", 128, 57, "attention")}
    assert specs[INSTANTX].clip_output == "pooled" and specs[XLABS].clip_output == "image_embeds"


@pytest.mark.parametrize("name", [XLABS, XLABS_V2, INSTANTX])
def test_adapter_changes_flux_output_and_weight_zero_is_bitwise_plain(flux, name):
    model, pos, neg = flux
    base = sample(model, pos, neg)
    out = sample(applied(model, name), pos, neg)
    assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-4)
    assert torch.equal(sample(applied(model, name, weight=0.0), pos, neg), base)


def test_stacking_leaves_the_earlier_model_unchanged_and_w_zero_equals_one(flux):
    model, pos, neg = flux
    one = applied(model, XLABS, weight=0.7)
    before = sample(one, pos, neg)
    two = applied(one, XLABS, weight=0.0, image=reference(2))
    assert torch.equal(sample(two, pos, neg), before)
    three = applied(one, XLABS, weight=0.5, image=reference(2))
    assert not torch.equal(sample(three, pos, neg), before)
    assert torch.equal(sample(one, pos, neg), before)


def test_start_end_and_cfg_with_negative_pass(flux):
    model, pos, neg = flux
    full = sample(applied(model, INSTANTX), pos, neg, cfg=2.0)
    late = sample(applied(model, INSTANTX, start_at=0.5), pos, neg, cfg=2.0)
    none = sample(applied(model, INSTANTX, start_at=0.7, end_at=0.2), pos, neg, cfg=2.0)
    assert torch.equal(none, sample(model, pos, neg, cfg=2.0))
    assert not torch.equal(late, full) and not torch.equal(late, none)


def test_flux_block_weights_pick_blocks(flux):
    model, pos, neg = flux
    base = sample(model, pos, neg)
    singles_only = applied(model, XLABS, block_weights="s*:1.0")  # XLabs has no single-block layers
    assert torch.equal(sample(singles_only, pos, neg), base)
    assert not torch.equal(sample(applied(model, XLABS, block_weights="d5:1.0"), pos, neg), base)
    with pytest.raises(InvalidInputError, match="defined on UNet blocks"):
        applied(model, XLABS, weight_type="style transfer")


def test_kv_projected_once_whatever_the_steps(flux, monkeypatch):
    model, pos, neg = flux
    calls = []
    real = attention.scaled_kv
    monkeypatch.setattr(attention, "scaled_kv", lambda *a: calls.append(a[1]) or real(*a))
    sample(applied(model, XLABS), pos, neg)
    assert len(calls) == 2 * 19  # cond + uncond table per double block, projected in the first step only


def test_composes_with_a_flux_lora_and_controlnet(flux, world_paths):
    model, pos, neg = flux
    lora = comfy.utils.load_torch_file(folder_paths.get_full_path("loras", "flux_style_lora.safetensors"))
    with_lora, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
    control = comfy.controlnet.load_controlnet(
        folder_paths.get_full_path("controlnet", "flux-canny-controlnet-tiny.safetensors"))
    hint = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(4))
    cpos, cneg = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, control, hint, 1.0, 0.0, 1.0)
    plain = sample(with_lora, cpos, cneg)
    ours = sample(applied(with_lora, XLABS), cpos, cneg)
    assert torch.isfinite(ours).all() and not torch.equal(ours, plain)
    assert not torch.equal(ours, sample(applied(model, XLABS), pos, neg))


def test_wrong_family_and_wrong_encoder_are_typed_errors(flux, sd15):
    model, _, _ = flux
    with pytest.raises(IncompatibleModelError, match="Flux adapter.*model is SD1.5"):
        applied(sd15[0], XLABS)
    with pytest.raises(IncompatibleModelError, match="SD1.5 adapter.*model is Flux"):
        adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
        cond, uncond = apply.encode_pair(adapter, reference(1), encoder("CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"))
        patching.apply_embeds(model, adapter, cond, uncond)
    xlabs = model_cache.load_adapter(XLABS)
    with pytest.raises(IncompatibleModelError, match="SigLIP so400m-patch14-384 for the InstantX"):
        apply.encode_pair(xlabs, reference(1), encoder(SIGLIP))  # XLabs needs CLIP ViT-L image embeds
    instantx = model_cache.load_adapter(INSTANTX)
    with pytest.raises(IncompatibleModelError, match="not SigLIP"):
        apply.encode_pair(instantx, reference(1), encoder(CLIP_L))


def test_siglip_loaded_without_its_head_says_which_loader_keeps_it(world_paths):
    import comfy.clip_vision

    core_loaded = comfy.clip_vision.load(model_cache.resolve("clip_vision", SIGLIP))  # ComfyUI's own loader
    instantx = model_cache.load_adapter(INSTANTX)
    with pytest.raises(IncompatibleModelError, match="IPAdapter Kit: Load CLIP Vision"):
        apply.encode_pair(instantx, reference(1), core_loaded)
    cond, _ = apply.encode_pair(instantx, reference(1), encoder(SIGLIP))
    assert cond.shape == (1, instantx.spec.clip_dim)


def test_latent_size_reaches_the_block_hook_through_the_wrapper(flux, monkeypatch):
    from ipadapter_kit.ipadapter_core.families import flux as core_flux

    model, pos, neg = flux
    seen = []
    real = core_flux._latent_tokens
    monkeypatch.setattr(core_flux, "_latent_tokens", lambda o, d: seen.append(real(o, d)) or seen[-1])
    patched = applied(applied(model, XLABS), INSTANTX)  # two apply nodes: the wrapper is installed once
    assert len(patched.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, patching.WRAPPER_KEY)) == 1
    sample(patched, pos, neg)
    assert seen and set(seen) == {(24, 0, (4, 6))}  # latent 8 x 12 -> 4 x 6 tokens, no reference latents


def test_runs_beside_redux_tokens_and_kontext_reference_latents(flux, monkeypatch):
    import comfy.ldm.flux.redux
    import node_helpers
    from ipadapter_kit.ipadapter_core.families import flux as core_flux
    from tinymodels.weights import init_module

    model, pos, neg = flux
    siglip = encoder(SIGLIP)
    redux = comfy.sd.StyleModel(init_module(comfy.ldm.flux.redux.ReduxImageEncoder(44, 48), seed=3))
    (styled,) = comfy_nodes.StyleModelApply().apply_stylemodel(pos, redux, siglip.encode_image(reference(5)), 1.0,
                                                               "multiply")  # 729 more text tokens
    reference_latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(6))
    kontext = node_helpers.conditioning_set_values(styled, {"reference_latents": [reference_latent]}, append=True)
    seen = []
    real = core_flux._latent_tokens
    monkeypatch.setattr(core_flux, "_latent_tokens", lambda o, d: seen.append(real(o, d)) or seen[-1])
    plain = sample(model, kontext, neg)
    ours = sample(applied(model, INSTANTX), kontext, neg)
    assert torch.isfinite(ours).all() and not torch.equal(ours, plain)
    assert set(seen) == {(24, 16, (4, 6))}  # the reference's 4 x 4 tokens are known, so neither steered nor masked


def test_query_rows_match_the_whole_layer_for_plain_cast_and_patched_weights():
    import comfy.ops

    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 5, 16, generator=gen)
    plain = comfy.ops.disable_weight_init.Linear(16, 48)
    cast = comfy.ops.manual_cast.Linear(16, 48, dtype=torch.float16)  # weights cast at call time
    patched = comfy.ops.disable_weight_init.Linear(16, 48)
    for layer in (plain, cast, patched):
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    patched.weight_function = [lambda w: w * 2]  # what ComfyUI does for a LoRA in low-VRAM mode
    for layer in (plain, cast, patched):
        whole = layer(x.to(layer.weight.dtype) if layer is not cast else x)[..., 16:32]
        torch.testing.assert_close(patching.linear_rows(layer, x, 16, 32), whole.to(x.dtype), atol=1e-3, rtol=1e-3)
