"""diffusers' twin of a ComfyUI MMDiT joint block, for comparing ComfyUI's SD3/SD3.5 blocks with diffusers' code.

`diffusers_block(joint_block, context_pre_only)` builds a diffusers `JointTransformerBlock` carrying exactly the
weights of a ComfyUI `mmdit.JointBlock` (Stability's layout), renamed as diffusers' own single-file loader does
(`loaders/single_file_utils.py`, `convert_sd3_transformer_checkpoint_to_diffusers`):

    ComfyUI / Stability (per block)             diffusers JointTransformerBlock
    x_block.attn.qkv        (q | k | v rows)    attn.to_q / attn.to_k / attn.to_v          (chunk(3) of the rows)
    context_block.attn.qkv  (q | k | v rows)    attn.add_q_proj / add_k_proj / add_v_proj
    x_block.attn.ln_q / ln_k  (RMSNorm 1e-6)    attn.norm_q / attn.norm_k
    context_block.attn.ln_q / ln_k              attn.norm_added_q / attn.norm_added_k      (also in the pre_only block)
    x_block.attn.proj                           attn.to_out.0
    context_block.attn.proj                     attn.to_add_out                            (absent when pre_only)
    x_block.adaLN_modulation.1  (6 x dim)       norm1.linear        (AdaLayerNormZero, same chunk order:
                                                                     shift, scale, gate for attn, then for mlp)
    context_block.adaLN_modulation.1 (6 x dim)  norm1_context.linear (AdaLayerNormZero, same order)
    pre_only context adaLN_modulation.1 (2 x dim, shift | scale)
                                                norm1_context.linear (AdaLayerNormContinuous, chunks scale | shift:
                                                                     the two halves are SWAPPED)
    x_block.mlp.fc1 / fc2                       ff.net.0.proj / ff.net.2
    context_block.mlp.fc1 / fc2                 ff_context.net.0.proj / ff_context.net.2   (absent when pre_only)
    (SD3.5 Medium dual-attention blocks, x_block_self_attn)
    x_block.attn2.qkv / ln_q / ln_k / proj      attn2.to_q|to_k|to_v / norm_q / norm_k / to_out.0
    x_block.adaLN_modulation.1  (9 x dim)       norm1.linear        (SD35AdaLayerNormZeroX, same order)

The norms without weights (norm1/norm2: LayerNorm eps 1e-6, no affine) have nothing to carry.

ComfyUI concatenates the joint sequence as [txt, img], diffusers as [img, txt]; attention has no positions here, so
both give the same result up to float rounding.
"""
import torch
from diffusers.models.attention import JointTransformerBlock

import comfy.ldm.modules.diffusionmodules.mmdit as mmdit


def _swap_halves(t):
    """[shift | scale] (ComfyUI chunk order) -> [scale | shift] (diffusers' AdaLayerNormContinuous chunk order)."""
    shift, scale = t.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def _qk_norm(attn):
    """diffusers' qk_norm name for a ComfyUI SelfAttention's ln_q/ln_k (only the RMS kind SD3.5 uses, or none)."""
    if isinstance(attn.ln_q, torch.nn.Identity) and isinstance(attn.ln_k, torch.nn.Identity):
        return None
    if isinstance(attn.ln_q, mmdit.RMSNorm) and isinstance(attn.ln_k, mmdit.RMSNorm):
        if attn.ln_q.eps != 1e-6 or attn.ln_k.eps != 1e-6 or attn.ln_q.weight is None:
            raise ValueError("diffusers' SD3 block uses affine RMS qk norms with eps 1e-6")
        return "rms_norm"
    raise ValueError(f"unsupported qk norm {type(attn.ln_q).__name__} for a diffusers JointTransformerBlock")


def _check_supported(block):
    for name in ("context_block", "x_block"):
        sub = getattr(block, name)
        if isinstance(sub.norm1, mmdit.RMSNorm) or sub.scale_mod_only or isinstance(
                getattr(sub, "mlp", None), mmdit.SwiGLUFeedForward):
            raise ValueError(f"{name}: rmsnorm / scale_mod_only / swiglu blocks have no diffusers twin")
    if block.context_block.x_block_self_attn:
        raise ValueError("context_block with x_block_self_attn has no diffusers twin")


