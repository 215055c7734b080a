"""A tiny ControlNet and LoRA for the tiny SD1.5 checkpoint, in the file formats users download."""
import pathlib

import torch
from safetensors.torch import save_file

import comfy.cldm.cldm  # noqa: E402  (import conftest first: it selects the CPU)
import comfy.ops  # noqa: E402
import comfy.taesd.taesd  # noqa: E402
from host_support import tiny_configs  # noqa: E402
from tinymodels.comfy_models import model_config  # noqa: E402
from tinymodels.weights import init_module, random_tensors  # noqa: E402

LORA_RANK = 4
# Diffusers names of the SD1.5 attention blocks and their widths at model_channels 32.
_MC = tiny_configs.SD15_UNET["model_channels"]
SD15_ATTENTIONS = (
    [(f"down_blocks_{b}_attentions_{a}", _MC * m) for b, m in enumerate((1, 2, 4)) for a in range(2)]
    + [("mid_block_attentions_0", _MC * 4)]
    + [(f"up_blocks_{b}_attentions_{a}", _MC * m) for b, m in ((1, 4), (2, 2), (3, 1)) for a in range(3)]
)


def write_all_in_one(path, dit_state, clip, vae_prefix, vae_scale, vae_shift, seed):
    """An all-in-one checkpoint: a diffusion model's state, a tiny text-encoder pair and a 16-channel TAESD VAE."""
    sd = {f"model.diffusion_model.{k}": v for k, v in dit_state.items()}
    sd.update({f"text_encoders.{k}": v for k, v in init_module(clip, seed + 1).state_dict().items()})
    vae = init_module(comfy.taesd.taesd.TAESD(latent_channels=16), seed + 2)
    with torch.no_grad():
        vae.vae_scale.fill_(vae_scale)
        vae.vae_shift.fill_(vae_shift)
    sd.update({f"{vae_prefix}.{k}": v for k, v in vae.state_dict().items()})
    return save_tensors(sd, path)


def save_tensors(sd, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def write_controlnet(path, seed=0):
    """An original-format (control_model.*) ControlNet for the tiny SD1.5, with non-zero zero-convs."""
    config = dict(model_config("sd15").unet_config)
    config.pop("out_channels")
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="cpu",
                                     operations=comfy.ops.disable_weight_init, **config)
    init_module(net, seed)
    return save_tensors({f"control_model.{k}": v for k, v in net.state_dict().items()}, path)


def lora_shapes():
    """{kohya module name: (out, in)} for the UNet attention projections and text-encoder self-attention."""
    ctx, text = tiny_configs.SD15_UNET["context_dim"], tiny_configs.SD15_TEXT
    shapes = {}
    for block, c in SD15_ATTENTIONS:
        prefix = f"lora_unet_{block}_transformer_blocks_0"
        for attn, kv_in in (("attn1", c), ("attn2", ctx)):
            shapes.update({f"{prefix}_{attn}_to_q": (c, c), f"{prefix}_{attn}_to_k": (c, kv_in),
                           f"{prefix}_{attn}_to_v": (c, kv_in), f"{prefix}_{attn}_to_out_0": (c, c)})
    for layer in range(text["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"lora_te_text_model_encoder_layers_{layer}_self_attn_{proj}"] = (text["hidden_size"],) * 2
    return shapes


def write_lora(path, seed=0, unet_only=False):
    """A kohya-format LoRA (lora_down / lora_up / alpha) over the tiny SD1.5 UNet (and text encoder)."""
    modules = {n: s for n, s in lora_shapes().items() if not unet_only or n.startswith("lora_unet_")}
    shapes = {}
    for name, (out_f, in_f) in modules.items():
        shapes[f"{name}.lora_down.weight"] = (LORA_RANK, in_f)
        shapes[f"{name}.lora_up.weight"] = (out_f, LORA_RANK)
    sd = random_tensors(shapes, seed)
    sd.update({f"{name}.alpha": torch.tensor(float(LORA_RANK) / 2) for name in modules})
    return save_tensors(sd, path)
