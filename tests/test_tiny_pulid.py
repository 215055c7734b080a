"""The tiny PuLID files: the released flat layouts, loaded strictly into the reference modules (pulid_reference.py).

models/pulid/ip-adapter_pulid_sdxl_fp16.safetensors (float16, 250 tensors): image_proj.* = cubiq's IDEncoder,
ip_adapter.{1,3,...,139}.to_k_ip/to_v_ip.weight. models/pulid/pulid_flux_v0.9.1.safetensors (bfloat16, 312 tensors):
pulid_encoder.* = IDFormer, pulid_ca.{0..19}.* = PerceiverAttentionCA (ToTheBeginning/PuLID encoders_transformer.py).
The real-vs-tiny table is in tests/tinymodels/pulid_files.py. The modules below take the real sizes as defaults (the
reference hard-codes the 1024-wide EVA and hidden widths; here they are arguments) and are built at those sizes on
the meta device to check the real-size key→shape formulas against the counts in /work/shared/notes/pulid.md.
"""
import math

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from pulid_reference import IDEncoder, IDFormer, PerceiverAttentionCA, PulidFlux
from tinymodels import pulid_files, world as world_builder

# The tiny sizes, spelled out (see pulid_files' table).
A = 512 + 24  # id_cond: ArcFace 512 + EVA feature 24 (real 512 + 768)
V = 192  # EVA hidden width (real 1024)
C = 80  # tiny SDXL context (real 2048)
D, DEPTH, HEADS, HEAD_DIM, QUERIES, O, I = 48, 10, 2, 64, 32, 40, 36  # IDFormer (real 1024, 10, 16, 64, 32, 2048, 1024)
H, CA_HEADS, CA_HEAD_DIM = 64, 2, 128  # PerceiverAttentionCA (real 3072, 16, 128)
EVA_TOKENS = 17  # any token count: CLS + patches (real 577)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_id_encoder():
    return IDEncoder(width=A, context_dim=C, eva_width=V, mapping_hidden=V)


def tiny_pulid_flux():
    return PulidFlux(
        IDFormer(dim=D, depth=DEPTH, dim_head=HEAD_DIM, heads=HEADS, num_queries=QUERIES, output_dim=O, id_cond=A,
                 id_hidden=I, eva_width=V, mapping_hidden=V),
        lambda: PerceiverAttentionCA(dim=H, dim_head=CA_HEAD_DIM, heads=CA_HEADS, kv_dim=O))


def shapes_of(module, prefix=""):
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def sdxl_width(n, channels):
    """Query width of SDXL attn2 number n in diffusers' processor order (down 4,5 / 7,8; up 0-2 / 3-5; mid)."""
    return 2 * channels if n <= 7 or 109 <= n <= 119 else 4 * channels


def tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sdxl_file(world):
    return world / "models" / "pulid" / world_builder.PULID_SDXL


@pytest.fixture(scope="module")
def flux_file(world):
    return world / "models" / "pulid" / world_builder.PULID_FLUX


# ------------------------------------------------------------------------------------------- real-size layouts


def test_real_sdxl_layout_matches_the_release():
    real = pulid_files.sdxl_shapes(pulid_files.REAL_SDXL)
    assert len(real) == 250
    assert sum(math.prod(s) for s in real.values()) == 395_673_600
    with torch.device("meta"):
        encoder = IDEncoder()  # the reference defaults: width 1280, context 2048, 5 tokens
    assert {k: v for k, v in real.items() if k.startswith("image_proj.")} == shapes_of(encoder, "image_proj.")
    assert real["image_proj.body.0.weight"] == (1024, 1280)
    assert real["image_proj.body.6.weight"] == (10240, 1024)
    assert real["image_proj.mapping_patch_4.6.weight"] == (2048, 1024)
    ip = {k: v for k, v in real.items() if k.startswith("ip_adapter.")}
    assert len(ip) == 140
    for n in range(1, 140, 2):
        for kv in ("k", "v"):
            assert ip.pop(f"ip_adapter.{n}.to_{kv}_ip.weight") == (sdxl_width(n, 320), 2048)
    assert ip == {}


