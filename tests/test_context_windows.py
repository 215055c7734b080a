"""Context windows: when the sampler runs a few frames of an animation (AnimateDiff-Evolved's sliding context,
ComfyUI's own context windows), unfold_batch and frame weights follow each latent's absolute frame."""
import pytest
import torch

from ipadapter_kit.ipadapter_core.attention import IPAdapterPatch, frame_indices
from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from test_attention import options, prompt, qkv, sdpa, tokens, weights  # noqa: F401  (weights: a fixture)

FRAMES, REFS = 16, 5
CHUNKS = [1, 0]  # uncond frames 0..15, then cond frames 0..15


class Window:
    """ComfyUI's IndexListContextWindow as the attention sees it (index_list, dim; newer: causal_anchor_index)."""

    def __init__(self, index_list, dim=0, causal_anchor_index=None):
        self.index_list, self.dim = index_list, dim
        if causal_anchor_index is not None:
            self.causal_anchor_index = causal_anchor_index


@pytest.fixture(scope="module")
def framed(weights):
    """A patch whose references unfold over the frames (5 references: frame f takes f % 5), with a mask per reference
    and a weight per frame."""
    masks = torch.rand(REFS, 6, 8, generator=torch.Generator().manual_seed(3))
    p = prompt(weights, refs=REFS, cond=tokens(1, REFS), uncond=tokens(2, REFS), unfold_batch=True, masks=masks,
               frame_weights=tuple(0.1 + 0.05 * f for f in range(FRAMES)))
    return IPAdapterPatch("SD1.5", [p], sdpa)


def full_batch(patch):
    q, k, v = qkv(batch=2 * FRAMES)
    return (q, k, v), patch(q, k, v, options(batch=2 * FRAMES))


def rows_of(frames):
    """Batch rows of these frames in the full call, uncond chunk then cond chunk."""
    return [chunk * FRAMES + f for chunk in range(2) for f in frames]


def sub_call(patch, qkv_full, frames, **info):
    rows = rows_of(frames)
    q, k, v = (t[rows] for t in qkv_full)
    return patch(q, k, v, {**options(batch=len(rows)), "cond_or_uncond": CHUNKS, **info})


def ad_params(frames):
    return {"ad_params": {"sub_idxs": list(frames), "full_length": FRAMES, "context_length": len(frames)}}


@pytest.mark.parametrize("frames", [range(4, 8), [14, 15, 0, 1, 2]])  # AnimateDiff's windows may wrap around
def test_animatediff_window_rows_equal_the_full_batch_rows(framed, frames):
    qkv_full, full = full_batch(framed)
    out = sub_call(framed, qkv_full, frames, **ad_params(frames))
    assert torch.allclose(out, full[rows_of(frames)], atol=1e-6, rtol=0)


def test_comfyui_context_window_rows_equal_the_full_batch_rows(framed):
    qkv_full, full = full_batch(framed)
    out = sub_call(framed, qkv_full, range(4, 8), context_window=Window([4, 5, 6, 7]))
    assert torch.allclose(out, full[rows_of(range(4, 8))], atol=1e-6, rtol=0)
    # newer ComfyUI runs the frame before the window first (causal_window_fix) and strips it afterwards
    anchored = sub_call(framed, qkv_full, range(4, 8), context_window=Window([5, 6, 7], causal_anchor_index=4))
    assert torch.allclose(anchored, full[rows_of(range(4, 8))], atol=1e-6, rtol=0)


def test_windows_one_after_another_each_get_their_frames(framed):
    qkv_full, full = full_batch(framed)
    for frames in (range(4, 8), range(12, 16), range(4, 8)):  # the per-layer cache holds the latest window
        out = sub_call(framed, qkv_full, frames, **ad_params(frames))
        assert torch.allclose(out, full[rows_of(frames)], atol=1e-6, rtol=0), list(frames)


def test_without_window_information_latents_count_from_frame_0(framed):
    qkv_full, full = full_batch(framed)
    q, k, v = (t[rows_of(range(4, 8))] for t in qkv_full)
    opts = {**options(batch=8), "cond_or_uncond": CHUNKS}
    expected = framed(q, k, v, opts)
    # a full batch of 4 frames made of frames 4..7's queries: positions 0..3 take references 0..3 and weights 0..3
    for info in ({"ad_params": {"sub_idxs": None, "full_length": 4, "context_length": 4}},
                 {"context_window": Window([4, 5, 6, 7], dim=2)}):  # a window over another dimension (video models)
        assert torch.equal(framed(q, k, v, {**opts, **info}), expected)
    assert not torch.allclose(expected, full[rows_of(range(4, 8))], atol=1e-4)


def test_a_window_that_does_not_match_the_batch_is_an_error(framed, weights):
    q, k, v = qkv(batch=8)
    with pytest.raises(InvalidInputError, match="lists 3 frames but the model got 4 latents"):
        framed(q, k, v, {**options(batch=8), "cond_or_uncond": CHUNKS, **ad_params([4, 5, 6])})
    # a prompt that is the same on every frame does not care
    plain = IPAdapterPatch("SD1.5", [prompt(weights)], sdpa)
    plain(q, k, v, {**options(batch=8), "cond_or_uncond": CHUNKS, **ad_params([4, 5, 6])})


def test_frame_indices():
    assert frame_indices({}, 8, (1, 0)) is None
    assert frame_indices(ad_params([3, 4]), 4, (1, 0)) == (3, 4)
    assert frame_indices({"context_window": Window([7, 8], causal_anchor_index=6)}, 3, (0,)) == (6, 7, 8)
    assert frame_indices({"context_window": Window([7, 8], causal_anchor_index=-1)}, 2, (0,)) == (7, 8)
