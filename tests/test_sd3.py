"""SD3.5 Large IP-Adapter (InstantX) through the family seam: whole-block parity with diffusers at two timesteps,
the shared nodes and their controls on the tiny SD3.5 Large, other packs' wrappers and patches, typed errors."""
import copy
import shutil

import pytest
import torch

import comfy.patcher_extension
import folder_paths
import nodes as comfy_nodes
import sd3_twin
from ipadapter_kit.ipadapter_core import adapter as core_adapter
from ipadapter_kit.ipadapter_core import families
from ipadapter_kit.ipadapter_core.attention import ImagePrompt
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.ipadapter_core.families import sd3
from ipadapter_kit.nodes import apply, clip_vision, model_cache, paths, patching
from tinymodels.world import SD35_IPADAPTER

pytest.importorskip("diffusers")
SIGLIP, CLIP_H = "siglip-so400m-patch14-384.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
BLOCKS, HIDDEN, SCALE = 38, 128, 0.7
LAST = BLOCKS - 1


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: one thread is far faster here


def reference(seed, size=96):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def encoder(name=SIGLIP):
    return clip_vision.load(model_cache.resolve("clip_vision", name))


def sample(model, positive, negative, latent=None, cfg=4.0, steps=2):
    latent = {"samples": torch.zeros(1, 16, 8, 12) if latent is None else latent}
    return comfy_nodes.common_ksampler(model, 3, steps, cfg, "euler", "sgm_uniform", positive, negative,
                                       latent)[0]["samples"]


def applied(model, weight=SCALE, images=None, **kw):
    adapter = model_cache.load_adapter(SD35_IPADAPTER)
    cond, uncond = apply.encode_pair(adapter, reference(1) if images is None else images, encoder())
    return patching.apply_embeds(model, adapter, cond, uncond, weight=weight, **kw)


def released_weights(world, seed=5):
    """The tiny release with every norm scale and bias random (all ones would hide a norm mix-up)."""
    nested = torch.load(world / "models" / "ipadapter" / SD35_IPADAPTER, weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    for group in nested.values():
        for key, t in group.items():
            if key.endswith(("norm_q.weight", "norm_k.weight", "norm_ip_k.weight", "norm_out.weight")):
                group[key] = 1 + 0.3 * torch.randn(t.shape, generator=gen)
            elif key.endswith("bias"):
                group[key] = 0.2 * torch.randn(t.shape, generator=gen)
    return nested


def randomised_block_norms(dit, seed=6):
    """A copy of the MMDiT whose joint blocks' QK-norm scales are random (the patch divides by them)."""
    dit = copy.deepcopy(dit)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if ".ln_" in name:
                p.copy_(1 + 0.4 * torch.randn(p.shape, generator=gen))
    return dit


def block_inputs(seed=0, batch=2, text=7, image=16):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, text, HIDDEN, generator=gen), torch.randn(batch, image, HIDDEN, generator=gen),
            torch.randn(batch, HIDDEN, generator=gen))


def call_hook(patch, dit, layer, txt, img, vec, timesteps, latent=(8, 8), chunks=(1, 0)):
    """(txt, img) of joint block `layer` run as ComfyUI's MMDiT runs a dit replace, our patch installed."""
    block = dit.joint_blocks[layer]

    def original(args):
        out_txt, out_img = sd3_twin.run_comfy_block(block, args["txt"], args["img"], args["vec"],
                                                    args["transformer_options"])
        return {"txt": out_txt, "img": out_img}

    options = {sd3.STEP_KEY: sd3.StepState(timesteps, latent), "cond_or_uncond": list(chunks),
               "sigmas": timesteps[:1] / 1000}
    out = patch.replace_for(("double_block", layer))({"img": img, "txt": txt, "vec": vec,
                                                      "transformer_options": options}, {"original_block": original})
    return out["txt"], out["img"]


