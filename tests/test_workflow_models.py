"""Each example workflow's top-level `models` list (what the frontend's Missing Models dialog checks on load) names
every model file the graph opens, with a download URL and a folder the frontend knows; pack nodes carry the
pack's registry id."""
import json
import pathlib
import tomllib
from urllib.parse import urlparse

import pytest

from workflow_api import widget_items

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Stand-ins for a LoRA of the user's own choosing: no release to download.
USER_CHOSEN_FILES = {"style_lora_sd15.safetensors", "flux_style_lora.safetensors"}
# The frontend lists a folder's files only with these suffixes (ComfyUI's supported_pt_extensions), so an
# InsightFace pack (.onnx files) cannot be checked by it and is named in the workflow descriptions instead.
CHECKABLE_SUFFIXES = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")
UNIFIED_LOADERS = ("IPAKitUnifiedLoader", "IPAKitUnifiedFaceIDLoader")


def load(path):
    return json.loads(path.read_text())


def listed(workflow):
    """{(name, directory)} of the workflow's top-level models."""
    return {(m["name"], m["directory"]) for m in workflow.get("models", [])}


def model_folders():
    """Folder names the server reports at /experiment/models (the only ones the frontend can check)."""
    import folder_paths

    return {name for name in folder_paths.folder_names_and_paths if name not in ("configs", "custom_nodes")}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_models_entries_are_downloadable_into_known_folders(path, world_paths):
    workflow = load(path)
    models = workflow.get("models")
    assert models, "no top-level models list: the frontend would not tell a user which files to get"
    folders = model_folders()
    for model in models:
        assert set(model) == {"name", "url", "directory"}, model
        assert urlparse(model["url"]).scheme == "https" and urlparse(model["url"]).netloc, model
        assert model["directory"] in folders, f"{model}: the frontend reports an unknown folder as invalid"
        assert model["name"].endswith(CHECKABLE_SUFFIXES), model
    urls = [m["url"] for m in models]
    assert len(urls) == len(set(urls)), "the frontend keeps one entry per URL and would drop the others"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_file_widget_is_in_the_models_list(path, world_paths):
    import folder_paths

    workflow = load(path)
    needed = set()
    for node in workflow["nodes"]:
        for value in node.get("widgets_values") or []:
            if not isinstance(value, str) or value in USER_CHOSEN_FILES:
                continue
            holders = {f for f in model_folders() if value in folder_paths.get_filename_list(f)}
            if holders:
                needed.add(value)
                assert any((value, f) in listed(workflow) for f in holders), \
                    f"{node['type']}: {value} (in {sorted(holders)}) is not in the workflow's models list"
    assert needed, "the workflow opens no model file?"


def node_info(node_type):
    """The node's input definitions as /object_info gives them, read in-process (pack or core node)."""
    import nodes as comfy_nodes

    from ipadapter_kit.nodes import NODES

    pack = {cls.GET_SCHEMA().node_id: cls for cls in NODES}
    if node_type in pack:
        return pack[node_type].GET_NODE_INFO_V1()
    return {"input": comfy_nodes.NODE_CLASS_MAPPINGS[node_type].INPUT_TYPES()}


def combo_values(workflow, names):
    """The names among `names` that a combo widget (a file menu) of the workflow holds."""
    values = set()
    for node in workflow["nodes"]:
        if not names & set(v for v in node.get("widgets_values") or [] if isinstance(v, str)):
            continue  # holds none of them (and may be a comfy_extras node, which is not loaded in-process)
        for _name, kind, _opts, value in widget_items(node, node_info(node["type"])):
            if (isinstance(kind, list) or kind == "COMBO") and value in names:
                values.add(value)
    return values


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_every_listed_file_is_a_file_menus_value(path, world_paths):
    # newer frontends (1.49) flag only combo values that look like model files and are not offered; the models list
    # merely adds their links, so a file picked by a preset (not held by a widget) would never be shown missing
    workflow = load(path)
    names = {m["name"] for m in workflow["models"]}
    assert names - combo_values(workflow, names) == set()
    # a unified loader's files come from its preset, which no frontend reads
    assert not [n["type"] for n in workflow["nodes"] if n["type"] in UNIFIED_LOADERS]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_nodes_name_their_pack(path):
    for node in load(path)["nodes"]:
        props = node["properties"]
        if node["type"].startswith("IPAKit"):
            assert (props.get("cnr_id"), props.get("ver")) == (PROJECT["name"], PROJECT["version"]), node["type"]
        else:
            assert props.get("cnr_id") == "comfy-core" and props.get("ver"), node["type"]
