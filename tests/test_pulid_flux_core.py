"""PuLID-Flux core (ipadapter_core/pulid_flux.py): the world's pulid_flux_v0.9.1.safetensors is detected from its
shapes, loads strictly, and its IDFormer and cross-attentions compute what the reference modules
(tests/pulid_reference.py, from ToTheBeginning/PuLID) compute on the same weights; damaged files are refused with
messages that name the damage."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from ipadapter_kit.ipadapter_core import adapter, formats, loading, pulid_flux
from ipadapter_kit.ipadapter_core.errors import IPAdapterError, UnknownFormatError
from pulid_reference import IDFormer, PerceiverAttentionCA, PulidFlux
from tinymodels import pulid_files, world as world_builder

F = pulid_files.TINY_FLUX
EVA_TOKENS = 17  # CLS + 16 patches (real 577)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flux_file(world):
    return world / "models" / "pulid" / world_builder.PULID_FLUX


@pytest.fixture(scope="module")
def flat(flux_file):
    return load_file(str(flux_file))


@pytest.fixture(scope="module")
def ours(flux_file):
    return adapter.load(str(flux_file))


@pytest.fixture(scope="module")
def reference(flat):
    """The reference modules at the tiny sizes, loaded strictly with the file's weights in float32."""
    encoder = IDFormer(dim=F["dim"], depth=F["depth"], dim_head=F["head_dim"], heads=F["heads"],
                       num_queries=F["queries"], output_dim=F["out"], ff_mult=F["ff_mult"], id_cond=F["id_cond"],
                       id_hidden=F["id_hidden"], eva_width=F["eva_width"], mapping_hidden=F["mapping_hidden"])
    model = PulidFlux(encoder, lambda: PerceiverAttentionCA(dim=F["hidden"], dim_head=F["ca_head_dim"],
                                                            heads=F["ca_heads"], kv_dim=F["out"]), F["num_ca"])
    model.load_state_dict({k: v.float() for k, v in flat.items()}, strict=True)
    return model.eval().requires_grad_(False)


