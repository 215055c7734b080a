"""Tiny InstantID (SDXL) files in the released formats, sized for the tiny SDXL UNet.

InstantX/InstantID ships two files; users keep them as models/instantid/ip-adapter.bin and
models/controlnet/instantid/diffusion_pytorch_model.safetensors (ComfyUI lists the latter as
"instantid/diffusion_pytorch_model.safetensors").

1. ip-adapter.bin: torch.save of {"image_proj": ..., "ip_adapter": ...}, written from shapes alone.

image_proj: the tencent-ailab Resampler (resampler.py) reading one antelopev2 ArcFace embedding as (B, 1, 512)
                                            real                 tiny
  latents                                  (1, 16, 1280)        (1, 16, 96)       Q queries x resampler dim D
  proj_in.weight / .bias                   (1280, 512) (1280)   (96, 512) (96)    ArcFace width 512 in both
  proj_out.weight / .bias                  (2048, 1280) (2048)  (80, 96) (80)     SDXL context C
  norm_out.weight / .bias                  (2048)               (80)
  layers.{0..3}.0.norm1 / .norm2 (w, b)    (1280)               (96)              PerceiverAttention LayerNorms
  layers.{i}.0.to_q.weight                 (1280, 1280)         (128, 96)         inner = heads x 64 (20 / 2 heads)
  layers.{i}.0.to_kv.weight                (2560, 1280)         (256, 96)         no bias on to_q / to_kv / to_out
  layers.{i}.0.to_out.weight               (1280, 1280)         (96, 128)
  layers.{i}.1.0.weight / .bias            (1280)               (96)              FeedForward LayerNorm
  layers.{i}.1.1.weight                    (5120, 1280)         (384, 96)         ff_mult 4, no bias
  layers.{i}.1.3.weight                    (1280, 5120)         (96, 384)
ip_adapter: the 70 SDXL cross-attentions n = 1, 3, ..., 139 in diffusers' processor order (down, up, mid)
  {n}.to_k_ip.weight, {n}.to_v_ip.weight   (640|1280, 2048)     (64|128, 80)      query width x C, no bias

Output: 16 face tokens of width C, read by the UNet's to_k_ip / to_v_ip and, as its cross-attention context, by the
IdentityNet. 16 queries, depth 4 and head width 64 are the real ones; the tiny D (96) differs from its attention
width (2 x 64) and from C, so mixing them up fails.

2. IdentityNet: an SDXL ControlNet in diffusers' format (ControlNetModel.save_pretrained), written by diffusers'
ControlNetModel from the release's config with the tiny SDXL's widths:
                                            real                 tiny
  conv_in.weight                           (320, 4, 3, 3)       (32, 4, 3, 3)     model_channels M
  time_embedding.linear_1 / linear_2       (1280, 320) (1280, 1280)  (128, 32) (128, 128)
  add_embedding.linear_1.weight            (1280, 2816)         (128, 1584)       pooled text + 6 x 256 size features
  controlnet_cond_embedding.conv_in        (16, 3, 3, 3)        (16, 3, 3, 3)     hint block 16/32/96/256 in both
  controlnet_cond_embedding.blocks.{0..5}  16..256 channels     16..256 channels
  controlnet_cond_embedding.conv_out       (320, 256, 3, 3)     (32, 256, 3, 3)
  down_blocks.{0,1,2}                      320 / 640 / 1280     32 / 64 / 128     DownBlock2D, 2 x CrossAttnDownBlock2D
    attentions: transformer blocks         0 / 2 / 10 each      0 / 2 / 10 each   the real depths
    attn2.to_k / to_v .weight              (640|1280, 2048)     (64|128, 80)      context C: the 16 face tokens
    heads                                  10|20 of 64          4|8 of 16         the tiny SDXL's head width
  mid_block: 2 resnets, 10 transformers    1280                 128
  controlnet_down_blocks.{0..8}            (320|640|1280, same, 1, 1)  (32|64|128, same, 1, 1)   zero convs
  controlnet_mid_block                     (1280, 1280, 1, 1)   (128, 128, 1, 1)
Stored float16, as released (ip-adapter.bin is float32, as released). The tiny zero convs are not zero, so the
IdentityNet changes a sample.
"""
import pathlib

from safetensors.torch import save_file

from host_support import tiny_configs
from tinymodels.ipadapter_files import cross_attn_widths
from tinymodels.weights import init_module, nested_adapter, perceiver_layer_shapes, save_nested

