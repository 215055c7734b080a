"""Apply's attn_mask and Apply (advanced)'s encode_batch_size, in-process on the tiny SD1.5 world."""
import pytest
import torch

from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from ipadapter_kit.nodes import apply, clip_encode, model_cache
from ipadapter_kit.nodes.presets import load_clip_vision
from test_invariants import sample

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
SD15 = "ip-adapter_sd15.safetensors"


def images(count, seed=3):
    return torch.rand(count, 80, 64, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("output", ["image_embeds", "penultimate_hidden_states"])
def test_encoding_in_chunks_equals_one_chunk(world_paths, output, one_thread):
    """Equal up to float rounding: a matmul over fewer rows may sum in another order (measured: ~1e-7)."""
    clip_vision = load_clip_vision(CLIP_H)
    batch = images(5)
    whole = clip_encode.encode(clip_vision, batch, output, batch_size=0)
    assert whole.shape[0] == 5
    assert torch.equal(clip_encode.encode(clip_vision, batch, output, batch_size=64), whole)
    for size in (1, 2, 5):
        chunked = clip_encode.encode(clip_vision, batch, output, batch_size=size)
        print(f"{output} in chunks of {size}: max difference {(chunked - whole).abs().max().item():.2e}")
        assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-6), size
    other = clip_encode.encode(clip_vision, images(5, seed=4), output, batch_size=2)
    assert not torch.allclose(other, whole, rtol=1e-3, atol=1e-3)  # the tolerance tells images apart


def test_encode_batch_size_sets_the_chunks(sd15, monkeypatch):
    chunks = []
    real = clip_encode._output

    def spy(clip_vision, batch, output):
        chunks.append(batch.shape[0])
        return real(clip_vision, batch, output)

    monkeypatch.setattr(clip_encode, "_output", spy)
    adapter, clip_vision = model_cache.load_adapter(SD15), load_clip_vision(CLIP_H)
    for size, expected in ((2, [2, 2, 1]), (0, [5])):
        chunks.clear()
        apply.ApplyAdvanced.execute(sd15[0], adapter, 1.0, "linear", 0.0, 1.0, 1.0, "average", "V only",
                                    image=images(5), clip_vision=clip_vision, encode_batch_size=size)
        assert chunks == expected, (size, chunks)
    with pytest.raises(InvalidInputError, match="encode_batch_size: got -1"):
        clip_encode.encode(clip_vision, images(2), "image_embeds", batch_size=-1)


def test_simple_apply_takes_an_attention_mask(sd15, one_thread):
    model, pos, neg = sd15
    adapter, clip_vision = model_cache.load_adapter(SD15), load_clip_vision(CLIP_H)
    reference = images(1)
    half = torch.zeros(1, 32, 32)
    half[..., :16] = 1.0

    def simple(mask=None):
        patched = apply.Apply.execute(model, adapter, reference, 1.0, "linear", 0.0, 1.0, clip_vision=clip_vision,
                                      attn_mask=mask).result[0]
        return sample(patched, pos, neg)

    advanced = apply.ApplyAdvanced.execute(model, adapter, 1.0, "linear", 0.0, 1.0, 1.0, "concat", "V only",
                                           image=reference, clip_vision=clip_vision, attn_mask=half).result[0]
    masked = simple(half)
    assert torch.equal(masked, sample(advanced, pos, neg))
    assert not torch.equal(masked, simple())
    assert torch.equal(simple(torch.zeros(1, 32, 32)), sample(model, pos, neg))
