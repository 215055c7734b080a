"""Test host only: teaches ComfyUI 0.3.x to load the tiny test checkpoints (SD1.5, SDXL, Flux, SD3.5),
CLIP-vision files and diffusers-format SDXL ControlNets (the tiny InstantID IdentityNet).

Linked into custom_nodes/ by scripts/setup_host.sh; never part of the published pack. It adds model
configs matched by the tiny shapes (real files never match them) and registers stand-ins for the other packs' nodes
that IPAdapter_plus examples use (essentials.py, face_analysis.py, kolors_mz.py: same ids and inputs, test only).
"""
import json
import logging
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_configs  # noqa: E402

import comfy.clip_vision  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.sdxl_clip  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.supported_models_base  # noqa: E402
import comfy.text_encoders.flux  # noqa: E402
import comfy.text_encoders.sd3_clip  # noqa: E402
import torch  # noqa: E402


class TinySD1ClipModel(comfy.sd1_clip.SD1ClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
        model_options = {**model_options, "clip_l_model_config": dict(tiny_configs.SD15_TEXT)}
        super().__init__(device=device, dtype=dtype, model_options=model_options, **kwargs)


class TinySD15(comfy.supported_models.SD15):
    unet_config = {
        "context_dim": tiny_configs.SD15_UNET["context_dim"],
        "model_channels": tiny_configs.SD15_UNET["model_channels"],
        "use_linear_in_transformer": False,
        "adm_in_channels": None,
        "use_temporal_attention": False,
    }
    unet_extra_config = dict(tiny_configs.SD15_HEADS)

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1ClipModel)


class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
    """SDXL's CLIP-L + OpenCLIP bigG pair at tiny widths (penultimate states concatenated, CLIP-G pooled)."""

    def __init__(self, device="cpu", dtype=None, model_options={}):
        model_options = {**model_options, "clip_l_model_config": dict(tiny_configs.SDXL_CLIP_L),
                         "clip_g_model_config": dict(tiny_configs.SDXL_CLIP_G)}
        super().__init__(device=device, dtype=dtype, model_options=model_options)


class TinySDXL(comfy.supported_models.SDXL):
    unet_config = {
        "model_channels": tiny_configs.SDXL_UNET["model_channels"],
        "use_linear_in_transformer": True,
        "transformer_depth": tiny_configs.SDXL_UNET["transformer_depth"],
        "context_dim": tiny_configs.SDXL_UNET["context_dim"],
        "adm_in_channels": tiny_configs.SDXL_UNET["adm_in_channels"],
        "use_temporal_attention": False,
    }
    unet_extra_config = dict(tiny_configs.SDXL_HEADS)

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel)


class TinyFluxClipModel(comfy.text_encoders.flux.FluxClipModel):
    def __init__(self, device="cpu", dtype=None, model_options={}):
        model_options = {**model_options, "clip_l_model_config": dict(tiny_configs.FLUX_CLIP_L),
                         "t5xxl_model_config": dict(tiny_configs.FLUX_T5)}
        super().__init__(device=device, dtype=dtype, model_options=model_options)


class TinyFlux(comfy.supported_models.Flux):
    # Detection reads widths from the file but assumes 24 heads and axes [16, 56, 56]; the extra config fixes those.
    unet_config = {
        "image_model": "flux",
        "guidance_embed": True,
        "hidden_size": tiny_configs.FLUX_DIT["hidden_size"],
        "context_in_dim": tiny_configs.FLUX_DIT["context_in_dim"],
    }
    unet_extra_config = {"num_heads": tiny_configs.FLUX_DIT["num_heads"], "axes_dim": tiny_configs.FLUX_DIT["axes_dim"]}

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.text_encoders.flux.FluxTokenizer, TinyFluxClipModel)


class TinySD3ClipModel(comfy.text_encoders.sd3_clip.SD3ClipModel):
    """CLIP-L + CLIP-G + T5 at tiny widths; core pads CLIP-L+G to a hard-coded 4096, here to the tiny T5 width."""

    def __init__(self, device="cpu", dtype=None, model_options={}):
        model_options = {**model_options, "clip_l_model_config": dict(tiny_configs.SD3_CLIP_L),
                         "clip_g_model_config": dict(tiny_configs.SD3_CLIP_G),
                         "t5xxl_model_config": dict(tiny_configs.SD3_T5)}
        super().__init__(clip_l=True, clip_g=True, t5=True, device=device, dtype=dtype, model_options=model_options)

    def encode_token_weights(self, token_weight_pairs):
        l_out, l_pooled = self.clip_l.encode_token_weights(token_weight_pairs["l"])[:2]
        g_out, g_pooled = self.clip_g.encode_token_weights(token_weight_pairs["g"])[:2]
        cut = min(l_out.shape[1], g_out.shape[1])
        lg_out = torch.cat([l_out[:, :cut], g_out[:, :cut]], dim=-1)
        lg_out = torch.nn.functional.pad(lg_out, (0, tiny_configs.SD3_CONTEXT - lg_out.shape[-1]))
        t5_out = self.t5xxl.encode_token_weights(token_weight_pairs["t5xxl"])[0]
        return torch.cat([lg_out, t5_out], dim=-2), torch.cat((l_pooled, g_pooled), dim=-1), {}


