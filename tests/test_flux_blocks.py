"""The Flux block hook on real ComfyUI Flux blocks: parity with diffusers (XLabs), InstantX's formula, invariants."""
import dataclasses
import types

import pytest
import torch
import torch.nn.functional as F

import comfy.ldm.flux.layers as flux_layers
import comfy.ldm.flux.math as flux_math
import comfy.ops
from ipadapter_kit.ipadapter_core import adapter, attention
from ipadapter_kit.ipadapter_core.attention import ImagePrompt
from ipadapter_kit.ipadapter_core.families import flux as core_flux

HIDDEN, HEADS, CONTEXT, AXES = 64, 2, 48, [4, 14, 14]
HEAD_DIM = HIDDEN // HEADS
TEXT, GRID = 6, (4, 6)  # text tokens, image token grid (h, w)
IMAGE = GRID[0] * GRID[1]
LAYERS = 57


def randomise(module, seed, scale=0.2):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if p.ndim == 1 and p.shape[0] == HEAD_DIM
                                                                    else 0.0))
    return module.eval()


@pytest.fixture(scope="module")
def blocks():
    ops = comfy.ops.disable_weight_init
    double = randomise(flux_layers.DoubleStreamBlock(HIDDEN, HEADS, 4.0, qkv_bias=True, operations=ops), 1)
    single = randomise(flux_layers.SingleStreamBlock(HIDDEN, HEADS, 4.0, operations=ops), 2)
    return types.SimpleNamespace(double_blocks=[double] * 19, single_blocks=[single] * 38, patch_size=2)


def xlabs_weights(seed=0, tokens=4, clip=16):
    gen = torch.Generator().manual_seed(seed)
    rand = (lambda *shape: torch.randn(*shape, generator=gen) * 0.2)
    proj = {"proj.weight": rand(tokens * CONTEXT, clip), "proj.bias": rand(tokens * CONTEXT),
            "norm.weight": 1 + rand(CONTEXT), "norm.bias": rand(CONTEXT)}
    blocks = {f"{i}.processor.ip_adapter_double_stream_{kv}_proj.{p}": rand(HIDDEN, CONTEXT) if p == "weight"
              else rand(HIDDEN) for i in range(19) for kv in "kv" for p in ("weight", "bias")}
    return adapter.from_state_dict({"ip_adapter_proj_model": proj, "double_blocks": blocks}, "xlabs")


def instantx_weights(seed=0, tokens=8, siglip=44):
    gen = torch.Generator().manual_seed(seed)
    rand = (lambda *shape: torch.randn(*shape, generator=gen) * 0.2)
    proj = {"proj.0.weight": rand(2 * siglip, siglip), "proj.0.bias": rand(2 * siglip),
            "proj.2.weight": rand(tokens * CONTEXT, 2 * siglip), "proj.2.bias": rand(tokens * CONTEXT),
            "norm.weight": 1 + rand(CONTEXT), "norm.bias": rand(CONTEXT)}
    layers = {f"{n}.to_{kv}_ip.weight": rand(HIDDEN, CONTEXT) for n in range(LAYERS) for kv in "kv"}
    return adapter.from_state_dict({"image_proj": proj, "ip_adapter": layers}, "instantx")


def prompt(weights, embeds_seed=3, weight=1.0, batch_refs=1, **kw):
    clip = weights.spec.clip_dim
    embeds = torch.randn(batch_refs, clip, generator=torch.Generator().manual_seed(embeds_seed))
    with torch.no_grad():
        cond = weights.image_proj(embeds)
        uncond = weights.image_proj(torch.zeros_like(embeds))
    return ImagePrompt(weights=weights, cond=cond, uncond=uncond, layer_weights=(weight,) * LAYERS,
                       ref_weights=(1.0,) * batch_refs, **kw)


