"""Every example workflow runs through the real server on the tiny models, and its adapter changes the image."""
import copy
import json
import pathlib
import sys

import numpy as np
import pytest
from PIL import Image

from workflow_api import set_widget, to_api, validate_widgets

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import templates  # noqa: E402

WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
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
    return run_prompt(server, to_api(workflow, object_info))


def run_prompt(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    paths = sorted(server.output_images(entry))
    assert paths, "no image saved"
    return np.stack([np.asarray(Image.open(p)) for p in paths]).astype(np.int16)


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


def test_there_are_example_workflows():
    keys = {"ipadapter_basic", "ipadapter_style_transfer", "ipadapter_composition", "ipadapter_masked_two_subjects",
            "ipadapter_controlnet_lora", "ipadapter_faceid", "ipadapter_style_and_composition",
            "ipadapter_tiled_non_square", "ipadapter_embeds_save_load", "ipadapter_animation_weights",
            "flux_ipadapter_xlabs", "flux_ipadapter_instantx", "sd35_ipadapter", "instantid_basic", "pulid_sdxl",
            "pulid_flux"}
    assert {templates.workflow_path(key) for key in keys} <= set(WORKFLOWS)


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


# The examples load each file by name (so the frontend can flag a missing one); with these presets the unified
# loaders pick the same files for SD1.5.
UNIFIED_PRESETS = {"ipadapter_basic": "STANDARD (medium strength)", "ipadapter_controlnet_lora": "PLUS (high strength)",
                   "ipadapter_faceid": "FACEID PLUS V2"}


def through_unified_loader(prompt, preset):
    """The same prompt with the apply node's files (and the FaceID LoRA) from a unified loader's preset."""
    prompt = copy.deepcopy(prompt)
    apply = next(node for node in prompt.values() if node["class_type"] in APPLY_TYPES)["inputs"]
    if "insightface" in apply:
        lora = prompt[apply["model"][0]]
        assert lora["class_type"] == "LoraLoaderModelOnly"
        prompt["unified"] = {"class_type": "IPAKitUnifiedFaceIDLoader",
                             "inputs": {"model": lora["inputs"]["model"], "preset": preset,
                                        "lora_strength": lora["inputs"]["strength_model"],
                                        "lora_source": "file in models/loras", "provider": "CPU", "det_size": 640}}
        outputs = ("model", "ipadapter", "insightface", "clip_vision")
    else:
        prompt["unified"] = {"class_type": "IPAKitUnifiedLoader", "inputs": {"model": apply["model"], "preset": preset}}
        outputs = ("model", "ipadapter", "clip_vision")
    apply.update({name: ["unified", slot] for slot, name in enumerate(outputs)})
    return prompt


@pytest.mark.parametrize("key", sorted(UNIFIED_PRESETS))
def test_explicit_loaders_give_the_unified_presets_picture(key, comfy_server, object_info):
    workflow = small(json.loads(templates.workflow_path(key).read_text()), object_info)
    prompt = to_api(workflow, object_info)
    unified = through_unified_loader(prompt, UNIFIED_PRESETS[key])
    assert {n["class_type"] for n in unified.values()} & {"IPAKitUnifiedLoader", "IPAKitUnifiedFaceIDLoader"}
    assert np.array_equal(run_prompt(comfy_server, prompt), run_prompt(comfy_server, unified))
