"""PuLID groundwork (ipadapter_core/pulid.py): the SDXL file's detection, its ID encoder against an independent
functional formula, and the style / fidelity projections against the formulas written out element by element."""
import math

import pytest
import torch
import torch.nn.functional as F

from ipadapter_kit.ipadapter_core import adapter as core_adapter
from ipadapter_kit.ipadapter_core import formats, pulid
from ipadapter_kit.ipadapter_core.errors import InvalidInputError, UnknownFormatError

SDXL_FILE = "ip-adapter_pulid_sdxl_fp16.safetensors"


@pytest.fixture(scope="module")
def sdxl_file(world):
    return world / "models" / "pulid" / SDXL_FILE


def _mlp(state, prefix, x):
    """Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear, straight from the tensors."""
    for i, (lin, norm) in enumerate(((0, 1), (3, 4))):
        x = F.linear(x, state[f"{prefix}.{lin}.weight"], state[f"{prefix}.{lin}.bias"])
        x = F.layer_norm(x, x.shape[-1:], state[f"{prefix}.{norm}.weight"], state[f"{prefix}.{norm}.bias"])
        x = F.leaky_relu(x, 0.01)
    return F.linear(x, state[f"{prefix}.6.weight"], state[f"{prefix}.6.bias"])


def reference_encoder(state, id_cond, hidden, context):
    """PuLID's IDEncoder written from its description: 5 body tokens, then per EVA layer CLS + mean(patches)."""
    body = _mlp(state, "body", id_cond).reshape(id_cond.shape[0], -1, context)
    extra = [_mlp(state, f"mapping_{i}", h[:, :1]) + _mlp(state, f"mapping_patch_{i}", h[:, 1:]).mean(1, keepdim=True)
             for i, h in enumerate(hidden)]
    return torch.cat([body, *extra], dim=1)


def test_pulid_sdxl_file_is_detected_and_loads_strictly(sdxl_file):
    weights = core_adapter.load(str(sdxl_file))
    spec = weights.spec
    assert (spec.kind, spec.arch, spec.num_layers, spec.tokens, spec.id_dim > 512) == ("pulid", "SDXL", 70, 10, True)
    assert spec.encoder_name().startswith("EVA02-CLIP-L-14-336")
    assert isinstance(weights.image_proj, pulid.IDEncoder)