def one_prompt(weights, cond, layer=None, weight=SCALE, **kw):
    layers = tuple(weight if layer is None or i == layer else 0.0 for i in range(BLOCKS))
    return ImagePrompt(weights=weights, cond=cond, uncond=torch.zeros_like(cond), layer_weights=layers, **kw)


@pytest.fixture(scope="module")
def tiny_dit(sd35):
    return randomised_block_norms(sd35[0].model.diffusion_model)


@pytest.mark.parametrize("layer", [0, LAST])
@pytest.mark.parametrize("timestep", [937.5, 120.0])
def test_joint_block_equals_diffusers_ip_adapter_at_two_timesteps(world_paths, tiny_dit, layer, timestep):
    """Our dit replace on ComfyUI's block == diffusers' JointTransformerBlock with SD3IPAdapterJointAttnProcessor2_0
    fed by IPAdapterTimeImageProjection, on the same weights; rows are [uncond (zero embeds), cond]."""
    from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0

    nested = released_weights(world_paths)
    weights = core_adapter.from_state_dict(copy.deepcopy(nested), "sd35")
    embeds = torch.randn(1, 729, weights.spec.clip_dim, generator=torch.Generator().manual_seed(11))
    patch = sd3.JointBlockPatch([one_prompt(weights, embeds, layer)], tiny_dit)
    txt, img, vec = block_inputs()
    t = torch.full((2,), timestep)
    twin = sd3_twin.diffusers_block(tiny_dit.joint_blocks[layer], context_pre_only=layer == LAST)
    processor = SD3IPAdapterJointAttnProcessor2_0(HIDDEN, HIDDEN, 64, weights.spec.resampler_dim, scale=SCALE)
    processor.load_state_dict({k.split(".", 1)[1]: v for k, v in nested["ip_adapter"].items()
                               if k.split(".")[0] == str(layer)}, strict=True)
    twin.attn.set_processor(processor)
    image_proj = sd3_twin.diffusers_image_proj(nested["image_proj"], HIDDEN)
    with torch.no_grad():
        ours_txt, ours_img = call_hook(patch, tiny_dit, layer, txt, img, vec, t)
        plain_txt, plain_img = sd3_twin.run_comfy_block(tiny_dit.joint_blocks[layer], txt, img, vec)
        tokens, t_emb = image_proj(torch.cat((torch.zeros_like(embeds), embeds)), t)
        their_txt, their_img = sd3_twin.run_diffusers_block(twin, img, txt, vec, {"ip_hidden_states": tokens,
                                                                                   "temb": t_emb})
    torch.testing.assert_close(ours_img, their_img, atol=1e-4, rtol=1e-4)
    assert (ours_img - plain_img).abs().max() > 1e-2  # the image term is really there
    if layer != LAST:
        torch.testing.assert_close(ours_txt, their_txt, atol=1e-4, rtol=1e-4)
        assert torch.equal(ours_txt, plain_txt)  # the text stream is untouched by the image term


def test_tokens_follow_the_step_and_the_block_hook_reads_nothing_on_the_host(world_paths, tiny_dit, monkeypatch):
    weights = core_adapter.from_state_dict(released_weights(world_paths), "sd35")
    embeds = torch.randn(1, 729, weights.spec.clip_dim, generator=torch.Generator().manual_seed(12))
    patch = sd3.JointBlockPatch([one_prompt(weights, embeds, sigma_range=(0.8, 0.3))], tiny_dit)
    txt, img, vec = block_inputs(seed=3)
    with torch.no_grad():
        plain = sd3_twin.run_comfy_block(tiny_dit.joint_blocks[4], txt, img, vec)[1]
        call_hook(patch, tiny_dit, 4, txt, img, vec, torch.full((2,), 500.0))  # warm the patch's caches

        def refuse(*a, **k):
            raise AssertionError("host read inside the SD3.5 block hook")

        for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
            monkeypatch.setattr(torch.Tensor, name, refuse)
        early = call_hook(patch, tiny_dit, 4, txt, img, vec, torch.full((2,), 700.0))[1]
        late = call_hook(patch, tiny_dit, 4, txt, img, vec, torch.full((2,), 400.0))[1]
        outside = call_hook(patch, tiny_dit, 4, txt, img, vec, torch.full((2,), 900.0))[1]
        monkeypatch.undo()
    assert not torch.equal(early, plain) and not torch.equal(late, plain) and not torch.allclose(early, late)
    assert torch.equal(outside, plain)  # sigma 0.9 is before start_at's sigma 0.8


