"""Weights Schedule into the apply node, sampled on the tiny SD1.5 checkpoint: a cross-fade over the batch, and the
same picture when ComfyUI samples the batch in context windows."""
import inspect

import pytest
import torch

import comfy.context_windows as context_windows
from comfy_extras.nodes_context_windows import ContextWindowsManualNode
from ipadapter_kit.ipadapter_core import attention
from ipadapter_kit.nodes import apply, model_cache, weights_nodes
from ipadapter_kit.nodes.presets import load_clip_vision
from test_invariants import reference, sample

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


@pytest.fixture(scope="module")
def faded(sd15):
    """Two references, each held for a transition of 2 frames fading 1 -> 0: image_1 r0 r0 r1 r1, weights 1 0 1 0."""
    model, pos, neg = sd15
    images = torch.cat([reference(1), reference(2)])
    weights, _, total, image_1, image_2, _ = weights_nodes.WeightsSchedule.execute(
        "1.0, 0.0", "linear", 2, 0, 9999, 0, 0, "full batch", images).result
    assert (weights, total, image_2) == ((1.0, 0.0, 1.0, 0.0), 4, None)
    patched = apply.ApplyAdvanced.execute(
        model, model_cache.load_adapter("ip-adapter_sd15.safetensors"), 1.0, "linear", 0.0, 1.0, 1.0, "concat",
        "V only", unfold_batch=True, image=image_1, clip_vision=load_clip_vision(CLIP_H),
        frame_weights=weights).result[0]
    return patched, pos, neg


def test_the_schedule_fades_each_reference_out(sd15, faded):
    model, pos, neg = sd15
    patched, _, _ = faded
    out, plain = sample(patched, pos, neg, batch=4), sample(model, pos, neg, batch=4)
    assert torch.equal(out[1], plain[1]) and torch.equal(out[3], plain[3])  # weight 0: untouched
    assert not torch.allclose(out[0], plain[0], atol=1e-3) and not torch.allclose(out[2], plain[2], atol=1e-3)


def manual_windows(model, length):
    """ComfyUI's Context Windows (Manual) on the model: static windows of `length` latents, no overlap (the node
    gained inputs after 0.3.75, such as freenoise and causal_window_fix: those it has keep their defaults)."""
    settings = {"model": model, "context_length": length, "context_overlap": 0,
                "context_schedule": context_windows.ContextSchedules.STATIC_STANDARD, "context_stride": 1,
                "closed_loop": False, "fuse_method": context_windows.ContextFuseMethods.PYRAMID, "dim": 0,
                "freenoise": False}
    known = inspect.signature(ContextWindowsManualNode.execute).parameters
    return ContextWindowsManualNode.execute(**{k: v for k, v in settings.items() if k in known}).result[0]


def test_context_windows_sample_what_the_whole_batch_samples(faded, monkeypatch):
    patched, pos, neg = faded
    windowed = manual_windows(patched, length=2)
    whole = sample(patched, pos, neg, batch=4)
    scale = whole.abs().max()  # the tiny model's latents are large; batches of 2 and 4 round differently
    assert (sample(windowed, pos, neg, batch=4) - whole).abs().max() < 1e-4 * scale  # measured 1.5e-6
    # without the window's frames, window 2..3 would take frames 0..1's reference and weights
    monkeypatch.setattr(attention, "frame_indices", lambda *args: None)
    assert (sample(windowed, pos, neg, batch=4)[2:] - whole[2:]).abs().max() > 1e-2 * scale  # measured 0.22