def diffusers_state_dict(comfy_joint_block, context_pre_only):
    """The diffusers JointTransformerBlock state dict (float32 copies) for a ComfyUI JointBlock; raises if any of the
    ComfyUI block's tensors is left unused."""
    src = {k: v.detach().to(torch.float32).clone() for k, v in comfy_joint_block.state_dict().items()}
    out = {}

    def take(key):
        if key not in src:
            raise KeyError(f"ComfyUI joint block has no {key!r} (needed by the diffusers twin)")
        return src.pop(key)

    def split_qkv(prefix, names):
        for part in ("weight", "bias"):
            for name, t in zip(names, take(f"{prefix}.qkv.{part}").chunk(3, dim=0)):
                out[f"{name}.{part}"] = t.clone()

    split_qkv("x_block.attn", ("attn.to_q", "attn.to_k", "attn.to_v"))
    split_qkv("context_block.attn", ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"))
    if _qk_norm(comfy_joint_block.x_block.attn) is not None:
        out["attn.norm_q.weight"] = take("x_block.attn.ln_q.weight")
        out["attn.norm_k.weight"] = take("x_block.attn.ln_k.weight")
    if _qk_norm(comfy_joint_block.context_block.attn) is not None:
        out["attn.norm_added_q.weight"] = take("context_block.attn.ln_q.weight")
        out["attn.norm_added_k.weight"] = take("context_block.attn.ln_k.weight")
    for part in ("weight", "bias"):
        out[f"attn.to_out.0.{part}"] = take(f"x_block.attn.proj.{part}")
        out[f"norm1.linear.{part}"] = take(f"x_block.adaLN_modulation.1.{part}")
        out[f"ff.net.0.proj.{part}"] = take(f"x_block.mlp.fc1.{part}")
        out[f"ff.net.2.{part}"] = take(f"x_block.mlp.fc2.{part}")
        if context_pre_only:
            out[f"norm1_context.linear.{part}"] = _swap_halves(take(f"context_block.adaLN_modulation.1.{part}"))
        else:
            out[f"norm1_context.linear.{part}"] = take(f"context_block.adaLN_modulation.1.{part}")
            out[f"attn.to_add_out.{part}"] = take(f"context_block.attn.proj.{part}")
            out[f"ff_context.net.0.proj.{part}"] = take(f"context_block.mlp.fc1.{part}")
            out[f"ff_context.net.2.{part}"] = take(f"context_block.mlp.fc2.{part}")
    if comfy_joint_block.x_block.x_block_self_attn:
        split_qkv("x_block.attn2", ("attn2.to_q", "attn2.to_k", "attn2.to_v"))
        if _qk_norm(comfy_joint_block.x_block.attn2) is not None:
            out["attn2.norm_q.weight"] = take("x_block.attn2.ln_q.weight")
            out["attn2.norm_k.weight"] = take("x_block.attn2.ln_k.weight")
        for part in ("weight", "bias"):
            out[f"attn2.to_out.0.{part}"] = take(f"x_block.attn2.proj.{part}")
    if src:
        raise ValueError(f"ComfyUI joint block tensors with no diffusers place: {sorted(src)}")
    return out


def diffusers_block(comfy_joint_block, context_pre_only):
    """A diffusers JointTransformerBlock (eval, float32, on the ComfyUI block's device) with the same weights."""
    if bool(context_pre_only) != bool(comfy_joint_block.context_block.pre_only):
        raise ValueError(f"context_pre_only={context_pre_only} but the ComfyUI block has "
                         f"pre_only={comfy_joint_block.context_block.pre_only}")
    _check_supported(comfy_joint_block)
    x_attn = comfy_joint_block.x_block.attn
    qk_norm = _qk_norm(x_attn)
    if _qk_norm(comfy_joint_block.context_block.attn) != qk_norm:
        raise ValueError("context and x blocks use different qk norms; diffusers' block has one kind")
    dim = x_attn.qkv.weight.shape[1]
    twin = JointTransformerBlock(dim, x_attn.num_heads, x_attn.head_dim, context_pre_only=bool(context_pre_only),
                                 qk_norm=qk_norm, use_dual_attention=comfy_joint_block.x_block.x_block_self_attn)
    state = diffusers_state_dict(comfy_joint_block, context_pre_only)
    result = twin.load_state_dict(state, strict=True)  # raises on any missing, unexpected or misshapen tensor
    assert not result.missing_keys and not result.unexpected_keys
    params = dict(twin.named_parameters())
    unset = sorted(set(params) - set(state))
    if unset:
        raise ValueError(f"diffusers twin parameters left unset: {unset}")
    return twin.to(device=x_attn.qkv.weight.device, dtype=torch.float32).eval()


def run_comfy_block(block, txt, img, vec, transformer_options=None):
    """(txt_out, img_out) of a ComfyUI JointBlock as MMDiT.forward calls it (txt_out is None for the pre_only block)."""
    return block(txt, img, c=vec, transformer_options={} if transformer_options is None else transformer_options,
                 use_checkpoint=False)


def run_diffusers_block(block, img, txt, temb, joint_attention_kwargs=None):
    """(txt_out, img_out) of a diffusers JointTransformerBlock (txt_out is None when context_pre_only)."""
    encoder_hidden_states, hidden_states = block(hidden_states=img, encoder_hidden_states=txt, temb=temb,
                                                 joint_attention_kwargs=joint_attention_kwargs)
    return encoder_hidden_states, hidden_states


def diffusers_image_proj(image_proj, hidden):
    """diffusers' IPAdapterTimeImageProjection holding the released image_proj tensors, loaded through diffusers' own
    SD3 IP-Adapter conversion (a one-layer SD3Transformer2DModel of width `hidden`)."""
    from diffusers import SD3Transformer2DModel

    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, num_layers=1,
                                        attention_head_dim=64, num_attention_heads=hidden // 64,
                                        joint_attention_dim=48, caption_projection_dim=hidden,
                                        pooled_projection_dim=32, out_channels=16, pos_embed_max_size=32)
    dim = image_proj["latents"].shape[-1]
    layer = {"norm_ip.linear.weight": torch.zeros(2 * hidden, dim), "norm_ip.linear.bias": torch.zeros(2 * hidden),
             "to_k_ip.weight": torch.zeros(hidden, hidden), "to_v_ip.weight": torch.zeros(hidden, hidden),
             **{f"{n}.weight": torch.ones(64) for n in ("norm_q", "norm_k", "norm_ip_k")}}
    transformer._load_ip_adapter_weights({"image_proj": image_proj, "ip_adapter": {f"0.{k}": v for k, v in
                                                                                  layer.items()}},
                                         low_cpu_mem_usage=False)
    return transformer.image_proj.eval()
