"""UI-format workflows converted to API prompts: a txt2img run on the live server, and the conversion rules."""
import copy

import pytest

from tinymodels.world import CHECKPOINT_FLUX, CHECKPOINT_SD15, CHECKPOINT_SD35, CHECKPOINT_SDXL
from workflow_api import WorkflowError, set_widget, to_api, validate_widgets


def ui_node(node_id, node_type, widgets=(), inputs=(), outputs=(), mode=0):
    """A UI-format node; inputs are (name, type) or (name, type, "widget") for a widget converted to a socket."""
    return {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": 0,
            "mode": mode, "properties": {}, "widgets_values": list(widgets),
            "inputs": [{"name": i[0], "type": i[1], "link": None, **({"widget": {"name": i[0]}} if i[2:] else {})}
                       for i in inputs],
            "outputs": [{"name": t, "type": t, "links": []} for t in outputs]}


def ui_workflow(nodes, wires):
    """Connect (from_id, from_slot, to_id, input_name) wires the way the frontend stores links."""
    by_id = {n["id"]: n for n in nodes}
    links = []
    for link_id, (src, slot, dst, name) in enumerate(wires, 1):
        inputs = by_id[dst]["inputs"]
        to_slot = next(i for i, inp in enumerate(inputs) if inp["name"] == name)
        inputs[to_slot]["link"] = link_id
        by_id[src]["outputs"][slot]["links"].append(link_id)
        links.append([link_id, src, slot, dst, to_slot, by_id[src]["outputs"][slot]["type"]])
    return {"last_node_id": max(by_id), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_txt2img():
    """txt2img on core nodes, with a Reroute, a Note, a PrimitiveNode on the seed and a muted SaveImage."""
    primitive = ui_node(10, "PrimitiveNode", [12345, "fixed"], outputs=["INT"])
    primitive["outputs"][0]["widget"] = {"name": "seed"}
    nodes = [
        ui_node(1, "CheckpointLoaderSimple", ["some-other-model.safetensors"], outputs=["MODEL", "CLIP", "VAE"]),
        ui_node(2, "CLIPTextEncode", ["a photo of a cat"], [("clip", "CLIP")], ["CONDITIONING"]),
        ui_node(3, "CLIPTextEncode", ["blurry"], [("clip", "CLIP")], ["CONDITIONING"]),
        ui_node(4, "EmptyLatentImage", [64, 64, 1], outputs=["LATENT"]),
        ui_node(5, "KSampler", [0, "fixed", 3, 5.0, "euler", "normal", 1.0],
                [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                 ("latent_image", "LATENT"), ("seed", "INT", "widget")], ["LATENT"]),
        ui_node(6, "VAEDecode", inputs=[("samples", "LATENT"), ("vae", "VAE")], outputs=["IMAGE"]),
        ui_node(7, "Reroute", inputs=[("", "*")], outputs=["IMAGE"]),
        ui_node(8, "SaveImage", ["wfapi"], [("images", "IMAGE")]),
        ui_node(9, "Note", ["converted from the UI format"]),
        primitive,
        ui_node(11, "SaveImage", ["muted"], [("images", "IMAGE")], mode=2),
    ]
    wires = [(1, 0, 5, "model"), (1, 1, 2, "clip"), (1, 1, 3, "clip"), (1, 2, 6, "vae"), (2, 0, 5, "positive"),
             (3, 0, 5, "negative"), (4, 0, 5, "latent_image"), (5, 0, 6, "samples"), (6, 0, 7, ""),
             (7, 0, 8, "images"), (10, 0, 5, "seed"), (6, 0, 11, "images")]
    return ui_workflow(nodes, wires)


def test_ui_workflow_runs_on_server(comfy_server):
    info = comfy_server.get("/object_info")
    workflow = ui_txt2img()
    assert validate_widgets(workflow, info) == [
        "node 1 (CheckpointLoaderSimple) ckpt_name: 'some-other-model.safetensors' is not one of "
        f"{sorted([CHECKPOINT_FLUX, CHECKPOINT_SD15, CHECKPOINT_SD35, CHECKPOINT_SDXL])}"]
    assert set_widget(workflow, "CheckpointLoaderSimple", "ckpt_name", CHECKPOINT_SD15, info) == 1
    assert validate_widgets(workflow, info) == []

    prompt = to_api(workflow, info)
    assert sorted(prompt, key=int) == ["1", "2", "3", "4", "5", "6", "8"]
    sampler = prompt["5"]["inputs"]
    assert sampler["seed"] == 12345 and sampler["steps"] == 3 and sampler["sampler_name"] == "euler"
    assert sampler["model"] == ["1", 0] and sampler["latent_image"] == ["4", 0]
    assert prompt["8"]["inputs"] == {"images": ["6", 0], "filename_prefix": "wfapi"}

    entry = comfy_server.run(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]
    paths = comfy_server.output_images(entry)
    assert len(paths) == 1 and paths[0].name.startswith("wfapi") and paths[0].exists()


# A small object_info with the shapes the server sends: classic and V3 COMBOs, seed controls, forceInput.
INFO = {
    "Loader": {"input": {"required": {"ckpt": [["a.safetensors", "b.safetensors"], {}]}},
               "input_order": {"required": ["ckpt"]}, "output": ["MODEL", "CLIP"]},
    "Sampler": {"input": {
        "required": {"model": ["MODEL", {}], "seed": ["INT", {"min": 0, "max": 100, "control_after_generate": True}],
                     "steps": ["INT", {"min": 1, "max": 50}], "mode": ["COMBO", {"options": ["x", "y"]}],
                     "pick": [["p", "q"], {"control_after_generate": True}]},
        "optional": {"scale": ["FLOAT", {"min": 0.0, "max": 2.0}], "hint": ["STRING", {"forceInput": True}],
                     "label": ["STRING", {}], "flag": ["BOOLEAN", {}]}}, "output": ["LATENT"]},
    "Text": {"input": {"required": {"clip": ["CLIP", {}], "text": ["STRING", {"multiline": True}]}},
             "output": ["CONDITIONING"]},
}
SAMPLER_WIDGETS = [7, "fixed", 20, "y", "q", "increment", "", 1.5, "hi", True]


def sampler_workflow(middle_mode=4):
    """Loader -> Middle (bypassed by default; its inputs are in reverse type order) -> Sampler, and a Text node."""
    nodes = [ui_node(1, "Loader", ["a.safetensors"], outputs=["MODEL", "CLIP"]),
             ui_node(2, "Middle", ["x"], [("clip", "CLIP"), ("model", "MODEL")], ["MODEL", "CLIP"], mode=middle_mode),
             ui_node(3, "Sampler", SAMPLER_WIDGETS, [("model", "MODEL")], ["LATENT"]),
             ui_node(4, "Text", ["hello"], [("clip", "CLIP")], ["CONDITIONING"])]
    return ui_workflow(nodes, [(1, 0, 2, "model"), (1, 1, 2, "clip"), (2, 0, 3, "model"), (2, 1, 4, "clip")])


def test_widget_values_map_to_input_names():
    prompt = to_api(sampler_workflow(), INFO)
    assert prompt["3"] == {"class_type": "Sampler", "_meta": {"title": "Sampler"}, "inputs": {
        "model": ["1", 0], "seed": 7, "steps": 20, "mode": "y", "pick": "q", "scale": 1.5, "label": "hi",
        "flag": True}}


def test_bypassed_node_passes_inputs_of_the_same_type_through():
    prompt = to_api(sampler_workflow(), INFO)
    assert "2" not in prompt
    assert prompt["3"]["inputs"]["model"] == ["1", 0]
    assert prompt["4"]["inputs"] == {"clip": ["1", 1], "text": "hello"}


def test_muted_node_is_dropped_with_its_links():
    prompt = to_api(sampler_workflow(middle_mode=2), INFO)
    assert "2" not in prompt and "model" not in prompt["3"]["inputs"] and "clip" not in prompt["4"]["inputs"]


def test_missing_node_type_names_node():
    with pytest.raises(WorkflowError, match=r"node 2 has type 'Middle'"):
        to_api(sampler_workflow(middle_mode=0), INFO)
    assert validate_widgets(sampler_workflow(middle_mode=0), INFO) == ["node 2 (Middle): unknown node type"]


def test_validate_widgets_reports_bad_values():
    workflow = sampler_workflow()
    assert validate_widgets(workflow, INFO) == []
    workflow["nodes"][0]["widgets_values"] = ["c.safetensors"]
    workflow["nodes"][2]["widgets_values"] = [7, "sometimes", 0, "z", "p", "fixed", "", 2.5, 3, "yes"]
    assert validate_widgets(workflow, INFO) == [
        "node 1 (Loader) ckpt: 'c.safetensors' is not one of ['a.safetensors', 'b.safetensors']",
        "node 3 (Sampler) seed control_after_generate: 'sometimes' is not a control_after_generate mode",
        "node 3 (Sampler) steps: 0 is below min 1",
        "node 3 (Sampler) mode: 'z' is not one of ['x', 'y']",
        "node 3 (Sampler) scale: 2.5 is above max 2.0",
        "node 3 (Sampler) label: 3 is not a STRING",
        "node 3 (Sampler) flag: 'yes' is not a BOOLEAN",
    ]


def test_set_widget_skips_control_values_and_linked_widgets_are_not_checked():
    workflow = sampler_workflow()
    assert set_widget(workflow, 3, "steps", 999, INFO) == 1 and set_widget(workflow, "Sampler", "label", "x", INFO)
    assert workflow["nodes"][2]["widgets_values"][:3] == [7, "fixed", 999]
    assert validate_widgets(workflow, INFO) == ["node 3 (Sampler) steps: 999 is above max 50"]
    with pytest.raises(WorkflowError, match="no widget 'model'"):
        set_widget(workflow, 3, "model", 1, INFO)
    # steps converted to a socket and fed by a PrimitiveNode: its stale widget value is ignored
    primitive = ui_node(5, "PrimitiveNode", [12, "fixed"], outputs=["INT"])
    workflow["nodes"].append(primitive)
    workflow["nodes"][2]["inputs"].append({"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 9})
    workflow["links"].append([9, 5, 0, 3, 1, "INT"])
    assert validate_widgets(workflow, INFO) == []
    assert to_api(workflow, INFO)["3"]["inputs"]["steps"] == 12


def test_dict_widget_values_and_list_values():
    workflow = sampler_workflow()
    text = workflow["nodes"][3]
    text["widgets_values"] = {"text": ["a", "b"]}
    assert to_api(copy.deepcopy(workflow), INFO)["4"]["inputs"]["text"] == {"__value__": ["a", "b"]}
    set_widget(workflow, 4, "text", "plain", INFO)
    assert to_api(workflow, INFO)["4"]["inputs"]["text"] == "plain"
