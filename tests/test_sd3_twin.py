"""The diffusers twin of ComfyUI's MMDiT joint block (tests/sd3_twin.py) computes what ComfyUI's block computes, on the
tiny SD3.5 Large's first block and its last (context pre_only) block, and the comparison catches a wrong mapping."""
import copy

import pytest
import torch

import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
import comfy.ops
import sd3_twin
from host_support import tiny_configs
from tinymodels import sd3_models

H = tiny_configs.SD3_HIDDEN
LAST = 37
ATOL = RTOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: one thread is far faster here


@pytest.fixture(scope="module")
def dit():
    return sd3_models.tiny_sd35().model.diffusion_model


def _inputs(seed=0, batch=2, txt_len=7, img_len=16):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, txt_len, H, generator=gen), torch.randn(batch, img_len, H, generator=gen),
            torch.randn(batch, H, generator=gen))


def _randomized(block, seed=1):
    """A copy with every tensor distinct and random (the tiny model's qk norms are all ones, which would hide a
    ln_q / ln_k / norm_added_* mix-up)."""
    block = copy.deepcopy(block)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if ".ln_" in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return block


def _twin_context_query(twin, txt, vec):
    """The context queries diffusers feeds the joint attention (after add_q_proj and norm_added_q)."""
    if twin.context_pre_only:
        normed = twin.norm1_context(txt, vec)
    else:
        normed = twin.norm1_context(txt, emb=vec)[0]
    q = twin.attn.add_q_proj(normed).unflatten(-1, (twin.attn.heads, -1))
    return twin.attn.norm_added_q(q).flatten(2)


def _both(block, twin, seed=0):
    """((txt_out, img_out, context_query) from ComfyUI, the same from the twin). The context queries only shape the
    context outputs, which the pre_only last block drops: they are compared directly so its add_q_proj and
    norm_added_q are checked too."""
    txt, img, vec = _inputs(seed)
    with torch.no_grad():
        comfy_query = block.context_block.pre_attention(txt, vec)[0][0]
        comfy_out = sd3_twin.run_comfy_block(block, txt, img, vec) + (comfy_query,)
        diffusers_out = sd3_twin.run_diffusers_block(twin, img, txt, vec) + (_twin_context_query(twin, txt, vec),)
    return comfy_out, diffusers_out


def _assert_equal_outputs(block, twin, pre_only):
    (c_txt, c_img, c_query), (d_txt, d_img, d_query) = _both(block, twin)
    torch.testing.assert_close(d_query, c_query, atol=ATOL, rtol=RTOL)
    assert c_img.shape == d_img.shape == (2, 16, H)
    torch.testing.assert_close(d_img, c_img, atol=ATOL, rtol=RTOL)
    if pre_only:
        assert c_txt is None and d_txt is None
    else:
        assert c_txt.shape == d_txt.shape == (2, 7, H)
        torch.testing.assert_close(d_txt, c_txt, atol=ATOL, rtol=RTOL)
    # Not trivially equal: the block really changes its inputs, and the outputs are far from zero.
    txt, img, _ = _inputs()
    assert c_img.abs().mean() > 0.1 and (c_img - img).abs().mean() > 0.05
    if not pre_only:
        assert c_txt.abs().mean() > 0.1 and (c_txt - txt).abs().mean() > 0.05


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b) if x is not None)


@pytest.mark.parametrize("index", [0, LAST])
@pytest.mark.parametrize("randomize", [False, True], ids=["tiny_weights", "random_weights"])
def test_twin_matches_comfy_block(dit, index, randomize):
    block = dit.joint_blocks[index]
    pre_only = index == LAST
    assert block.context_block.pre_only == pre_only and not block.x_block.x_block_self_attn
    if randomize:
        block = _randomized(block, seed=index + 1)
    twin = sd3_twin.diffusers_block(block, context_pre_only=pre_only)
    assert isinstance(twin, sd3_twin.JointTransformerBlock) and not twin.training
    assert all(p.dtype == torch.float32 for p in twin.parameters())
    assert twin.context_pre_only == pre_only and (twin.ff_context is None) == pre_only
    _assert_equal_outputs(block, twin, pre_only)


@pytest.mark.parametrize("index", [0, LAST])
def test_every_twin_weight_matters(dit, index):
    """Equality under random, distinct weights plus 'each diffusers tensor changes the output' means every tensor is
    mapped, and mapped right (a swapped pair such as norm_q / norm_added_q or to_q / to_k would break equality)."""
    pre_only = index == LAST
    block = _randomized(dit.joint_blocks[index], seed=10 + index)
    twin = sd3_twin.diffusers_block(block, context_pre_only=pre_only)
    comfy_out, base = _both(block, twin)
    assert _max_diff(base, comfy_out) < ATOL * 10
    names = [name for name, _ in twin.named_parameters()]
    assert len(names) == (26 if pre_only else 32)
    for name in names:
        broken = copy.deepcopy(twin)
        with torch.no_grad():
            p = broken.get_parameter(name)
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        _, out = _both(block, broken)
        assert _max_diff(out, comfy_out) > 1e-3, name