def test_adapter_file_is_detected_and_found_in_the_sd3_folder(world_paths, tmp_path, monkeypatch):
    spec = model_cache.load_adapter(SD35_IPADAPTER).spec
    assert (spec.arch, spec.kind, spec.layout, spec.num_layers, spec.tokens, spec.cross_dim, spec.head_dim) == \
        ("SD3.5", "time_resampler", "joint", BLOCKS, 64, HIDDEN, 64)
    assert spec.clip_output == "penultimate_hidden_states" and spec.step_tokens
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "ipadapter", ([], set()))
    (tmp_path / "ipadapter-sd3").mkdir()
    shutil.copy(world_paths / "models" / "ipadapter" / SD35_IPADAPTER, tmp_path / "ipadapter-sd3" / "ip-adapter.bin")
    paths.register_model_folders()
    folder_paths.filename_list_cache.clear()
    try:
        assert "ip-adapter.bin" in folder_paths.get_filename_list("ipadapter")
        assert model_cache.load_adapter("ip-adapter.bin").spec.arch == "SD3.5"
    finally:
        folder_paths.filename_list_cache.clear()


def test_same_name_in_the_flux_and_sd3_folders_is_explained(sd35, world_paths, tmp_path, monkeypatch):
    """InstantX calls both its Flux and its SD3.5 adapter ip-adapter.bin: ComfyUI lists the name once."""
    (tmp_path / "ipadapter-sd3").mkdir()
    shutil.copy(world_paths / "models" / "ipadapter" / SD35_IPADAPTER, tmp_path / "ipadapter-sd3" / "ip-adapter.bin")
    flux_folder = str(world_paths / "models" / "ipadapter-flux")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "ipadapter",
                        ([flux_folder, str(tmp_path / "ipadapter-sd3")], {".bin"}))
    folder_paths.filename_list_cache.clear()
    try:
        shadowed = model_cache.load_adapter("ip-adapter.bin")  # the Flux one comes first
        cond = torch.zeros(1, shadowed.spec.clip_dim)
        with pytest.raises(IncompatibleModelError, match="Several folders hold a file named 'ip-adapter.bin'.*Rename"):
            patching.apply_embeds(sd35[0], shadowed, cond, cond)
    finally:
        folder_paths.filename_list_cache.clear()


def test_sd35_is_recognised_from_comfyui_s_mmdit(sd35, flux, sd15):
    assert families.recognise(sd35[0].model.diffusion_model) is sd3.SD3
    assert families.recognise(flux[0].model.diffusion_model).name == "Flux"
    assert not sd3.SD3.matches(sd15[0].model.diffusion_model)
    assert "joint blocks" in sd3.SD3.mismatch(flux[0].model.diffusion_model)


def test_adapter_changes_the_image_and_weight_zero_is_bitwise_plain(sd35):
    model, pos, neg = sd35
    plain = sample(model, pos, neg)
    patched = applied(model)
    assert model_cache.load_adapter(SD35_IPADAPTER).patcher in patched.model_patches_models()  # loaded with it
    ours = sample(patched, pos, neg)
    assert torch.isfinite(ours).all() and (ours - plain).abs().max() > 1e-2
    assert torch.equal(sample(applied(model, weight=0.0), pos, neg), plain)


