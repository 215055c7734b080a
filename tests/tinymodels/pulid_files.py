"""Tiny PuLID files in the released layouts (flat safetensors keys), sized for the tiny SDXL and the tiny Flux.

Written from shapes alone (not from the pack's modules). Both go to models/pulid/, the folder cubiq's PuLID_ComfyUI
and balazik's ComfyUI-PuLID-Flux read. Layouts as in /work/shared/notes/pulid.md section 1.

The face condition both encoders read: id_cond = cat(ArcFace raw embedding (512), L2-normalised EVA02-CLIP feature (E))
and 5 EVA hidden states (B, T, V) (the residual stream after blocks 3, 7, 11, 15, 19, CLS at index 0; real T 577).
                                              real                 tiny
  ArcFace embedding (antelopev2)             512                  512
  EVA feature E (head projection)            768                  24         the tiny EVA tower's projection width
  EVA hidden width V                         1024                 192
  id_cond width A = 512 + E                  1280                 536

1. ip-adapter_pulid_sdxl_fp16.safetensors (PuLID v1 for SDXL, huchenlei's IP-Adapter layout), float16, 250 tensors.
image_proj: cubiq's IDEncoder(width=A, context_dim=C, num_token=5), loaded strictly
  h1 = min(C * 5 // 4, 1024), h2 = min(C * 5 // 2, 1024): real 1024 / 1024 (C 2048), tiny 100 / 200 (C 80)
                                              real                 tiny
  body.0.weight / .bias                      (1024, 1280) (1024)  (100, 536) (100)   Linear(A, h1)
  body.1.{weight,bias}                       (1024)               (100)              LayerNorm(h1)
  body.3.weight / .bias                      (1024, 1024) (1024)  (200, 100) (200)   Linear(h1, h2)
  body.4.{weight,bias}                       (1024)               (200)              LayerNorm(h2)
  body.6.weight / .bias                      (10240, 1024)        (400, 200)         Linear(h2, 5 x C): 5 ID tokens
  mapping_{0..4}.0.weight / .bias            (1024, 1024)         (192, 192)         Linear(V, M), M = V (real 1024)
  mapping_{i}.1 / .4 {weight,bias}           (1024)               (192)              LayerNorm(M)
  mapping_{i}.3.weight / .bias               (1024, 1024)         (192, 192)         Linear(M, M)
  mapping_{i}.6.weight / .bias               (2048, 1024) (2048)  (80, 192) (80)     Linear(M, C): the CLS token
  mapping_patch_{0..4}.*                     as mapping_i         as mapping_i       the patch-token mean
ip_adapter: {n}.to_k_ip.weight / .to_v_ip.weight, n = 1, 3, ..., 139 (the 70 SDXL attn2 in diffusers' processor
  order: down, up, mid), no bias      (640|1280, 2048)     (64|128, 80)       query width x C
Output: 5 + 5 = 10 tokens of width C.

2. pulid_flux_v0.9.1.safetensors (PuLID-Flux v0.9.1), bfloat16 (the reference pipeline builds and runs both modules in
bfloat16, orig pipeline_flux.py; the released dtype itself is unverified), 312 tensors.
pulid_encoder: IDFormer(dim=D, depth, dim_head, heads, num_id_token=5, num_queries=32, output_dim=O, ff_mult=4)
                                              real                 tiny
  latents                                    (1, 32, 1024)        (1, 32, 48)        32 queries x D
  proj_out (a Parameter, x @ proj_out)       (1024, 2048)         (48, 40)           D x O
  layers.{0..9}.0.norm1 / .norm2 {w,b}       (1024)               (48)               PerceiverAttention, depth 10
  layers.{i}.0.to_q.weight                   (1024, 1024)         (128, 48)          heads x 64: 16 / 2 heads, no bias
  layers.{i}.0.to_kv.weight                  (2048, 1024)         (256, 48)
  layers.{i}.0.to_out.weight                 (1024, 1024)         (48, 128)
  layers.{i}.1.0.{weight,bias}               (1024)               (48)               FeedForward LayerNorm
  layers.{i}.1.1.weight / .1.3.weight        (4096, 1024) / (1024, 4096)   (192, 48) / (48, 192)   ff_mult 4
  mapping_{0..4}.{0,3}.weight / .bias        (1024, 1024)         (192, 192)         Linear(V, M), Linear(M, M)
  mapping_{i}.{1,4} {weight,bias}            (1024)               (192)
  mapping_{i}.6.weight / .bias               (1024, 1024) (1024)  (48, 192) (48)     Linear(M, D)
  id_embedding_mapping.0.weight / .bias      (1024, 1280) (1024)  (36, 536) (36)     Linear(A, I), I real 1024
  id_embedding_mapping.{1,4} {weight,bias}   (1024)               (36)
  id_embedding_mapping.3.weight / .bias      (1024, 1024)         (36, 36)
  id_embedding_mapping.6.weight / .bias      (5120, 1024) (5120)  (240, 36) (240)    Linear(I, 5 x D)
pulid_ca.{0..19}: PerceiverAttentionCA(dim=H, dim_head=128, heads, kv_dim=O), after double blocks 0, 2, ..., 18 and
single blocks 0, 4, ..., 36 (19 // 2 + 38 // 4 + 1 + 1 = 20)
  norm1.{weight,bias}                        (2048)               (40)               on the ID tokens (width O)
  norm2.{weight,bias}                        (3072)               (64)               on the image tokens (Flux hidden H)
  to_q.weight                                (2048, 3072)         (256, 64)          heads x 128: 16 / 2 heads, no bias
  to_kv.weight                               (4096, 2048)         (512, 40)
  to_out.weight                              (3072, 2048)         (64, 256)

The real IDFormer asserts depth % 5 == 0 (depth // 5 layers per EVA scale), so the tiny keeps depth 10; 32 queries,
5 ID tokens, 20 CA modules, ff_mult 4 and the head widths 64 / 128 are the real ones too, so the tiny key sets equal
the released ones. The tiny widths all differ (D 48, O 40, H 64, I 36, V 192, E 24, attention 128 / 256), so mixing
them up fails. The real files hard-code every 1024 above; a loader reads the tiny ones from the shapes.
"""
import pathlib
import types

