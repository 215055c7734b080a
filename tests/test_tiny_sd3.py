"""The tiny SD3.5 Large world: real 38 joint blocks, real file formats, runnable through ComfyUI's own loaders,
and a tiny InstantX SD3.5-Large-IP-Adapter in the released layout (proved against diffusers' loader)."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import comfy.model_detection
import comfy.sample
import comfy.supported_models
import nodes
from graphs import sd35_txt2img
from host_support import TinySD35, tiny_configs
from tinymodels import sd3_adapter_files, sd3_models
from tinymodels.world import CHECKPOINT_SD35, SD35_IPADAPTER

H, C, P = tiny_configs.SD3_HIDDEN, tiny_configs.SD3_CONTEXT, tiny_configs.SD3_MMDIT["adm_in_channels"]
BLOCKS = 38


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny matmuls: one thread is far faster here


def _sample(model, positive, negative, steps=2, cfg=4.0):
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    return nodes.common_ksampler(model, 3, steps, cfg, "euler", "sgm_uniform", positive, negative,
                                 latent)[0]["samples"]


def test_tiny_sd35_samples_in_process():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 8, 8, generator=gen)
    pos = [[torch.randn(1, 154, C, generator=gen), {"pooled_output": torch.randn(1, P, generator=gen)}]]
    neg = [[torch.randn(1, 154, C, generator=gen), {"pooled_output": torch.randn(1, P, generator=gen)}]]
    out = comfy.sample.sample(sd3_models.tiny_sd35(), noise, 2, 4.0, "euler", "sgm_uniform", pos, neg,
                              torch.zeros_like(noise), seed=0, disable_pbar=True)
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all() and out.std() > 0.1


def test_real_block_count_and_every_dit_replace_is_called(sd35):
    model, positive, negative = sd35
    dit = model.model.diffusion_model
    assert len(dit.joint_blocks) == BLOCKS == sd3_adapter_files.BLOCKS
    assert (dit.hidden_size, dit.num_heads, dit.joint_blocks[0].x_block.attn.head_dim) == (H, 2, 64)
    assert dit.joint_blocks[-1].context_block.pre_only and not dit.joint_blocks[-2].context_block.pre_only
    assert dit.context_embedder.weight.shape == (H, C) and dit.y_embedder.mlp[0].weight.shape == (H, P)
    seen, timesteps = [], []

    def pass_through(args, extra):
        options = args["transformer_options"]
        seen.append((sorted(args), sorted(extra), sorted(options), options["sigmas"].clone(),
                     list(options["cond_or_uncond"]), args["img"].shape, args["txt"].shape, args["vec"].shape))
        return extra["original_block"](args)

    patched = model.clone()
    keys = [("double_block", i) for i in range(BLOCKS)]
    for block, i in keys:
        patched.set_model_patch_replace(pass_through, "dit", block, i)
    assert set(patched.model_options["transformer_options"]["patches_replace"]["dit"]) == set(keys)
    hook = dit.register_forward_pre_hook(lambda module, args: timesteps.append(args[1].clone()))
    try:
        out = _sample(patched, positive, negative, steps=1)
    finally:
        hook.remove()
    assert len(seen) == BLOCKS and len(timesteps) == 1  # one batched cond + uncond call, every block replaced
    args_keys, extra_keys, option_keys, sigmas, cond_or_uncond, img, txt, vec = seen[0]
    assert args_keys == ["img", "transformer_options", "txt", "vec"] and extra_keys == ["original_block"]
    # No block_index / block_type here (Flux sets them); the timestep is only in "sigmas" (vec = t_emb + y_emb).
    assert {"sigmas", "sample_sigmas", "cond_or_uncond", "uuids", "patches_replace"} <= set(option_keys)
    assert "block_index" not in option_keys and "timestep" not in option_keys
    assert cond_or_uncond == [1, 0] and img == (2, 16, H) and txt == (2, 154, H) and vec == (2, H)
    # The MMDiT (and the IP-Adapter resampler) sees t = 1000 * sigma for SD3's discrete-flow sampling.
    assert torch.allclose(timesteps[0], sigmas.expand(2) * 1000)
    assert torch.allclose(model.model.model_sampling.timestep(sigmas), sigmas * 1000)
    assert torch.equal(out, _sample(model, positive, negative, steps=1))


def test_checkpoint_loads_through_checkpoint_loader_simple(world_paths, caplog):
    with caplog.at_level(logging.WARNING):
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_SD35)[:3]
    assert "clip missing" not in caplog.text and "missing" not in caplog.text.lower()
    assert type(model.model.model_config).__name__ == "TinySD35" and model.model.model_config.unet_config[
        "num_blocks"] == BLOCKS
    assert type(model.model).__name__ == "SD3" and model.model.model_sampling.shift == 3.0
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a cat"), return_pooled=True)
    assert cond.shape == (1, 154, C) and pooled.shape == (1, P)  # 77 CLIP-L+G tokens, then 77 T5 tokens
    widths = tiny_configs.SD3_CLIP_L["hidden_size"] + tiny_configs.SD3_CLIP_G["hidden_size"]
    assert cond[:, :77, widths:].abs().max() == 0 and cond[:, :77, :widths].abs().max() > 0  # zero-padded as core
    image = vae.decode(torch.randn(1, 16, 8, 8))
    assert image.shape == (1, 64, 64, 3) and image.std() > 0.01
    assert vae.first_stage_model.vae_scale.item() == pytest.approx(1.5305)


def test_only_the_tiny_shapes_match_tiny_sd35():
    real = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 38, "input_size": None,
            "adm_in_channels": 2048, "num_patches": 36864, "pos_embed_max_size": 192, "qk_norm": "rms",
            "context_embedder_config": {"target": "torch.nn.Linear",
                                        "params": {"in_features": 4096, "out_features": 2432}},
            "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}
    medium = {**real, "depth": 24, "x_block_self_attn_layers": list(range(13)),
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 1536}}}
    for config in (real, medium):
        assert type(comfy.model_detection.model_config_from_unet_config(config)) is comfy.supported_models.SD3
    tiny = {k: v for k, v in tiny_configs.SD3_MMDIT.items() if k != "num_blocks"}  # what detection reads
    assert type(comfy.model_detection.model_config_from_unet_config(tiny)) is TinySD35


def test_sd35_graph_runs_in_the_server(comfy_server):
    entry = comfy_server.run(sd35_txt2img(prefix="e2e_sd35"))
    assert entry["status"]["status_str"] == "success", (entry["status"], comfy_server.log_tail())
    paths = comfy_server.output_images(entry)
    assert len(paths) == 1 and np.asarray(Image.open(paths[0])).shape == (64, 64, 3)
    assert np.asarray(Image.open(paths[0])).std() > 1.0


def _adapter(world):
    return torch.load(world / "models" / "ipadapter" / SD35_IPADAPTER, weights_only=True)


def test_instantx_sd35_adapter_file(world):
    nested = _adapter(world)
    assert set(nested) == {"image_proj", "ip_adapter"}
    proj = {k: tuple(v.shape) for k, v in nested["image_proj"].items()}
    top = {"latents": (1, 64, 96), "proj_in.weight": (96, 44), "proj_in.bias": (96,), "proj_out.weight": (H, 96),
           "proj_out.bias": (H,), "norm_out.weight": (H,), "norm_out.bias": (H,),
           "time_embedding.linear_1.weight": (96, 32), "time_embedding.linear_1.bias": (96,),
           "time_embedding.linear_2.weight": (96, 96), "time_embedding.linear_2.bias": (96,)}
    layer = {"0.norm1.weight": (96,), "0.norm1.bias": (96,), "0.norm2.weight": (96,), "0.norm2.bias": (96,),
             "0.to_q.weight": (128, 96), "0.to_kv.weight": (256, 96), "0.to_out.weight": (96, 128),
             "1.0.weight": (96,), "1.0.bias": (96,), "1.1.weight": (384, 96), "1.3.weight": (96, 384),
             "2.1.weight": (384, 96), "2.1.bias": (384,)}
    assert proj == {**top, **{f"layers.{i}.{k}": s for i in range(4) for k, s in layer.items()}}
    ip = {k: tuple(v.shape) for k, v in nested["ip_adapter"].items()}
    block = {"norm_ip.linear.weight": (2 * H, 96), "norm_ip.linear.bias": (2 * H,), "to_k_ip.weight": (H, H),
             "to_v_ip.weight": (H, H), "norm_q.weight": (64,), "norm_k.weight": (64,), "norm_ip_k.weight": (64,)}
    assert ip == {f"{n}.{k}": s for n in range(BLOCKS) for k, s in block.items()}
    assert all(nested["ip_adapter"][f"{n}.{k}"].eq(1).all() for n in (0, 37) for k in ("norm_q.weight",
                                                                                        "norm_ip_k.weight"))


def _diffusers_transformer():
    """A tiny diffusers SD3Transformer2DModel of the tiny MMDiT's shape (38 layers, 2 heads of 64)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=16, num_layers=BLOCKS,
                                 attention_head_dim=64, num_attention_heads=2, joint_attention_dim=C,
                                 caption_projection_dim=H, pooled_projection_dim=P, out_channels=16,
                                 pos_embed_max_size=tiny_configs.SD3_MMDIT["pos_embed_max_size"],
                                 qk_norm="rms_norm").eval()


