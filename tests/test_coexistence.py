"""This pack's Apply and other packs' patches in one model: IPAdapter_plus-style (block, id) attn2 patches before or
after ours, and core's Perturbed Attention Guidance, in-process and through the server."""
import numpy as np
import pytest
import torch
from PIL import Image

import comfy.ldm.modules.attention
import comfy.patcher_extension
import graphs
import nodes as comfy_nodes
from comfy_server import execution_error
from ipadapter_kit.ipadapter_core.attention import ATTN2_TABLE_KEY, IPAdapterPatch
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError
from ipadapter_kit.nodes import apply, model_cache, patching
from ipadapter_kit.nodes.presets import load_clip_vision

STEPS = 3
ADAPTER = "ip-adapter_sd15.safetensors"
CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
# (block, id) keys IPAdapter_plus registers on SD1.5 (its middle key ("middle", 1) is never looked up by ComfyUI)
THEIR_KEYS = [("input", n) for n in (1, 2, 4, 5, 7, 8)] + [("output", n) for n in range(3, 12)]


class TheirPatch:
    """An IPAdapter_plus-style attn2 replace (a plain object, deep-copied with every clone's model_options): the
    plain attention plus a known term; its calls are counted per name, so every copy counts."""

    counts = {}

    def __init__(self, name, scale=0.3):
        self.name, self.scale = name, scale
        TheirPatch.counts[name] = {}

    @property
    def calls(self):
        return TheirPatch.counts[self.name]

    def __call__(self, q, k, v, extra_options):
        key = tuple(extra_options["block"])
        self.calls[key] = self.calls.get(key, 0) + 1
        out = comfy.ldm.modules.attention.optimized_attention(q, k, v, extra_options["n_heads"])
        return out + self.scale * q


def with_theirs(model, patch):
    """A clone with patch registered at every (block, id) key, as IPAdapter_plus does on SD1.5."""
    clone = model.clone()
    for block, number in THEIR_KEYS:
        clone.set_model_attn2_replace(patch, block, number)
    return clone


def sample(model, positive, negative, seed=7):
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    return comfy_nodes.common_ksampler(model, seed, STEPS, 5.0, "euler", "normal", positive, negative, latent)[0][
        "samples"]


@pytest.fixture(scope="module")
def ours(sd15):
    """apply(model) -> the model with this pack's IP-Adapter (weight 1) on it."""
    adapter = model_cache.load_adapter(ADAPTER)
    image = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(1))
    cond, uncond = apply.encode_pair(adapter, image, load_clip_vision(CLIP_H))
    return lambda model, **options: patching.apply_embeds(model, adapter, cond, uncond, **options)


def test_their_patch_after_ours_still_runs_once_per_block(sd15, ours):
    model, pos, neg = sd15
    theirs = TheirPatch("t1")
    both = with_theirs(ours(model), theirs)
    sample(both, pos, neg)
    assert theirs.calls == {key: STEPS for key in THEIR_KEYS}, "shadowed or doubled: " + str(theirs.calls)


def test_their_patch_before_ours_runs_once_per_block(sd15, ours):
    model, pos, neg = sd15
    theirs = TheirPatch("t2")
    both = ours(with_theirs(model, theirs))
    sample(both, pos, neg)
    assert theirs.calls == {key: STEPS for key in THEIR_KEYS}


def test_both_orders_give_both_effects(sd15, ours):
    model, pos, neg = sd15
    theirs = TheirPatch("t3")
    before = sample(ours(with_theirs(model, theirs)), pos, neg)  # ours wraps theirs at install
    after = sample(with_theirs(ours(model), theirs), pos, neg)  # ours finds theirs at call time
    only_ours, only_theirs = sample(ours(model), pos, neg), sample(with_theirs(model, theirs), pos, neg)
    plain = sample(model, pos, neg)
    assert torch.equal(after, before)
    for single in (only_ours, only_theirs, plain):
        assert not torch.allclose(after, single, atol=1e-3)


def test_ours_with_a_zero_mask_leaves_theirs_exactly_as_alone_in_either_order(sd15, ours):
    model, pos, neg = sd15
    theirs = TheirPatch("t7")
    only_theirs = sample(with_theirs(model, theirs), pos, neg)
    masked_out = {"attn_mask": torch.zeros(1, 8, 8)}  # our patch installed on every key, adding nothing
    table = ours(model, **masked_out).model_options["transformer_options"]["patches_replace"]["attn2"]
    assert sum(isinstance(p, IPAdapterPatch) for p in table.values()) == 16
    assert torch.equal(sample(with_theirs(ours(model, **masked_out), theirs), pos, neg), only_theirs)
    assert torch.equal(sample(ours(with_theirs(model, theirs), **masked_out), pos, neg), only_theirs)