def test_clone_safe_and_stacking_w_zero_equals_one(sd35):
    model, pos, neg = sd35
    one = applied(model)
    before = sample(one, pos, neg)
    assert torch.equal(sample(applied(one, weight=0.0, images=reference(2)), pos, neg), before)
    two = applied(one, weight=0.5, images=reference(2))
    assert not torch.equal(sample(two, pos, neg), before)
    assert torch.equal(sample(one, pos, neg), before)  # the earlier model is unchanged
    assert torch.equal(sample(model, pos, neg), sample(applied(model, weight=0.0), pos, neg))


def test_start_end_block_weights_and_weight_types(sd35):
    model, pos, neg = sd35
    plain, full = sample(model, pos, neg), sample(applied(model), pos, neg)
    assert torch.equal(sample(applied(model, start_at=0.7, end_at=0.2), pos, neg), plain)
    late = sample(applied(model, start_at=0.3), pos, neg)  # sigma 1.0 (step 1) > 0.875 >= 0.75 (step 2)
    assert not torch.equal(late, full) and not torch.equal(late, plain)
    only_five = applied(model, block_weights="5:1.0")
    replaces = only_five.model_options["transformer_options"]["patches_replace"]["dit"]
    assert set(replaces) == {("double_block", 5)}
    assert not torch.equal(sample(only_five, pos, neg), plain)
    eased = sample(applied(model, weight_type="ease in"), pos, neg)
    assert not torch.equal(eased, full) and not torch.equal(eased, plain)
    with pytest.raises(InvalidInputError, match="SD3.5"):
        applied(model, weight_type="style transfer")
    with pytest.raises(InvalidInputError, match="38 joint blocks, indices 0..37"):
        applied(model, block_weights="38:1.0")
    with pytest.raises(InvalidInputError, match="'<index>:<weight>'"):
        applied(model, block_weights="d3:1.0")


def test_masks_follow_the_latent_grid(sd35):
    model, pos, neg = sd35
    plain, full = sample(model, pos, neg), sample(applied(model), pos, neg)
    assert torch.equal(sample(applied(model, attn_mask=torch.ones(32, 48)), pos, neg), full)
    assert torch.equal(sample(applied(model, attn_mask=torch.zeros(32, 48)), pos, neg), plain)
    left = torch.zeros(32, 48)
    left[:, :24] = 1.0
    half = sample(applied(model, attn_mask=left), pos, neg)
    assert not torch.equal(half, full) and not torch.equal(half, plain)


def test_several_references_separate_concat_and_per_reference_weights(sd35):
    model, pos, neg = sd35
    both = torch.cat((reference(1), reference(2)))
    first = sample(applied(model), pos, neg)
    separate = sample(applied(model, images=both, combine="separate", reference_weights="1, 0"), pos, neg)
    torch.testing.assert_close(separate, first, atol=1e-5, rtol=1e-5)
    concat = sample(applied(model, images=both, combine="concat"), pos, neg)
    averaged = sample(applied(model, images=both, combine="average"), pos, neg)
    assert not torch.allclose(concat, first) and not torch.allclose(concat, averaged)
    masks = torch.stack((torch.ones(32, 48), torch.zeros(32, 48)))
    masked = sample(applied(model, images=both, combine="separate", attn_mask=masks), pos, neg)
    torch.testing.assert_close(masked, first, atol=1e-5, rtol=1e-5)


def test_frame_weights_steer_each_latent(sd35):
    model, pos, neg = sd35
    latent = torch.zeros(2, 16, 8, 12)
    plain = sample(model, pos, neg, latent=latent)
    ours = sample(applied(model, frame_weights=(1.0, 0.0)), pos, neg, latent=latent)
    assert torch.equal(ours[1], plain[1]) and not torch.equal(ours[0], plain[0])