def test_adapter_loads_strictly_into_diffusers_sd3_ip_adapter_modules(world):
    from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterTimeImageProjection

    transformer = _diffusers_transformer()
    # diffusers' own conversion, then load_state_dict(strict=True) on the resampler and all 38 processors
    transformer._load_ip_adapter_weights(_adapter(world), low_cpu_mem_usage=False)
    proj = transformer.image_proj
    assert isinstance(proj, IPAdapterTimeImageProjection) and len(proj.layers) == 4
    assert proj.layers[0].attn.heads == 2 and proj.latents.shape == (1, 64, 96)
    procs = [block.attn.processor for block in transformer.transformer_blocks]
    assert len(procs) == BLOCKS and all(isinstance(p, SD3IPAdapterJointAttnProcessor2_0) for p in procs)
    image = torch.randn(1, 729, tiny_configs.CLIP_VISION["siglip-384"]["hidden_size"])
    inputs = {"hidden_states": torch.randn(1, 16, 8, 8), "encoder_hidden_states": torch.randn(1, 20, C),
              "pooled_projections": torch.randn(1, P), "timestep": torch.tensor([500.0])}
    with torch.no_grad():
        tokens, temb = proj(image, inputs["timestep"])
        plain = transformer(**inputs).sample
        with_ip = transformer(**inputs, joint_attention_kwargs={"ip_adapter_image_embeds": image}).sample
    assert tokens.shape == (1, 64, H) and temb.shape == (1, 96)
    assert torch.isfinite(with_ip).all() and (with_ip - plain).abs().max() > 1e-3
