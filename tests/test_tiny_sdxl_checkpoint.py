"""The tiny SDXL base all-in-one checkpoint (sd_xl_base_1.0.safetensors): the real file's key layout, detected by
ComfyUI as the tiny SDXL, encoding, sampling and decoding in-process and as a graph in the test server."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import comfy.model_detection
import comfy.ops
import comfy.supported_models
import nodes
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
from graphs import sdxl_txt2img
from host_support import TinySDXL, tiny_configs
from tinymodels import comfy_models
from tinymodels.world import CHECKPOINT_SDXL

XL = tiny_configs.SDXL_UNET
L, G = tiny_configs.SDXL_CLIP_L, tiny_configs.SDXL_CLIP_G
CONTEXT, POOLED = XL["context_dim"], G["hidden_size"]
CLIP_L = "conditioner.embedders.0.transformer.text_model."
CLIP_G = "conditioner.embedders.1.model."
# The top-level groups of Stability's sd_xl_base_1.0.safetensors (2515 keys: UNet 1680, CLIP-L 12 * 16 + 5,
# OpenCLIP bigG 32 * 12 + 6, VAE 248).
PREFIXES = {"model.diffusion_model", "conditioner.embedders.0.transformer.text_model", "conditioner.embedders.1.model",
            "first_stage_model"}
CLIP_L_LAYER = [f"{m}.{p}" for m in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2", "self_attn.q_proj",
                                     "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")
                for p in ("weight", "bias")]
CLIP_L_TOP = ["embeddings.position_embedding.weight", "embeddings.position_ids", "embeddings.token_embedding.weight",
              "final_layer_norm.weight", "final_layer_norm.bias"]
CLIP_G_LAYER = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                *[f"{m}.{p}" for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for p in ("weight", "bias")]]
CLIP_G_TOP = ["ln_final.weight", "ln_final.bias", "logit_scale", "positional_embedding", "text_projection",
              "token_embedding.weight"]


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: one thread is far faster here


@pytest.fixture(scope="module")
def shapes(world):
    with safe_open(str(world / "models" / "checkpoints" / CHECKPOINT_SDXL), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _real_sdxl_unet_keys():
    """The key names of a real-size SDXL base UNet (built on the meta device: shapes only, no memory)."""
    real = {**XL, "model_channels": 320, "context_dim": 2048, "adm_in_channels": 2816, "num_head_channels": 64}
    unet = UNetModel(**real, device="meta", operations=comfy.ops.disable_weight_init)
    return unet.state_dict()


def test_key_layout_is_the_real_sdxl_base_file(shapes):
    assert {p for p in PREFIXES if any(k.startswith(p + ".") for k in shapes)} == PREFIXES
    assert all(k.startswith(tuple(p + "." for p in PREFIXES)) for k in shapes)
    unet = {k[len("model.diffusion_model."):]: s for k, s in shapes.items() if k.startswith("model.diffusion_model.")}
    real = _real_sdxl_unet_keys()
    assert set(unet) == set(real) and len(unet) == 1680  # the real block table, every key
    mc = XL["model_channels"]
    assert unet["input_blocks.0.0.weight"] == (mc, 4, 3, 3) and unet["out.2.weight"] == (4, mc, 3, 3)
    assert unet["label_emb.0.0.weight"] == (4 * mc, POOLED + 6 * 256) == (4 * mc, XL["adm_in_channels"])
    assert unet["input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (4 * mc, CONTEXT)
    assert unet["middle_block.1.transformer_blocks.9.attn2.to_v.weight"] == (4 * mc, CONTEXT)
    assert unet["output_blocks.5.1.transformer_blocks.1.attn2.to_k.weight"] == (2 * mc, CONTEXT)
    clip_l = {k[len(CLIP_L):]: s for k, s in shapes.items() if k.startswith(CLIP_L)}
    layers = L["num_hidden_layers"]
    assert set(clip_l) == {*CLIP_L_TOP, *(f"encoder.layers.{i}.{k}" for i in range(layers) for k in CLIP_L_LAYER)}
    clip_g = {k[len(CLIP_G):]: s for k, s in shapes.items() if k.startswith(CLIP_G)}
    layers = G["num_hidden_layers"]
    assert set(clip_g) == {*CLIP_G_TOP,
                           *(f"transformer.resblocks.{i}.{k}" for i in range(layers) for k in CLIP_G_LAYER)}
    wl, wg = L["hidden_size"], G["hidden_size"]
    assert wl + wg == CONTEXT and (wl, wg) == (32, 48)
    assert clip_l["embeddings.token_embedding.weight"] == (49408, wl) and clip_l["embeddings.position_ids"] == (1, 77)
    assert clip_l["encoder.layers.0.mlp.fc1.weight"] == (L["intermediate_size"], wl)
    assert clip_g["token_embedding.weight"] == (49408, wg) and clip_g["positional_embedding"] == (77, wg)
    assert clip_g["transformer.resblocks.0.attn.in_proj_weight"] == (3 * wg, wg)
    assert clip_g["text_projection"] == (wg, POOLED) and clip_g["logit_scale"] == ()
    # A tiny TAESD as the VAE (as the tiny SD1.5 file): 4 latent channels in, RGB out.
    assert shapes["first_stage_model.taesd_decoder.1.weight"][1] == 4
    assert shapes["first_stage_model.taesd_encoder.14.weight"][0] == 4


def test_only_the_tiny_shapes_detect_as_tiny_sdxl(shapes):
    real = _real_sdxl_unet_keys()
    config = comfy.model_detection.detect_unet_config(real, "")
    assert type(comfy.model_detection.model_config_from_unet_config(config, real)) is comfy.supported_models.SDXL
    tiny = {k[len("model.diffusion_model."):]: torch.empty(s, device="meta") for k, s in shapes.items()
            if k.startswith("model.diffusion_model.")}
    config = comfy.model_detection.detect_unet_config(tiny, "")
    assert type(comfy.model_detection.model_config_from_unet_config(config, tiny)) is TinySDXL


def test_checkpoint_loader_simple_detects_the_tiny_sdxl(world_paths, caplog):
    with caplog.at_level(logging.WARNING):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_SDXL)[:3]
    assert "missing" not in caplog.text.lower() and "no clip" not in caplog.text.lower()
    config = model.model.model_config
    assert type(config) is TinySDXL and isinstance(config, comfy.supported_models.SDXL)
    assert type(model.model).__name__ == "SDXL" and model.model.model_type.name == "EPS"
    assert type(model.model.latent_format).__name__ == "SDXL"
    unet = model.model.diffusion_model
    middle = unet.middle_block[1].transformer_blocks
    assert unet.label_emb[0][0].in_features == XL["adm_in_channels"] and middle[0].attn2.to_k.in_features == CONTEXT
    assert len(middle) == 10 and middle[0].attn2.heads == 4 * XL["model_channels"] // 16  # heads of 16 channels
    assert type(clip.cond_stage_model).__name__ == "TinySDXLClipModel"
    assert vae.latent_channels == 4 and vae.first_stage_model.vae_scale.item() == pytest.approx(0.13025)
    image = vae.decode(torch.randn(1, 4, 8, 8))
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all() and image.std() > 0.01


def test_text_encoding_gives_sdxl_conditioning(world_paths, sdxl_ckpt):
    model, positive, negative = sdxl_ckpt
    for cond in (positive, negative):
        assert len(cond) == 1 and cond[0][0].shape == (1, 77, CONTEXT)
        assert cond[0][1]["pooled_output"].shape == (1, POOLED)
        assert torch.isfinite(cond[0][0]).all() and torch.isfinite(cond[0][1]["pooled_output"]).all()
    wl = L["hidden_size"]
    for part in (slice(0, wl), slice(wl, CONTEXT)):  # CLIP-L then CLIP-G penultimate states, both prompt-dependent
        assert (positive[0][0][..., part] - negative[0][0][..., part]).abs().max() > 1e-3
    assert (positive[0][1]["pooled_output"] - negative[0][1]["pooled_output"]).abs().max() > 1e-3
    clip = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_SDXL)[1]
    (encoded,) = nodes.CLIPTextEncode().encode(clip, "a photo of a cat")
    assert torch.allclose(encoded[0][0], positive[0][0]) and encoded[0][1]["pooled_output"].shape == (1, POOLED)
    # The pooled output plus six 256-wide size embeddings is the UNet's adm input.
    adm = model.model.encode_adm(pooled_output=positive[0][1]["pooled_output"], width=64, height=64)
    assert adm.shape == (1, XL["adm_in_channels"])


def _sample(model, positive, negative, seed=3, steps=2):
    (latent,) = nodes.EmptyLatentImage().generate(64, 64, 1)
    assert latent["samples"].shape == (1, 4, 8, 8)
    return nodes.common_ksampler(model, seed, steps, 5.0, "euler", "normal", positive, negative, latent)[0]["samples"]


def test_samples_and_decodes_in_process(world_paths, sdxl_ckpt):
    model, positive, negative = sdxl_ckpt
    out = _sample(model, positive, negative)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all() and out.std() > 0.1
    assert torch.equal(out, _sample(model, positive, negative))  # deterministic
    assert not torch.allclose(out, _sample(model, negative, positive))  # the conditioning reaches the UNet
    vae = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_SDXL)[2]
    (image,) = nodes.VAEDecode().decode(vae, {"samples": out})
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_write_checkpoint_rejects_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match="sd15"):
        comfy_models.write_checkpoint(tmp_path / "x.safetensors", "sd2")


def test_sdxl_graph_runs_in_the_server(comfy_server):
    graph = sdxl_txt2img(prefix="e2e_sdxl")
    assert graph["ckpt"]["inputs"]["ckpt_name"] == CHECKPOINT_SDXL == "sd_xl_base_1.0.safetensors"
    assert (graph["sampler"]["inputs"]["cfg"], graph["sampler"]["inputs"]["sampler_name"],
            graph["sampler"]["inputs"]["scheduler"]) == (5.0, "euler", "normal")
    entry = comfy_server.run(graph)
    assert entry["status"]["status_str"] == "success", (entry["status"], comfy_server.log_tail())
    paths = comfy_server.output_images(entry)
    assert len(paths) == 1 and np.asarray(Image.open(paths[0])).shape == (64, 64, 3)
    assert np.asarray(Image.open(paths[0])).std() > 1.0
