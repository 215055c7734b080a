"""EVA02-CLIP vision tower (ipadapter_core/eva_clip.py): a tiny tower in the released checkpoint's key layout loads
strictly and equals timm's Eva (loaded through timm's own checkpoint_filter_fn) in the final feature and the hidden
states PuLID reads; the rotary table equals timm's and the eva_clip formula; wrong key sets raise naming the keys."""
import pytest
import torch
import torch.nn.functional as F

from ipadapter_kit.ipadapter_core import eva_clip
from ipadapter_kit.ipadapter_core.errors import InvalidInputError, UnknownFormatError
from tinymodels.eva_files import random_checkpoint, released_layout

# Tiny tower with the EVA02-CLIP-L-14-336 structure: 24 blocks (so PuLID's layers 3..19 exist), patch 14,
# rotary positions scaled to the 16-patch pretraining grid; hidden = int(64 * 8 / 3) as timm's mlp_ratio gives.
TINY = eva_clip.EVAConfig(image_size=56, patch_size=14, width=64, depth=24, heads=4, mlp_hidden=170, embed_dim=24)
TINY_HEAD_WIDTH = 16
VIT_L = eva_clip.EVAConfig()


@pytest.fixture(scope="module")
def checkpoint():
    return random_checkpoint(TINY, TINY_HEAD_WIDTH)


@pytest.fixture(scope="module")
def tower(checkpoint):
    return eva_clip.load_visual(checkpoint, head_width=TINY_HEAD_WIDTH)


@pytest.fixture(scope="module")
def timm_eva():
    """timm's Eva with the eva02_large_patch14_clip_336 options at the tiny sizes."""
    pytest.importorskip("timm")
    from timm.models.eva import Eva
    model = Eva(img_size=TINY.image_size, patch_size=TINY.patch_size, embed_dim=TINY.width, depth=TINY.depth,
                num_heads=TINY.heads, mlp_ratio=4 * 2 / 3, qkv_fused=False, swiglu_mlp=True, scale_mlp=True,
                scale_attn_inner=True, use_rot_pos_emb=True, ref_feat_shape=(16, 16), global_pool="token",
                num_classes=TINY.embed_dim)
    assert model.blocks[0].mlp.fc1_g.weight.shape[0] == TINY.mlp_hidden
    return model.eval()


@pytest.fixture(scope="module")
def timm_loaded(timm_eva, checkpoint):
    from timm.models.eva import checkpoint_filter_fn
    filtered = checkpoint_filter_fn(dict(checkpoint), timm_eva)
    assert len(filtered) == 512  # 562 visual keys - 50 rope tables
    timm_eva.load_state_dict(filtered, strict=True)
    return timm_eva


def pixels(batch=2, seed=1):
    return torch.randn(batch, 3, TINY.image_size, TINY.image_size, generator=torch.Generator().manual_seed(seed))


def test_tiny_checkpoint_loads_strictly(tower, checkpoint):
    assert tower.cfg == TINY and tower.cfg.head_width == TINY_HEAD_WIDTH
    own = tower.state_dict()
    assert len(own) == 512
    for key, value in own.items():
        assert torch.equal(value, checkpoint["visual." + key]), key
    assert not any(p.requires_grad for p in tower.parameters()) and not tower.training


@pytest.mark.usefixtures("one_thread")
def test_feature_and_hidden_states_equal_timm(tower, timm_loaded):
    x = pixels()
    feature, hidden = tower(x)
    with torch.no_grad():
        final, inter = timm_loaded.forward_intermediates(
            x, indices=list(eva_clip.PULID_LAYERS), norm=False, return_prefix_tokens=True, output_fmt="NLC")
        timm_feature = F.normalize(timm_loaded.forward_head(final), dim=-1)
        assert torch.allclose(timm_feature, F.normalize(timm_loaded(x), dim=-1))
    assert feature.shape == (2, TINY.embed_dim)
    torch.testing.assert_close(feature.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(feature, timm_feature, atol=2e-5, rtol=1e-5)
    assert len(hidden) == len(inter) == 5
    for ours, (patch, prefix) in zip(hidden, inter):
        assert ours.shape == (2, 1 + TINY.grid ** 2, TINY.width)
        torch.testing.assert_close(ours, torch.cat((prefix, patch), dim=1), atol=2e-5, rtol=1e-5)


@pytest.mark.usefixtures("one_thread")
def test_other_layers_equal_timm(tower, timm_loaded):
    x = pixels(batch=1, seed=2)
    _, hidden = tower(x, layers=(23, 0))
    with torch.no_grad():
        inter = timm_loaded.forward_intermediates(x, indices=[0, 23], return_prefix_tokens=True, output_fmt="NLC",
                                                  intermediates_only=True)
    timm_hidden = [torch.cat((prefix, patch), dim=1) for patch, prefix in inter]
    torch.testing.assert_close(hidden[0], timm_hidden[1], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(hidden[1], timm_hidden[0], atol=2e-5, rtol=1e-5)


def test_rope_table_equals_timm_exactly(timm_eva):
    from timm.layers import RotaryEmbeddingCat
    sin, cos = timm_eva.rope.get_embed().chunk(2, dim=-1)
    ours = eva_clip.rope_table(TINY.grid, TINY_HEAD_WIDTH, TINY.rope_ref_grid)
    assert torch.equal(ours[0], cos) and torch.equal(ours[1], sin)
    full = RotaryEmbeddingCat(dim=VIT_L.head_width, in_pixels=False, feat_shape=[24, 24], ref_feat_shape=[16, 16])
    sin, cos = full.get_embed().chunk(2, dim=-1)
    ours = eva_clip.rope_table(VIT_L.grid, VIT_L.head_width, VIT_L.rope_ref_grid)
    assert ours[0].shape == (576, 64) and torch.equal(ours[0], cos) and torch.equal(ours[1], sin)


def test_rope_table_is_the_eva_clip_formula():
    """freqs 1/10000^(arange(0,32,2)/32) at positions arange(24)/24*16, each twice; rows then columns."""
    freqs = 1.0 / 10000 ** (torch.arange(0, 32, 2).float() / 32)
    angle = (torch.arange(24).float() / 24 * 16)[:, None] * freqs
    angle = torch.stack((angle, angle), dim=-1).flatten(1)  # (24, 32): f0 f0 f1 f1 ..
    table = torch.cat((angle[:, None].expand(24, 24, 32), angle[None].expand(24, 24, 32)), dim=-1).reshape(576, 64)
    cos, sin = eva_clip.rope_table(24, 64, 16)
    assert torch.equal(cos, table.cos()) and torch.equal(sin, table.sin())
    assert torch.equal(eva_clip.rotate_pairs(torch.arange(6.0)), torch.tensor([-1.0, 0, -3, 2, -5, 4]))


def test_rope_leaves_the_cls_token_alone():
    x = torch.randn(1, 2, 1 + 16, 16)
    cos, sin = eva_clip.rope_table(4, 16, 16)
    out = eva_clip.apply_rope(x, cos, sin)
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and not torch.equal(out[:, :, 1:], x[:, :, 1:])
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))  # a rotation


