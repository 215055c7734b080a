"""One loaded copy of each adapter file, wrapped in a ModelPatcher so ComfyUI moves and offloads it."""
import os
import threading
from dataclasses import dataclass

import torch

import comfy.model_management
import comfy.model_patcher
import folder_paths

from ..ipadapter_core import adapter as core_adapter
from ..ipadapter_core.errors import InvalidInputError

_cache = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class LoadedAdapter:
    """An adapter as it travels between nodes: its file name, spec, weights and their patcher."""

    name: str
    weights: object
    patcher: object
    clip_vision: object = None  # set by the unified loaders
    plus_v2: object = None  # FaceID Plus: True/False when a unified preset says so, None = node option decides
    unnorm: bool = False  # FaceID Portrait unnorm (set by its preset)

    @property
    def spec(self):
        return self.weights.spec


def resolve(folder, name):
    """Full path of a file listed in a model folder, or an error naming where it was looked for."""
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        searched = ", ".join(folder_paths.get_folder_paths(folder)) if folder in folder_paths.folder_names_and_paths \
            else f"models/{folder}"
        raise InvalidInputError(f"'{name}' was not found in the '{folder}' folders ({searched}). Put the file there "
                                "and refresh (R) the node list.")
    return path


def shadowed(folder, name):
    """A note when several folders of `folder` hold a file called `name` (ComfyUI lists it once and loads the first
    one: InstantX names both its Flux and its SD3.5 adapter ip-adapter.bin), else ''."""
    if folder not in folder_paths.folder_names_and_paths:
        return ""
    holders = [base for base in folder_paths.get_folder_paths(folder) if os.path.isfile(os.path.join(base, name))]
    if len(holders) < 2:
        return ""
    return (f" Several folders hold a file named '{name}' ({', '.join(holders)}): ComfyUI lists the name once and "
            f"loads the one in {holders[0]}. Rename the others (e.g. ip-adapter_sd35_large.bin).")


def weights_dtype(file_dtype, device):
    """The dtype adapter weights are kept in on device: ComfyUI's choice for a diffusion model there, the file's own
    16-bit dtype first when the device runs it (fp16 / bf16 releases stay as they are on a GPU; float32 on CPU)."""
    preferred = [file_dtype] if file_dtype in (torch.float16, torch.bfloat16) else []
    supported = preferred + [d for d in (torch.float16, torch.bfloat16, torch.float32) if d not in preferred]
    return comfy.model_management.unet_dtype(device=device, supported_dtypes=supported, weight_dtype=file_dtype)


def load_adapter(name, folder="ipadapter"):
    """The cached LoadedAdapter for a file in models/ipadapter (or another model folder; reloaded when it changes)."""
    path = resolve(folder, name)
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    with _lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
    load_device = comfy.model_management.get_torch_device()
    weights = core_adapter.load(path, lambda file_dtype: weights_dtype(file_dtype, load_device))
    patcher = comfy.model_patcher.ModelPatcher(
        weights, load_device=load_device, offload_device=comfy.model_management.unet_offload_device())
    loaded = LoadedAdapter(name=name, weights=weights, patcher=patcher)
    with _lock:
        _cache[path] = (key, loaded)
    return loaded
