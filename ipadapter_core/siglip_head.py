"""SigLIP's attention-pooling head, rebuilt on top of ComfyUI's SigLIP CLIP-vision output.

ComfyUI's SigLIP CLIP_VISION drops the `vision_model.head.*` weights: its `encode_image()` returns the
729 post-layernorm tokens (`last_hidden_state`) but no pooled vector. The InstantX FLUX.1-dev IP-Adapter
needs SigLIP's pooled output (transformers' `SiglipVisionModel(...).pooler_output`), so the pack reads the
head weights from the full SigLIP `.safetensors` file and applies them here:

    probe (1, 1, D) attends over the tokens with nn.MultiheadAttention(D, heads, batch_first=True)
    h = attn_out + mlp(layernorm(attn_out))      # LayerNorm eps 1e-6, MLP fc1 -> gelu(tanh) -> fc2
    pooled = h[:, 0]                             # (B, D)

The module attributes equal the checkpoint keys after `vision_model.head.`, so `load_state_dict(strict=True)`
works without renaming. Imports torch and safetensors only, never the host.
"""
import os

import torch
from safetensors import SafetensorError, safe_open

from .errors import CorruptFileError, IncompatibleModelError, UnknownFormatError, UnsafeFileError

HEAD_PREFIXES = ("vision_model.head.", "head.")  # some repackaged files drop the leading "vision_model."
LAYER_NORM_EPS = 1e-6  # SiglipVisionConfig.layer_norm_eps
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
HEAD_KEYS = (
    "probe",
    "attention.in_proj_weight", "attention.in_proj_bias",
    "attention.out_proj.weight", "attention.out_proj.bias",
    "layernorm.weight", "layernorm.bias",
    "mlp.fc1.weight", "mlp.fc1.bias",
    "mlp.fc2.weight", "mlp.fc2.bias",
)
# num_attention_heads of the released SigLIP vision towers, by width (the head count is not in the file).
KNOWN_HEADS = {
    768: 12,   # siglip-base-patch16-*
    1024: 16,  # siglip-large-patch16-*
    1152: 16,  # siglip-so400m-patch14-* (InstantX FLUX.1-dev IP-Adapter)
    1536: 16,  # siglip-giant-opt-patch16-*
}
FULL_FILE_HINT = (
    "Use the full google/siglip-so400m-patch14-384 'model.safetensors' (transformers layout, with the "
    "vision_model.head.* attention-pooling weights).")


class SiglipMLP(torch.nn.Module):
    """fc1 -> gelu (tanh approximation, transformers' 'gelu_pytorch_tanh') -> fc2."""

    def __init__(self, dim, intermediate, dtype=None, device=None):
        super().__init__()
        self.fc1 = torch.nn.Linear(dim, intermediate, dtype=dtype, device=device)
        self.fc2 = torch.nn.Linear(intermediate, dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(x), approximate="tanh"))


class SiglipPoolingHead(torch.nn.Module):
    """SigLIP's multi-head attention pooling: (B, T, D) post-layernorm tokens -> (B, D) pooled vector."""

    def __init__(self, dim=1152, heads=16, intermediate=4304, eps=LAYER_NORM_EPS, dtype=None, device=None):
        super().__init__()
        if dim % heads:
            raise IncompatibleModelError(
                f"SigLIP pooling head: width {dim} is not divisible by {heads} attention heads. Pass the "
                f"encoder's num_attention_heads (SigLIP so400m: 16 for width 1152).")
        self.dim, self.heads, self.intermediate = dim, heads, intermediate
        self.probe = torch.nn.Parameter(torch.zeros(1, 1, dim, dtype=dtype, device=device))
        self.attention = torch.nn.MultiheadAttention(dim, heads, batch_first=True, dtype=dtype, device=device)
        self.layernorm = torch.nn.LayerNorm(dim, eps=eps, dtype=dtype, device=device)
        self.mlp = SiglipMLP(dim, intermediate, dtype=dtype, device=device)

    def forward(self, last_hidden_state):
        if last_hidden_state.ndim != 3 or last_hidden_state.shape[-1] != self.dim:
            raise IncompatibleModelError(
                f"SigLIP pooling head of width {self.dim} got tokens of shape {tuple(last_hidden_state.shape)}; "
                f"expected (batch, tokens, {self.dim}) from the matching SigLIP CLIP-vision model's "
                "last_hidden_state.")
        x = last_hidden_state.to(device=self.probe.device, dtype=self.probe.dtype)
        probe = self.probe.expand(x.shape[0], -1, -1)
        pooled = self.attention(probe, x, x)[0]  # same call as transformers (need_weights default)
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]


def pick_heads(dim, config=None):
    """The head count for a SigLIP width: config["num_attention_heads"] when given, else the released models'."""
    if config is not None and config.get("num_attention_heads"):
        return int(config["num_attention_heads"])
    if dim in KNOWN_HEADS:
        return KNOWN_HEADS[dim]
    raise UnknownFormatError(
        f"SigLIP pooling head of width {dim}: unknown number of attention heads (known widths: "
        f"{sorted(KNOWN_HEADS)}). Pass heads= explicitly (the encoder config's num_attention_heads).")


