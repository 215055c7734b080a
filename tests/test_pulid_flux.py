"""PuLID-Flux on the tiny Flux.1 through the pack's nodes: the identity's cross-attentions run after every 2nd double
and every 4th single block on the generated image's tokens only, as the release does; invariants, masks, stacking
with the Flux IP-Adapters, typed errors."""
import pytest
import torch

import nodes as comfy_nodes
from ipadapter_kit.ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ipadapter_kit.ipadapter_core.families import flux as core_flux
from ipadapter_kit.nodes import apply, clip_vision, faces, model_cache, pulid
from tinymodels.world import EVA_CLIP, FACE_PARSER, PULID_FLUX, PULID_SDXL, face_image

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(world_paths):
    return (model_cache.load_adapter(PULID_FLUX, "pulid"), pulid.load_eva(EVA_CLIP, FACE_PARSER),
            faces.load_analyzer("antelopev2", "CPU", 640))


def sample(model, positive, negative, cfg=1.0, latent=None):
    latent = {"samples": torch.zeros(1, 16, 8, 12) if latent is None else latent}
    return comfy_nodes.common_ksampler(model, 3, 2, cfg, "euler", "simple", positive, negative, latent)[0]["samples"]


def applied(model, parts, image, weight=1.0, **kw):
    adapter, eva, analyzer = parts
    return pulid.ApplyPuLIDFlux.execute(model, adapter, eva, analyzer, image, weight, kw.pop("start_at", 0.0),
                                        kw.pop("end_at", 1.0), **kw).result[0]


def test_the_cross_attentions_run_after_the_release_s_blocks_on_image_tokens(flux, parts, world_paths, monkeypatch):
    model, pos, neg = flux
    patched = applied(model, parts, face_image(world_paths))
    replaces = patched.model_options["transformer_options"]["patches_replace"]["dit"]
    expected = [("double_block", i) for i in range(0, 19, 2)] + [("single_block", i) for i in range(0, 38, 4)]
    assert sorted(replaces) == sorted(expected) and len(expected) == 20
    adapter = parts[0]
    seen = []
    for k, ca in enumerate(adapter.weights.pulid_ca):
        monkeypatch.setattr(ca, "forward", (lambda real, k: lambda ids, image: seen.append((k, image.shape[1]))
                                            or real(ids, image))(ca.forward, k))
    sample(patched, pos, neg)
    assert [k for k, _ in seen] == list(range(20)) * 2  # two steps, every CA once per step, in order
    assert {tokens for _, tokens in seen} == {24}  # the 4 x 6 image tokens of the 8 x 12 latent, never the text


def test_pulid_flux_changes_the_image_weight_zero_is_plain_and_clone_safe(flux, parts, world_paths):
    model, pos, neg = flux
    image = face_image(world_paths)
    plain = sample(model, pos, neg)
    ours = sample(applied(model, parts, image), pos, neg)
    assert torch.isfinite(ours).all() and not torch.allclose(ours, plain, atol=1e-4)
    assert torch.equal(sample(applied(model, parts, image, weight=0.0), pos, neg), plain)
    assert torch.equal(sample(applied(model, parts, image, start_at=0.7, end_at=0.2), pos, neg), plain)
    assert torch.equal(sample(model, pos, neg), plain)


def test_masks_start_and_stacking_with_a_flux_ip_adapter(flux, parts, world_paths):
    model, pos, neg = flux
    image = face_image(world_paths)
    full = sample(applied(model, parts, image), pos, neg)
    assert torch.equal(sample(applied(model, parts, image, attn_mask=torch.ones(32, 48)), pos, neg), full)
    left = torch.zeros(32, 48)
    left[:, :24] = 1.0
    assert not torch.equal(sample(applied(model, parts, image, attn_mask=left), pos, neg), full)
    late = sample(applied(model, parts, image, start_at=0.5), pos, neg)
    assert not torch.equal(late, full)
    xlabs = model_cache.load_adapter("flux-ip-adapter.safetensors")
    encoder = clip_vision.load(model_cache.resolve("clip_vision", "clip-vit-large-patch14.safetensors"))
    cond, uncond = apply.encode_pair(xlabs, torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(1)),
                                     encoder)
    from ipadapter_kit.nodes import patching

    for first_pulid in (True, False):
        ipa = (lambda m, w: patching.apply_embeds(m, xlabs, cond, uncond, weight=w))
        zero = ipa(applied(model, parts, image), 0.0) if first_pulid else applied(ipa(model, 0.0), parts, image)
        assert torch.equal(sample(zero, pos, neg), full)
        both = ipa(applied(model, parts, image), 0.8) if first_pulid else applied(ipa(model, 0.8), parts, image)
        assert not torch.equal(sample(both, pos, neg), full)
        assert torch.allclose(sample(both, pos, neg), sample(ipa(applied(model, parts, image), 0.8), pos, neg),
                              atol=1e-5)  # one patch: the order of the two nodes does not matter


