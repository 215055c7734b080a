"""Safe loading of IP-Adapter weight files into the nested {"image_proj": ..., "ip_adapter": ...} form."""
import os
import pickle
import re
import zipfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CorruptFileError, UnknownFormatError, UnsafeFileError

# The two top-level groups of each released layout: tencent's IP-Adapter (also InstantX Flux), XLabs' Flux one, and
# PuLID-Flux's (pulid_flux_v0.9.x: IDFormer + cross-attentions).
LAYOUTS = (("image_proj", "ip_adapter"), ("ip_adapter_proj_model", "double_blocks"), ("pulid_encoder", "pulid_ca"))
GROUPS = LAYOUTS[0]
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def refused_object(error):
    """The Python object torch's weights-only unpickler refused, named from its message."""
    found = re.search(r"GLOBAL\s+([A-Za-z_][\w.]*[\w])", str(error))
    return f"the Python object {found.group(1)}" if found else "a Python object torch does not allow"


def read_state_dict(path):
    """Read a flat state dict: safetensors, or a torch zip file with weights_only=True."""
    name = os.path.basename(path)
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CorruptFileError(
                f"{name}: cannot read this .safetensors file ({e}). It is probably truncated or damaged; "
                "download it again.") from e
    if not path.lower().endswith(PICKLE_SUFFIXES):
        raise UnsafeFileError(
            f"{name}: unsupported file type. Expected .safetensors, or a PyTorch .bin/.pt/.pth file "
            "(loaded with weights_only=True).")
    if not zipfile.is_zipfile(path):
        raise CorruptFileError(
            f"{name}: not a PyTorch zip archive (legacy pickle or damaged file). Re-download it or convert it "
            "to .safetensors.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{name}: refused, the file holds {refused_object(e)} besides tensors, and loading it could run code. "
            "Use the .safetensors release of this model.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        raise CorruptFileError(f"{name}: cannot read this file ({e}). Download it again.") from e


def _has_group(sd, group):
    """Whether sd holds group as a nested dict or as prefixed keys."""
    return isinstance(sd.get(group), dict) or any(str(k).startswith(group + ".") for k in sd)


def _layout_groups(sd):
    """The groups of the layout whose prefixes the keys carry: all of them, else one of them (tencent when none)."""
    for complete in (all, any):
        for groups in LAYOUTS:
            if complete(_has_group(sd, g) for g in groups):
                return groups
    return GROUPS


def split_groups(sd, name="weights"):
    """Turn a flat (prefixed) or nested state dict into its two groups, e.g. {"image_proj": ..., "ip_adapter": ...}."""
    groups = _layout_groups(sd)
    if all(isinstance(sd.get(g), dict) for g in groups):
        nested = {g: dict(sd[g]) for g in groups}
    else:
        nested = {g: {} for g in groups}
        for key, value in sd.items():
            group, _, rest = key.partition(".")
            if group in nested and rest:
                nested[group][rest] = value
    for group, tensors in nested.items():
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            found = ", ".join(sorted(sd)[:6]) or "nothing"
            raise UnknownFormatError(
                f"{name}: not an IP-Adapter file: no '{group}' tensors (found keys: {found}). Expected the "
                "original IP-Adapter layout with 'image_proj.*' and 'ip_adapter.*' weights (or XLabs' Flux layout "
                "with 'ip_adapter_proj_model.*' and 'double_blocks.*', or PuLID-Flux's with 'pulid_encoder.*' and "
                "'pulid_ca.*'); a LoRA, ControlNet or checkpoint belongs in its own loader.")
    return nested


def load_adapter_file(path):
    """Load an IP-Adapter file from disk as the nested two-group dict."""
    return split_groups(read_state_dict(path), os.path.basename(path))
