"""A tiny InstantX SD3.5-Large-IP-Adapter `ip-adapter.bin`, sized for the tiny SD3.5 and the tiny SigLIP.

Written from shapes alone (not from the pack's modules). torch.save of {"image_proj": ..., "ip_adapter": ...}:

image_proj: InstantX's TimeResampler (diffusers: IPAdapterTimeImageProjection after its key conversion)
                                            real                 tiny
  latents                                  (1, 64, 1280)        (1, 64, 96)       Q queries x resampler dim D
  proj_in.weight / .bias                   (1280, 1152) (1280)  (96, 44) (96)     SigLIP penultimate width E
  proj_out.weight / .bias                  (2432, 1280) (2432)  (128, 96) (128)   MMDiT hidden H
  norm_out.weight / .bias                  (2432)               (128)
  time_embedding.linear_1.weight / .bias   (1280, 320) (1280)   (96, 32) (96)     timestep_in_dim S
  time_embedding.linear_2.weight / .bias   (1280, 1280) (1280)  (96, 96) (96)
  layers.{0..3}.0.norm1 / .norm2 (w, b)    (1280)               (96)              PerceiverAttention LayerNorms
  layers.{i}.0.to_q.weight                 (1280, 1280)         (128, 96)         inner = heads x 64 (20 / 2 heads)
  layers.{i}.0.to_kv.weight                (2560, 1280)         (256, 96)
  layers.{i}.0.to_out.weight               (1280, 1280)         (96, 128)
  layers.{i}.1.0.weight / .bias            (1280)               (96)              FeedForward LayerNorm
  layers.{i}.1.1.weight                    (5120, 1280)         (384, 96)         ff_mult 4, no bias
  layers.{i}.1.3.weight                    (1280, 5120)         (96, 384)
  layers.{i}.2.1.weight / .bias            (5120, 1280) (5120)  (384, 96) (384)   adaLN: SiLU, Linear(D, 4D)
ip_adapter: one processor per joint block, n = 0..37 (diffusers' SD3IPAdapterJointAttnProcessor2_0)
  {n}.norm_ip.linear.weight / .bias        (4864, 1280) (4864)  (256, 96) (256)   AdaLayerNorm: D -> 2H (shift, scale)
  {n}.to_k_ip.weight, {n}.to_v_ip.weight   (2432, 2432)         (128, 128)        no bias
  {n}.norm_q / norm_k / norm_ip_k .weight  (64)                 (64)              per-head RMSNorm

The resampler's head width is 64 in both (diffusers infers heads = to_q rows // 64); the tiny D (96) differs from
its attention width (2 x 64) and from H, so mixing them up fails. 64 queries and depth 4 are the real ones.
"""
import pathlib

from host_support import tiny_configs
from tinymodels.weights import nested_adapter, perceiver_layer_shapes, save_nested

HIDDEN = 64 * tiny_configs.SD3_MMDIT["depth"]  # H: MMDiT width (= ip_hidden_states_dim = resampler output)
BLOCKS = tiny_configs.SD3_MMDIT["num_blocks"]
HEAD_DIM = 64  # MMDiT and resampler head width, as in the real model
SIGLIP_WIDTH = tiny_configs.CLIP_VISION["siglip-384"]["hidden_size"]  # E: SigLIP penultimate hidden states
DIM = 96  # D: resampler width (real 1280)
HEADS = 2  # resampler heads (real 20)
DEPTH = 4
QUERIES = 64
FF_MULT = 4
TIMESTEP_IN = 32  # sinusoidal timestep features (real 320)
INSTANTX_FILE = "ip-adapter.bin"  # the name InstantX releases it under
WORLD_FILE = "ip-adapter_sd35_large.bin"  # renamed copy in models/ipadapter/
REAL = {"hidden": 2432, "blocks": 38, "siglip": 1152, "dim": 1280, "heads": 20, "depth": 4, "queries": 64,
        "timestep_in": 320}


def image_proj_shapes():
    """The released TimeResampler keys (before diffusers' renaming)."""
    d, inner, ff = DIM, HEADS * HEAD_DIM, DIM * FF_MULT
    shapes = {"latents": (1, QUERIES, d), "proj_in.weight": (d, SIGLIP_WIDTH), "proj_in.bias": (d,),
              "proj_out.weight": (HIDDEN, d), "proj_out.bias": (HIDDEN,),
              "norm_out.weight": (HIDDEN,), "norm_out.bias": (HIDDEN,),
              "time_embedding.linear_1.weight": (d, TIMESTEP_IN), "time_embedding.linear_1.bias": (d,),
              "time_embedding.linear_2.weight": (d, d), "time_embedding.linear_2.bias": (d,)}
    for i in range(DEPTH):  # each layer's keys, then its timestep-conditioned shift/scale (the seeded order)
        shapes.update(perceiver_layer_shapes(1, d, inner, ff, first=i))
        shapes.update({f"layers.{i}.2.1.weight": (4 * d, d), f"layers.{i}.2.1.bias": (4 * d,)})
    return shapes


def ip_adapter_shapes():
    """Per joint block: the timestep-conditioned norm of the image tokens, their k/v projections, QK RMS norms."""
    shapes = {}
    for n in range(BLOCKS):
        shapes.update({f"{n}.norm_ip.linear.weight": (2 * HIDDEN, DIM), f"{n}.norm_ip.linear.bias": (2 * HIDDEN,),
                       f"{n}.to_k_ip.weight": (HIDDEN, HIDDEN), f"{n}.to_v_ip.weight": (HIDDEN, HIDDEN)})
        for norm in ("norm_q", "norm_k", "norm_ip_k"):
            shapes[f"{n}.{norm}.weight"] = (HEAD_DIM,)
    return shapes


def instantx_shapes():
    return {"image_proj": image_proj_shapes(), "ip_adapter": ip_adapter_shapes()}


def adapter_state_dict(seed=0):
    """The nested dict with seeded weights (norm scales ones, latents N(0, 1/D) as the resampler initialises them)."""
    return nested_adapter(instantx_shapes(), seed, latents=(QUERIES, DIM))


def write_instantx_sd35(path, seed=0):
    """InstantX SD3.5-Large-IP-Adapter ip-adapter.bin: torch.save of {"image_proj": ..., "ip_adapter": ...}."""
    return save_nested(adapter_state_dict(seed), path)


def write_all(models, seed=0):
    """models/ipadapter/ip-adapter_sd35_large.bin (the SD3 pack's users keep it, renamed, in models/ipadapter)."""
    return {WORLD_FILE: write_instantx_sd35(pathlib.Path(models) / "ipadapter" / WORLD_FILE, seed)}