def test_the_negative_pass_gets_the_negative_identity(flux, parts, world_paths):
    model, pos, neg = flux
    patched = applied(model, parts, face_image(world_paths))
    patch = next(p for p in patched.model_options["transformer_options"]["patches_replace"]["dit"].values())
    identity = patch.identities[0]
    rows = patch._tokens_for(identity, (1, 0), 2, torch.device("cpu"), torch.float32)
    assert torch.equal(rows[0], identity.uncond[0]) and torch.equal(rows[1], identity.cond[0])
    assert not torch.allclose(identity.cond, identity.uncond)
    assert torch.isfinite(sample(patched, pos, neg, cfg=2.0)).all()


def test_typed_errors(flux, sd15, parts, world_paths):
    model = flux[0]
    image = face_image(world_paths)
    with pytest.raises(IncompatibleModelError, match="PuLID's Flux release: it works on Flux models only, and this "
                                                     "model is SD1.5"):
        applied(sd15[0], parts, image)
    sdxl_pulid = model_cache.load_adapter(PULID_SDXL, "pulid")
    adapter, eva, analyzer = parts
    with pytest.raises(InvalidInputError, match="PuLID's SDXL release: use IPAdapter Kit: Apply PuLID"):
        pulid.ApplyPuLIDFlux.execute(model, sdxl_pulid, eva, analyzer, image, 1.0, 0.0, 1.0)
    with pytest.raises(InvalidInputError, match=r"PuLID's Flux release: use IPAdapter Kit: Apply PuLID \(Flux\)"):
        pulid.ApplyPuLID.execute(model, adapter, eva, analyzer, image, "fidelity", 1.0, 0.0, 1.0)
    assert core_flux.pulid_ca_keys()[10] == ("single_block", 0)


def _refusing(monkeypatch, method_owner, name):
    """Wrap method_owner.name so that, while it runs, any host read of a tensor raises."""
    real = getattr(method_owner, name)
    reads = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")
    saved = {r: getattr(torch.Tensor, r) for r in reads}

    def refuse(*a, **k):
        raise AssertionError("host read inside the PuLID hook")

    def wrapped(*args, **kwargs):
        for r in reads:
            setattr(torch.Tensor, r, refuse)
        try:
            return real(*args, **kwargs)
        finally:
            for r, fn in saved.items():
                setattr(torch.Tensor, r, fn)

    monkeypatch.setattr(method_owner, name, wrapped)


def test_the_identity_hook_reads_nothing_on_the_host(flux, parts, world_paths, monkeypatch):
    model, pos, neg = flux
    patched = applied(model, parts, face_image(world_paths), start_at=0.3, attn_mask=torch.ones(32, 48))
    _refusing(monkeypatch, core_flux.FluxBlockPatch, "add_identities")
    assert torch.isfinite(sample(patched, pos, neg, cfg=2.0)).all()


def test_two_identities_read_the_block_output_so_their_order_does_not_matter(flux, parts, world_paths):
    model, pos, neg = flux
    a, b = face_image(world_paths, 0), face_image(world_paths, 1)
    ab = sample(applied(applied(model, parts, a, weight=0.6), parts, b, weight=0.6), pos, neg)
    ba = sample(applied(applied(model, parts, b, weight=0.6), parts, a, weight=0.6), pos, neg)
    torch.testing.assert_close(ab, ba, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ab, sample(applied(model, parts, a, weight=0.6), pos, neg), atol=1e-4)
