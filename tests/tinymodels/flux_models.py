"""A tiny Flux.1-dev (checkpoint, LoRA, XLabs ControlNet) built from ComfyUI's own classes."""
import dataclasses

import torch

import comfy.ldm.flux.controlnet  # noqa: E402  (import conftest first: it selects the CPU)
import comfy.ldm.flux.model  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.ops  # noqa: E402
from host_support import TinyFlux, TinyFluxClipModel, tiny_configs  # noqa: E402
from tinymodels.extras import save_tensors, write_all_in_one  # noqa: E402
from tinymodels.weights import init_module, random_tensors  # noqa: E402

LORA_RANK = 4
CONTROLNET_DEPTH = 2  # XLabs' Flux ControlNets have two double blocks and no single blocks
TAEF1_SCALE, TAEF1_SHIFT = 0.3611, 0.1159  # what ComfyUI's VAELoader sets on taef1


def model_config(**overrides):
    """The tiny supported-model config ComfyUI detects for the tiny Flux files."""
    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    newer = {"txt_ids_dims": []} if "txt_ids_dims" in fields else {}  # what newer ComfyUI detects for Flux.1
    return TinyFlux({**tiny_configs.FLUX_DIT, **newer, **overrides})


def _init(module, seed):
    """init_module, then RMSNorm scales to ones (init_module zeroes non-weight norm parameters)."""
    init_module(module, seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("_norm.scale"):
                p.fill_(1.0)
    return module


def tiny_flux(seed=0):
    """A ModelPatcher around a tiny Flux.1-dev with the real 19 double / 38 single blocks."""
    model = model_config().get_model({}, device="cpu")
    _init(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def released_keys(sd):
    """Key names as BFL / XLabs release them: QK-norm scales are `.scale` (newer ComfyUI calls them `.weight`)."""
    return {k[:-len("weight")] + "scale" if k.endswith(("query_norm.weight", "key_norm.weight")) else k: v
            for k, v in sd.items()}


def write_flux_checkpoint(path, seed=0):
    """One file with the DiT, tiny CLIP-L + T5 and a 16-channel taef1, under ComfyUI's Flux key prefixes."""
    dit = released_keys(tiny_flux(seed).model.diffusion_model.state_dict())
    return write_all_in_one(path, dit, TinyFluxClipModel(dtype=torch.float32), "vae", TAEF1_SCALE, TAEF1_SHIFT,
                            seed)


def lora_shapes():
    """{kohya (sd-scripts Flux) module name: (out, in)} over the attention and single-block linears and CLIP-L."""
    h, depth, single = (tiny_configs.FLUX_DIT[k] for k in ("hidden_size", "depth", "depth_single_blocks"))
    mlp = int(h * tiny_configs.FLUX_DIT["mlp_ratio"])
    shapes = {}
    for i in range(depth):
        for stream in ("img", "txt"):
            shapes[f"lora_unet_double_blocks_{i}_{stream}_attn_qkv"] = (3 * h, h)
            shapes[f"lora_unet_double_blocks_{i}_{stream}_attn_proj"] = (h, h)
    for i in range(single):
        shapes[f"lora_unet_single_blocks_{i}_linear1"] = (3 * h + mlp, h)
        shapes[f"lora_unet_single_blocks_{i}_linear2"] = (h, h + mlp)
    text = tiny_configs.FLUX_CLIP_L
    for layer in range(text["num_hidden_layers"]):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"lora_te1_text_model_encoder_layers_{layer}_self_attn_{proj}"] = (text["hidden_size"],) * 2
    return shapes


def write_flux_lora(path, seed=0):
    """A kohya-format Flux LoRA (lora_down / lora_up / alpha) that ComfyUI's LoraLoader maps onto the tiny Flux."""
    modules = lora_shapes()
    shapes = {}
    for name, (out_f, in_f) in modules.items():
        shapes[f"{name}.lora_down.weight"] = (LORA_RANK, in_f)
        shapes[f"{name}.lora_up.weight"] = (out_f, LORA_RANK)
    sd = random_tensors(shapes, seed)
    sd.update({f"{name}.alpha": torch.tensor(float(LORA_RANK)) for name in modules})
    return save_tensors(sd, path)


def write_flux_controlnet(path, seed=0):
    """An XLabs-format Flux ControlNet (double_blocks, controlnet_blocks, input_hint_block, pos_embed_input)."""
    config = model_config(depth=CONTROLNET_DEPTH, depth_single_blocks=0).unet_config
    net = comfy.ldm.flux.controlnet.ControlNetFlux(operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                                   device="cpu", **config)
    return save_tensors(released_keys(_init(net, seed).state_dict()), path)


def write_siglip(path, seed=0):
    """The tiny SigLIP-384 as transformers saves it (vision_model.*, with the attention-pooling head)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = tiny_configs.CLIP_VISION["siglip-384"]
    config = SiglipVisionConfig(**{k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                       "num_attention_heads", "image_size", "patch_size",
                                                       "hidden_act", "layer_norm_eps", "num_channels")})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SiglipVisionModel(config).eval()
    # transformers 5 drops the "vision_model." prefix from SiglipVisionModel's own state dict; the files have it.
    sd = {k if k.startswith("vision_model.") else f"vision_model.{k}": v for k, v in model.state_dict().items()}
    return save_tensors(sd, path)
