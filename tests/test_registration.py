"""Entry point and model folders, in-process against the host's folder_paths."""
import asyncio
import os

import folder_paths
import pytest

import ipadapter_kit
from ipadapter_kit.nodes import paths


@pytest.fixture
def restore_folders():
    saved = {k: (list(v[0]), set(v[1])) for k, v in folder_paths.folder_names_and_paths.items()}
    yield
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()


def test_entrypoint_returns_extension_with_nodes(restore_folders):
    extension = asyncio.run(ipadapter_kit.comfy_entrypoint())
    nodes = asyncio.run(extension.get_node_list())
    ids = [n.define_schema().node_id for n in nodes]
    assert ids and all(i.startswith("IPAKit") for i in ids)
    assert len(ids) == len(set(ids))


def test_default_folders_registered(restore_folders):
    folder_paths.folder_names_and_paths.pop("ipadapter", None)
    folder_paths.folder_names_and_paths.pop("insightface", None)
    folder_paths.folder_names_and_paths.pop("instantid", None)
    folder_paths.folder_names_and_paths.pop("pulid", None)
    paths.register_model_folders()
    models = folder_paths.models_dir
    assert folder_paths.get_folder_paths("insightface") == [os.path.join(models, "insightface")]
    assert folder_paths.get_folder_paths("instantid") == [os.path.join(models, "instantid")]  # ComfyUI_InstantID's
    assert folder_paths.get_folder_paths("ipadapter") == [  # the Flux and SD3.5 packs' folders are searched too
        os.path.join(models, "ipadapter"), os.path.join(models, "ipadapter-flux"),
        os.path.join(models, "xlabs", "ipadapters"), os.path.join(models, "ipadapter-sd3")]
    assert ".safetensors" in folder_paths.folder_names_and_paths["ipadapter"][1]


def test_flux_packs_folders_list_their_files(restore_folders, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    for sub, name in (("ipadapter-flux", "ip-adapter.bin"), ("xlabs/ipadapters", "flux-ip-adapter.safetensors")):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / name).write_bytes(b"")
    folder_paths.folder_names_and_paths.pop("ipadapter", None)
    paths.register_model_folders()
    folder_paths.filename_list_cache.clear()
    assert {"ip-adapter.bin", "flux-ip-adapter.safetensors"} <= set(folder_paths.get_filename_list("ipadapter"))


def test_user_paths_from_extra_model_paths_are_kept_first(restore_folders, tmp_path):
    folder_paths.folder_names_and_paths.pop("ipadapter", None)
    folder_paths.add_model_folder_path("ipadapter", str(tmp_path))  # what extra_model_paths.yaml does
    (tmp_path / "mine.safetensors").write_bytes(b"")
    paths.register_model_folders()
    paths.register_model_folders()  # idempotent
    registered = folder_paths.get_folder_paths("ipadapter")
    assert registered[:2] == [str(tmp_path), os.path.join(folder_paths.models_dir, "ipadapter")]
    folder_paths.filename_list_cache.clear()
    assert "mine.safetensors" in folder_paths.get_filename_list("ipadapter")


def test_every_node_has_a_description_and_every_input_a_tooltip(restore_folders):
    from ipadapter_kit.nodes import NODES

    paths.register_model_folders()  # what comfy_entrypoint does before ComfyUI reads the schemas
    for node in NODES:
        schema = node.define_schema()
        assert schema.description, schema.node_id
        assert schema.display_name.startswith("IPAdapter Kit"), schema.node_id
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
