"""SD3.5's timestep-conditioned resampler (InstantX layout) against diffusers' IPAdapterTimeImageProjection."""
import pytest
import torch

from ipadapter_kit.ipadapter_core import formats, projections
from ipadapter_kit.ipadapter_core.errors import UnknownFormatError
from tinymodels import sd3_adapter_files
from tinymodels.weights import random_tensors

pytest.importorskip("diffusers")


def released_image_proj(seed=3):
    """The released image_proj tensors, every norm and bias random so that nothing can pass by accident."""
    shapes = sd3_adapter_files.image_proj_shapes()
    tensors = random_tensors(shapes, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for key in tensors:
        if key.endswith(("norm1.weight", "norm2.weight", "1.0.weight", "norm_out.weight")):
            tensors[key] = 1 + 0.2 * torch.randn(tensors[key].shape, generator=gen)
        elif tensors[key].ndim == 1:
            tensors[key] = 0.1 * torch.randn(tensors[key].shape, generator=gen)
    return tensors


def ours(image_proj):
    spec = formats.AdapterSpec(arch="SD3.5", layer_widths=(), **formats.projection_fields(image_proj, "sd35"))
    module = projections.build_projection(spec)
    module.load_state_dict(image_proj, strict=True)
    return spec, module.eval()


def theirs(image_proj):
    """diffusers' IPAdapterTimeImageProjection loaded through diffusers' own SD3 IP-Adapter conversion."""
    import sd3_twin

    return sd3_twin.diffusers_image_proj(image_proj, image_proj["proj_out.weight"].shape[0])


def test_released_layout_is_detected_from_shapes():
    spec, _ = ours(released_image_proj())
    assert (spec.kind, spec.tokens, spec.clip_dim, spec.cross_dim) == ("time_resampler", 64, 44, 128)
    assert (spec.resampler_dim, spec.resampler_depth, spec.resampler_heads, spec.ff_mult, spec.timestep_dim) == \
        (96, 4, 2, 4, 32)


@pytest.mark.parametrize("timestep", [937.5, 120.0])
def test_equals_diffusers_at_each_timestep(timestep):
    image_proj = released_image_proj()
    _, mine = ours(image_proj)
    reference = theirs(image_proj)
    hidden = torch.randn(2, 729, 44, generator=torch.Generator().manual_seed(9))
    t = torch.full((2,), timestep)
    with torch.no_grad():
        tokens, t_emb = mine(hidden, t)
        expected_tokens, expected_emb = reference(hidden, t)
    torch.testing.assert_close(t_emb, expected_emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens, expected_tokens, atol=1e-4, rtol=1e-4)


def test_tokens_follow_the_timestep_and_need_no_host_reads(monkeypatch):
    _, mine = ours(released_image_proj())
    hidden = torch.randn(1, 729, 44, generator=torch.Generator().manual_seed(10))

    def refuse(*a, **k):
        raise AssertionError("host read in the resampler")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    with torch.no_grad():
        early, _ = mine(hidden, torch.tensor([900.0]))
        late, _ = mine(hidden, torch.tensor([100.0]))
    monkeypatch.undo()
    assert (early - late).abs().max() > 1e-3


def test_a_timestep_embedding_that_does_not_fit_is_a_typed_error():
    image_proj = released_image_proj()
    image_proj["time_embedding.linear_1.weight"] = torch.zeros(7, 32)
    with pytest.raises(UnknownFormatError, match="timestep embedding"):
        formats.projection_fields(image_proj, "bad.bin")