def stream_inputs(batch=1, seed=0, refs=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(batch, IMAGE + refs, HIDDEN, generator=g)
    txt = torch.randn(batch, TEXT, HIDDEN, generator=g)
    vec = torch.randn(batch, HIDDEN, generator=g)
    ids = torch.zeros(batch, TEXT + IMAGE + refs, 3)
    rows, cols = torch.meshgrid(torch.arange(GRID[0]), torch.arange(GRID[1]), indexing="ij")
    ids[:, TEXT:TEXT + IMAGE, 1], ids[:, TEXT:TEXT + IMAGE, 2] = rows.flatten(), cols.flatten()
    ids[:, TEXT + IMAGE:, 0] = 1.0  # reference latents (Kontext) sit on another index
    pe = flux_layers.EmbedND(HEAD_DIM, 10000, AXES)(ids)
    return img, txt, vec, pe, ids


def options(kind, index=0, batch=1, refs=(), sigma=1.0, chunks=None):
    latent = ((2 * GRID[0], 2 * GRID[1]), tuple(refs))
    return {"block_type": kind, "block_index": index, "cond_or_uncond": chunks or [0] * batch,
            "sigmas": torch.full((batch,), sigma), core_flux.LATENT_KEY: latent}


def run_double(patch, blocks, img, txt, vec, pe, opts):
    block = blocks.double_blocks[opts["block_index"]]

    def original(a):
        out_img, out_txt = block(img=a["img"], txt=a["txt"], vec=a["vec"], pe=a["pe"], attn_mask=None,
                                 transformer_options=a["transformer_options"])
        return {"img": out_img, "txt": out_txt}

    args = {"img": img.clone(), "txt": txt.clone(), "vec": vec, "pe": pe, "attn_mask": None,
            "transformer_options": opts}
    if patch is None:
        return original(args)
    return patch(args, {"original_block": original})


def run_single(patch, blocks, x, vec, pe, opts):
    block = blocks.single_blocks[opts["block_index"]]

    def original(a):
        return {"img": block(a["img"], vec=a["vec"], pe=a["pe"], attn_mask=None,
                             transformer_options=a["transformer_options"])}

    args = {"img": x.clone(), "vec": vec, "pe": pe, "attn_mask": None, "transformer_options": opts}
    return original(args) if patch is None else patch(args, {"original_block": original})


def flux_patch(blocks, *prompts):
    return core_flux.FluxBlockPatch(prompts, blocks)


def diffusers_block(comfy_block):
    """diffusers' FluxTransformerBlock carrying the same weights as a ComfyUI DoubleStreamBlock."""
    from diffusers.models.transformers.transformer_flux import FluxTransformerBlock

    block = FluxTransformerBlock(HIDDEN, HEADS, HEAD_DIM).eval()
    sd = {k.replace("_norm.weight", "_norm.scale"): v for k, v in comfy_block.state_dict().items()}  # newer ComfyUI
    to = {}
    for side, attn_prefix, q, k, v, norm_q, norm_k, out, ff, norm1 in (
            ("img", "attn.", "to_q", "to_k", "to_v", "norm_q", "norm_k", "to_out.0", "ff", "norm1"),
            ("txt", "attn.", "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k", "to_add_out",
             "ff_context", "norm1_context")):
        for p in ("weight", "bias"):
            for name, chunk in zip((q, k, v), sd[f"{side}_attn.qkv.{p}"].chunk(3)):
                to[f"{attn_prefix}{name}.{p}"] = chunk
            to[f"{attn_prefix}{out}.{p}"] = sd[f"{side}_attn.proj.{p}"]
            to[f"{ff}.net.0.proj.{p}"] = sd[f"{side}_mlp.0.{p}"]
            to[f"{ff}.net.2.{p}"] = sd[f"{side}_mlp.2.{p}"]
            to[f"{norm1}.linear.{p}"] = sd[f"{side}_mod.lin.{p}"]
        to[f"{attn_prefix}{norm_q}.weight"] = sd[f"{side}_attn.norm.query_norm.scale"]
        to[f"{attn_prefix}{norm_k}.weight"] = sd[f"{side}_attn.norm.key_norm.scale"]
    block.load_state_dict(to, strict=True)
    return block


def test_xlabs_double_block_matches_diffusers(blocks):
    from diffusers.models.embeddings import FluxPosEmbed
    from diffusers.models.transformers.transformer_flux import FluxIPAdapterAttnProcessor

    weights = xlabs_weights()
    p = prompt(weights, weight=0.8)
    index = 3
    img, txt, vec, pe, ids = stream_inputs()
    ours = run_double(flux_patch(blocks, p), blocks, img, txt, vec, pe, options("double", index))["img"]

    reference = diffusers_block(blocks.double_blocks[index])
    processor = FluxIPAdapterAttnProcessor(HIDDEN, CONTEXT, num_tokens=(4,), scale=0.8)
    kv = weights.kv_projection(index)
    with torch.no_grad():
        processor.to_k_ip[0].weight.copy_(kv.k_weight)
        processor.to_k_ip[0].bias.copy_(kv.k_bias)
        processor.to_v_ip[0].weight.copy_(kv.v_weight)
        processor.to_v_ip[0].bias.copy_(kv.v_bias)
    reference.attn.set_processor(processor)
    rotary = FluxPosEmbed(10000, AXES)(ids[0])
    with torch.no_grad():
        _, expected = reference(img, txt, vec, image_rotary_emb=rotary,
                                joint_attention_kwargs={"ip_hidden_states": [p.cond]})
    plain = run_double(None, blocks, img, txt, vec, pe, options("double", index))["img"]
    assert (ours - plain).abs().max() > 1e-3  # the image prompt does something
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)


