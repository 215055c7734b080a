"""The IP-Adapter weights as one module whose attribute names are the file's keys, loaded strictly.

tencent layout (SD1.5/SDXL releases, InstantX Flux): image_proj + ip_adapter.{n}; XLabs Flux layout:
ip_adapter_proj_model + double_blocks.{i}.processor.*. Either way kv_projection(layer) gives the attention
code one adapter layer's image K/V weights. InstantX SD3.5 (joint layout): tencent keys, but each ip_adapter.{n}
is a whole joint-block processor (families/sd3.py) and the tokens depend on the step. PuLID-Flux (pulid_flux layout):
pulid_encoder (IDFormer) + pulid_ca.{k} (cross-attentions after Flux blocks), see pulid_flux.py.
"""
import os
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from . import families
from .errors import UnknownFormatError
from .families.sd3 import JointBlockAdapter
from .formats import detect
from .loading import load_adapter_file
from .projections import build_projection
from .pulid_flux import IDFormer, PerceiverCA


class LoRAWeights(nn.Module):
    """down/up pair of a LoRA stored in FaceID files (applied by the host as a weight patch)."""

    def __init__(self, in_dim, out_dim, rank):
        super().__init__()
        self.down = nn.Linear(in_dim, rank, bias=False)
        self.up = nn.Linear(rank, out_dim, bias=False)


class AttentionLayer(nn.Module):
    """One processor slot n: image K/V for cross-attention (odd n), LoRA weights when the file has them."""

    def __init__(self, width, context_dim, cross, lora_rank):
        super().__init__()
        if cross:
            self.to_k_ip = nn.Linear(context_dim, width, bias=False)
            self.to_v_ip = nn.Linear(context_dim, width, bias=False)
        if lora_rank:
            kv_in = context_dim if cross else width
            self.to_q_lora = LoRAWeights(width, width, lora_rank)
            self.to_k_lora = LoRAWeights(kv_in, width, lora_rank)
            self.to_v_lora = LoRAWeights(kv_in, width, lora_rank)
            self.to_out_lora = LoRAWeights(width, width, lora_rank)


@dataclass(frozen=True)
class KVProjection:
    """One adapter layer's image K/V projection: weights (width, context), optional biases and per-head RMS norm."""

    k_weight: torch.Tensor
    v_weight: torch.Tensor
    k_bias: Optional[torch.Tensor] = None
    v_bias: Optional[torch.Tensor] = None
    rms_eps: Optional[float] = None

    def to(self, device, dtype):
        move = (lambda t: None if t is None else t.to(device, dtype))
        return KVProjection(move(self.k_weight), move(self.v_weight), move(self.k_bias), move(self.v_bias),
                            self.rms_eps)


class IPAdapterWeights(nn.Module):
    """image_proj and ip_adapter of one tencent-layout release, with its spec."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.image_proj = build_projection(spec)
        # UNet releases number diffusers' processors: 2i (attn1, LoRA only), 2i+1 (attn2); DiT ones one per block
        self.unet_numbering = families.get(spec.arch).hook == "attn2"
        layers = {}
        for i, width in enumerate(spec.layer_widths):
            if spec.lora_rank:
                layers[str(2 * i)] = AttentionLayer(width, spec.cross_dim, False, spec.lora_rank)
            layers[str(self._slot(i))] = AttentionLayer(width, spec.cross_dim, True, spec.lora_rank)
        self.ip_adapter = nn.ModuleDict(layers)

    def _slot(self, layer):
        return 2 * layer + 1 if self.unet_numbering else layer

    def kv_projection(self, layer):
        module = self.ip_adapter[str(self._slot(layer))]
        return KVProjection(module.to_k_ip.weight, module.to_v_ip.weight, rms_eps=self.spec.kv_rms_eps)


class XLabsProcessor(nn.Module):
    """double_blocks.{i}.processor of XLabs' Flux IP-Adapter: biased image K/V projections."""

    def __init__(self, width, context_dim):
        super().__init__()
        self.ip_adapter_double_stream_k_proj = nn.Linear(context_dim, width)
        self.ip_adapter_double_stream_v_proj = nn.Linear(context_dim, width)


