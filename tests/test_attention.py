"""The attn2 patch on its own: masks, batches, scaling modes, gating, chaining, no host syncs."""
import pytest
import torch
import torch.nn.functional as F

from ipadapter_kit.ipadapter_core import adapter, attention
from ipadapter_kit.ipadapter_core.attention import ImagePrompt, IPAdapterPatch
from tinymodels import ipadapter_files

HEADS, WIDTH, TEXT = 2, 32, 64  # SD1.5 layer 0 of the tiny UNet: ("input", 1, 0)
KEY = {"block": ("input", 1), "block_index": 0, "n_heads": HEADS}


def sdpa(q, k, v, heads, attn_precision=None, transformer_options=None):
    b, _, c = q.shape
    q, k, v = (t.view(b, -1, heads, c // heads).transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, c)


def sdpa_per_head(q, k, v, heads, attn_precision=None, transformer_options=None, skip_output_reshape=False):
    """sdpa with ComfyUI's option to leave the output per head, (B, heads, N, head_dim) contiguous."""
    out = sdpa(q, k, v, heads)
    return out.view(q.shape[0], -1, heads, q.shape[2] // heads).transpose(1, 2).contiguous() \
        if skip_output_reshape else out


def sdpa_ignoring_options(q, k, v, heads, **options):
    """An attention that takes any keyword (as overrides forwarding **kwargs do) and always returns (B, N, C)."""
    return sdpa(q, k, v, heads)


def sdpa_per_head_view(q, k, v, heads, attn_precision=None, transformer_options=None, skip_output_reshape=False):
    """sdpa leaving its output per head as a strided view (as CUDA kernels that write (B, N, heads, head_dim) do)."""
    out = sdpa(q, k, v, heads)
    return out.view(q.shape[0], -1, heads, q.shape[2] // heads).transpose(1, 2) if skip_output_reshape else out


@pytest.fixture(scope="module")
def weights():
    return adapter.from_state_dict(ipadapter_files.state_dict(*ipadapter_files.catalog()["ip-adapter_sd15.safetensors"],
                                                              seed=5))


def tokens(seed, refs=1, count=4):
    return torch.randn(refs, count, TEXT, generator=torch.Generator().manual_seed(seed))


def prompt(weights, refs=1, weight=1.0, **kw):
    kw.setdefault("cond", tokens(1, refs))
    kw.setdefault("uncond", tokens(2, refs))
    kw.setdefault("ref_weights", (1.0,) * refs)
    return ImagePrompt(weights=weights, layer_weights=(weight,) * 16, **kw)


def qkv(batch=2, n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, WIDTH, generator=g), torch.randn(batch, 77, WIDTH, generator=g), \
        torch.randn(batch, 77, WIDTH, generator=g)


def options(batch=2, n=48, latent=(6, 8), **extra):
    chunks = [1, 0] if batch % 2 == 0 else [0]
    return {**KEY, "cond_or_uncond": chunks, "original_shape": (batch, 4, *latent), **extra}


def reference_image_attention(q, k, v):
    """Attention over image K/V, heads as in the UNet (the formula the patch must equal)."""
    return sdpa(q, k, v, HEADS)


def layer_kv(weights, toks):
    module = weights.ip_adapter["1"]
    return toks @ module.to_k_ip.weight.t(), toks @ module.to_v_ip.weight.t()


def test_output_is_text_attention_plus_weighted_image_attention(weights):
    q, k, v = qkv()
    p = prompt(weights, weight=0.7)
    out = IPAdapterPatch("SD1.5", [p], sdpa)(q, k, v, options())
    ik_c, iv_c = layer_kv(weights, p.cond)
    ik_u, iv_u = layer_kv(weights, p.uncond)
    image = torch.cat([reference_image_attention(q[:1], ik_u, iv_u), reference_image_attention(q[1:], ik_c, iv_c)])
    assert torch.allclose(out, sdpa(q, k, v, HEADS) + 0.7 * image, atol=1e-5)


def test_weight_scales_the_image_term_linearly(weights):
    q, k, v = qkv()
    base = sdpa(q, k, v, HEADS)
    one = IPAdapterPatch("SD1.5", [prompt(weights, weight=1.0)], sdpa)(q, k, v, options()) - base
    two = IPAdapterPatch("SD1.5", [prompt(weights, weight=2.0)], sdpa)(q, k, v, options()) - base
    assert torch.allclose(two, 2 * one, atol=1e-5)


@pytest.mark.parametrize("mode", attention.EMBEDS_SCALING)
def test_embeds_scaling_modes(weights, mode):
    q, k, v = qkv(batch=1)
    w = 0.6
    p = prompt(weights, weight=w, embeds_scaling=mode)
    out = IPAdapterPatch("SD1.5", [p], sdpa)(q, k, v, options(batch=1))
    ik, iv = layer_kv(weights, p.cond)
    penalty = w * WIDTH / 1280.0
    expected = {
        "V only": w * reference_image_attention(q, ik, iv),
        "K+V": reference_image_attention(q, ik * w, iv * w),
        "K+V w/ C penalty": reference_image_attention(q, ik * penalty, iv * penalty),
        "K+mean(V) w/ C penalty": reference_image_attention(
            q, ik * penalty, (iv - iv.mean(1, keepdim=True)) + iv.mean(1, keepdim=True) * penalty),
    }[mode]
    assert torch.allclose(out, sdpa(q, k, v, HEADS) + expected, atol=1e-5)


def test_zero_mask_leaves_those_tokens_untouched(weights):
    q, k, v = qkv()
    mask = torch.zeros(1, 6, 8)
    mask[:, :, 4:] = 1.0  # right half only
    out = IPAdapterPatch("SD1.5", [prompt(weights, masks=mask)], sdpa)(q, k, v, options())
    base = sdpa(q, k, v, HEADS)
    grid = torch.arange(48).view(6, 8)
    left, right = grid[:, :4].flatten(), grid[:, 4:].flatten()
    assert torch.equal(out[:, left], base[:, left])
    assert not torch.allclose(out[:, right], base[:, right], atol=1e-4)


def test_masks_follow_the_latent_aspect_ratio():
    assert attention.mask_grid((1, 4, 6, 8), 48) == (6, 8)
    assert attention.mask_grid((1, 4, 6, 8), 12) == (3, 4)
    assert attention.mask_grid((1, 4, 9, 13), 35) == (5, 7)  # odd sizes round up when the UNet halves them
    assert attention.mask_grid((1, 4, 16, 8), 32) == (8, 4)
    wide = torch.zeros(1, 60, 80)
    wide[:, :, 40:] = 1.0
    flat = attention.resize_masks(wide, (1, 4, 6, 8), 48).view(6, 8)
    assert torch.equal(flat[:, :4], torch.zeros(6, 4)) and torch.equal(flat[:, 4:], torch.ones(6, 4))


def test_each_reference_has_its_own_mask_and_weight(weights):
    q, k, v = qkv()
    left = torch.zeros(1, 6, 8)
    left[:, :, :4] = 1.0
    both = prompt(weights, refs=2, masks=torch.cat([left, 1 - left]), ref_weights=(0.5, 1.5))
    out = IPAdapterPatch("SD1.5", [both], sdpa)(q, k, v, options())
    first = prompt(weights, cond=both.cond[:1], uncond=both.uncond[:1], masks=left, weight=0.5)
    second = prompt(weights, cond=both.cond[1:], uncond=both.uncond[1:], masks=1 - left, weight=1.5)
    split = IPAdapterPatch("SD1.5", [first, second], sdpa)(q, k, v, options())
    assert torch.allclose(out, split, atol=1e-5)


def test_unfold_batch_gives_each_latent_its_reference(weights):
    q, k, v = qkv(batch=4)
    p = prompt(weights, refs=2, unfold_batch=True)
    out = IPAdapterPatch("SD1.5", [p], sdpa)(q, k, v, options(batch=4))  # chunks [uncond x2, cond x2]
    for row, (kind, ref) in enumerate([(1, 0), (1, 1), (0, 0), (0, 1)]):
        single = prompt(weights, cond=p.cond[ref:ref + 1], uncond=p.uncond[ref:ref + 1])
        chunk = [kind]
        alone = IPAdapterPatch("SD1.5", [single], sdpa)(q[row:row + 1], k[row:row + 1], v[row:row + 1],
                                                         {**options(batch=1), "cond_or_uncond": chunk})
        assert torch.allclose(out[row:row + 1], alone, atol=1e-5), row


def test_unfold_batch_past_the_last_reference_holds_it(weights):
    q, k, v = qkv(batch=6)
    p = prompt(weights, refs=2, unfold_batch=True)
    out = IPAdapterPatch("SD1.5", [p], sdpa)(q, k, v, {**options(batch=6), "cond_or_uncond": [0]})  # 6 frames
    for row, ref in enumerate((0, 1, 1, 1, 1, 1)):  # as IPAdapter_plus pads references with the last one
        single = prompt(weights, cond=p.cond[ref:ref + 1], uncond=p.uncond[ref:ref + 1])
        alone = IPAdapterPatch("SD1.5", [single], sdpa)(q[row:row + 1], k[row:row + 1], v[row:row + 1],
                                                         {**options(batch=1), "cond_or_uncond": [0]})
        assert torch.allclose(out[row:row + 1], alone, atol=1e-5), row


def test_sigma_range_gates_per_batch_element(weights):
    q, k, v = qkv()
    p = prompt(weights, sigma_range=(5.0, 1.0))
    patch = IPAdapterPatch("SD1.5", [p], sdpa)
    base = sdpa(q, k, v, HEADS)
    inside = patch(q, k, v, options(sigmas=torch.tensor([3.0, 3.0])))
    outside = patch(q, k, v, options(sigmas=torch.tensor([9.0, 0.5])))
    assert torch.equal(outside, base) and not torch.allclose(inside, base, atol=1e-4)


def test_inverted_layers_steer_only_the_negative_pass(weights):
    q, k, v = qkv()
    p = prompt(weights, inverted_layers=frozenset({0}))
    out = IPAdapterPatch("SD1.5", [p], sdpa)(q, k, v, options())  # row 0 uncond, row 1 cond
    base = sdpa(q, k, v, HEADS)
    ik, iv = layer_kv(weights, p.cond)
    assert torch.allclose(out[1:], base[1:], atol=1e-6)
    assert torch.allclose(out[:1], base[:1] + reference_image_attention(q[:1], ik, iv), atol=1e-5)


def test_foreign_patch_on_a_key_is_wrapped_not_replaced(weights):
    q, k, v = qkv()
    calls = []

    def foreign(q_, k_, v_, extra):
        calls.append(extra["block"])
        return torch.zeros_like(q_)

    patch = IPAdapterPatch("SD1.5", [prompt(weights)], sdpa, base_patches={("input", 1, 0): foreign})
    out = patch(q, k, v, options())
    assert calls == [("input", 1)]
    ours = IPAdapterPatch("SD1.5", [prompt(weights)], sdpa)(q, k, v, options()) - sdpa(q, k, v, HEADS)
    assert torch.allclose(out, ours, atol=1e-5)
    by_block = IPAdapterPatch("SD1.5", [prompt(weights)], sdpa, base_patches={("input", 1): foreign})
    assert torch.allclose(by_block(q, k, v, options()), ours, atol=1e-5) and len(calls) == 2


def test_no_host_sync_inside_the_attention_call(weights, monkeypatch):
    q, k, v = qkv()
    mask = torch.rand(1, 6, 8)
    patch = IPAdapterPatch("SD1.5", [prompt(weights, masks=mask, sigma_range=(5.0, 1.0))], sdpa)
    extra = options(sigmas=torch.tensor([3.0, 3.0]))
    patch(q, k, v, extra)  # first call fills the caches

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync inside attention")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    patch(q, k, v, extra)


def test_patch_keys_cover_only_layers_with_weight(weights):
    p = ImagePrompt(weights=weights, cond=tokens(1), uncond=tokens(2), layer_weights=(0.0,) * 15 + (1.0,))
    assert IPAdapterPatch("SD1.5", [p], sdpa).keys() == [("middle", 0, 0)]


def test_frame_weights_scale_each_latent_of_the_batch(weights):
    q, k, v = qkv(batch=4)
    base = sdpa(q, k, v, HEADS)
    full = IPAdapterPatch("SD1.5", [prompt(weights)], sdpa)(q, k, v, options(batch=4)) - base
    framed = IPAdapterPatch("SD1.5", [prompt(weights, frame_weights=(1.0, 0.25))], sdpa)(
        q, k, v, options(batch=4)) - base  # chunks [uncond x2, cond x2]: frames 0, 1, 0, 1
    for row, factor in enumerate((1.0, 0.25, 1.0, 0.25)):
        assert torch.allclose(framed[row], factor * full[row], atol=1e-6)



def test_frame_weights_past_the_last_frame_hold_the_last_weight(weights):
    q, k, v = qkv(batch=5)
    opts = {**options(batch=5), "cond_or_uncond": [0]}  # one chunk of 5 frames
    base = sdpa(q, k, v, HEADS)
    full = IPAdapterPatch("SD1.5", [prompt(weights)], sdpa)(q, k, v, opts) - base
    framed = IPAdapterPatch("SD1.5", [prompt(weights, frame_weights=(0.5, 1.0, 0.25))], sdpa)(q, k, v, opts) - base
    for row, factor in enumerate((0.5, 1.0, 0.25, 0.25, 0.25)):
        assert torch.allclose(framed[row], factor * full[row], atol=1e-6), row


# (rows together below, elementwise softmax from): the together path, the per-row path with torch's softmax, and
# the per-row path with the elementwise softmax that folds the masks in
PATHS = {"rows together": (10 ** 6, 10 ** 6), "per row": (0, 10 ** 6), "per row, elementwise": (0, 0)}


@pytest.mark.parametrize("attention_function", [sdpa, sdpa_ignoring_options, sdpa_per_head, sdpa_per_head_view],
                         ids=["output (B, N, C)", "per-head option ignored", "output per head",
                              "output per head, strided"])
@pytest.mark.parametrize("count", [4, 16], ids=["queries innermost", "image tokens innermost"])
@pytest.mark.parametrize("path", list(PATHS))
def test_every_call_path_computes_the_same_image_attention(weights, monkeypatch, path, count, attention_function):
    """Which path a call takes depends on its query and image token counts; each must give the formula's result."""
    q, k, v = qkv(batch=4)
    left = torch.zeros(1, 6, 8)
    left[:, :, :4] = 1.0
    prompts = [
        prompt(weights, cond=tokens(3, 2, count), uncond=tokens(4, 2, count), refs=2, ref_weights=(0.5, 1.5),
               masks=torch.cat([left, 1 - left])),
        prompt(weights, cond=tokens(5, 2, count), uncond=tokens(6, 2, count), refs=2, unfold_batch=True,
               masks=torch.stack([left[0], torch.full((6, 8), 0.5)])),  # a mask per latent
        prompt(weights, cond=tokens(7, 1, count), uncond=tokens(8, 1, count), weight=0.8, sigma_range=(5.0, 1.0),
               frame_weights=(1.0, 0.25)),
    ]
    extra = options(batch=4, sigmas=torch.tensor([3.0, 3.0, 3.0, 3.0]))  # chunks [uncond x2, cond x2]
    monkeypatch.setattr(attention, "ROWS_TOGETHER_BELOW", PATHS[path][0])
    monkeypatch.setattr(attention, "ELEMENTWISE_FROM", PATHS[path][1])
    out = IPAdapterPatch("SD1.5", prompts, attention_function)(q, k, v, extra)
    # the formula, one batch row, prompt and reference at a time
    expected = sdpa(q, k, v, HEADS).clone()
    masks = [torch.ones(p.references, 48) if p.masks is None else
             attention.resize_masks(p.masks, extra["original_shape"], 48) for p in prompts]
    for row, (kind, frame) in enumerate([(1, 0), (1, 1), (0, 0), (0, 1)]):
        for p, mask in zip(prompts, masks):
            toks = p.uncond if kind == 1 else p.cond
            refs = [frame] if p.unfold_batch else range(p.references)
            frame_weight = 1.0 if p.frame_weights is None else p.frame_weights[frame]
            for ref in refs:
                ik, iv = layer_kv(weights, toks[ref:ref + 1])
                term = reference_image_attention(q[row:row + 1], ik, iv)[0] * mask[ref].view(-1, 1)
                expected[row] += p.layer_weights[0] * p.ref_weights[ref] * frame_weight * term
    assert torch.allclose(out, expected, atol=1e-5)