def test_real_flux_layout_matches_the_release():
    real = pulid_files.flux_shapes(pulid_files.REAL_FLUX)
    assert len(real) == 312
    encoder = {k: v for k, v in real.items() if k.startswith("pulid_encoder.")}
    assert len(encoder) == 172
    assert round(sum(math.prod(s) for s in encoder.values()) / 1e6, 1) == 151.4
    assert round(sum(math.prod(s) for s in real.values()) / 1e6, 1) == 571.0
    with torch.device("meta"):
        model = PulidFlux(IDFormer(), PerceiverAttentionCA)  # the reference defaults
    assert real == shapes_of(model)
    ca = {k: v for k, v in real.items() if k.startswith("pulid_ca.0.")}
    assert len(ca) == 7 and round(sum(math.prod(s) for s in ca.values()) / 1e6, 1) == 21.0
    assert ca["pulid_ca.0.to_q.weight"] == (2048, 3072) and ca["pulid_ca.0.to_kv.weight"] == (4096, 2048)
    assert real["pulid_encoder.proj_out"] == (1024, 2048) and real["pulid_encoder.latents"] == (1, 32, 1024)
    assert real["pulid_encoder.id_embedding_mapping.6.weight"] == (5120, 1024)
    assert {k.split(".")[1] for k in real if k.startswith("pulid_ca.")} == {str(i) for i in range(20)}


def test_tiny_key_sets_are_the_released_ones():
    assert set(pulid_files.sdxl_shapes()) == set(pulid_files.sdxl_shapes(pulid_files.REAL_SDXL))
    assert set(pulid_files.flux_shapes()) == set(pulid_files.flux_shapes(pulid_files.REAL_FLUX))
    s, f = pulid_files.TINY_SDXL, pulid_files.TINY_FLUX
    assert (s["id_cond"], s["eva_width"], s["mapping_hidden"], s["context"]) == (A, V, V, C)
    assert (f["dim"], f["depth"], f["heads"], f["head_dim"], f["queries"], f["out"], f["id_hidden"]) == \
        (D, DEPTH, HEADS, HEAD_DIM, QUERIES, O, I)
    assert (f["hidden"], f["ca_heads"], f["ca_head_dim"], f["num_ca"]) == (H, CA_HEADS, CA_HEAD_DIM, 20)


# ------------------------------------------------------------------------------------------- the tiny SDXL file


def test_sdxl_file_keys_shapes_dtype(sdxl_file):
    state = tensors(sdxl_file)
    assert len(state) == 250
    assert {v.dtype for v in state.values()} == {torch.float16}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes == pulid_files.sdxl_shapes()
    # h1 = min(80 * 5 // 4, 1024) = 100, h2 = min(80 * 5 // 2, 1024) = 200
    assert shapes["image_proj.body.0.weight"] == (100, A)
    assert shapes["image_proj.body.3.weight"] == (200, 100)
    assert shapes["image_proj.body.6.weight"] == (5 * C, 200)
    assert shapes["image_proj.mapping_0.0.weight"] == (V, V)
    assert shapes["image_proj.mapping_patch_2.6.weight"] == (C, V)
    for n in range(1, 140, 2):
        assert shapes[f"ip_adapter.{n}.to_k_ip.weight"] == shapes[f"ip_adapter.{n}.to_v_ip.weight"] == \
            (sdxl_width(n, 32), C)