@pytest.mark.parametrize("index", [0, LAST])
@pytest.mark.parametrize("name", ["x_block.attn.qkv.weight", "context_block.attn.qkv.bias", "x_block.attn.ln_k.weight",
                                  "context_block.attn.ln_q.weight", "context_block.adaLN_modulation.1.bias",
                                  "x_block.adaLN_modulation.1.weight", "x_block.mlp.fc2.bias"])
def test_a_perturbed_comfy_weight_breaks_equality(dit, index, name):
    pre_only = index == LAST
    block = dit.joint_blocks[index]
    twin = sd3_twin.diffusers_block(block, context_pre_only=pre_only)
    perturbed = copy.deepcopy(block)
    with torch.no_grad():
        p = perturbed.get_parameter(name)
        p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(4)))
    comfy_out, diffusers_out = _both(perturbed, twin)
    assert _max_diff(diffusers_out, comfy_out) > 1e-3
    comfy_out, diffusers_out = _both(block, twin)
    assert _max_diff(diffusers_out, comfy_out) < ATOL * 10


def test_pre_only_context_modulation_is_swapped(dit):
    """ComfyUI's pre_only context adaLN chunks [shift | scale]; diffusers' AdaLayerNormContinuous chunks
    [scale | shift]: loading it unswapped (as for the other blocks) breaks the image output."""
    block = _randomized(dit.joint_blocks[LAST], seed=5)
    twin = sd3_twin.diffusers_block(block, context_pre_only=True)
    w = block.context_block.adaLN_modulation[1].weight.detach()
    b = block.context_block.adaLN_modulation[1].bias.detach()
    assert torch.equal(twin.norm1_context.linear.weight[:H], w[H:])  # diffusers' first half (scale) = ComfyUI's second
    assert torch.equal(twin.norm1_context.linear.bias[H:], b[:H])  # diffusers' second half (shift) = ComfyUI's first
    comfy_out, good = _both(block, twin)
    assert _max_diff(good, comfy_out) < ATOL * 10
    unswapped = copy.deepcopy(twin)
    with torch.no_grad():
        unswapped.norm1_context.linear.weight.copy_(w)
        unswapped.norm1_context.linear.bias.copy_(b)
    assert (_both(block, unswapped)[1][1] - comfy_out[1]).abs().max() > 1e-3  # the image output itself
    # The non-pre_only blocks keep ComfyUI's order (shift, scale, gate, shift, scale, gate) unchanged.
    first = sd3_twin.diffusers_block(dit.joint_blocks[0], context_pre_only=False)
    assert torch.equal(first.norm1_context.linear.weight, dit.joint_blocks[0].context_block.adaLN_modulation[1].weight)


def test_mismatch_and_unmapped_tensors_fail_loudly(dit):
    with pytest.raises(ValueError, match="pre_only"):
        sd3_twin.diffusers_block(dit.joint_blocks[0], context_pre_only=True)
    with pytest.raises(ValueError, match="pre_only"):
        sd3_twin.diffusers_block(dit.joint_blocks[LAST], context_pre_only=False)
    extra = copy.deepcopy(dit.joint_blocks[0])
    extra.x_block.register_parameter("stray", torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(ValueError, match="stray"):
        sd3_twin.diffusers_block(extra, context_pre_only=False)
    missing = copy.deepcopy(dit.joint_blocks[0])
    del missing.context_block.attn.qkv.bias
    missing.context_block.attn.qkv.register_parameter("bias", None)
    with pytest.raises(KeyError, match="context_block.attn.qkv.bias"):
        sd3_twin.diffusers_block(missing, context_pre_only=False)


def test_dual_attention_block_twin():
    """An SD3.5 Medium style block (x_block_self_attn: attn2 and a 9-way adaLN) maps to use_dual_attention=True."""
    from tinymodels.weights import init_module

    block = mmdit.JointBlock(H, 2, mlp_ratio=4.0, qkv_bias=True, attn_mode="torch", pre_only=False, qk_norm="rms",
                             x_block_self_attn=True, operations=comfy.ops.disable_weight_init)
    block = _randomized(init_module(block, seed=7), seed=8)
    twin = sd3_twin.diffusers_block(block, context_pre_only=False)
    assert twin.use_dual_attention and twin.attn2 is not None
    _assert_equal_outputs(block, twin, pre_only=False)
