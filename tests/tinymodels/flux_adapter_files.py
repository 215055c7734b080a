"""Tiny Flux IP-Adapters in the XLabs and InstantX release layouts, sized for the tiny Flux.

Written from shapes alone (not from the pack's modules), so format tests check the pack against the layout.
"""
import pathlib

import torch
from safetensors.torch import save_file

from host_support import tiny_configs
from tinymodels.weights import random_tensors

HIDDEN = tiny_configs.FLUX_DIT["hidden_size"]  # H
CONTEXT = tiny_configs.FLUX_DIT["context_in_dim"]  # C
DOUBLE = tiny_configs.FLUX_DIT["depth"]
SINGLE = tiny_configs.FLUX_DIT["depth_single_blocks"]
CLIP_L_EMBED = tiny_configs.CLIP_VISION["vit-l"]["projection_dim"]  # XLabs: CLIP ViT-L/14 image_embeds
SIGLIP_WIDTH = tiny_configs.CLIP_VISION["siglip-384"]["hidden_size"]  # InstantX: SigLIP pooled output
XLABS_TOKENS = {"flux-ip-adapter.safetensors": 4, "flux-ip-adapter-v2.safetensors": 16}
INSTANTX_TOKENS = 128
INSTANTX_FILE = "ip-adapter.bin"


def xlabs_shapes(tokens=4):
    """Flat XLabs keys: the image projection, then k/v projections in every double block."""
    shapes = {"ip_adapter_proj_model.proj.weight": (tokens * CONTEXT, CLIP_L_EMBED),
              "ip_adapter_proj_model.proj.bias": (tokens * CONTEXT,),
              "ip_adapter_proj_model.norm.weight": (CONTEXT,), "ip_adapter_proj_model.norm.bias": (CONTEXT,)}
    for i in range(DOUBLE):
        for kv in ("k", "v"):
            prefix = f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj"
            shapes[f"{prefix}.weight"] = (HIDDEN, CONTEXT)
            shapes[f"{prefix}.bias"] = (HIDDEN,)
    return shapes


def instantx_shapes():
    """Nested InstantX groups: MLP image projection from the SigLIP pooled vector; to_k_ip/to_v_ip for 57 blocks."""
    s = SIGLIP_WIDTH
    image_proj = {"proj.0.weight": (2 * s, s), "proj.0.bias": (2 * s,),
                  "proj.2.weight": (INSTANTX_TOKENS * CONTEXT, 2 * s), "proj.2.bias": (INSTANTX_TOKENS * CONTEXT,),
                  "norm.weight": (CONTEXT,), "norm.bias": (CONTEXT,)}
    ip_adapter = {f"{n}.to_{kv}_ip.weight": (HIDDEN, CONTEXT) for n in range(DOUBLE + SINGLE) for kv in ("k", "v")}
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def write_xlabs(path, tokens=4, seed=0):
    """An XLabs flux-ip-adapter .safetensors (v1: 4 tokens, v2: 16)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in random_tensors(xlabs_shapes(tokens), seed).items()}, str(path))
    return path


def write_instantx(path, seed=0):
    """InstantX FLUX.1-dev-IP-Adapter ip-adapter.bin: torch.save of {"image_proj": ..., "ip_adapter": ...}."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nested = {group: random_tensors(shapes, seed + i) for i, (group, shapes) in enumerate(instantx_shapes().items())}
    torch.save(nested, str(path))
    return path


def write_all(models, seed=0):
    """XLabs files into models/xlabs/ipadapters/, InstantX into models/ipadapter-flux/; returns {name: path}."""
    models = pathlib.Path(models)
    out = {name: write_xlabs(models / "xlabs" / "ipadapters" / name, tokens, seed + i)
           for i, (name, tokens) in enumerate(sorted(XLABS_TOKENS.items()))}
    out[INSTANTX_FILE] = write_instantx(models / "ipadapter-flux" / INSTANTX_FILE, seed + 10)
    return out