CONTEXT = tiny_configs.SDXL_UNET["context_dim"]  # C: tiny SDXL cross-attention width (real 2048)
MODEL_CHANNELS = tiny_configs.SDXL_UNET["model_channels"]  # M (real 320)
ADM = tiny_configs.SDXL_UNET["adm_in_channels"]  # pooled + 6 x 256 (real 2816)
UNET_HEAD_DIM = tiny_configs.SDXL_HEADS["num_head_channels"]  # tiny SDXL head width (real 64)
ID_DIM = 512  # antelopev2 ArcFace embedding, as in the real file
QUERIES = 16
DEPTH = 4
DIM = 96  # D: resampler width (real 1280)
HEADS = 2  # resampler heads (real 20)
HEAD_DIM = 64  # resampler head width, as in the real file
FF_MULT = 4
ADAPTER_FILE = "ip-adapter.bin"  # models/instantid/
CONTROLNET_FILE = "instantid/diffusion_pytorch_model.safetensors"  # models/controlnet/
REAL = {"context": 2048, "dim": 1280, "heads": 20, "queries": 16, "depth": 4, "id_dim": 512, "layers": 70}

# InstantX's ControlNetModel/config.json (ControlNetModel.from_unet of SDXL base); "attention_head_dim" is
# diffusers' historical name for the head count.
REAL_IDENTITYNET_CONFIG = {
    "in_channels": 4,
    "conditioning_channels": 3,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-05,
    "cross_attention_dim": 2048,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "controlnet_conditioning_channel_order": "rgb",
    "conditioning_embedding_out_channels": (16, 32, 96, 256),
    "global_pool_conditions": False,
}


def image_proj_shapes():
    """The released Resampler keys."""
    d, inner, ff = DIM, HEADS * HEAD_DIM, DIM * FF_MULT
    shapes = {"latents": (1, QUERIES, d), "proj_in.weight": (d, ID_DIM), "proj_in.bias": (d,),
              "proj_out.weight": (CONTEXT, d), "proj_out.bias": (CONTEXT,),
              "norm_out.weight": (CONTEXT,), "norm_out.bias": (CONTEXT,)}
    shapes.update(perceiver_layer_shapes(DEPTH, d, inner, ff))
    return shapes


def ip_adapter_shapes():
    """to_k_ip / to_v_ip of the 70 SDXL cross-attentions, widths of the tiny SDXL UNet."""
    shapes = {}
    for i, width in enumerate(cross_attn_widths("sdxl")):
        shapes[f"{2 * i + 1}.to_k_ip.weight"] = (width, CONTEXT)
        shapes[f"{2 * i + 1}.to_v_ip.weight"] = (width, CONTEXT)
    return shapes


def instantid_shapes():
    return {"image_proj": image_proj_shapes(), "ip_adapter": ip_adapter_shapes()}


def adapter_state_dict(seed=0):
    """The nested dict with seeded weights (norm scales ones, latents N(0, 1/D) as the resampler initialises them)."""
    return nested_adapter(instantid_shapes(), seed, latents=(QUERIES, DIM))


def write_adapter(path, seed=0):
    """InstantX/InstantID ip-adapter.bin: torch.save of {"image_proj": ..., "ip_adapter": ...}."""
    return save_nested(adapter_state_dict(seed), path)


def identitynet_config():
    """The release's ControlNetModel config at the tiny SDXL's widths (same block types and depths)."""
    widths = tuple(MODEL_CHANNELS * m for m in tiny_configs.SDXL_UNET["channel_mult"])
    return {**REAL_IDENTITYNET_CONFIG, "block_out_channels": widths, "cross_attention_dim": CONTEXT,
            "attention_head_dim": tuple(w // UNET_HEAD_DIM for w in widths),
            "projection_class_embeddings_input_dim": ADM}


def identitynet_state_dict(seed=0, config=None):
    """diffusers ControlNetModel weights (every parameter seeded, so the zero convs are not zero)."""
    from diffusers import ControlNetModel  # only the world builder and its tests need diffusers

    net = ControlNetModel(**(config or identitynet_config()))
    init_module(net, seed)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def write_identitynet(path, seed=0):
    """diffusion_pytorch_model.safetensors as ControlNetModel.save_pretrained writes it, float16 like the release."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half() for k, v in identitynet_state_dict(seed).items()}, str(path), metadata={"format": "pt"})
    return path


def write_all(models, seed=0):
    """models/instantid/ip-adapter.bin and models/controlnet/instantid/diffusion_pytorch_model.safetensors."""
    models = pathlib.Path(models)
    return {ADAPTER_FILE: write_adapter(models / "instantid" / ADAPTER_FILE, seed),
            CONTROLNET_FILE: write_identitynet(models / "controlnet" / CONTROLNET_FILE, seed + 10)}
