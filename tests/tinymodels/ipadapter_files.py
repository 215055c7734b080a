"""Tiny IP-Adapter checkpoints in the original tencent layout, sized for the tiny UNets.

Written from shapes alone (not from the pack's modules), so format tests check the pack against
the layout, not against itself.
"""
import pathlib

import torch
from safetensors.torch import save_file

from host_support import tiny_configs
from tinymodels.weights import random_tensors

ID_DIM = 512  # InsightFace embedding size, as in the real files
HEAD_DIM = 64  # head size of every released resampler
LORA_RANK = 8
# Kwai-Kolors' FaceID-Plus: ChatGLM-wide tokens (4096 real, KOLORS_TOKEN_WIDTH here) that the Kolors UNet's
# encoder_hid_proj maps to its cross-attention width (2048 real, the tiny SDXL context here) before to_k_ip / to_v_ip.
KOLORS_FACEID = "Kolors-IP-Adapter-FaceID-Plus.bin"
KOLORS_TOKEN_WIDTH = tiny_configs.KOLORS_CHATGLM_WIDTH
KOLORS_FACEID_TOKENS = 6


def cross_attn_widths(arch):
    """Query width of each cross-attention layer in diffusers' processor order: down, up, mid."""
    if arch == "sd15":
        c = tiny_configs.SD15_UNET["model_channels"]
        return [c, c, 2 * c, 2 * c, 4 * c, 4 * c] + [4 * c] * 3 + [2 * c] * 3 + [c] * 3 + [4 * c]
    if arch == "sdxl":
        c = tiny_configs.SDXL_UNET["model_channels"]
        return [2 * c] * 4 + [4 * c] * 20 + [4 * c] * 30 + [2 * c] * 6 + [4 * c] * 10
    raise ValueError(arch)


def context_dim(arch):
    return {"sd15": tiny_configs.SD15_UNET["context_dim"], "sdxl": tiny_configs.SDXL_UNET["context_dim"]}[arch]


def linear_proj(clip_dim, cross, tokens=4):
    return {"proj.weight": (cross * tokens, clip_dim), "proj.bias": (cross * tokens,),
            "norm.weight": (cross,), "norm.bias": (cross,)}


def mlp_proj(clip_hidden, cross):
    return {"proj.0.weight": (clip_hidden, clip_hidden), "proj.0.bias": (clip_hidden,),
            "proj.2.weight": (cross, clip_hidden), "proj.2.bias": (cross,),
            "proj.3.weight": (cross,), "proj.3.bias": (cross,)}