def _head_keys(keys):
    """{stripped name: original key} for the head tensors among keys.

    `vision_model.head.*` first; bare `head.*` only where `head.probe` exists (so an unrelated `head.weight`
    classifier is not mistaken for a pooling head).
    """
    keys = list(keys)
    found = {k[len("vision_model.head."):]: k for k in keys if k.startswith("vision_model.head.")}
    if not found and "head.probe" in keys:
        found = {k[len("head."):]: k for k in keys if k.startswith("head.")}
    return found


def _no_head_error(name, keys):
    keys = sorted(keys)
    sample = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "") if keys else "no tensors"
    return UnknownFormatError(
        f"{name}: no vision_model.head.* tensors: this SigLIP file has no attention-pooling head (ComfyUI's "
        f"repackaged sigclip_vision_patch14_384 drops it); found {len(keys)} tensors ({sample}). "
        + FULL_FILE_HINT)


def head_state_dict(sd, name="state dict"):
    """The `vision_model.head.*` (or `head.*`) tensors of a flat state dict, prefix stripped."""
    found = _head_keys(sd.keys())
    if not found:
        raise _no_head_error(name, sd.keys())
    return {short: sd[key] for short, key in found.items()}


def check_head_state_dict(head_sd, name="state dict"):
    """Validate names and shapes; returns (dim, intermediate). Raises UnknownFormatError naming the key."""
    missing = [k for k in HEAD_KEYS if k not in head_sd]
    extra = sorted(k for k in head_sd if k not in HEAD_KEYS)
    if missing or extra:
        raise UnknownFormatError(
            f"{name}: not a SigLIP attention-pooling head: missing {missing or 'nothing'}, unexpected "
            f"{extra or 'nothing'} (keys under vision_model.head.). " + FULL_FILE_HINT)
    probe = head_sd["probe"]
    fc1 = head_sd["mlp.fc1.weight"]
    if probe.ndim != 3 or tuple(probe.shape[:2]) != (1, 1):
        raise UnknownFormatError(
            f"{name}: vision_model.head.probe has shape {tuple(probe.shape)}, expected (1, 1, width). "
            + FULL_FILE_HINT)
    dim = probe.shape[-1]
    inter = fc1.shape[0] if fc1.ndim == 2 else -1
    expected = {
        "probe": (1, 1, dim),
        "attention.in_proj_weight": (3 * dim, dim), "attention.in_proj_bias": (3 * dim,),
        "attention.out_proj.weight": (dim, dim), "attention.out_proj.bias": (dim,),
        "layernorm.weight": (dim,), "layernorm.bias": (dim,),
        "mlp.fc1.weight": (inter, dim), "mlp.fc1.bias": (inter,),
        "mlp.fc2.weight": (dim, inter), "mlp.fc2.bias": (dim,),
    }
    for key, shape in expected.items():
        got = tuple(head_sd[key].shape)
        if got != shape:
            raise UnknownFormatError(
                f"{name}: vision_model.head.{key} has shape {got}, expected {shape} for a pooling head of "
                f"width {dim} (from vision_model.head.probe). The file is not a SigLIP vision model or is "
                "damaged. " + FULL_FILE_HINT)
        if not head_sd[key].is_floating_point():
            raise UnknownFormatError(
                f"{name}: vision_model.head.{key} has dtype {head_sd[key].dtype}, expected floating point. "
                + FULL_FILE_HINT)
    return dim, inter


def build_head(head_sd, heads=None, config=None, dtype=torch.float32, device="cpu", name="state dict"):
    """A SiglipPoolingHead loaded strictly from a prefix-stripped head state dict (see head_state_dict)."""
    dim, inter = check_head_state_dict(head_sd, name)
    heads = heads if heads is not None else pick_heads(dim, config)
    head = SiglipPoolingHead(dim, heads, inter, dtype=dtype, device=device)
    head.load_state_dict(head_sd, strict=True)
    return head.eval().requires_grad_(False)


def read_head_tensors(path):
    """Only the head tensors of a .safetensors file (prefix stripped), read through safe_open."""
    name = os.path.basename(str(path))
    if not str(path).lower().endswith(SAFETENSORS_SUFFIXES):
        raise UnsafeFileError(
            f"{name}: the SigLIP pooling head is read from .safetensors files only (no pickled .bin/.pt). "
            + FULL_FILE_HINT)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no such file: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            found = _head_keys(keys)
            if not found:
                raise _no_head_error(name, keys)
            return {short: f.get_tensor(key) for short, key in found.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptFileError(
            f"{name}: cannot read this .safetensors file ({e}). It is probably truncated or damaged; download "
            "it again.") from e


def load_head(path, heads=None, config=None, dtype=torch.float32, device="cpu"):
    """SiglipPoolingHead from a SigLIP .safetensors file, reading only its vision_model.head.* tensors.

    heads: the encoder's num_attention_heads; None picks config["num_attention_heads"] when config is given,
    else the released SigLIP value for the file's width (so400m, width 1152: 16).
    """
    return build_head(read_head_tensors(path), heads, config, dtype, device, os.path.basename(str(path)))