def test_vit_l_layout_reads_the_released_config():
    """The released file's shapes (on the meta device: no memory) give EVA02-CLIP-L-14-336 and pass the key check."""
    layout = released_layout(VIT_L, eva_clip.HEAD_WIDTH)
    assert sum(k.startswith("visual.") for k in layout) == 562
    sd = {k: torch.empty(shape, device="meta") for k, shape in layout.items()}
    visual = eva_clip.visual_state_dict(sd)
    assert len(visual) == 512
    cfg = eva_clip.config_from_state_dict(visual)
    assert cfg == VIT_L and (cfg.mlp_hidden, cfg.heads, cfg.grid) == (2730, 16, 24)
    eva_clip.check_visual_state_dict(visual, eva_clip.EVAVisionTower(cfg, device="meta"))


def _edited(checkpoint, drop=(), add=None):
    sd = {k: v for k, v in checkpoint.items() if k not in drop}
    sd.update(add or {})
    return sd


def test_missing_key_is_named(checkpoint):
    sd = _edited(checkpoint, drop=["visual.blocks.5.attn.q_bias"])
    with pytest.raises(UnknownFormatError, match=r"missing visual\.blocks\.5\.attn\.q_bias; unexpected nothing"):
        eva_clip.load_visual(sd, head_width=TINY_HEAD_WIDTH)


def test_extra_key_is_named(checkpoint):
    sd = _edited(checkpoint, add={"visual.blocks.0.attn.k_bias": torch.zeros(TINY.width)})
    with pytest.raises(UnknownFormatError, match=r"missing nothing; unexpected visual\.blocks\.0\.attn\.k_bias"):
        eva_clip.load_visual(sd, head_width=TINY_HEAD_WIDTH)


def test_renamed_key_is_named(checkpoint):
    """timm's name for w1 is not accepted: both the missing and the unexpected key are named."""
    old, new = "visual.blocks.3.mlp.w1.bias", "visual.blocks.3.mlp.fc1_g.bias"
    sd = _edited(checkpoint, drop=[old], add={new: checkpoint[old]})
    with pytest.raises(UnknownFormatError, match=r"missing visual\.blocks\.3\.mlp\.w1\.bias; "
                                                 r"unexpected visual\.blocks\.3\.mlp\.fc1_g\.bias"):
        eva_clip.load_visual(sd, head_width=TINY_HEAD_WIDTH)


def test_wrong_shape_is_named(checkpoint):
    key = "visual.blocks.7.mlp.w3.weight"
    sd = _edited(checkpoint, add={key: checkpoint[key].T.contiguous()})
    with pytest.raises(UnknownFormatError, match=r"visual\.blocks\.7\.mlp\.w3\.weight has shape \(170, 64\), "
                                                 r"expected \(64, 170\)"):
        eva_clip.load_visual(sd, head_width=TINY_HEAD_WIDTH)


def test_shape_key_missing_is_named(checkpoint):
    sd = _edited(checkpoint, drop=["visual.pos_embed"])
    with pytest.raises(UnknownFormatError, match=r"visual\.pos_embed is missing"):
        eva_clip.load_visual(sd, head_width=TINY_HEAD_WIDTH)


def test_no_visual_tower_is_refused():
    with pytest.raises(UnknownFormatError, match=r"no visual\.\* tensors.*logit_scale"):
        eva_clip.load_visual({"logit_scale": torch.ones(()), "text.ln_final.weight": torch.ones(8)})


def test_bad_pixels_and_layers_are_refused(tower):
    with pytest.raises(InvalidInputError, match=r"expected \(batch, 3, 56, 56\)"):
        tower(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"blocks 0\.\.23; asked for \[24\]"):
        tower(pixels(batch=1), layers=(3, 24))