def test_resampler_runs_once_per_model_call(sd35, monkeypatch):
    model, pos, neg = sd35
    patched = applied(model)
    calls = []
    adapter = model_cache.load_adapter(SD35_IPADAPTER)
    hook = adapter.weights.image_proj.register_forward_hook(lambda m, args, out: calls.append(args[1].clone()))
    model_calls = []
    dit = model.model.diffusion_model
    pre = dit.register_forward_pre_hook(lambda m, args: model_calls.append(args[1].clone()))
    try:
        sample(patched, pos, neg, steps=3)
    finally:
        hook.remove()
        pre.remove()
    assert len(model_calls) == 3 and len(calls) == 3  # cond and uncond batched: one model call per step
    for seen, timesteps in zip(calls, model_calls):
        assert torch.equal(seen, timesteps)  # the resampler sees the timesteps the MMDiT sees


def _counting_wrapper(calls):
    def wrapper(executor, *args, **kwargs):
        calls.append(1)
        return executor(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("other_first", [True, False])
def test_another_pack_s_wrapper_and_block_replace_keep_running(sd35, other_first):
    model, pos, neg = sd35
    wrapped, replaced = [], []

    def their_block(args, extra):
        replaced.append(1)
        return extra["original_block"](args)

    def other(m):
        m = m.clone()
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "other_pack", _counting_wrapper(wrapped))
        m.set_model_patch_replace(their_block, "dit", "double_block", 3)
        return m

    ours_only = sample(applied(model), pos, neg)
    both = applied(other(model)) if other_first else other(applied(model))
    out = sample(both, pos, neg)
    assert wrapped and replaced
    if other_first:  # ours wraps theirs at the same key: both run
        assert torch.equal(out, ours_only)
    else:  # theirs, set later, takes block 3 (ComfyUI keeps one replace per key); ours still acts on the others
        assert not torch.equal(out, ours_only) and not torch.equal(out, sample(other(model), pos, neg))
    wrappers = both.get_wrappers(comfy.patcher_extension.WrappersMP.APPLY_MODEL, patching.WRAPPER_KEY)
    assert len(wrappers) == 1


def test_wrong_family_wrong_encoder_and_scaling_are_typed_errors(sd35, flux, sd15):
    model = sd35[0]
    sd3_adapter = model_cache.load_adapter(SD35_IPADAPTER)
    cond, uncond = apply.encode_pair(sd3_adapter, reference(1), encoder())
    with pytest.raises(IncompatibleModelError, match=f"{SD35_IPADAPTER} is an SD3.5 adapter.*model is Flux"):
        patching.apply_embeds(flux[0], sd3_adapter, cond, uncond)
    with pytest.raises(IncompatibleModelError, match="SD3.5 adapter.*model is SD1.5"):
        patching.apply_embeds(sd15[0], sd3_adapter, cond, uncond)
    with pytest.raises(IncompatibleModelError, match=f"{SD35_IPADAPTER} needs SigLIP so400m-patch14-384"):
        apply.encode_pair(sd3_adapter, reference(1), encoder(CLIP_H))
    flux_adapter = model_cache.load_adapter("flux-ip-adapter.safetensors")
    flux_cond, flux_uncond = apply.encode_pair(flux_adapter, reference(1),
                                               encoder("clip-vit-large-patch14.safetensors"))
    with pytest.raises(IncompatibleModelError, match="Flux adapter.*model is SD3.5.*InstantX SD3.5-Large"):
        patching.apply_embeds(model, flux_adapter, flux_cond, flux_uncond)
    with pytest.raises(InvalidInputError, match="embeds_scaling 'K\\+V'.*V only"):
        patching.apply_embeds(model, sd3_adapter, cond, uncond, embeds_scaling="K+V")


def test_negative_is_zero_hidden_states_as_in_the_release(world_paths):
    sd3_adapter = model_cache.load_adapter(SD35_IPADAPTER)
    cond, uncond = apply.encode_pair(sd3_adapter, reference(1), encoder())
    assert cond.shape == (1, 729, sd3_adapter.spec.clip_dim) and cond.abs().max() > 0
    assert torch.equal(uncond, torch.zeros_like(cond))
