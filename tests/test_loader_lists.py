"""The loaders offer only files the pack can load: no .pkl / .pt2 that would always be refused."""
import folder_paths
import pytest

from ipadapter_kit.nodes import loaders, paths

FILES = ("a.safetensors", "b.sft", "c.bin", "d.pt", "e.pth", "f.ckpt", "g.pkl", "h.pt2", "notes.txt")
LOADABLE = ["a.safetensors", "b.sft", "c.bin", "d.pt", "e.pth", "f.ckpt"]


@pytest.fixture
def ipadapter_folder(tmp_path):
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    for name in FILES:
        (tmp_path / name).write_bytes(b"")
    folder_paths.filename_list_cache.clear()
    yield tmp_path
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()


def loader_options():
    folder_paths.filename_list_cache.clear()
    return loaders.ModelLoader.define_schema().inputs[0].options


def test_registered_folder_lists_loadable_files_only(ipadapter_folder):
    folder_paths.folder_names_and_paths["ipadapter"] = ([str(ipadapter_folder)], set())
    paths.register_model_folders()
    assert sorted(folder_paths.get_filename_list("ipadapter")) == LOADABLE
    assert sorted(loader_options()) == LOADABLE


def test_loader_filters_a_folder_another_pack_registered_with_all_torch_suffixes(ipadapter_folder):
    """IPAdapter_plus registers models/ipadapter with every suffix ComfyUI knows (.pkl and .pt2 included)."""
    folder_paths.folder_names_and_paths["ipadapter"] = ([str(ipadapter_folder)],
                                                        set(folder_paths.supported_pt_extensions))
    folder_paths.filename_list_cache.clear()
    assert {"g.pkl", "h.pt2"} <= set(folder_paths.get_filename_list("ipadapter"))
    assert sorted(loader_options()) == LOADABLE
