"""Deterministic weights for tiny models (ComfyUI's layers are built uninitialised)."""
import pathlib

import torch


def init_module(module, seed=0):
    """Fill every parameter: norms get ones/zeros, matrices N(0, 1/fan_in), other vectors zeros."""
    gen = torch.Generator().manual_seed(seed)
    norms = tuple(m for m in module.modules() if "Norm" in type(m).__name__)
    norm_params = {id(p) for m in norms for p in m.parameters(recurse=False)}
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in norm_params:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return module


def random_tensors(shapes, seed=0):
    """Random tensors for {key: shape}: 1-D weights (all LayerNorms here) are ones, matrices N(0, 1/fan_in)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 1 and key.endswith("weight"):
            out[key] = torch.ones(shape)
        elif len(shape) >= 2:
            out[key] = torch.randn(shape, generator=gen) / (torch.Size(shape[1:]).numel() ** 0.5)
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.02
    return out


def nested_adapter(shapes, seed, latents=None):
    """{"image_proj": ..., "ip_adapter": ...} of seeded tensors (LayerNorm / RMSNorm scales ones); latents (queries,
    width) of a resampler get N(0, 1/width) as the reference code initialises them."""
    nested = {group: random_tensors(group_shapes, seed + i) for i, (group, group_shapes) in enumerate(shapes.items())}
    if latents is not None:
        queries, width = latents
        gen = torch.Generator().manual_seed(seed + 7)
        nested["image_proj"]["latents"] = torch.randn(1, queries, width, generator=gen) / width ** 0.5
    return nested


def save_nested(nested, path):
    """torch.save of a nested adapter dict, as the .bin releases are written."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(nested, str(path))
    return path


def perceiver_layer_shapes(depth, dim, inner, ff, first=0):
    """The released Resampler's layers.{i} keys (i from first): PerceiverAttention (norm1, norm2, to_q, to_kv,
    to_out) and its feed-forward (LayerNorm, Linear up, Linear down), no biases on the projections."""
    shapes = {}
    for i in range(first, first + depth):
        p = f"layers.{i}"
        for norm in ("0.norm1", "0.norm2", "1.0"):
            shapes[f"{p}.{norm}.weight"] = (dim,)
            shapes[f"{p}.{norm}.bias"] = (dim,)
        shapes.update({f"{p}.0.to_q.weight": (inner, dim), f"{p}.0.to_kv.weight": (2 * inner, dim),
                       f"{p}.0.to_out.weight": (dim, inner), f"{p}.1.1.weight": (ff, dim), f"{p}.1.3.weight": (dim, ff)})
    return shapes