import torch
from safetensors.torch import save_file

from host_support import tiny_configs
from tinymodels.ipadapter_files import cross_attn_widths
from tinymodels.weights import perceiver_layer_shapes, random_tensors, save_nested

FOLDER = "pulid"  # models/pulid/
SDXL_FILE = "ip-adapter_pulid_sdxl_fp16.safetensors"
FLUX_FILE = "pulid_flux_v0.9.1.safetensors"
SDXL_DTYPE = torch.float16  # as the file name says
FLUX_DTYPE = torch.bfloat16  # the dtype the reference pipeline runs the modules in

ARCFACE = 512  # antelopev2 ArcFace embedding, as in the real files
EVA_EMBED = 24  # E: the tiny EVA02 tower's projection width (real 768)
EVA_WIDTH = 192  # V: the tiny EVA02 tower's hidden width, 3 heads of 64 (real 1024, 16 heads)
EVA_SCALES = 5  # hidden states read from the EVA tower (mapping_0..4)
ID_TOKENS = 5
NUM_CA = 20


def _num_ca(double, single, double_interval=2, single_interval=4):
    """The reference's count: one CA after every 2nd double and every 4th single block."""
    return -(-double // double_interval) + -(-single // single_interval)


TINY_SDXL = {
    "id_cond": ARCFACE + EVA_EMBED,  # A (real 1280)
    "eva_width": EVA_WIDTH,  # V (real 1024)
    "mapping_hidden": EVA_WIDTH,  # M (real 1024)
    "context": tiny_configs.SDXL_UNET["context_dim"],  # C (real 2048)
    "tokens": ID_TOKENS,
    "layer_widths": cross_attn_widths("sdxl"),  # query widths of the 70 attn2 (real 640 / 1280)
}
_TINY_MC = tiny_configs.SDXL_UNET["model_channels"]
REAL_SDXL = {**TINY_SDXL, "id_cond": 1280, "eva_width": 1024, "mapping_hidden": 1024, "context": 2048,
             "layer_widths": [w * 320 // _TINY_MC for w in cross_attn_widths("sdxl")]}

TINY_FLUX = {
    "id_cond": ARCFACE + EVA_EMBED,  # A (real 1280)
    "eva_width": EVA_WIDTH,  # V (real 1024)
    "mapping_hidden": EVA_WIDTH,  # M (real 1024)
    "id_hidden": 36,  # I: id_embedding_mapping hidden width (real 1024)
    "dim": 48,  # D: IDFormer width (real 1024)
    "depth": 10,  # a multiple of 5, as the reference asserts
    "heads": 2,  # (real 16)
    "head_dim": 64,
    "queries": 32,
    "tokens": ID_TOKENS,
    "out": 40,  # O: IDFormer output_dim = CA kv_dim (real 2048)
    "ff_mult": 4,
    "hidden": tiny_configs.FLUX_DIT["hidden_size"],  # H: Flux hidden size (real 3072)
    "ca_heads": 2,  # (real 16)
    "ca_head_dim": 128,
    "num_ca": _num_ca(tiny_configs.FLUX_DIT["depth"], tiny_configs.FLUX_DIT["depth_single_blocks"]),
}
REAL_FLUX = {**TINY_FLUX, "id_cond": 1280, "eva_width": 1024, "mapping_hidden": 1024, "id_hidden": 1024, "dim": 1024,
             "heads": 16, "out": 2048, "hidden": 3072, "ca_heads": 16, "num_ca": _num_ca(19, 38)}
assert TINY_FLUX["num_ca"] == REAL_FLUX["num_ca"] == NUM_CA


def _mlp(prefix, d_in, h1, h2, d_out):
    """nn.Sequential(Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear): indices 0, 1, 3, 4, 6."""
    shapes = {}
    for index, (rows, cols) in (("0", (h1, d_in)), ("3", (h2, h1)), ("6", (d_out, h2))):
        shapes[f"{prefix}.{index}.weight"] = (rows, cols)
        shapes[f"{prefix}.{index}.bias"] = (rows,)
    for index, width in (("1", h1), ("4", h2)):
        shapes[f"{prefix}.{index}.weight"] = (width,)
        shapes[f"{prefix}.{index}.bias"] = (width,)
    return shapes


def id_encoder_shapes(s=TINY_SDXL):
    """cubiq's IDEncoder keys (without the image_proj. prefix)."""
    c, t = s["context"], s["tokens"]
    h1, h2 = min(c * t // 4, 1024), min(c * t // 2, 1024)
    shapes = _mlp("body", s["id_cond"], h1, h2, c * t)
    for i in range(EVA_SCALES):
        for name in (f"mapping_{i}", f"mapping_patch_{i}"):
            shapes.update(_mlp(name, s["eva_width"], s["mapping_hidden"], s["mapping_hidden"], c))
    return shapes


def sdxl_shapes(s=TINY_SDXL):
    """All flat keys of ip-adapter_pulid_sdxl_fp16.safetensors."""
    shapes = {f"image_proj.{k}": v for k, v in id_encoder_shapes(s).items()}
    for i, width in enumerate(s["layer_widths"]):
        for kv in ("k", "v"):
            shapes[f"ip_adapter.{2 * i + 1}.to_{kv}_ip.weight"] = (width, s["context"])
    return shapes


def id_former_shapes(s=TINY_FLUX):
    """The reference IDFormer's keys (without the pulid_encoder. prefix)."""
    d, inner, ff = s["dim"], s["heads"] * s["head_dim"], s["dim"] * s["ff_mult"]
    shapes = {"latents": (1, s["queries"], d), "proj_out": (d, s["out"])}
    shapes.update(perceiver_layer_shapes(s["depth"], d, inner, ff))
    for i in range(EVA_SCALES):
        shapes.update(_mlp(f"mapping_{i}", s["eva_width"], s["mapping_hidden"], s["mapping_hidden"], d))
    shapes.update(_mlp("id_embedding_mapping", s["id_cond"], s["id_hidden"], s["id_hidden"], d * s["tokens"]))
    return shapes


def perceiver_ca_shapes(s=TINY_FLUX):
    """One PerceiverAttentionCA(dim=H, dim_head, heads, kv_dim=O)."""
    h, o, inner = s["hidden"], s["out"], s["ca_heads"] * s["ca_head_dim"]
    return {"norm1.weight": (o,), "norm1.bias": (o,), "norm2.weight": (h,), "norm2.bias": (h,),
            "to_q.weight": (inner, h), "to_kv.weight": (2 * inner, o), "to_out.weight": (h, inner)}


def flux_shapes(s=TINY_FLUX):
    """All flat keys of pulid_flux_v0.9.1.safetensors."""
    shapes = {f"pulid_encoder.{k}": v for k, v in id_former_shapes(s).items()}
    for n in range(s["num_ca"]):
        shapes.update({f"pulid_ca.{n}.{k}": v for k, v in perceiver_ca_shapes(s).items()})
    return shapes


def sdxl_state_dict(seed=0):
    """Seeded tensors (LayerNorm scales ones, matrices N(0, 1/fan_in), biases N(0, 0.02^2)), float32."""
    return random_tensors(sdxl_shapes(), seed)


def flux_state_dict(seed=0):
    """As sdxl_state_dict; latents and proj_out N(0, 1/D) as the reference initialises them."""
    state = random_tensors(flux_shapes(), seed)
    d = TINY_FLUX["dim"]
    gen = torch.Generator().manual_seed(seed + 7)
    state["pulid_encoder.latents"] = torch.randn(1, TINY_FLUX["queries"], d, generator=gen) / d ** 0.5
    state["pulid_encoder.proj_out"] = torch.randn(d, TINY_FLUX["out"], generator=gen) / d ** 0.5
    return state


def _save(state, path, dtype):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(path))
    return path


def write_sdxl(path, seed=0):
    return _save(sdxl_state_dict(seed), path, SDXL_DTYPE)


def write_flux(path, seed=0):
    return _save(flux_state_dict(seed), path, FLUX_DTYPE)


EVA_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"  # models/clip/, as PuLID users keep it
TINY_EVA = dict(image_size=56, patch_size=14, width=EVA_WIDTH, depth=24, heads=EVA_WIDTH // 64,
                mlp_hidden=int(EVA_WIDTH * 8 / 3), embed_dim=EVA_EMBED)  # eva_files' table; heads of 64 as released


PARSER_FILE = "parsing_bisenet.pth"  # models/facexlib/, facexlib's face parser
TINY_PARSER = dict(stem=8, widths=(8, 16, 32, 48), blocks=(2, 2, 2, 2), context=16, fuse=24, fuse_squeeze=6, head=20,
                   aux_head16=10, aux_head32=12, classes=19)  # facexlib's BiSeNet: 64, (64..512), 128, 256, 64, 256


def parser_state_dict(seed=0):
    """A tiny BiSeNet face parser in facexlib's key layout (its shapes taken from the pack's port, whose key layout
    tests/test_face_parsing.py proves equal to facexlib's); batch-norm statistics as a trained net keeps them."""
    from ipadapter_kit.ipadapter_core.face_parsing import BiSeNet, ParserConfig

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in BiSeNet(ParserConfig(**TINY_PARSER)).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) > 1:
            state[key] = torch.randn(shape, generator=gen) / torch.Size(shape[1:]).numel() ** 0.5
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen) + (1.0 if key.endswith(".weight") else 0.0)
    return state


def write_all(models, seed=0):
    """models/pulid/ip-adapter_pulid_sdxl_fp16.safetensors, models/pulid/pulid_flux_v0.9.1.safetensors, the tiny
    EVA02-CLIP the PuLID encoders read (models/clip/EVA02_CLIP_L_336_psz14_s6B.pt) and the face parser
    (models/facexlib/parsing_bisenet.pth)."""
    from tinymodels.eva_files import write_eva

    eva = types.SimpleNamespace(**TINY_EVA, grid=TINY_EVA["image_size"] // TINY_EVA["patch_size"])
    folder = pathlib.Path(models) / FOLDER
    return {SDXL_FILE: write_sdxl(folder / SDXL_FILE, seed), FLUX_FILE: write_flux(folder / FLUX_FILE, seed + 1),
            EVA_FILE: write_eva(pathlib.Path(models) / "clip" / EVA_FILE, eva, 64, seed + 2),
            PARSER_FILE: save_nested(parser_state_dict(seed + 3), pathlib.Path(models) / "facexlib" / PARSER_FILE)}