def _face(batch, seed, photos=None):
    """id_cond (batch, A) or (batch, photos, A) and 5 EVA hidden states (batch, photos x T, V)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, F["id_cond"]) if photos is None else (batch, photos, F["id_cond"])
    id_cond = torch.randn(shape, generator=gen)
    tokens = EVA_TOKENS * (photos or 1)
    return id_cond, [torch.randn(batch, tokens, F["eva_width"], generator=gen) for _ in range(5)]


def _close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- detection and loading


def test_world_file_is_detected_from_its_shapes(ours):
    spec = ours.spec
    assert (spec.kind, spec.arch, spec.layout, spec.injection) == ("pulid_flux", "Flux", "pulid_flux", "pulid_ca")
    assert (spec.cross_dim, spec.tokens, spec.id_dim, spec.clip_dim) == (F["out"], F["queries"], F["id_cond"],
                                                                         F["eva_width"])
    assert spec.layer_widths == (F["hidden"],) * 20 and spec.num_layers == 20
    assert (spec.resampler_dim, spec.resampler_depth, spec.resampler_heads, spec.ff_mult) == \
        (F["dim"], F["depth"], F["heads"], F["ff_mult"])
    assert spec.head_dim == pulid_flux.CA_HEAD_DIM == F["ca_head_dim"]
    assert spec.hidden_widths == (F["id_hidden"], F["id_hidden"], F["mapping_hidden"], F["mapping_hidden"],
                                  F["ca_heads"] * F["ca_head_dim"])
    assert spec.encoder_name().startswith("EVA02-CLIP-L-14-336") and spec.clip_output == "eva_features"
    assert "Flux pulid_flux adapter, 32 image tokens, 20 layers" in spec.describe()


def test_world_file_loads_strictly_in_float32(ours, flat):
    assert isinstance(ours, adapter.PuLIDFluxWeights)
    assert isinstance(ours.pulid_encoder, pulid_flux.IDFormer)
    assert len(ours.pulid_ca) == 20 and all(isinstance(ca, pulid_flux.PerceiverCA) for ca in ours.pulid_ca)
    state = ours.state_dict()
    assert set(state) == set(flat)  # the attribute names are the file's keys
    assert {v.dtype for v in state.values()} == {torch.float32} and not any(p.requires_grad for p in ours.parameters())
    for key, value in flat.items():
        assert torch.equal(state[key], value.float()), key
    assert (ours.pulid_encoder.per_scale, ours.pulid_ca[0].heads) == (F["depth"] // 5, F["ca_heads"])


def test_real_sizes_build_the_released_keys_and_shapes():
    """The release's shapes (on the meta device) detect to 16-head modules whose state dict is the release's."""
    real = pulid_files.flux_shapes(pulid_files.REAL_FLUX)
    with torch.device("meta"):
        nested = loading.split_groups({k: torch.empty(s) for k, s in real.items()}, "real")
        spec = formats.detect(nested, "real")
        model = adapter.PuLIDFluxWeights(spec)
    assert (spec.resampler_heads, spec.hidden_widths[-1] // spec.head_dim, spec.cross_dim, spec.tokens) == \
        (16, 16, 2048, 32)
    assert (spec.id_dim, spec.clip_dim, spec.resampler_dim, spec.layer_widths[0]) == (1280, 1024, 1024, 3072)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == real
    assert pulid_flux.ca_count(19, 38) == 20


# ------------------------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("batch,photos", [(1, None), (2, None), (1, 2)],
                         ids=["one-photo", "batch-of-two", "two-photos"])
def test_idformer_equals_the_reference(ours, reference, batch, photos):
    id_cond, hidden = _face(batch, 10 + batch, photos)
    with torch.no_grad():
        got = ours.pulid_encoder(id_cond, hidden)
        expected = reference.pulid_encoder(id_cond, hidden)
    assert got.shape == (batch, F["queries"], F["out"]) and torch.isfinite(got).all()
    _close(got, expected)


def test_idformer_of_zeros_equals_the_reference(ours, reference):
    """The negative identity: the encoder of zeros (bias- and LayerNorm-driven tokens, not zeros)."""
    id_cond, hidden = torch.zeros(1, F["id_cond"]), [torch.zeros(1, EVA_TOKENS, F["eva_width"])] * 5
    with torch.no_grad():
        got = ours.pulid_encoder(id_cond, hidden)
    _close(got, reference.pulid_encoder(id_cond, hidden))
    assert got.abs().amax() > 0


def test_batch_rows_are_independent_photos(ours):
    id_cond, hidden = _face(2, 20)
    with torch.no_grad():
        both = ours.pulid_encoder(id_cond, hidden)
        second = ours.pulid_encoder(id_cond[1:], [h[1:] for h in hidden])
    _close(both[1:], second)


@pytest.mark.parametrize("batch", [1, 2])
def test_cross_attentions_equal_the_reference(ours, reference, batch):
    id_cond, hidden = _face(batch, 30 + batch)
    gen = torch.Generator().manual_seed(40 + batch)
    image = torch.randn(batch, 24, F["hidden"], generator=gen)
    with torch.no_grad():
        ids = ours.pulid_encoder(id_cond, hidden)
        outs = [ca(ids, image) for ca in ours.pulid_ca]
        for got, ca in zip(outs, reference.pulid_ca):
            _close(got, ca(ids, image))
    assert all(o.shape == image.shape for o in outs) and not torch.allclose(outs[0], outs[19])


def test_attention_scales_q_and_k_by_a_fourth_root_and_softmaxes_in_float32():
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, n, 2 * 8, generator=gen) for n in (3, 7, 7))
    heads = [torch.softmax(q[:, :, h * 8:(h + 1) * 8] @ k[:, :, h * 8:(h + 1) * 8].transpose(1, 2) / 8 ** 0.5, -1)
             @ v[:, :, h * 8:(h + 1) * 8] for h in range(2)]
    _close(pulid_flux.attend(q, k, v, 2), torch.cat(heads, dim=-1))
    half = pulid_flux.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), 2)
    assert half.dtype == torch.bfloat16 and (half.float() - torch.cat(heads, -1)).abs().max() < 0.05


def test_wrong_number_of_hidden_states_is_a_value_error(ours):
    id_cond, hidden = _face(1, 50)
    with pytest.raises(ValueError, match="4 EVA hidden states"):
        ours.pulid_encoder(id_cond, hidden[:4])


# ------------------------------------------------------------------------------------------- damaged files


def _damaged(flat, tmp_path, drop=(), change=None):
    """The file without the keys starting with any of drop, with change(state) applied, saved as safetensors."""
    state = {k: v for k, v in flat.items() if not k.startswith(tuple(drop))}
    if change:
        change(state)
    path = tmp_path / "pulid_flux_damaged.safetensors"
    save_file(state, str(path))
    return str(path)


def _renumbered(state, count):
    """Keep count CAs numbered 0..count-1 (copies of the file's, cycled)."""
    ca = {k: v for k, v in state.items() if k.startswith("pulid_ca.")}
    for key in ca:
        del state[key]
    for n in range(count):
        for key, value in ca.items():
            if key.startswith(f"pulid_ca.{n % 20}."):
                state[f"pulid_ca.{n}." + key.split(".", 2)[2]] = value.clone()


@pytest.mark.parametrize("drop,change,words", [
    (("pulid_ca.7.",), None, ["pulid_flux_damaged.safetensors", "missing pulid_ca.7", "truncated"]),
    ((), lambda s: _renumbered(s, 19), ["19 PuLID cross-attentions", "expected 20", "19 double + 38 single",
                                        "every 2nd double and every 4th single block"]),
    ((), lambda s: _renumbered(s, 21), ["21 PuLID cross-attentions", "expected 20"]),
    (("pulid_encoder.latents",), None, ["pulid_encoder.latents is missing"]),
    (("pulid_encoder.id_embedding_mapping.6.weight",), None,
     ["pulid_encoder.id_embedding_mapping.6.weight is missing"]),
    (("pulid_encoder.layers.3.0.norm1.bias",), None, ["do not fit", "pulid_encoder.layers.3.0.norm1.bias"]),
    (("pulid_ca.4.to_out.weight",), None, ["do not fit", "pulid_ca.4.to_out.weight"]),
    (("pulid_encoder.layers.9.", "pulid_encoder.layers.8.", "pulid_encoder.layers.7."), None,
     ["7 layers", "multiple of 5"]),
    (("pulid_encoder.mapping_4.",), None, ["mapping_0 .. mapping_4"]),
    (("pulid_ca.",), None, ["not an IP-Adapter file", "no 'pulid_ca' tensors", "pulid_ca.*"]),
    (("pulid_encoder.",), None, ["no 'pulid_encoder' tensors"]),
    ((), lambda s: s.update({"pulid_ca.0.to_kv.weight": torch.zeros(512, 44, dtype=torch.bfloat16)}),
     ["reads width 44", "do not belong together"]),
], ids=["ca-7-missing", "19-cas", "21-cas", "no-latents", "no-id-mapping-out", "one-encoder-key", "one-ca-key",
        "depth-7", "no-mapping-4", "no-ca-at-all", "no-encoder-at-all", "ca-of-other-width"])
def test_damaged_files_are_refused_naming_the_damage(flat, tmp_path, drop, change, words):
    with pytest.raises(UnknownFormatError) as caught:
        adapter.load(_damaged(flat, tmp_path, drop, change))
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))


FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SHAPES = pulid_files.flux_shapes()
KEYS = sorted(SHAPES)


@FUZZ
@given(ops=st.lists(st.tuples(st.sampled_from(["drop", "reshape", "add"]), st.sampled_from(KEYS),
                              st.lists(st.integers(0, 70), max_size=4)), max_size=5))
def test_mutated_layouts_raise_only_typed_errors(ops):
    state = {k: torch.zeros(s) for k, s in SHAPES.items()}
    for op, key, shape in ops:
        if op == "drop":
            state.pop(key, None)
        elif op == "reshape":
            state[key] = torch.zeros(shape)
        else:
            state[key.replace("pulid_ca.1.", "pulid_ca.20.").replace("layers.1.", "layers.10.") + "x"] = \
                torch.zeros(shape)
    try:
        adapter.from_state_dict(loading.split_groups(state, "fuzz"), "fuzz")
    except IPAdapterError:
        pass