def test_id_encoder_equals_the_functional_formula(sdxl_file):
    weights = core_adapter.load(str(sdxl_file))
    spec = weights.spec
    state = {k: v.float() for k, v in weights.image_proj.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    id_cond = torch.randn(2, spec.id_dim, generator=gen)
    hidden = [torch.randn(2, 17, spec.clip_dim, generator=gen) for _ in range(spec.resampler_depth)]
    with torch.no_grad():
        ours = weights.image_proj(id_cond, hidden)
    assert ours.shape == (2, spec.tokens, spec.cross_dim)
    torch.testing.assert_close(ours, reference_encoder(state, id_cond, hidden, spec.cross_dim), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="4 EVA hidden states"):
        weights.image_proj(id_cond, hidden[:4])


def test_a_damaged_id_encoder_is_refused(sdxl_file):
    from safetensors.torch import load_file

    flat = load_file(str(sdxl_file))
    proj = {k[len("image_proj."):]: v for k, v in flat.items() if k.startswith("image_proj.")}
    fields = formats.projection_fields(proj, "pulid")
    assert fields["kind"] == "pulid" and fields["tokens"] == 10
    del proj["mapping_patch_4.0.weight"], proj["mapping_patch_4.0.bias"]
    for key in [k for k in proj if k.startswith("mapping_patch_4.")]:
        del proj[key]
    with pytest.raises(UnknownFormatError, match="one mapping_patch per mapping"):
        formats.projection_fields(proj, "pulid")


def _explicit(o, i, projection, mass=None):
    """The PuLID term element by element in float64 (o, i: (B, N, C); mass (B, N, 1))."""
    batch, tokens, channels = o.shape
    out = torch.empty(batch, tokens, channels, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            dot = sum(float(o[b, n, c]) * float(i[b, n, c]) for n in range(tokens))
            norm = sum(float(o[b, n, c]) ** 2 for n in range(tokens))
            for n in range(tokens):
                proj = dot / norm * float(o[b, n, c])
                value = float(i[b, n, c])
                if projection == "ortho":
                    value -= proj
                elif projection == "ortho_v2":
                    value += (float(mass[b, n, 0]) - 1.0) * proj
                out[b, n, c] = value
    return out


@pytest.mark.parametrize("projection", pulid.PROJECTIONS)
def test_projections_equal_the_formulas(projection):
    gen = torch.Generator().manual_seed(7)
    o, i = torch.randn(2, 6, 5, generator=gen), torch.randn(2, 6, 5, generator=gen)
    mass = torch.rand(2, 6, 1, generator=gen)
    ours = pulid.joined_term(o, i, projection, mass)
    torch.testing.assert_close(ours.double(), _explicit(o, i, projection, mass), atol=1e-5, rtol=1e-5)


def test_style_term_is_orthogonal_to_the_text_output_per_channel():
    gen = torch.Generator().manual_seed(8)
    o, i = torch.randn(3, 40, 16, generator=gen), torch.randn(3, 40, 16, generator=gen)
    term = pulid.joined_term(o, i, "ortho")
    assert (o * term).sum(dim=1).abs().max() < 1e-4 and term.abs().max() > 0.1


def test_identity_mass_is_the_softmax_share_of_the_first_five_keys():
    gen = torch.Generator().manual_seed(9)
    q, k = torch.randn(2, 3, 4, 8, generator=gen), torch.randn(2, 3, 13, 8, generator=gen)
    ours = pulid.identity_mass(q, k)
    expected = torch.empty(2, 4, 1)
    for b in range(2):
        for n in range(4):
            shares = []
            for h in range(3):
                logits = [float(q[b, h, n] @ k[b, h, t]) for t in range(13)]  # unscaled, as PuLID does
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                shares.append(sum(weights[:5]) / sum(weights))
            expected[b, n, 0] = sum(shares) / 3
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    zeros = torch.zeros(2, 3, 8, 8)  # zero keys: uniform attention, 5 of 8 on the identity tokens
    torch.testing.assert_close(pulid.identity_mass(q, zeros), torch.full((2, 4, 1), 5 / 8))


def test_the_other_apply_nodes_point_to_apply_pulid(sdxl_file, world_paths):
    from ipadapter_kit.nodes import apply, faceid
    from ipadapter_kit.nodes.model_cache import LoadedAdapter

    loaded = LoadedAdapter(name=SDXL_FILE, weights=core_adapter.load(str(sdxl_file)), patcher=None)
    with pytest.raises(InvalidInputError, match="PuLID's adapter.*Use IPAdapter Kit: Apply PuLID"):
        apply.encode_pair(loaded, torch.rand(1, 64, 64, 3), None)
    with pytest.raises(InvalidInputError, match="PuLID's adapter, not FaceID"):
        faceid.check_faceid(loaded)


def test_embeds_for_pulid_are_refused_with_a_reason(sdxl_file, world_paths):
    from ipadapter_kit.nodes import patching
    from ipadapter_kit.nodes.model_cache import LoadedAdapter
    from tinymodels import comfy_models

    loaded = LoadedAdapter(name=SDXL_FILE, weights=core_adapter.load(str(sdxl_file)), patcher=None)
    embeds = torch.zeros(1, 17, loaded.spec.clip_dim)
    with pytest.raises(InvalidInputError, match="need EVA-CLIP features.*Apply PuLID"):
        patching.apply_embeds(comfy_models.tiny_unet("sdxl"), loaded, embeds, embeds)


def _heads(x, heads):
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _sdpa(q, k, v, heads, **_):
    out = F.scaled_dot_product_attention(_heads(q, heads), _heads(k, heads), _heads(v, heads))
    return out.transpose(1, 2).flatten(2)


@pytest.mark.parametrize("projection,masked", [(p, False) for p in pulid.PROJECTIONS] + [("ortho", True)])
def test_attn2_patch_joins_the_identity_term_as_pulid_does(sdxl_file, projection, masked):
    """The installed attn2 patch on layer 0 == o + the PuLID term written out, rows [uncond, cond]; masks after."""
    from ipadapter_kit.ipadapter_core.attention import ImagePrompt, IPAdapterPatch
    from ipadapter_kit.ipadapter_core.blocks import patch_keys

    weights = core_adapter.load(str(sdxl_file))
    spec, heads, tokens, weight = weights.spec, 2, 12, 0.7
    width = spec.layer_widths[0]
    gen = torch.Generator().manual_seed(4)
    zeros = torch.zeros(1, 8, spec.cross_dim)  # fidelity's attention sinks
    cond = torch.cat((torch.randn(1, spec.tokens, spec.cross_dim, generator=gen), zeros), dim=1)
    uncond = torch.cat((torch.randn(1, spec.tokens, spec.cross_dim, generator=gen), zeros), dim=1)
    layers = (weight,) + (0.0,) * (spec.num_layers - 1)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 3)[None]  # (1, 3, 4): the latent's 3 x 4 token grid, left half
    prompt = ImagePrompt(weights=weights, cond=cond, uncond=uncond, layer_weights=layers, projection=projection,
                         masks=mask if masked else None)
    patch = IPAdapterPatch("SDXL", [prompt], _sdpa)
    q, k, v = (torch.randn(2, tokens, width, generator=gen) for _ in range(3))
    block, number, index = patch_keys("SDXL")[0]
    options = {"block": (block, number), "block_index": index, "n_heads": heads, "cond_or_uncond": [1, 0],
               "original_shape": (2, 4, 3, 4), "sigmas": torch.tensor([1.0])}
    with torch.no_grad():
        out = patch(q, k, v, options)
        o = _sdpa(q, k, v, heads)
        kv = weights.kv_projection(0)
        ids = torch.cat((uncond, cond))  # row 0 is the uncond pass
        k_id, v_id = ids @ kv.k_weight.t(), ids @ kv.v_weight.t()
        i = weight * _sdpa(q, k_id, v_id, heads)
        mass = pulid.identity_mass(_heads(q, heads), _heads(k_id, heads))
    term = _explicit(o, i, projection, mass)  # the mask applies to the joined term, as ComfyUI_PuLID does
    expected = o.double() + (term * mask.reshape(1, -1, 1).double() if masked else term)
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=1e-4)
    assert (out - o).abs().max() > 1e-3


