"""The IP-Adapter weights as one module: image_proj + ip_adapter.{n}, loaded strictly from the file's keys."""
import os

from torch import nn

from .errors import UnknownFormatError
from .formats import detect
from .loading import load_adapter_file
from .projections import build_projection


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


class IPAdapterWeights(nn.Module):
    """image_proj and ip_adapter of one release, with its spec."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.image_proj = build_projection(spec)
        layers = {}
        for i, width in enumerate(spec.layer_widths):
            if spec.lora_rank:
                layers[str(2 * i)] = AttentionLayer(width, spec.cross_dim, False, spec.lora_rank)
            layers[str(2 * i + 1)] = AttentionLayer(width, spec.cross_dim, True, spec.lora_rank)
        self.ip_adapter = nn.ModuleDict(layers)


def from_state_dict(nested, name="adapter"):
    """Detect and strictly load a nested state dict; key mismatches become UnknownFormatError."""
    spec = detect(nested, name)
    model = IPAdapterWeights(spec)
    flat = {f"{g}.{k}": v for g, sd in nested.items() for k, v in sd.items()}
    try:
        model.load_state_dict(flat, strict=True)
    except RuntimeError as e:
        raise UnknownFormatError(
            f"{name}: looks like a {spec.describe()}, but its tensors do not fit that layout ({e}). "
            "The file is damaged or a variant this pack does not know yet.") from e
    return model.eval().requires_grad_(False)


def load(path):
    """Load an adapter file from disk (safetensors or weights-only torch file)."""
    return from_state_dict(load_adapter_file(path), os.path.basename(path))


