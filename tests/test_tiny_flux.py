"""The tiny Flux.1-dev world: real block layout, real file formats, runnable through ComfyUI's own loaders."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import comfy.clip_vision
import comfy.ldm.flux.controlnet
import comfy.sample
import nodes
from host_support import tiny_configs
from tinymodels import flux_adapter_files, flux_models
from graphs import flux_txt2img
from tinymodels.world import CHECKPOINT_FLUX, FLUX_CLIP_VISION_FILES, FLUX_CONTROLNET, FLUX_LORA

H, C = tiny_configs.FLUX_DIT["hidden_size"], tiny_configs.FLUX_DIT["context_in_dim"]


@pytest.fixture(scope="module")
def checkpoint(world_paths):
    """(model, clip, vae) from the real CheckpointLoaderSimple node."""
    return nodes.CheckpointLoaderSimple().load_checkpoint(CHECKPOINT_FLUX)[:3]


def _sample(model, positive, negative, steps=2):
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    return nodes.common_ksampler(model, 3, steps, 1.0, "euler", "simple", positive, negative, latent)[0]["samples"]


def test_tiny_flux_samples_in_process():
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16, 8, 8, generator=gen)
    cond = [[torch.randn(1, 16, C, generator=gen),
             {"pooled_output": torch.randn(1, tiny_configs.FLUX_DIT["vec_in_dim"], generator=gen), "guidance": 3.5}]]
    out = comfy.sample.sample(flux_models.tiny_flux(), noise, 2, 1.0, "euler", "simple", cond, cond,
                              torch.zeros_like(noise), seed=0, disable_pbar=True)
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all() and out.std() > 0.1


def test_real_block_counts_and_every_dit_replace_is_called(flux):
    model, positive, negative = flux
    dit = model.model.diffusion_model
    assert (len(dit.double_blocks), len(dit.single_blocks)) == (19, 38) == (flux_adapter_files.DOUBLE,
                                                                              flux_adapter_files.SINGLE)
    assert dit.img_in.weight.shape == (H, 64) and dit.txt_in.weight.shape == (H, C)
    seen = []

    def pass_through(args, extra):
        options = args["transformer_options"]
        seen.append((options["block_type"], options["block_index"]))
        return extra["original_block"](args)

    patched = model.clone()
    keys = [("double_block", i) for i in range(19)] + [("single_block", i) for i in range(38)]
    for block, i in keys:
        patched.set_model_patch_replace(pass_through, "dit", block, i)
    assert set(patched.model_options["transformer_options"]["patches_replace"]["dit"]) == set(keys)
    out = _sample(patched, positive, negative, steps=1)
    assert seen == [(block.split("_")[0], i) for block, i in keys]
    assert torch.equal(out, _sample(model, positive, negative, steps=1))


def test_checkpoint_loads_through_checkpoint_loader_simple(checkpoint):
    model, clip, vae = checkpoint
    assert type(model.model.model_config).__name__ == "TinyFlux"
    assert model.model.model_config.unet_config["num_heads"] == 2
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a cat"), return_pooled=True)
    assert cond.shape[0] == 1 and cond.shape[2] == C and pooled.shape == (1, tiny_configs.FLUX_DIT["vec_in_dim"])
    image = vae.decode(torch.randn(1, 16, 8, 8))
    assert image.shape == (1, 64, 64, 3) and image.std() > 0.01


def test_lora_changes_output_and_strength_zero_does_not(checkpoint, flux, caplog):
    model, clip, _ = checkpoint
    _, positive, negative = flux
    plain = _sample(model, positive, negative)
    with caplog.at_level(logging.WARNING):
        model_l, clip_l = nodes.LoraLoader().load_lora(model, clip, FLUX_LORA, 1.0, 1.0)
    assert "lora key not loaded" not in caplog.text
    assert (_sample(model_l, positive, negative) - plain).abs().max() > 1e-2
    pooled = [c.encode_from_tokens(c.tokenize("a cat"), return_pooled=True)[1] for c in (clip, clip_l)]
    assert (pooled[1] - pooled[0]).abs().max() > 1e-4  # lora_te1 patches CLIP-L, whose pooled output Flux uses
    model_0, _ = nodes.LoraLoader().load_lora(model, clip, FLUX_LORA, 0.0, 0.0)
    assert torch.equal(_sample(model_0, positive, negative), plain)


def test_xlabs_controlnet_is_detected_and_changes_output(world_paths, flux, caplog):
    model, positive, negative = flux
    with caplog.at_level(logging.WARNING):
        control = nodes.ControlNetLoader().load_controlnet(FLUX_CONTROLNET)[0]
    assert isinstance(control.control_model, comfy.ldm.flux.controlnet.ControlNetFlux)
    assert "missing controlnet keys" not in caplog.text
    hint = torch.from_numpy(np.array(Image.open(world_paths / "input" / "reference_a.png").convert("RGB")))
    hint = (hint / 255.0)[None].float()

    def run(strength):
        pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, hint, strength,
                                                                    0.0, 1.0)
        return _sample(model, pos, neg)

    plain = _sample(model, positive, negative)
    assert (run(1.0) - plain).abs().max() > 1e-2
    assert torch.equal(run(0.0), plain)


@pytest.mark.parametrize("encoder, tokens, hidden, embeds", [
    ("vit-l", 257, 24, (1, 16)),
    ("siglip-384", 729, 44, (1, 729, 44)),  # ComfyUI's SigLIP image_embeds are the post-layernorm tokens
])
def test_flux_clip_vision_files_load_through_comfy(world_paths, encoder, tokens, hidden, embeds):
    clip_vision = nodes.CLIPVisionLoader().load_clip(FLUX_CLIP_VISION_FILES[encoder])[0]
    assert isinstance(clip_vision, comfy.clip_vision.ClipVisionModel)
    out = clip_vision.encode_image(torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(0)))
    assert out["last_hidden_state"].shape == out["penultimate_hidden_states"].shape == (1, tokens, hidden)
    assert out["image_embeds"].shape == embeds and torch.isfinite(out["image_embeds"]).all()
    direct = comfy.clip_vision.load(str(world_paths / "models" / "clip_vision" / FLUX_CLIP_VISION_FILES[encoder]))
    assert direct.image_size == tiny_configs.CLIP_VISION[encoder]["image_size"]


def test_siglip_file_has_transformers_keys_and_the_pooling_head(world):
    sd = load_file(str(world / "models" / "clip_vision" / FLUX_CLIP_VISION_FILES["siglip-384"]))
    assert all(k.startswith("vision_model.") for k in sd)
    d, inter = 44, tiny_configs.CLIP_VISION["siglip-384"]["intermediate_size"]
    head = {"probe": (1, 1, d), "attention.in_proj_weight": (3 * d, d), "attention.in_proj_bias": (3 * d,),
            "attention.out_proj.weight": (d, d), "attention.out_proj.bias": (d,), "layernorm.weight": (d,),
            "layernorm.bias": (d,), "mlp.fc1.weight": (inter, d), "mlp.fc1.bias": (inter,),
            "mlp.fc2.weight": (d, inter), "mlp.fc2.bias": (d,)}
    assert {k: tuple(sd[f"vision_model.head.{k}"].shape) for k in head} == head
    assert sd["vision_model.embeddings.position_embedding.weight"].shape == (729, d)
    assert "vision_model.embeddings.patch_embedding.bias" in sd and "vision_model.post_layernorm.weight" in sd


@pytest.mark.parametrize("name, tokens", [("flux-ip-adapter.safetensors", 4),
                                         ("flux-ip-adapter-v2.safetensors", 16)])
def test_xlabs_adapter_files(world, name, tokens):
    sd = load_file(str(world / "models" / "xlabs" / "ipadapters" / name))
    assert sd["ip_adapter_proj_model.proj.weight"].shape == (tokens * 48, 16)
    assert sd["ip_adapter_proj_model.proj.bias"].shape == (tokens * 48,)
    norm = sd["ip_adapter_proj_model.norm.weight"]
    assert norm.shape == (48,) and norm.eq(1).all()
    for i in range(19):
        for kv in ("k", "v"):
            prefix = f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj"
            assert sd[f"{prefix}.weight"].shape == (64, 48) and sd[f"{prefix}.bias"].shape == (64,)
    assert len(sd) == 4 + 19 * 4


def test_instantx_adapter_file(world):
    nested = torch.load(world / "models" / "ipadapter-flux" / "ip-adapter.bin", weights_only=True)
    assert set(nested) == {"image_proj", "ip_adapter"}
    proj = {k: tuple(v.shape) for k, v in nested["image_proj"].items()}
    assert proj == {"proj.0.weight": (88, 44), "proj.0.bias": (88,), "proj.2.weight": (128 * 48, 88),
                    "proj.2.bias": (128 * 48,), "norm.weight": (48,), "norm.bias": (48,)}
    ip = nested["ip_adapter"]
    assert len(ip) == 57 * 2 and all(v.shape == (64, 48) for v in ip.values())
    assert "0.to_k_ip.weight" in ip and "56.to_v_ip.weight" in ip and not any("bias" in k for k in ip)


def test_flux_graph_runs_in_the_server(comfy_server):
    prompt = flux_txt2img(prefix="e2e_flux")
    prompt["lora"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "lora_name": FLUX_LORA, "strength_model": 0.8,
        "strength_clip": 0.8}}
    prompt["sampler"]["inputs"]["model"] = ["lora", 0]
    prompt["pos"]["inputs"]["clip"] = prompt["neg"]["inputs"]["clip"] = ["lora", 1]
    prompt["hint"] = {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}}
    prompt["cn"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": FLUX_CONTROLNET}}
    prompt["apply"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "positive": ["guide", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["hint", 0],
        "strength": 0.7, "start_percent": 0.0, "end_percent": 1.0}}
    prompt["sampler"]["inputs"].update(positive=["apply", 0], negative=["apply", 1])
    entry = comfy_server.run(prompt)
    assert entry["status"]["status_str"] == "success", (entry["status"], comfy_server.log_tail())
    paths = comfy_server.output_images(entry)
    assert len(paths) == 1 and np.asarray(Image.open(paths[0])).shape == (64, 64, 3)
    assert np.asarray(Image.open(paths[0])).std() > 1.0
    log = comfy_server.log_tail(100_000)
    assert "lora key not loaded" not in log and "missing controlnet keys" not in log