def instantx_reference_double(block, p, weight, img, txt, vec, pe):
    """InstantX's double block written out from the release: image attention added to img_attn before proj."""
    img_mod1, img_mod2 = block.img_mod(vec)
    txt_mod1, txt_mod2 = block.txt_mod(vec)
    iq, ik, iv = block.img_attn.qkv((1 + img_mod1.scale) * block.img_norm1(img) + img_mod1.shift) \
        .view(img.shape[0], img.shape[1], 3, HEADS, -1).permute(2, 0, 3, 1, 4)
    iq, ik = block.img_attn.norm(iq, ik, iv)
    tq, tk, tv = block.txt_attn.qkv((1 + txt_mod1.scale) * block.txt_norm1(txt) + txt_mod1.shift) \
        .view(txt.shape[0], txt.shape[1], 3, HEADS, -1).permute(2, 0, 3, 1, 4)
    tq, tk = block.txt_attn.norm(tq, tk, tv)
    joint = flux_math.attention(torch.cat((tq, iq), 2), torch.cat((tk, ik), 2), torch.cat((tv, iv), 2), pe=pe)
    txt_attn, img_attn = joint[:, :txt.shape[1]], joint[:, txt.shape[1]:]
    img_attn = img_attn + weight * instantx_image_attention(p, 0, iq)
    img = img + img_mod1.gate * block.img_attn.proj(img_attn)
    img = img + img_mod2.gate * block.img_mlp((1 + img_mod2.scale) * block.img_norm2(img) + img_mod2.shift)
    return img


def instantx_image_attention(p, layer, q):
    """softmax(q rms(K))·rms(V) per head with RMS over head_dim (eps 1e-5, no affine): InstantX's processor."""
    kv = p.weights.kv_projection(layer)
    k = F.rms_norm((p.cond @ kv.k_weight.t()).unflatten(-1, (HEADS, HEAD_DIM)), (HEAD_DIM,), eps=1e-5)
    v = F.rms_norm((p.cond @ kv.v_weight.t()).unflatten(-1, (HEADS, HEAD_DIM)), (HEAD_DIM,), eps=1e-5)
    out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).flatten(2)


def test_instantx_double_block_equals_the_release_formula(blocks):
    weights = instantx_weights()
    p = prompt(weights, weight=0.9)
    img, txt, vec, pe, _ = stream_inputs(seed=4)
    ours = run_double(flux_patch(blocks, p), blocks, img, txt, vec, pe, options("double", 0))["img"]
    with torch.no_grad():
        expected = instantx_reference_double(blocks.double_blocks[0], p, 0.9, img.clone(), txt.clone(), vec, pe)
    plain = run_double(None, blocks, img, txt, vec, pe, options("double", 0))["img"]
    assert (ours - plain).abs().max() > 1e-3
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)


def test_instantx_single_block_equals_the_release_formula(blocks):
    weights = instantx_weights(seed=1)
    p = prompt(weights, weight=1.1)
    img, txt, vec, pe, _ = stream_inputs(seed=5)
    x = torch.cat((txt, img), 1)
    index = 7
    ours = run_single(flux_patch(blocks, p), blocks, x, vec, pe, options("single", index))["img"]
    block = blocks.single_blocks[index]
    with torch.no_grad():
        mod, _ = block.modulation(vec)
        qkv, mlp = torch.split(block.linear1((1 + mod.scale) * block.pre_norm(x) + mod.shift),
                               [3 * HIDDEN, block.mlp_hidden_dim_first], dim=-1)
        q, k, v = qkv.view(1, x.shape[1], 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        q, k = block.norm(q, k, v)
        attn = flux_math.attention(q, k, v, pe=pe)
        attn = attn + 1.1 * instantx_image_attention(p, 19 + index, q)  # text and image tokens alike
        expected = x + mod.gate * block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2))
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("make", [xlabs_weights, instantx_weights])
def test_weight_zero_and_zero_mask_leave_the_block_bitwise_plain(blocks, make):
    img, txt, vec, pe, _ = stream_inputs(seed=6)
    plain = run_double(None, blocks, img, txt, vec, pe, options("double", 1))
    zero = run_double(flux_patch(blocks, prompt(make(), weight=0.0)), blocks, img, txt, vec, pe, options("double", 1))
    masked = prompt(make(), masks=torch.zeros(1, 16, 24))
    hidden = run_double(flux_patch(blocks, masked), blocks, img, txt, vec, pe, options("double", 1))
    for out in (zero, hidden):
        assert torch.equal(out["img"], plain["img"]) and torch.equal(out["txt"], plain["txt"])