class TinySD35(comfy.supported_models.SD3):
    # Detection reads depth = hidden // 64 (2 here) and makes as many blocks; num_blocks restores the real 38.
    unet_config = {
        "in_channels": 16,
        "pos_embed_scaling_factor": None,
        "depth": tiny_configs.SD3_MMDIT["depth"],
        "adm_in_channels": tiny_configs.SD3_MMDIT["adm_in_channels"],
        "context_embedder_config": tiny_configs.SD3_MMDIT["context_embedder_config"],
    }
    unet_extra_config = {"num_blocks": tiny_configs.SD3_MMDIT["num_blocks"]}

    def clip_target(self, state_dict={}):
        return comfy.supported_models_base.ClipTarget(comfy.text_encoders.sd3_clip.SD3Tokenizer, TinySD3ClipModel)


def _tiny_clip_vision_config(sd):
    """Return a config for a tiny CLIP-vision state dict, or None for anything else."""
    key = "vision_model.encoder.layers.0.layer_norm1.weight"
    if key not in sd or sd[key].shape[0] > 64:
        return None
    positions = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
    for config in tiny_configs.CLIP_VISION.values():
        class_token = config["model_type"] != "siglip_vision_model"
        tokens = (config["image_size"] // config["patch_size"]) ** 2 + class_token
        if config["hidden_size"] == sd[key].shape[0] and tokens == positions:
            return config
    return None


_core_load_clipvision_from_sd = comfy.clip_vision.load_clipvision_from_sd


def load_clipvision_from_sd(sd, prefix="", convert_keys=False):
    config = _tiny_clip_vision_config(sd)
    if config is None:
        return _core_load_clipvision_from_sd(sd, prefix=prefix, convert_keys=convert_keys)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    try:
        clip = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        os.unlink(f.name)
    missing, _ = clip.load_sd(sd)
    if missing:
        raise RuntimeError(f"tiny clip vision is missing keys: {missing}")
    return clip


def _diffusers_depths(sd):
    """(transformer depth per down-block layer, middle depth, context width) of a diffusers UNet / ControlNet,
    counted as core's detection counts them."""
    count = comfy.model_detection.count_blocks
    depths, context = [], None
    for i in range(count(sd, "down_blocks.{}")):
        attentions = count(sd, f"down_blocks.{i}.attentions.{{}}")
        if attentions == 0:
            depths += [0] * count(sd, f"down_blocks.{i}.resnets.{{}}")
        for a in range(attentions):
            depth = count(sd, f"down_blocks.{i}.attentions.{a}.transformer_blocks.{{}}")
            depths.append(depth)
            if depth:
                context = sd[f"down_blocks.{i}.attentions.{a}.transformer_blocks.0.attn2.to_k.weight"].shape[1]
    return depths, count(sd, "mid_block.attentions.0.transformer_blocks.{}"), context


def tiny_sdxl_diffusers_config(sd, dtype=None):
    """The tiny SDXL unet config for a diffusers-format state dict of its shapes (an IdentityNet), else None."""
    xl = tiny_configs.SDXL_UNET
    conv_in, add = sd.get("conv_in.weight"), sd.get("add_embedding.linear_1.weight")
    if conv_in is None or add is None:
        return None
    found = (tuple(conv_in.shape[:2]), add.shape[1], *_diffusers_depths(sd))
    wanted = ((xl["model_channels"], xl["in_channels"]), xl["adm_in_channels"], xl["transformer_depth"],
              xl["transformer_depth_middle"], xl["context_dim"])
    if found != wanted:
        return None
    config = {**xl, **tiny_configs.SDXL_HEADS, "use_checkpoint": False, "dtype": dtype}
    return comfy.model_detection.convert_config(config)


_core_unet_config_from_diffusers_unet = comfy.model_detection.unet_config_from_diffusers_unet


def unet_config_from_diffusers_unet(state_dict, dtype=None):
    """Core's detection first (it matches fixed real-size configs); the tiny SDXL only when none matched."""
    config = _core_unet_config_from_diffusers_unet(state_dict, dtype=dtype)
    return config if config is not None else tiny_sdxl_diffusers_config(state_dict, dtype)


if TinySD15 not in comfy.supported_models.models:
    comfy.supported_models.models[:0] = [TinySD15, TinySDXL, TinyFlux, TinySD35]
    comfy.clip_vision.load_clipvision_from_sd = load_clipvision_from_sd
    comfy.model_detection.unet_config_from_diffusers_unet = unet_config_from_diffusers_unet
    logging.info("ipadapter-kit test support: tiny model configs registered")

import essentials  # noqa: E402
import face_analysis  # noqa: E402
import kolors_mz  # noqa: E402

NODE_CLASS_MAPPINGS = {**essentials.NODE_CLASS_MAPPINGS, **face_analysis.NODE_CLASS_MAPPINGS,
                       **kolors_mz.NODE_CLASS_MAPPINGS}