def test_ours_alone_is_the_same_with_or_without_the_table(sd15, ours):
    model, pos, neg = sd15
    alone = ours(model)
    bare = alone.clone()
    bare.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, patching.WRAPPER_KEY)
    assert alone.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, patching.WRAPPER_KEY)
    assert torch.equal(sample(alone, pos, neg), sample(bare, pos, neg))


def test_a_later_patch_is_used_instead_of_the_one_it_replaced(sd15, ours):
    model, pos, neg = sd15
    first, second = TheirPatch("t5", 0.3), TheirPatch("t6", -0.2)
    replaced = with_theirs(ours(with_theirs(model, first)), second)
    first.calls.clear()
    sample(replaced, pos, neg)
    assert not first.calls and second.calls == {key: STEPS for key in THEIR_KEYS}


def test_our_patch_is_never_its_own_inner_attention(sd15, ours):
    patched = ours(sd15[0])
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    table = {("input", 1): patch}
    assert isinstance(patch, IPAdapterPatch)
    assert patch.inner_patch(("input", 1, 0), {ATTN2_TABLE_KEY: table}) is None


# ---------------------------------------------------------------- PAG through the server

def pag_prompt(weight, scale, prefix, pag_first=False):
    """IP-Adapter Apply -> PerturbedAttentionGuidance -> KSampler on the tiny SD1.5 checkpoint (128 px: at 64 px its
    middle block holds one token, where self-attention already equals PAG's perturbed value)."""
    prompt = graphs.txt2img(seed=3, steps=STEPS, size=128, prefix=prefix)  # 2x2 middle block: PAG has tokens to mix
    prompt.update({
        "img": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "ipa": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": ADAPTER}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_H}},
        "apply": {"class_type": "IPAKitApply", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": ["img", 0], "clip_vision": ["cv", 0],
            "weight": weight, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0}},
        "pag": {"class_type": "PerturbedAttentionGuidance", "inputs": {"model": ["apply", 0], "scale": scale}},
    })
    prompt["sampler"]["inputs"]["model"] = ["pag", 0]
    if pag_first:
        prompt["pag"]["inputs"]["model"], prompt["apply"]["inputs"]["model"] = ["ckpt", 0], ["pag", 0]
        prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def run_image(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", (execution_error(entry), server.log_tail())
    (path,) = server.output_images(entry)
    return np.asarray(Image.open(path)).astype(np.int16)


def test_pag_and_ip_adapter_both_act_in_one_graph(comfy_server):
    with_both = run_image(comfy_server, pag_prompt(1.0, 3.0, "pag_ipa"))
    no_adapter = run_image(comfy_server, pag_prompt(0.0, 3.0, "pag_only"))
    no_pag = run_image(comfy_server, pag_prompt(1.0, 0.0, "ipa_only"))
    assert np.abs(with_both - no_adapter).max() > 2, "the IP-Adapter did nothing under PAG"
    assert np.abs(with_both - no_pag).max() > 2, "PAG did nothing with the IP-Adapter on the model"
    pag_first = run_image(comfy_server, pag_prompt(1.0, 3.0, "pag_then_ipa", pag_first=True))
    assert np.array_equal(pag_first, with_both)


def their_set_model_patch_replace(model, key, callback, **kwargs):
    """IPAdapter_plus's registration (utils of its IPAdapterPlus.py): a new entry, or .add on the patch already there."""
    options = model.model_options["transformer_options"].copy()
    options["patches_replace"] = dict(options.get("patches_replace", {}))
    options["patches_replace"]["attn2"] = dict(options["patches_replace"].get("attn2", {}))
    if key in options["patches_replace"]["attn2"]:
        options["patches_replace"]["attn2"][key].add(callback, **kwargs)
    else:
        options["patches_replace"]["attn2"][key] = callback
        model.model_options["transformer_options"] = options


def test_their_add_onto_our_key_is_refused_with_the_order_that_works(sd15, ours):
    """On SDXL IPAdapter_plus registers (block, id, index) keys, ours; simulated here at an SD1.5 key."""
    patched = ours(sd15[0]).clone()
    with pytest.raises(IncompatibleModelError, match="before IPAdapter Kit's Apply") as refused:
        their_set_model_patch_replace(patched, ("input", 1, 0), TheirPatch("t8"), module_key="1")
    assert "ComfyUI_IPAdapter_plus" in str(refused.value)
    patch = patched.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1, 0)]
    assert isinstance(patch, IPAdapterPatch) and not hasattr(patch, "callback")