@pytest.mark.parametrize("make", [xlabs_weights, instantx_weights])
def test_all_ones_mask_equals_no_mask(blocks, make):
    img, txt, vec, pe, _ = stream_inputs(seed=7)
    weights = make()
    free = run_double(flux_patch(blocks, prompt(weights)), blocks, img, txt, vec, pe, options("double", 2))
    ones = run_double(flux_patch(blocks, prompt(weights, masks=torch.ones(1, 16, 24))), blocks, img, txt, vec, pe,
                      options("double", 2))
    torch.testing.assert_close(ones["img"], free["img"], atol=1e-6, rtol=0)


def test_mask_steers_only_its_region_on_the_token_grid(blocks):
    img, txt, vec, pe, _ = stream_inputs(seed=8)
    mask = torch.zeros(1, 16, 24)
    mask[:, :, :12] = 1.0  # left half of the latent -> left 3 of 6 token columns
    out = run_double(flux_patch(blocks, prompt(xlabs_weights(), masks=mask)), blocks, img, txt, vec, pe,
                     options("double", 0))["img"].view(1, *GRID, HIDDEN)
    plain = run_double(None, blocks, img, txt, vec, pe, options("double", 0))["img"].view(1, *GRID, HIDDEN)
    assert torch.equal(out[:, :, 3:], plain[:, :, 3:])
    assert (out[:, :, :3] - plain[:, :, :3]).abs().amin(dim=-1).gt(0).all()


@pytest.mark.parametrize("make", [xlabs_weights, instantx_weights])
def test_reference_latent_tokens_are_not_steered(blocks, make):
    refs = 8  # a Kontext reference latent of 4 x 8 -> 2 x 4 tokens after the image's
    img, txt, vec, pe, _ = stream_inputs(seed=9, refs=refs)
    opts = (lambda kind: options(kind, 0, refs=[(4, 8)]))
    out = run_double(flux_patch(blocks, prompt(make())), blocks, img, txt, vec, pe, opts("double"))["img"]
    plain = run_double(None, blocks, img, txt, vec, pe, opts("double"))["img"]
    # tokens meet only inside the block's attention, before the image term enters: reference tokens stay plain
    assert torch.equal(out[:, IMAGE:], plain[:, IMAGE:]) and not torch.equal(out[:, :IMAGE], plain[:, :IMAGE])
    x = torch.cat((txt, img), 1)
    out = run_single(flux_patch(blocks, prompt(make())), blocks, x, vec, pe, opts("single"))["img"]
    plain = run_single(None, blocks, x, vec, pe, opts("single"))["img"]
    assert torch.equal(out[:, TEXT + IMAGE:], plain[:, TEXT + IMAGE:])
    assert torch.equal(out, plain) if make is xlabs_weights else not torch.equal(out, plain)  # XLabs: doubles only


def test_start_end_gate_follows_sigma_without_host_reads(blocks, monkeypatch):
    img, txt, vec, pe, _ = stream_inputs(batch=2, seed=10)
    p = prompt(xlabs_weights(), sigma_range=(0.8, 0.2))
    patch = flux_patch(blocks, p)
    plain = run_double(None, blocks, img, txt, vec, pe, options("double", 0, batch=2))["img"]
    run_double(patch, blocks, img, txt, vec, pe, options("double", 0, batch=2, sigma=0.5))  # warm the caches

    def refuse(*a, **k):
        raise AssertionError("host read inside the block hook")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    inside = run_double(patch, blocks, img, txt, vec, pe, options("double", 0, batch=2, sigma=0.5))["img"]
    outside = run_double(patch, blocks, img, txt, vec, pe, options("double", 0, batch=2, sigma=0.9))["img"]
    monkeypatch.undo()
    assert torch.equal(outside, plain) and not torch.equal(inside, plain)


def test_kv_projected_once_per_layer(blocks, monkeypatch):
    calls = []
    real = attention.scaled_kv
    monkeypatch.setattr(attention, "scaled_kv", lambda *a: calls.append(a[1]) or real(*a))
    patch = flux_patch(blocks, prompt(instantx_weights()))
    img, txt, vec, pe, _ = stream_inputs(seed=11)
    for step in range(3):
        for index in (0, 1):
            run_double(patch, blocks, img, txt, vec, pe, options("double", index))
    assert sorted(calls) == [0, 0, 1, 1]  # cond and uncond once per layer, whatever the steps


