"""Every example workflow runs through the real server on the tiny models, and its adapter changes the image."""
import copy
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from workflow_api import set_widget, to_api, validate_widgets

WORKFLOWS = sorted((pathlib.Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
APPLY_TYPES = ("IPAKitApply", "IPAKitApplyAdvanced", "IPAKitApplyFaceID", "IPAKitStyleComposition", "IPAKitApplyTiled",
               "IPAKitApplyRegions", "IPAKitApplyInstantID", "IPAKitApplyInstantIDAdvanced", "IPAKitApplyPuLID",
               "IPAKitApplyPuLIDAdvanced", "IPAKitApplyPuLIDFlux")


def small(workflow, object_info):
    """The same graph at test size: 64x64 latent, 3 steps."""
    workflow = copy.deepcopy(workflow)
    for latent in {node["type"] for node in workflow["nodes"]} & {"EmptyLatentImage", "EmptySD3LatentImage"}:
        set_widget(workflow, latent, "width", 64, object_info)
        set_widget(workflow, latent, "height", 64, object_info)
    set_widget(workflow, "KSampler", "steps", 3, object_info)
    return workflow


def bypass_adapters(workflow):
    workflow = copy.deepcopy(workflow)
    for node in workflow["nodes"]:
        if node["type"] in APPLY_TYPES:
            node["mode"] = 4
    return workflow


def run_image(server, workflow, object_info):
    entry = server.run(to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    paths = sorted(server.output_images(entry))
    assert paths, "no image saved"
    return np.stack([np.asarray(Image.open(p)) for p in paths]).astype(np.int16)


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


def test_there_are_example_workflows():
    names = {p.stem for p in WORKFLOWS}
    assert {"ipadapter_basic", "ipadapter_style_transfer", "ipadapter_composition", "ipadapter_masked_two_subjects",
            "ipadapter_controlnet_lora", "ipadapter_faceid", "ipadapter_style_and_composition",
            "ipadapter_tiled_non_square", "ipadapter_embeds_save_load", "ipadapter_animation_weights",
            "flux_ipadapter_xlabs", "flux_ipadapter_instantx", "sd35_ipadapter", "instantid_basic", "pulid_sdxl", "pulid_flux"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs_and_the_adapter_matters(path, comfy_server, object_info):
    workflow = json.loads(path.read_text())
    assert validate_widgets(workflow, object_info) == []
    assert any(node["type"] in APPLY_TYPES for node in workflow["nodes"])
    for node in workflow["nodes"]:
        if node["type"] in ("CheckpointLoaderSimple", "IPAKitModelLoader", "CLIPVisionLoader", "IPAKitCLIPVisionLoader",
                            "ControlNetLoader", "IPAKitInstantIDLoader", "IPAKitPuLIDLoader", "IPAKitEVACLIPLoader"):
            assert node["properties"].get("models"), f"{node['type']} names no model file to download"
    workflow = small(workflow, object_info)
    with_adapter = run_image(comfy_server, workflow, object_info)
    without = run_image(comfy_server, bypass_adapters(workflow), object_info)
    assert np.abs(with_adapter - without).mean() > 1.0, "the image prompt did not change the picture"
