"""Shapes of the tiny test models: the real block layouts of SD1.5, SDXL and Flux.1 with small widths."""

SD15_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [2, 2, 2, 2],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "transformer_depth_middle": 1,
    "context_dim": 64,
    "use_linear_in_transformer": False,
    "adm_in_channels": None,
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
}
SD15_HEADS = {"num_heads": 2, "num_head_channels": -1}

SDXL_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "model_channels": 32,
    "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10,
    "context_dim": 80,
    "use_linear_in_transformer": True,
    "adm_in_channels": 48 + 6 * 256,
    "num_classes": "sequential",
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
}
SDXL_HEADS = {"num_heads": -1, "num_head_channels": 16}

SD15_TEXT = {
    "hidden_act": "quick_gelu",
    "hidden_size": SD15_UNET["context_dim"],
    "intermediate_size": 128,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "projection_dim": SD15_UNET["context_dim"],
    "vocab_size": 49408,
    "bos_token_id": 0,
    "eos_token_id": 49407,
    "pad_token_id": 1,
}

# SDXL's two text encoders, as in sd_xl_base_1.0: CLIP-L (transformers layout) and OpenCLIP bigG; both read layer -2
# (3 layers each; real 12 and 32). Their penultimate states concatenate to the UNet context (32 + 48 = 80; real
# 768 + 1280 = 2048) and CLIP-G's projected pooled output (square projection: 48; real 1280) plus six 256-wide size
# embeddings is the UNet's adm input (48 + 1536; real 2816).
SDXL_CLIP_L = {**SD15_TEXT, "hidden_size": 32, "projection_dim": 32, "intermediate_size": 64, "num_hidden_layers": 3}
SDXL_CLIP_G = {**SD15_TEXT, "hidden_act": "gelu", "hidden_size": 48, "projection_dim": 48, "intermediate_size": 96,
               "num_hidden_layers": 3}
assert SDXL_CLIP_L["hidden_size"] + SDXL_CLIP_G["hidden_size"] == SDXL_UNET["context_dim"]
assert SDXL_CLIP_G["hidden_size"] + 6 * 256 == SDXL_UNET["adm_in_channels"]


def clip_vision_config(hidden_size, projection_dim, num_hidden_layers=2, image_size=224, patch_size=14):
    """A tiny CLIP-vision config with the real token count (257 at 224/14)."""
    return {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        "hidden_size": hidden_size,
        "image_size": image_size,
        "intermediate_size": hidden_size * 2,
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": 2,
        "num_channels": 3,
        "num_hidden_layers": num_hidden_layers,
        "patch_size": patch_size,
        "projection_dim": projection_dim,
        "torch_dtype": "float32",
    }


# SigLIP so400m stand-in: no class token (729 tokens at 384/14), no projection; image_embeds are the tokens.
SIGLIP_384 = {
    "hidden_act": "gelu_pytorch_tanh",
    "hidden_size": 44,
    "image_size": 384,
    "intermediate_size": 88,
    "layer_norm_eps": 1e-06,
    "model_type": "siglip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 14,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}

# Stand-ins for the encoders users own; embed sizes differ so family mismatches are detectable.
CLIP_VISION = {
    "vit-h": clip_vision_config(hidden_size=32, projection_dim=24),
    "vit-bigg": clip_vision_config(hidden_size=40, projection_dim=28),
    "vit-l-336": clip_vision_config(hidden_size=36, projection_dim=20, image_size=336),  # Kolors' encoder
    "vit-l": {**clip_vision_config(hidden_size=24, projection_dim=16), "hidden_act": "quick_gelu"},  # XLabs Flux
    "siglip-384": SIGLIP_384,  # InstantX Flux
}

# Flux.1-dev: the real 19 double / 38 single blocks with width 64 (2 heads of 32). ComfyUI counts
# in_channels per latent channel: img_in sees 16 * 2 * 2 = 64 features.
FLUX_DIT = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "vec_in_dim": 32,
    "context_in_dim": 48,
    "hidden_size": 64,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 19,
    "depth_single_blocks": 38,
    "axes_dim": [4, 14, 14],
    "theta": 10000,
    "qkv_bias": True,
    "guidance_embed": True,
}
FLUX_CLIP_L = {**SD15_TEXT, "hidden_size": FLUX_DIT["vec_in_dim"], "projection_dim": FLUX_DIT["vec_in_dim"],
               "intermediate_size": 64}
FLUX_T5 = {
    "d_ff": 96,
    "d_kv": 24,
    "d_model": FLUX_DIT["context_in_dim"],
    "dense_act_fn": "gelu_pytorch_tanh",
    "is_gated_act": True,
    "model_type": "t5",
    "num_heads": 2,
    "num_layers": 2,
    "vocab_size": 32128,
}

# SD3.5 Large: the real 38 joint blocks, QK RMS norm, patch 2, 16 latent channels. ComfyUI's MMDiT fixes the
# head width at 64 (hidden = 64 * depth, heads = depth) and detection reads depth = hidden // 64, so the tiny
# model is depth 2 (hidden 128, 2 heads of 64) with num_blocks 38 supplied by TinySD35. Real: hidden 2432
# (38 heads), context 4096, pooled 2048, pos_embed_max_size 192.
SD3_MMDIT = {
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "depth": 2,  # -> hidden 128, 2 heads of 64
    "num_blocks": 38,
    "input_size": None,
    "adm_in_channels": 32,  # pooled: CLIP-L pooled (12) + CLIP-G projected pooled (20); real 768 + 1280
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 48, "out_features": 128}},
    "num_patches": 32 * 32,
    "pos_embed_max_size": 32,  # up to 512 px (real 192: 3072 px)
    "qk_norm": "rms",
    "pos_embed_scaling_factor": None,
    "x_block_self_attn_layers": [],
}
SD3_HIDDEN = 64 * SD3_MMDIT["depth"]
SD3_CONTEXT = SD3_MMDIT["context_embedder_config"]["params"]["in_features"]  # T5 width; CLIP-L+G padded to it
# Text encoders: CLIP-L and CLIP-G penultimate states (12 + 20 = 32, zero-padded to 48) then T5 tokens (48);
# 3 layers each, since SD3 reads layer -2 (real: 12 and 32 layers).
SD3_CLIP_L = {**SD15_TEXT, "hidden_size": 12, "projection_dim": 12, "intermediate_size": 24, "num_hidden_layers": 3}
SD3_CLIP_G = {**SD15_TEXT, "hidden_act": "gelu", "hidden_size": 20, "projection_dim": 20, "intermediate_size": 40,
              "num_hidden_layers": 3}
SD3_T5 = {**FLUX_T5, "d_model": SD3_CONTEXT}

# Kolors: the SDXL layout read by ChatGLM3 (4096 wide, KOLORS_CHATGLM_WIDTH here). Its UNet maps the text through
# encoder_hid_proj (4096 -> 2048 real, -> the tiny SDXL context here) and takes the pooled ChatGLM state in y.
KOLORS_CHATGLM_WIDTH = 128
KOLORS_CHATGLM_TOKENS = 256  # MZ pads every prompt to 256 tokens
KOLORS_UNET = {**SDXL_UNET, "adm_in_channels": KOLORS_CHATGLM_WIDTH + 6 * 256}
KOLORS_SAMPLING = {"beta_schedule": "linear", "linear_start": 0.00085, "linear_end": 0.014, "timesteps": 1100}