def test_sdxl_file_loads_strictly_into_the_id_encoder(sdxl_file):
    flat = load_file(str(sdxl_file))
    groups = {"image_proj": {}, "ip_adapter": {}}  # cubiq's loader: split by the first key component
    for key, value in flat.items():
        group, rest = key.split(".", 1)
        groups[group][rest] = value.float()
    encoder = tiny_id_encoder()
    encoder.load_state_dict(groups["image_proj"], strict=True)
    encoder.eval()
    gen = torch.Generator().manual_seed(0)
    id_cond = torch.randn(2, A, generator=gen)
    hidden = [torch.randn(2, EVA_TOKENS, V, generator=gen) for _ in range(5)]
    with torch.no_grad():
        tokens = encoder(id_cond, hidden)
        uncond = encoder(torch.zeros(1, A), [torch.zeros(1, EVA_TOKENS, V)] * 5)
    assert tokens.shape == (2, 10, C) and torch.isfinite(tokens).all()
    assert uncond.shape == (1, 10, C) and uncond.abs().amax() > 0  # zeros in, bias-driven tokens out
    # each layer's to_k_ip / to_v_ip: a bias-free Linear(C, width), as cubiq's To_KV builds them
    kv = torch.nn.ModuleDict({k.removesuffix(".weight").replace(".", "_"): torch.nn.Linear(C, v.shape[0], bias=False)
                              for k, v in groups["ip_adapter"].items()})
    kv.load_state_dict({k.removesuffix(".weight").replace(".", "_") + ".weight": v
                        for k, v in groups["ip_adapter"].items()}, strict=True)
    with torch.no_grad():
        assert kv["1_to_k_ip"](tokens).shape == (2, 10, 64) and kv["139_to_v_ip"](tokens).shape == (2, 10, 128)


# ------------------------------------------------------------------------------------------- the tiny Flux file


def test_flux_file_keys_shapes_dtype(flux_file):
    state = tensors(flux_file)
    assert len(state) == 312
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes == pulid_files.flux_shapes()
    assert shapes["pulid_encoder.latents"] == (1, QUERIES, D) and shapes["pulid_encoder.proj_out"] == (D, O)
    assert shapes["pulid_encoder.layers.9.0.to_kv.weight"] == (2 * HEADS * HEAD_DIM, D)
    assert shapes["pulid_encoder.layers.9.1.1.weight"] == (4 * D, D)
    assert shapes["pulid_encoder.mapping_4.0.weight"] == (V, V) and shapes["pulid_encoder.mapping_4.6.weight"] == (D, V)
    assert shapes["pulid_encoder.id_embedding_mapping.0.weight"] == (I, A)
    assert shapes["pulid_encoder.id_embedding_mapping.6.weight"] == (5 * D, I)
    assert shapes["pulid_ca.19.to_q.weight"] == (CA_HEADS * CA_HEAD_DIM, H)
    assert shapes["pulid_ca.19.to_kv.weight"] == (2 * CA_HEADS * CA_HEAD_DIM, O)
    assert shapes["pulid_ca.19.to_out.weight"] == (H, CA_HEADS * CA_HEAD_DIM)
    assert shapes["pulid_ca.0.norm1.weight"] == (O,) and shapes["pulid_ca.0.norm2.weight"] == (H,)
    latents = state["pulid_encoder.latents"].float()
    assert 0.5 < latents.std().item() * D ** 0.5 < 1.5  # N(0, 1/D), as the reference initialises them


def test_flux_file_loads_strictly_into_idformer_and_ca(flux_file):
    model = tiny_pulid_flux()
    model.load_state_dict({k: v.float() for k, v in load_file(str(flux_file)).items()}, strict=True)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    hidden = [torch.randn(1, EVA_TOKENS, V, generator=gen) for _ in range(5)]
    img = torch.randn(1, 12, H, generator=gen)  # Flux image tokens
    with torch.no_grad():
        ids = model.pulid_encoder(torch.randn(1, A, generator=gen), hidden)
        two = model.pulid_encoder(torch.randn(1, 2, A, generator=gen), [torch.cat([h, h], 1) for h in hidden])
        uncond = model.pulid_encoder(torch.zeros(1, A), [torch.zeros(1, EVA_TOKENS, V)] * 5)
        outs = [ca(ids, img) for ca in model.pulid_ca]
    assert ids.shape == two.shape == uncond.shape == (1, QUERIES, O) and torch.isfinite(ids).all()
    assert uncond.abs().amax() > 0
    assert len(outs) == 20 and all(o.shape == img.shape and torch.isfinite(o).all() for o in outs)
    assert not torch.allclose(outs[0], outs[19])  # each CA has weights of its own