def perceiver_layers(dim, depth, ff_mult=4, prefix=""):
    inner = (dim // HEAD_DIM) * HEAD_DIM  # heads = dim // 64 in every release
    out = {}
    for i in range(depth):
        p = f"{prefix}layers.{i}."
        out.update({
            p + "0.norm1.weight": (dim,), p + "0.norm1.bias": (dim,),
            p + "0.norm2.weight": (dim,), p + "0.norm2.bias": (dim,),
            p + "0.to_q.weight": (inner, dim), p + "0.to_kv.weight": (2 * inner, dim),
            p + "0.to_out.weight": (dim, inner),
            p + "1.0.weight": (dim,), p + "1.0.bias": (dim,),
            p + "1.1.weight": (dim * ff_mult, dim), p + "1.3.weight": (dim, dim * ff_mult),
        })
    return out


def resampler_proj(clip_hidden, cross, dim, depth=4, queries=16):
    out = {"latents": (1, queries, dim), "proj_in.weight": (dim, clip_hidden), "proj_in.bias": (dim,),
           "proj_out.weight": (cross, dim), "proj_out.bias": (cross,),
           "norm_out.weight": (cross,), "norm_out.bias": (cross,)}
    out.update(perceiver_layers(dim, depth))
    return out


def faceid_proj(cross, tokens=4):
    return {"proj.0.weight": (ID_DIM * 2, ID_DIM), "proj.0.bias": (ID_DIM * 2,),
            "proj.2.weight": (cross * tokens, ID_DIM * 2), "proj.2.bias": (cross * tokens,),
            "norm.weight": (cross,), "norm.bias": (cross,)}


def faceid_plus_proj(clip_hidden, cross, tokens=4, depth=4):
    out = faceid_proj(cross, tokens)
    p = "perceiver_resampler."
    out.update({p + "proj_in.weight": (cross, clip_hidden), p + "proj_in.bias": (cross,),
                p + "proj_out.weight": (cross, cross), p + "proj_out.bias": (cross,),
                p + "norm_out.weight": (cross,), p + "norm_out.bias": (cross,)})
    out.update(perceiver_layers(cross, depth, prefix=p))
    return out


def ip_adapter_shapes(widths, ctx, lora_rank=0):
    """ip_adapter.* shapes (tencent layout) for cross-attentions of these widths: to_k_ip / to_v_ip at odd indices;
    with a LoRA rank, LoRA on every processor (attn1 at even, attn2 at odd indices). Also the benchmark's real-size
    files."""
    out = {}
    for i, width in enumerate(widths):
        n = 2 * i + 1
        out[f"{n}.to_k_ip.weight"] = (width, ctx)
        out[f"{n}.to_v_ip.weight"] = (width, ctx)
        if lora_rank:
            for idx, kv_in in ((n - 1, width), (n, ctx)):
                for name, fan_in in (("to_q", width), ("to_k", kv_in), ("to_v", kv_in), ("to_out", width)):
                    out[f"{idx}.{name}_lora.down.weight"] = (lora_rank, fan_in)
                    out[f"{idx}.{name}_lora.up.weight"] = (width, lora_rank)
    return out


def attn_layers(arch, lora=False):
    """to_k_ip / to_v_ip of each cross-attention of the tiny UNet; with lora, LoRA on every processor."""
    return ip_adapter_shapes(cross_attn_widths(arch), context_dim(arch), LORA_RANK if lora else 0)


def clip_dims(encoder):
    cfg = tiny_configs.CLIP_VISION[encoder]
    return cfg["projection_dim"], cfg["hidden_size"]


def catalog():
    """Real release names mapped to (arch, image_proj layout, LoRA keys present)."""
    h_embed, h_hidden = clip_dims("vit-h")
    g_embed, _ = clip_dims("vit-bigg")
    _, l336_hidden = clip_dims("vit-l-336")
    sd, xl = context_dim("sd15"), context_dim("sdxl")
    return {
        "ip-adapter_sd15.safetensors": ("sd15", linear_proj(h_embed, sd), False),
        "ip-adapter_sd15_light_v11.bin": ("sd15", linear_proj(h_embed, sd), False),
        "ip-adapter_sd15_vit-G.safetensors": ("sd15", linear_proj(g_embed, sd), False),
        "ip-adapter-plus_sd15.safetensors": ("sd15", resampler_proj(h_hidden, sd, dim=64), False),
        "ip-adapter-plus-face_sd15.safetensors": ("sd15", resampler_proj(h_hidden, sd, dim=64), False),
        "ip-adapter-full-face_sd15.safetensors": ("sd15", mlp_proj(h_hidden, sd), False),
        "ip-adapter_sdxl.safetensors": ("sdxl", linear_proj(g_embed, xl), False),
        "ip-adapter_sdxl_vit-h.safetensors": ("sdxl", linear_proj(h_embed, xl), False),
        "ip-adapter-plus_sdxl_vit-h.safetensors": ("sdxl", resampler_proj(h_hidden, xl, dim=128), False),
        "ip-adapter-plus-face_sdxl_vit-h.safetensors": ("sdxl", resampler_proj(h_hidden, xl, dim=128), False),
        "ip_plus_composition_sd15.safetensors": ("sd15", resampler_proj(h_hidden, sd, dim=64), False),
        "ip_plus_composition_sdxl.safetensors": ("sdxl", resampler_proj(h_hidden, xl, dim=128), False),
        "Kolors-IP-Adapter-Plus.bin": ("sdxl", resampler_proj(l336_hidden, xl, dim=128), False),
        "ip-adapter-faceid_sd15.bin": ("sd15", faceid_proj(sd), True),
        "ip-adapter-faceid-plus_sd15.bin": ("sd15", faceid_plus_proj(h_hidden, sd), True),
        "ip-adapter-faceid-plusv2_sd15.bin": ("sd15", faceid_plus_proj(h_hidden, sd), True),
        "ip-adapter-faceid-portrait-v11_sd15.bin": ("sd15", faceid_proj(sd, tokens=16), False),
        "ip-adapter-faceid_sdxl.bin": ("sdxl", faceid_proj(xl), True),
        "ip-adapter-faceid-plusv2_sdxl.bin": ("sdxl", faceid_plus_proj(h_hidden, xl), True),
        "ip-adapter-faceid-portrait_sdxl.bin": ("sdxl", faceid_proj(xl, tokens=16), False),
        "ip-adapter-faceid-portrait_sdxl_unnorm.bin": ("sdxl", faceid_proj(xl, tokens=16), False),
    }


def state_dict(arch, proj_shapes, lora=False, seed=0):
    """Nested {"image_proj": ..., "ip_adapter": ...} as the tencent training scripts save it."""
    return {"image_proj": random_tensors(proj_shapes, seed=seed),
            "ip_adapter": random_tensors(attn_layers(arch, lora), seed=seed + 1)}


def save(path, nested):
    """Write .safetensors flat with prefixes, anything else as a torch.save nested dict."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        flat = {f"{group}.{k}": v.contiguous() for group, sd in nested.items() for k, v in sd.items()}
        save_file(flat, str(path))
    else:
        torch.save(nested, str(path))
    return path


def write_all(folder, seed=0):
    """Write every catalogued release under its real name into folder; returns {name: path}."""
    out = {}
    for i, (name, (arch, proj, lora)) in enumerate(sorted(catalog().items())):
        out[name] = save(pathlib.Path(folder) / name, state_dict(arch, proj, lora, seed=seed + 10 * i))
    return out


def kolors_faceid_state_dict(seed=0):
    """Kolors-IP-Adapter-FaceID-Plus: FaceID Plus projection of token width KOLORS_TOKEN_WIDTH over CLIP-ViT-L-336
    hidden states, image K/V reading the SDXL-layout UNet's context width."""
    _, l336_hidden = clip_dims("vit-l-336")
    proj = faceid_plus_proj(l336_hidden, KOLORS_TOKEN_WIDTH, tokens=KOLORS_FACEID_TOKENS)
    return state_dict("sdxl", proj, lora=False, seed=seed)


def write_kolors_faceid(folder, seed=900):
    """The Kolors FaceID-Plus file under its release name (torch.save nested, as Kwai-Kolors ships it)."""
    return save(pathlib.Path(folder) / KOLORS_FACEID, kolors_faceid_state_dict(seed))