class XLabsBlock(nn.Module):
    def __init__(self, width, context_dim):
        super().__init__()
        self.processor = XLabsProcessor(width, context_dim)


class XLabsFluxWeights(nn.Module):
    """XLabs flux-ip-adapter (v1, v2): linear projection of CLIP image embeds, K/V on the double blocks."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.ip_adapter_proj_model = build_projection(spec)
        self.double_blocks = nn.ModuleList(XLabsBlock(w, spec.cross_dim) for w in spec.layer_widths)

    @property
    def image_proj(self):
        return self.ip_adapter_proj_model

    def kv_projection(self, layer):
        processor = self.double_blocks[layer].processor
        k, v = processor.ip_adapter_double_stream_k_proj, processor.ip_adapter_double_stream_v_proj
        return KVProjection(k.weight, v.weight, k.bias, v.bias)


class JointWeights(nn.Module):
    """InstantX SD3.5-Large: the time-conditioned resampler and one joint-block processor per block."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.image_proj = build_projection(spec)
        self.ip_adapter = nn.ModuleDict({str(i): JointBlockAdapter(width, spec.resampler_dim, spec.head_dim)
                                         for i, width in enumerate(spec.layer_widths)})


class PuLIDFluxWeights(nn.Module):
    """PuLID-Flux (pulid_flux_v0.9.x): the IDFormer (pulid_encoder) and one cross-attention per pulid_ca.K."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        id_hidden, mapping_hidden, ca_width = spec.hidden_widths[:2], spec.hidden_widths[2:4], spec.hidden_widths[4]
        self.pulid_encoder = IDFormer(spec.resampler_dim, spec.resampler_depth, spec.resampler_heads, spec.tokens,
                                      spec.cross_dim, spec.id_dim, id_hidden, spec.clip_dim, mapping_hidden,
                                      spec.ff_mult)
        self.pulid_ca = nn.ModuleList(PerceiverCA(width, spec.cross_dim, ca_width // spec.head_dim, spec.head_dim)
                                      for width in spec.layer_widths)


WEIGHTS_BY_LAYOUT = {"tencent": IPAdapterWeights, "xlabs": XLabsFluxWeights, "joint": JointWeights,
                     "pulid_flux": PuLIDFluxWeights}


def file_dtype(nested):
    """The floating dtype holding most of a nested state dict's numbers (float32 when it has none)."""
    counts = {}
    for sd in nested.values():
        for t in sd.values():
            if t.is_floating_point():
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel()
    return max(counts, key=counts.get) if counts else torch.float32


def from_state_dict(nested, name="adapter", dtype=torch.float32):
    """Detect and strictly load a nested state dict with its floating tensors in dtype (None: as the file holds them,
    each tensor that already is dtype used as it is, no copy); key mismatches become UnknownFormatError."""
    spec = detect(nested, name)
    with torch.device("meta"):  # no random init of weights the file replaces anyway (seconds for Flux adapters)
        model = WEIGHTS_BY_LAYOUT[spec.layout](spec)
    flat = {f"{g}.{k}": v.to(dtype) if dtype is not None and v.is_floating_point() else v
            for g, sd in nested.items() for k, v in sd.items()}
    try:
        model.load_state_dict(flat, strict=True, assign=True)
    except RuntimeError as e:
        raise UnknownFormatError(
            f"{name}: looks like a {spec.describe()}, but its tensors do not fit that layout ({e}). "
            "The file is damaged or a variant this pack does not know yet.") from e
    return model.eval().requires_grad_(False)


def load(path, choose_dtype=None):
    """Load an adapter file from disk (safetensors or weights-only torch file); its weights in
    choose_dtype(the file's dtype), float32 without a chooser."""
    nested = load_adapter_file(path)
    dtype = torch.float32 if choose_dtype is None else choose_dtype(file_dtype(nested))
    return from_state_dict(nested, os.path.basename(path), dtype)


