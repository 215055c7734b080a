"""Behavioural invariants of the apply path, in-process on the tiny SD1.5 checkpoint."""
import torch

import nodes as comfy_nodes
from ipadapter_kit.ipadapter_core import attention
from ipadapter_kit.nodes import apply, model_cache, patching

STEPS = 3


def sample(model, positive, negative, seed=7, batch=1):
    latent = {"samples": torch.zeros(batch, 4, 8, 8)}
    return comfy_nodes.common_ksampler(model, seed, STEPS, 5.0, "euler", "normal", positive, negative, latent,
                                       disable_noise=False)[0]["samples"]


def reference(seed, size=96):
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


def clip_vision(name="CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"):
    from ipadapter_kit.nodes.presets import load_clip_vision

    return load_clip_vision(name)


def encoded(adapter_name, image, negative=None):
    adapter = model_cache.load_adapter(adapter_name)
    cond, uncond = apply.encode_pair(adapter, image, clip_vision(), negative)
    return adapter, cond, uncond


def test_adapter_changes_the_output(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    patched = patching.apply_embeds(model, adapter, cond, uncond, weight=1.0)
    assert not torch.allclose(sample(patched, pos, neg), sample(model, pos, neg), atol=1e-3)


def test_weight_zero_is_bitwise_no_adapter(sd15):
    model, pos, neg = sd15
    base = sample(model, pos, neg)
    for name in ("ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors"):
        adapter, cond, uncond = encoded(name, reference(1))
        assert torch.equal(sample(patching.apply_embeds(model, adapter, cond, uncond, weight=0.0), pos, neg), base)


def test_end_at_not_after_start_at_is_no_adapter(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    base = sample(model, pos, neg)
    for start, end in ((0.5, 0.5), (0.7, 0.2)):
        patched = patching.apply_embeds(model, adapter, cond, uncond, start_at=start, end_at=end)
        assert torch.equal(sample(patched, pos, neg), base)


def test_partial_schedule_differs_from_full_and_from_none(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    full = sample(patching.apply_embeds(model, adapter, cond, uncond), pos, neg)
    part = sample(patching.apply_embeds(model, adapter, cond, uncond, start_at=0.0, end_at=0.5), pos, neg)
    none = sample(model, pos, neg)
    assert not torch.allclose(part, full, atol=1e-3) and not torch.allclose(part, none, atol=1e-3)


def test_two_adapters_w_and_zero_equal_one_at_w(sd15):
    model, pos, neg = sd15
    a, a_cond, a_uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    b, b_cond, b_uncond = encoded("ip-adapter-plus_sd15.safetensors", reference(2))
    one = patching.apply_embeds(model, a, a_cond, a_uncond, weight=0.8)
    two = patching.apply_embeds(one, b, b_cond, b_uncond, weight=0.0)
    assert torch.equal(sample(two, pos, neg), sample(one, pos, neg))
    b_first = patching.apply_embeds(patching.apply_embeds(model, b, b_cond, b_uncond, weight=0.0), a, a_cond,
                                    a_uncond, weight=0.8)
    assert torch.equal(sample(b_first, pos, neg), sample(one, pos, neg))


def test_stacking_does_not_change_the_earlier_model(sd15):
    model, pos, neg = sd15
    a, a_cond, a_uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    b, b_cond, b_uncond = encoded("ip-adapter-plus_sd15.safetensors", reference(2))
    one = patching.apply_embeds(model, a, a_cond, a_uncond, weight=0.8)
    before = sample(one, pos, neg)
    two = patching.apply_embeds(one, b, b_cond, b_uncond, weight=0.9)
    both = sample(two, pos, neg)
    assert torch.equal(sample(one, pos, neg), before), "adding an adapter changed the model it was added to"
    assert not torch.allclose(both, before, atol=1e-3)
    assert torch.equal(sample(model, pos, neg), sample(patching.apply_embeds(model, a, a_cond, a_uncond, 0.0), pos,
                                                       neg))


def test_all_ones_mask_equals_no_mask(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    plain = sample(patching.apply_embeds(model, adapter, cond, uncond), pos, neg)
    masked = sample(patching.apply_embeds(model, adapter, cond, uncond, attn_mask=torch.ones(1, 64, 96)), pos, neg)
    assert torch.equal(plain, masked)


def test_separate_references_with_weights_w_and_zero_equal_one_reference(sd15):
    model, pos, neg = sd15
    adapter = model_cache.load_adapter("ip-adapter_sd15.safetensors")
    both = torch.cat([reference(1), reference(2)])
    cond, uncond = apply.encode_pair(adapter, both, clip_vision())
    two = patching.apply_embeds(model, adapter, cond, uncond, weight=0.9, combine="separate",
                                reference_weights="1.0, 0")
    one = patching.apply_embeds(model, adapter, cond[:1], uncond[:1], weight=0.9)
    a, b = sample(two, pos, neg), sample(one, pos, neg)
    assert (a - b).abs().max() <= 1e-5 * b.abs().max()  # equal up to float rounding of other matmul shapes


def test_adapter_weights_are_shared_not_copied(sd15):
    model, _, _ = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    first = patching.apply_embeds(model, adapter, cond, uncond)
    second = patching.apply_embeds(first, adapter, cond, uncond, weight=0.5)
    patch = second.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    assert [p.weights for p in patch.prompts] == [adapter.weights, adapter.weights]
    assert patch.models() == [adapter.patcher]
    assert model_cache.load_adapter("ip-adapter_sd15.safetensors") is adapter
    clone = second.clone()
    assert clone.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)] is patch


def test_image_kv_projected_once_per_layer_whatever_the_steps(sd15, monkeypatch):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    calls = []
    real = attention.scaled_kv
    monkeypatch.setattr(attention, "scaled_kv", lambda *a: calls.append(a[1]) or real(*a))
    for steps in (2, 5):
        calls.clear()
        patched = patching.apply_embeds(model, adapter, cond, uncond)
        comfy_nodes.common_ksampler(patched, 1, steps, 5.0, "euler", "normal", pos, neg,
                                    {"samples": torch.zeros(1, 4, 8, 8)})
        assert sorted(calls) == sorted(list(range(16)) * 2), f"{steps} steps: {len(calls)} projections"


def test_attention_override_from_transformer_options_is_used(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    patched = patching.apply_embeds(model, adapter, cond, uncond)
    seen = []

    def override(func, *args, **kwargs):
        seen.append(args[0].shape[-1])
        return func(*args, **kwargs)

    patched.model_options["transformer_options"]["optimized_attention_override"] = override
    sample(patched, pos, neg)
    assert seen, "the attention backend override was bypassed"



def test_negative_image_replaces_the_default_negative(sd15):
    model, pos, neg = sd15
    adapter, cond, default_uncond = encoded("ip-adapter-plus_sd15.safetensors", reference(1))
    _, _, uncond = encoded("ip-adapter-plus_sd15.safetensors", reference(1), negative=reference(9))
    assert not torch.allclose(uncond, default_uncond)
    with_default = sample(patching.apply_embeds(model, adapter, cond, default_uncond), pos, neg)
    with_negative = sample(patching.apply_embeds(model, adapter, cond, uncond), pos, neg)
    assert not torch.allclose(with_default, with_negative, atol=1e-3)


# IPAdapter_plus's SD1.5 'style transfer precise' table as 'index:factor' layer weights (its block run order)
STYLE_PRECISE_SD15 = "0:1, 1:1, 2:1, 3:1, 4:0.25, 5:1, 9:1, 10:1, 11:1, 12:1, 13:1, 14:1, 15:1"


def plus_precise_reference(weight_type, text, weight, blocks=16):
    """IPAdapter_plus's per-block (weight, image on the negative pass only) with layer_weights and a precise type."""
    composition = {4, 5} if blocks == 16 else {3}
    table = {int(k): float(v) * weight for k, v in (pair.split(":") for pair in text.split(","))}
    inverted = {"style transfer precise": composition,
                "composition precise": set(range(blocks)) - composition}.get(weight_type, set())
    return {i: (table[i], i in inverted) for i in table}


def test_precise_types_keep_the_negative_pass_inversion_with_block_weights(sd15):
    from ipadapter_kit.ipadapter_core import blocks, weight_types

    model, _, _ = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    run_order = weight_types.execution_blocks("SD1.5")
    for weight_type in ("style transfer precise", "composition precise", "style transfer"):
        patched = patching.apply_embeds(model, adapter, cond, uncond, weight=0.8, weight_type=weight_type,
                                        block_weights=STYLE_PRECISE_SD15)
        (prompt,) = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)].prompts
        expected = plus_precise_reference(weight_type, STYLE_PRECISE_SD15, 0.8)
        for layer, (block, number, _) in enumerate(blocks.patch_keys("SD1.5")):
            weight, inverted = expected.get(run_order.index((block, number)), (0.0, False))
            assert prompt.layer_weights[layer] == weight, (weight_type, block, number)
            if weight:
                assert (layer in prompt.inverted_layers) == inverted, (weight_type, block, number)


def test_precise_type_with_its_own_table_as_block_weights_samples_the_same(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    typed = patching.apply_embeds(model, adapter, cond, uncond, weight=0.8, weight_type="style transfer precise")
    weighted = patching.apply_embeds(model, adapter, cond, uncond, weight=0.8, weight_type="style transfer precise",
                                     block_weights=STYLE_PRECISE_SD15)
    plain = patching.apply_embeds(model, adapter, cond, uncond, weight=0.8, block_weights=STYLE_PRECISE_SD15)
    assert torch.equal(sample(weighted, pos, neg), sample(typed, pos, neg))
    assert not torch.allclose(sample(weighted, pos, neg), sample(plain, pos, neg), atol=1e-3)


def test_image_kv_kept_once_after_a_sampling_step(sd15):
    model, pos, neg = sd15
    adapter, cond, uncond = encoded("ip-adapter_sd15.safetensors", reference(1))
    patched = patching.apply_embeds(model, adapter, cond, uncond)
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    sample(patched, pos, neg, batch=2)  # 2 latents: cond and uncond rows of every layer still one table row each
    widths = [adapter.weights.kv_projection(layer).k_weight.shape[0] for layer in patch.active_layers()]
    one_copy = sum(2 * 2 * adapter.spec.tokens * width * 4 for width in widths)  # K, V x cond, uncond, float32
    assert patch.cache_bytes() == one_copy
    sample(patched, pos, neg, batch=2)
    assert patch.cache_bytes() == one_copy
