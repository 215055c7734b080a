"""A tiny EVA02-CLIP checkpoint in the released layout (EVA02_CLIP_L_336_psz14_s6B.pt: the whole CLIP's state dict,
visual.* plus text.* and logit_scale), for PuLID. Written from shapes alone.

                                  real (EVA02-CLIP-L-14-336)   tiny (world)
  image size / patch / grid       336 / 14 / 24                56 / 14 / 4     pos_embed (1, 1 + grid^2, width)
  width / heads x head width      1024 / 16 x 64               192 / 3 x 64    q/k/v_proj (width, width), q_bias, v_bias
  depth                           24                           24              PuLID reads blocks 3, 7, 11, 15, 19
  SwiGLU hidden                   2730 = int(1024 * 8/3)       512             w1, w2 (hidden, width), ffn_ln, w3
  embed (head)                    768                          24              head (embed, width)
"""
import pathlib

import torch

def released_layout(cfg, head_width):
    """Key -> shape of a full EVA-CLIP checkpoint (visual.* as in EVA02_CLIP_L_336_psz14_s6B.pt, plus text.*)."""
    w, h, grid2 = cfg.width, cfg.mlp_hidden, cfg.grid ** 2
    rope = {"rope.freqs_cos": (grid2, head_width), "rope.freqs_sin": (grid2, head_width)}
    visual = {"cls_token": (1, 1, w), "pos_embed": (1, 1 + grid2, w),
              "patch_embed.proj.weight": (w, 3, cfg.patch_size, cfg.patch_size), "patch_embed.proj.bias": (w,),
              **rope, "norm.weight": (w,), "norm.bias": (w,),
              "head.weight": (cfg.embed_dim, w), "head.bias": (cfg.embed_dim,)}
    for i in range(cfg.depth):
        block = {"norm1.weight": (w,), "norm1.bias": (w,),
                 "attn.q_proj.weight": (w, w), "attn.k_proj.weight": (w, w), "attn.v_proj.weight": (w, w),
                 "attn.q_bias": (w,), "attn.v_bias": (w,),
                 "attn.inner_attn_ln.weight": (w,), "attn.inner_attn_ln.bias": (w,),
                 "attn.proj.weight": (w, w), "attn.proj.bias": (w,),
                 **{"attn." + k: v for k, v in rope.items()},
                 "norm2.weight": (w,), "norm2.bias": (w,),
                 "mlp.w1.weight": (h, w), "mlp.w1.bias": (h,), "mlp.w2.weight": (h, w), "mlp.w2.bias": (h,),
                 "mlp.ffn_ln.weight": (h,), "mlp.ffn_ln.bias": (h,), "mlp.w3.weight": (w, h), "mlp.w3.bias": (w,)}
        visual.update({f"blocks.{i}.{k}": v for k, v in block.items()})
    layout = {"visual." + k: v for k, v in visual.items()}
    layout.update({"text.token_embedding.weight": (49408, 8), "text.ln_final.weight": (8,), "logit_scale": ()})
    return layout


def random_checkpoint(cfg, head_width, seed=0):
    """Seeded values for every key (norms and biases too; the rope tables are noise, since both loaders drop them)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in released_layout(cfg, head_width).items():
        if key.startswith("text.token_embedding"):
            shape = (3, shape[1])  # the text tower is ignored; keep the fake small
        noise = torch.randn(shape, generator=gen)
        if key.endswith(".weight") and len(shape) >= 2:
            sd[key] = noise / torch.Size(shape[1:]).numel() ** 0.5
        elif "norm" in key or "_ln" in key:
            sd[key] = (1 + 0.1 * noise) if key.endswith("weight") else 0.1 * noise
        else:
            sd[key] = 0.1 * noise if key.endswith(("bias", "_bias")) else 0.5 * noise
    return sd


def write_eva(path, cfg, head_width=64, seed=0):
    """torch.save of the whole (tiny) EVA-CLIP state dict, as the release is distributed."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_checkpoint(cfg, head_width, seed), str(path))
    return path
