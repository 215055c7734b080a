"""Model folders: models/ipadapter and models/insightface, keeping paths users set in extra_model_paths.yaml."""
import os

import folder_paths

from ..ipadapter_core.loading import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES

# instantid, pulid, facexlib: where ComfyUI_InstantID and PuLID_ComfyUI users keep their files
MODEL_FOLDERS = ("ipadapter", "insightface", "instantid", "pulid", "facexlib")
WEIGHT_FOLDERS = ("ipadapter", "instantid", "pulid", "facexlib")  # folders that list weight files
# Where the Flux and SD3.5 IP-Adapter packs taught users to keep their files (ComfyUI-IPAdapter-Flux,
# x-flux-comfyui, and models/ipadapter-sd3): searched as part of the ipadapter folder, after models/ipadapter.
LEGACY_IPADAPTER_FOLDERS = ("ipadapter-flux", os.path.join("xlabs", "ipadapters"), "ipadapter-sd3")
LOADABLE_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES  # what loading.read_state_dict reads (not .pkl / .pt2)


def weight_files(folder):
    """The files of a model folder the pack can load (another pack may register the folder with more suffixes)."""
    return [name for name in folder_paths.get_filename_list(folder) if name.lower().endswith(LOADABLE_SUFFIXES)]


def register_model_folders():
    """Add the default folders after any user-configured ones; the weight folders list weight files only."""
    for name in MODEL_FOLDERS:
        defaults = [os.path.join(folder_paths.models_dir, name)]
        if name == "ipadapter":
            defaults += [os.path.join(folder_paths.models_dir, sub) for sub in LEGACY_IPADAPTER_FOLDERS]
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        for default in defaults:
            if default not in paths:
                paths.append(default)
        if name in WEIGHT_FOLDERS:
            extensions = set(extensions) | set(LOADABLE_SUFFIXES)
        folder_paths.folder_names_and_paths[name] = (paths, extensions)