def test_foreign_block_replace_is_wrapped_and_still_runs(blocks):
    seen = []

    def foreign(args, extra):
        seen.append(args["transformer_options"]["block_index"])
        return extra["original_block"](args)

    img, txt, vec, pe, _ = stream_inputs(seed=12)
    p = prompt(instantx_weights())
    wrapped = core_flux.FluxBlockPatch([p], blocks, base_patches={("double_block", 0): foreign})
    out = run_double(wrapped, blocks, img, txt, vec, pe, options("double", 0))["img"]
    alone = run_double(flux_patch(blocks, p), blocks, img, txt, vec, pe, options("double", 0))["img"]
    assert seen == [0] and torch.equal(out, alone)


def test_attention_override_already_set_is_chained(blocks):
    seen = []

    def user_override(func, *args, **kwargs):
        seen.append(True)
        return func(*args, **kwargs)

    img, txt, vec, pe, _ = stream_inputs(seed=13)
    p = prompt(instantx_weights())
    opts = {**options("double", 0), "optimized_attention_override": user_override}
    out = run_double(flux_patch(blocks, p), blocks, img, txt, vec, pe, opts)["img"]
    alone = run_double(flux_patch(blocks, p), blocks, img, txt, vec, pe, options("double", 0))["img"]
    assert seen and torch.equal(out, alone)


def test_flux_block_weights_and_curves():
    flux = core_flux.FLUX
    table = flux.parse_block_weights("d0:1, d18:0.5, s3:0.25")
    assert len(table) == LAYERS and table[0] == 1.0 and table[18] == 0.5 and table[19 + 3] == 0.25
    assert sum(1 for w in table if w) == 3
    assert flux.parse_block_weights("s*:0.5")[19:] == (0.5,) * 38
    eased = flux.layer_weights("ease in", 1.0, layers=19)
    assert eased[0] == 1.0 and eased[18] < eased[0] and eased[19:] == (0.0,) * 38
    from ipadapter_kit.ipadapter_core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="defined on UNet blocks"):
        flux.layer_weights("style transfer", 1.0)
    with pytest.raises(InvalidInputError, match="d<index>"):
        flux.parse_block_weights("3:1.0")
    with pytest.raises(InvalidInputError, match="19 double blocks"):
        flux.parse_block_weights("d19:1.0")


def test_xlabs_and_instantx_stacked_each_enter_at_their_own_point(blocks):
    img, txt, vec, pe, _ = stream_inputs(seed=14)
    xlabs, instantx = prompt(xlabs_weights(), weight=0.6), prompt(instantx_weights(), weight=0.8)
    opts = (lambda: options("double", 4))
    plain = run_double(None, blocks, img, txt, vec, pe, opts())["img"]
    only_x = run_double(flux_patch(blocks, xlabs), blocks, img, txt, vec, pe, opts())["img"]
    only_i = run_double(flux_patch(blocks, instantx), blocks, img, txt, vec, pe, opts())["img"]
    both = run_double(flux_patch(blocks, instantx, xlabs), blocks, img, txt, vec, pe, opts())["img"]
    torch.testing.assert_close(both, only_i + (only_x - plain), atol=1e-5, rtol=0)


def test_separate_references_with_weights_w_and_zero_equal_one_reference(blocks):
    img, txt, vec, pe, _ = stream_inputs(seed=15)
    weights = instantx_weights()
    one = prompt(weights, weight=0.7)
    two = prompt(weights, weight=0.7, batch_refs=2, embeds_seed=3)  # reference 0 is the same embedding as `one`
    two = dataclasses.replace(two, cond=torch.cat((one.cond, two.cond[1:])), uncond=two.uncond,
                              ref_weights=(1.0, 0.0))
    alone = run_double(flux_patch(blocks, one), blocks, img, txt, vec, pe, options("double", 5))["img"]
    pair = run_double(flux_patch(blocks, two), blocks, img, txt, vec, pe, options("double", 5))["img"]
    torch.testing.assert_close(pair, alone, atol=1e-5, rtol=1e-5)
    both = run_double(flux_patch(blocks, dataclasses.replace(two, ref_weights=(1.0, 1.0))), blocks, img, txt, vec,
                      pe, options("double", 5))["img"]
    assert not torch.allclose(both, alone, atol=1e-4)
