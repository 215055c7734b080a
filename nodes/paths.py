"""Model folders: models/ipadapter and models/insightface, keeping paths users set in extra_model_paths.yaml."""
import os

import folder_paths

MODEL_FOLDERS = ("ipadapter", "insightface")


def register_model_folders():
    """Add the default folders after any user-configured ones; ipadapter lists weight files only."""
    for name in MODEL_FOLDERS:
        default = os.path.join(folder_paths.models_dir, name)
        paths, extensions = folder_paths.folder_names_and_paths.get(name, ([], set()))
        if default not in paths:
            paths.append(default)
        if name == "ipadapter":
            extensions = set(extensions) | set(folder_paths.supported_pt_extensions)
        folder_paths.folder_names_and_paths[name] = (paths, extensions)