def test_identity_tokens_average_the_photos_and_append_the_sinks(sdxl_file):
    weights = core_adapter.load(str(sdxl_file))
    spec = weights.spec
    gen = torch.Generator().manual_seed(12)
    arcface = torch.randn(2, 512, generator=gen)
    feature = F.normalize(torch.randn(2, spec.id_dim - 512, generator=gen), dim=-1)
    hidden = [torch.randn(2, 17, spec.clip_dim, generator=gen) for _ in range(spec.resampler_depth)]
    state = {k: v.float() for k, v in weights.image_proj.state_dict().items()}
    with torch.no_grad():
        cond, uncond = pulid.identity_tokens(weights.image_proj, arcface, feature, hidden, zero_tokens=8)
    ids = torch.cat((arcface, feature), dim=-1)
    per_photo = reference_encoder(state, ids, hidden, spec.cross_dim)
    assert cond.shape == uncond.shape == (1, spec.tokens + 8, spec.cross_dim)
    torch.testing.assert_close(cond[:, :spec.tokens], per_photo.mean(0, keepdim=True), atol=1e-5, rtol=1e-5)
    zero_id = reference_encoder(state, torch.zeros_like(ids[:1]), [torch.zeros_like(h[:1]) for h in hidden],
                                spec.cross_dim)
    torch.testing.assert_close(uncond[:, :spec.tokens], zero_id, atol=1e-5, rtol=1e-5)
    assert uncond[:, :spec.tokens].abs().max() > 0  # biases and norms: not zero tokens
    assert cond[:, spec.tokens:].eq(0).all() and uncond[:, spec.tokens:].eq(0).all()
    noisy, noisy_uncond = pulid.identity_tokens(weights.image_proj, arcface, feature, hidden, noise=0.3,
                                                zero_tokens=4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(noisy[:, :spec.tokens], cond[:, :spec.tokens])
    assert 0 < noisy[:, spec.tokens:].max() <= 0.3 and not torch.equal(noisy_uncond[:, :spec.tokens],
                                                                       uncond[:, :spec.tokens])
