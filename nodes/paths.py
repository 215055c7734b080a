"""Model folders: models/ipadapter and models/insightface, keeping paths users set in extra_model_paths.yaml."""
import os

import folder_paths

# instantid, pulid, facexlib: where ComfyUI_InstantID and PuLID_ComfyUI users keep their files
MODEL_FOLDERS = ("ipadapter", "insightface", "instantid", "pulid", "facexlib")
WEIGHT_FOLDERS = ("ipadapter", "instantid", "pulid", "facexlib")  # folders that list weight files
# Where the Flux and SD3.5 IP-Adapter packs taught users to keep their files (ComfyUI-IPAdapter-Flux,
# x-flux-comfyui, and models/ipadapter-sd3): searched as part of the ipadapter folder, after models/ipadapter.
LEGACY_IPADAPTER_FOLDERS = ("ipadapter-flux", os.path.join("xlabs", "ipadapters"), "ipadapter-sd3")


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
            extensions = set(extensions) | set(folder_paths.supported_pt_extensions)
        folder_paths.folder_names_and_paths[name] = (paths, extensions)
