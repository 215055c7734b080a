"""The workflow converter (migrate/): its embedded node layouts against the live server, the mapping of hand-built
IPAdapter_plus, Flux IP-Adapter pack (x-flux-comfyui, ComfyUI-IPAdapter-Flux) and SD3.5 IP-Adapter pack
(ComfyUI-InstantX-IPAdapter-SD3) workflows and of ComfyUI_InstantID's, PuLID_ComfyUI's and ComfyUI-PuLID-Flux's (and
its forks') example workflows (UI and API format), the converted graphs run through the server, and the CLI."""
import ast
import copy
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ipadapter_kit.migrate import convert, mapping
from workflow_api import ordered_inputs, set_widget, to_api, validate_widgets, widget_slots

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "ipadapter_plus"
RUNNABLE = ["unified_simple", "advanced_masked", "style_composition", "faceid", "embeds", "tiled", "regional",
            "mad_scientist"]


def load(name):
    return json.loads((DATA / f"{name}.json").read_text())


def mapped(result):
    """{node id: 'Theirs -> Ours'} from the report."""
    out = {}
    for line in result.report:
        if line.startswith("mapped: "):
            where, what = line[len("mapped: "):].split(": ", 1)
            out[where.rsplit(" ", 1)[1]] = what
    return out


def problems(result):
    return [line for line in result.report if line.startswith(("lossy:", "unmapped:"))]


def nodes_by_id(workflow):
    return {node["id"]: node for node in workflow["nodes"]}


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


# This pack's InstantID and PuLID nodes are newer than the converter's rules for them: a check against the live
# server that needs one the server does not register yet is skipped (it runs by itself once the node is there).
PENDING_TARGETS = frozenset(mapping.INSTANTID_TARGETS) | frozenset(mapping.PULID_TARGETS)


def skip_unregistered(object_info, *node_ids):
    missing = [node_id for node_id in node_ids if node_id in PENDING_TARGETS and node_id not in object_info]
    if missing:
        family = "PuLID" if any(node_id in mapping.PULID_TARGETS for node_id in missing) else "InstantID"
        pytest.skip(f"the server does not register {', '.join(missing)} yet (IPAdapter Kit's {family} nodes are "
                    "still being written); the converter's layout for it is checked once it is")


# ---------------------------------------------------------------------------------------------------------------
# The embedded data cannot drift from the nodes.
@pytest.mark.parametrize("node_id", list(mapping.TARGETS))
def test_embedded_target_layouts_match_the_live_server(node_id, object_info):
    skip_unregistered(object_info, node_id)
    target = mapping.TARGETS[node_id]
    info = object_info.get(node_id)
    assert info is not None, f"{node_id} is not registered"
    assert info["display_name"] == target["title"], node_id
    optional = set(info["input"].get("optional") or {})
    live = [(name, "COMBO" if isinstance(kind, list) else kind, name in optional)
            for name, kind, _ in ordered_inputs(info)]
    assert live == [(s["name"], s["type"], s["optional"]) for s in target["inputs"]], node_id
    slots = [name for name, _, _ in widget_slots(info)]
    ours = []
    for spec in target["inputs"]:
        if spec.get("widget"):
            ours += [spec["name"]] + ([None] if spec.get("control") else [])
    assert slots == ours, node_id
    for name, kind, opts in ordered_inputs(info):
        spec = next(s for s in target["inputs"] if s["name"] == name)
        if not spec.get("widget"):
            continue
        live_options = kind if isinstance(kind, list) else opts.get("options")
        if spec["type"] == "COMBO" and not spec.get("dynamic"):
            assert tuple(live_options) == spec["options"], f"{node_id}.{name}"
        elif spec["type"] == "COMBO" and spec["options"]:
            assert set(live_options) <= set(spec["options"]), f"{node_id}.{name}"
        if "default" in opts or not spec.get("dynamic"):
            assert opts.get("default") == spec["default"], f"{node_id}.{name} default"
        for bound in ("min", "max"):
            if bound in spec:
                assert opts.get(bound) == spec[bound], f"{node_id}.{name} {bound}"
    outputs = list(zip(info["output_name"], info["output"]))
    assert outputs == target["outputs"], node_id


def test_rules_name_only_known_nodes_and_inputs(object_info):
    for key, rule in mapping.RULES.items():  # (targets still being written: checked against TARGETS only)
        assert rule.target in mapping.TARGETS, key
        assert rule.target in object_info or rule.target in PENDING_TARGETS, key
        names = {s["name"] for s in mapping.TARGETS[rule.target]["inputs"]}
        source = mapping.SOURCES[key.split("@")[0].split("+")[0]]
        widgets = {name for layout in mapping.widget_layouts(key.split("@")[0].split("+")[0]) for name in layout}
        theirs = set(source["sockets"]) | widgets
        assert set(rule.rename) <= theirs and set(rule.drop) <= theirs, key
        assert set(rule.rename.values()) <= names and set(rule.fixed) <= names and set(rule.values) <= names, key
        for _, variant in rule.variants:
            assert variant in mapping.RULES or f"{key}@{variant}" in mapping.RULES, key
        for their_slot, our_slot in rule.outputs.items():
            assert their_slot < len(source["outputs"]) and (our_slot is None or our_slot < len(
                mapping.TARGETS[rule.target]["outputs"])), key
        for extra in rule.adds.values():
            assert extra.target in mapping.TARGETS and extra.target in object_info, key
            extra_names = {s["name"] for s in mapping.TARGETS[extra.target]["inputs"] if s.get("widget")}
            assert set(extra.widgets) <= extra_names and set(extra.values) <= extra_names, key
            assert set(extra.widgets.values()) <= widgets, key
            assert set(extra.fixed) <= extra_names, key
            extra_sockets = {s["name"] for s in mapping.TARGETS[extra.target]["inputs"] if not s.get("widget")}
            assert set(extra.links) <= extra_sockets, key
            assert all(set(names) & set(source["sockets"]) for names in extra.links.values()), key
    assert not set(mapping.RULES) & set(mapping.NOT_MAPPED)
    assert set(mapping.PACK_OF) == set(mapping.SOURCES)
    for kind in mapping.SOURCES:  # earlier releases' layouts are told apart by their number and kinds of values
        signatures = [tuple(mapping.WIDGET_KINDS.get(name) for name in layout)
                      for layout in mapping.widget_layouts(kind)]
        assert len(signatures) == len(set(signatures)), kind


def test_migrate_imports_only_the_standard_library():
    for path in (ROOT / "migrate").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "migrate", f"{path.name} imports {name}"


# ---------------------------------------------------------------------------------------------------------------
# Conversions and their reports.
EXPECTED = {
    "unified_simple": ({"5": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader", "7": "IPAdapter -> IPAKitApply"}, []),
    "advanced_masked": ({"5": "IPAdapterModelLoader -> IPAKitModelLoader",
                         "8": "PrepImageForClipVision -> IPAKitPrepImage", "9": "IPAdapterNoise -> IPAKitNoiseImage",
                         "11": "IPAdapterAdvanced -> IPAKitApplyAdvanced",
                         "13": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader",
                         "14": "IPAdapter -> IPAKitApplyAdvanced"},
                        []),
    "style_composition": ({"5": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader",
                           "8": "IPAdapterStyleComposition -> IPAKitStyleComposition",
                           "9": "IPAdapterPreciseStyleTransfer -> IPAKitApplyAdvanced",
                           "10": "IPAdapterPreciseComposition -> IPAKitApplyAdvanced"}, []),
    "faceid": ({"5": "IPAdapterUnifiedLoaderFaceID -> IPAKitUnifiedFaceIDLoader",
                "8": "IPAdapterFaceID -> IPAKitApplyFaceID", "9": "IPAdapterAdvanced -> IPAKitApplyFaceID"}, []),
    "embeds": ({"5": "IPAdapterModelLoader -> IPAKitModelLoader", "9": "IPAdapterEncoder -> IPAKitEncode",
                "10": "IPAdapterEncoder -> IPAKitEncode", "11": "IPAdapterCombineEmbeds -> IPAKitCombineEmbeds",
                "12": "IPAdapterEmbeds -> IPAKitApplyAdvanced", "13": "IPAdapterSaveEmbeds -> IPAKitSaveEmbeds"}, []),
    "tiled": ({"5": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader", "7": "IPAdapterTiled -> IPAKitApplyTiled"}, []),
    "regional": ({"5": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader",
                  "10": "IPAdapterRegionalConditioning -> IPAKitRegionalConditioning",
                  "11": "IPAdapterRegionalConditioning -> IPAKitRegionalConditioning",
                  "12": "IPAdapterCombineParams -> IPAKitCombineParams",
                  "13": "IPAdapterFromParams -> IPAKitApplyRegions"}, []),
    "mad_scientist": ({"5": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader", "7": "IPAdapterMS -> IPAKitApplyAdvanced",
                       "8": "IPAdapterBatch -> IPAKitApplyAdvanced"}, []),
    "unmappable": ({"5": "IPAdapterUnifiedLoader -> IPAKitUnifiedLoader",
                    "8": "IPAdapterWeights -> IPAKitWeightsSchedule",
                    "9": "IPAdapterLoadEmbeds -> IPAKitLoadEmbeds", "10": "IPAdapterEmbeds -> IPAKitApplyAdvanced",
                    "11": "IPAdapterClipVisionEnhancer -> IPAKitApplyTiled",
                    "12": "IPAdapterCombineEmbeds -> IPAKitCombineEmbeds"},
                   ["unmapped: node 7 ACME_IPAdapterStack: left as it is: not an IPAdapter_plus node",
                    "lossy: node 9 IPAdapterLoadEmbeds -> IPAKitLoadEmbeds: cat.ipadpt is a pickled"]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_ui_workflow_converts_with_the_expected_report(name):
    source = load(name)
    before = copy.deepcopy(source)
    result = convert(source)
    assert source == before, "the input workflow was modified"
    expected_map, expected_problems = EXPECTED[name]
    assert mapped(result) == expected_map
    found = problems(result)
    assert len(found) == len(expected_problems), result.report
    for line, start in zip(found, expected_problems):
        assert line.startswith(start), (line, start)
    assert result.exit_code == (2 if expected_problems else 0)
    assert result.report[-1].startswith("summary: ")
    converted = result.workflow
    assert [n["id"] for n in converted["nodes"]] == [n["id"] for n in before["nodes"]]
    for new, old in zip(converted["nodes"], before["nodes"]):
        assert (new["pos"], new["size"], new.get("mode")) == (old["pos"], old["size"], old.get("mode"))
        assert not new["type"].startswith(("IPAdapter", "PrepImageForClipVision")), new["type"]


def _link_table_is_consistent(workflow):
    nodes = nodes_by_id(workflow)
    links = {link[0]: link for link in workflow["links"]}
    for lid, origin, oslot, target, tslot, _ in links.values():
        assert nodes[origin]["outputs"][oslot]["links"].count(lid) == 1
        assert nodes[target]["inputs"][tslot]["link"] == lid
    for node in workflow["nodes"]:
        for inp in node.get("inputs") or []:
            assert inp.get("link") is None or inp["link"] in links
        for out in node.get("outputs") or []:
            assert all(lid in links for lid in out.get("links") or [])
    assert workflow["last_link_id"] >= max(links)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_converted_ui_workflow_is_valid_for_the_server(name, object_info):
    converted = convert(load(name)).workflow
    _link_table_is_consistent(converted)
    found = validate_widgets(converted, object_info)
    if name == "unmappable":  # what is left as it is, and the embeds file that must be saved again
        assert found == ["node 7 (ACME_IPAdapterStack): unknown node type",
                         "node 9 (IPAKitLoadEmbeds) embeds_file: 'cat.safetensors' is not one of "
                         "['reference_embeds.safetensors']"]
    else:
        assert found == []
        to_api(converted, object_info)


def test_values_are_translated_to_what_they_meant():
    simple = nodes_by_id(convert(load("unified_simple")).workflow)[7]
    assert simple["widgets_values"] == [0.8, "ease out", 0.0, 1.0]  # 'prompt is more important' = ease out
    masked = nodes_by_id(convert(load("advanced_masked")).workflow)
    assert masked[14]["type"] == "IPAKitApplyAdvanced" and masked[14]["title"] == "masked style"
    assert masked[14]["widgets_values"][:4] == [0.5, "style transfer", 0.1, 1.0]
    assert masked[8]["widgets_values"] == ["lanczos", "top", 0.0, 224]
    assert masked[9]["widgets_values"] == ["fade", 0.6, 0, "fixed", 0]  # blur 0 carried
    assert "cnr_id" not in masked[11]["properties"]
    style = nodes_by_id(convert(load("style_composition")).workflow)
    assert style[9]["widgets_values"][:5] == [0.6, "style transfer precise", 0.0, 1.0, 2.0]  # style_boost
    # precise composition: their weight drives the composition blocks, composition_boost the others
    assert style[10]["widgets_values"][:5] == [0.3, "composition precise", 0.0, 0.8, 0.8]
    ms = nodes_by_id(convert(load("mad_scientist")).workflow)
    assert ms[7]["widgets_values"][8] == "0:0.5, 3:1.0, 6:1.0" and ms[8]["widgets_values"][9] is True


def test_faceid_nodes_get_the_loaders_insightface_output():
    converted = convert(load("faceid")).workflow
    nodes = nodes_by_id(converted)
    links = {link[0]: link for link in converted["links"]}
    for node_id in (8, 9):
        node = nodes[node_id]
        assert node["type"] == "IPAKitApplyFaceID"
        face = next(inp for inp in node["inputs"] if inp["name"] == "insightface")
        assert links[face["link"]][1:3] == [5, 2] and links[face["link"]][5] == "INSIGHTFACE_KIT"
        assert node["widgets_values"][5] == "v2 (shortcut)"
    assert nodes[8]["widgets_values"][4] == 1.2  # their weight_faceidv2
    assert nodes[9]["widgets_values"][4] == 1.0  # the advanced node: twice its weight, as IPAdapter_plus does
    assert nodes[6]["outputs"][0]["type"] == "IPADAPTER_KIT"  # the reroute passes our type on


def test_faceid_without_an_insightface_source_is_reported():
    workflow = load("faceid")
    nodes = nodes_by_id(workflow)
    loader = nodes[5]  # the FaceID nodes' adapter now comes from a plain loader; the model from the checkpoint
    for link in workflow["links"]:
        if link[1] == 5:
            link[1:3] = [5, 0] if link[2] == 1 else [1, 0]
            (loader if link[1] == 5 else nodes[1])["outputs"][0]["links"].append(link[0])
    workflow["links"] = [link for link in workflow["links"] if link[3] != 5]
    loader.update(type="IPAdapterModelLoader", widgets_values=["ip-adapter-faceid-plus_sd15.bin"], inputs=[],
                  outputs=[{"name": "IPADAPTER", "type": "IPADAPTER", "links": loader["outputs"][1]["links"]}])
    result = convert(workflow)
    lines = [line for line in problems(result) if "node 8 " in line]
    assert len(lines) == 1 and "insightface is not connected" in lines[0]
    assert nodes_by_id(result.workflow)[8]["widgets_values"][5] == "v1"  # plus (v1) file
    assert result.exit_code == 2


def test_widget_layout_from_another_version_is_left_alone():
    workflow = load("unified_simple")
    nodes_by_id(workflow)[7]["widgets_values"] = [0.8, 0.0]  # no release of theirs saved two
    result = convert(workflow)
    assert nodes_by_id(result.workflow)[7]["type"] == "IPAdapter"
    assert any(line.startswith("unmapped: node 7 IPAdapter: left as it is: its 2 widget values")
               for line in result.report)
    assert result.exit_code == 2


def test_other_packs_nodes_are_left_alone_without_a_problem():
    workflow = load("unified_simple")
    nodes_by_id(workflow)[4]["type"] = "SomeOtherPackLatent"
    result = convert(workflow)
    assert result.exit_code == 0
    assert nodes_by_id(result.workflow)[4]["type"] == "SomeOtherPackLatent"
    assert any("SomeOtherPackLatent" in line and line.startswith("note: graph") for line in result.report)


def test_subgraph_nodes_are_converted():
    inner = load("unified_simple")
    workflow = {"nodes": [], "links": [], "last_link_id": 0, "version": 0.4,
                "definitions": {"subgraphs": [{"id": "sg-1", "name": "adapter", "nodes": inner["nodes"],
                                               "links": inner["links"]}]}}
    result = convert(workflow)
    sub = result.workflow["definitions"]["subgraphs"][0]
    assert {n["type"] for n in sub["nodes"]} >= {"IPAKitUnifiedLoader", "IPAKitApply"}
    assert any(line.startswith("mapped: subgraph adapter: node 7") for line in result.report)


def test_api_workflow_converts():
    source = load("api_advanced_embeds")
    result = convert(source)
    prompt = result.workflow
    assert {k: v["class_type"] for k, v in prompt.items() if k in ("2", "4", "5", "7", "8")} == {
        "2": "IPAKitUnifiedLoader", "4": "IPAKitPrepImage", "5": "IPAKitApplyAdvanced", "7": "IPAKitEncode",
        "8": "IPAKitApplyAdvanced"}
    assert prompt["8"]["inputs"]["embeds"] == ["7", 0] and "neg_embed" not in prompt["8"]["inputs"]
    assert prompt["8"]["inputs"]["embeds_scaling"] == "K+V" and prompt["8"]["inputs"]["weight_composition"] == 1.0
    assert prompt["4"]["inputs"]["interpolation"] == "bilinear" and prompt["4"]["inputs"]["size"] == 224
    assert prompt["5"]["_meta"]["title"] == "IPAdapter Kit: Apply (advanced)"
    assert problems(result) == ["lossy: node 4 PrepImageForClipVision -> IPAKitPrepImage: interpolation 'HAMMING' "
                                "has no counterpart; 'bilinear' is used"]
    assert result.exit_code == 2


def test_api_links_from_outputs_without_counterpart_and_foreign_nodes_are_reported():
    prompt = load("api_advanced_embeds")
    prompt["20"] = {"class_type": "IPAdapterSaveEmbeds", "inputs": {"filename_prefix": "neg", "embeds": ["7", 1]}}
    prompt["21"] = {"class_type": "ACME_IPAdapterStack", "inputs": {"ipadapter": ["2", 1], "strength": 0.5}}
    result = convert(prompt)
    found = problems(result)
    assert any(line.startswith("lossy: node 7 IPAdapterEncoder -> IPAKitEncode: link from neg_embed to node 20")
               for line in found)
    assert any(line.startswith("unmapped: node 21 ACME_IPAdapterStack") for line in found)
    assert "embeds" not in result.workflow["20"]["inputs"]
    assert result.workflow["21"]["inputs"]["ipadapter"] == ["2", 1]


def test_embeds_negative_from_elsewhere_is_lossy():
    workflow = load("embeds")
    links = {link[0]: link for link in workflow["links"]}
    neg = next(inp for inp in nodes_by_id(workflow)[12]["inputs"] if inp["name"] == "neg_embed")
    links[neg["link"]][1:3] = [11, 0]  # the combined embeds as negative: not the encoder's own
    nodes = nodes_by_id(workflow)
    nodes[9]["outputs"][1]["links"].remove(neg["link"])
    nodes[11]["outputs"][0]["links"].append(neg["link"])
    result = convert(workflow)
    assert any(line.startswith("lossy: node 12 IPAdapterEmbeds -> IPAKitApplyAdvanced: neg_embed cannot be carried")
               for line in result.report)


# ---------------------------------------------------------------------------------------------------------------
# Converted graphs run on the tiny models.
from test_workflows import small  # noqa: E402  (the same test-size shrink as the example workflows)


def run_one_image(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    paths = server.output_images(entry)
    assert len(paths) == 1
    with Image.open(paths[0]) as image:
        assert image.size == (64, 64)
        return np.asarray(image).astype(np.int16)


@pytest.mark.parametrize("name", RUNNABLE)
def test_converted_ui_workflow_runs(name, comfy_server, object_info):
    converted = convert(load(name)).workflow
    run_one_image(comfy_server, to_api(small(converted, object_info), object_info))


def test_converted_api_workflow_runs(comfy_server):
    prompt = convert(load("api_advanced_embeds")).workflow
    prompt["11"]["inputs"].update(width=64, height=64)
    prompt["12"]["inputs"]["steps"] = 3
    run_one_image(comfy_server, prompt)


# ---------------------------------------------------------------------------------------------------------------
# The command line.
def assert_required_inputs(prompt, object_info):
    """Every IPAKit node of an API prompt has all the required inputs the server declares."""
    for node in prompt.values():
        if node["class_type"].startswith("IPAKit"):
            required = set(object_info[node["class_type"]]["input"].get("required") or {})
            assert required <= set(node["inputs"]), (node["class_type"], required - set(node["inputs"]))


def _cli(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_module_round_trip(tmp_path):
    out = tmp_path / "converted.json"
    done = _cli(["-m", "migrate", str(DATA / "unified_simple.json"), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == convert(load("unified_simple")).workflow
    assert "mapped: node 7: IPAdapter -> IPAKitApply" in done.stderr and done.stdout == ""


def test_cli_folder_run_reports_what_did_not_map(tmp_path):
    out = tmp_path / "converted.json"
    done = _cli([str(ROOT / "migrate"), str(DATA / "unmappable.json"), str(out)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "unmapped: node 7 ACME_IPAdapterStack" in done.stderr
    assert json.loads(out.read_text()) == convert(load("unmappable")).workflow


def test_cli_refuses_what_is_not_a_workflow(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    done = _cli(["-m", "migrate", str(bad), str(tmp_path / "out.json")], tmp_path)
    assert done.returncode == 1 and "not a ComfyUI workflow" in done.stderr
    assert not (tmp_path / "out.json").exists()
    assert _cli(["-m", "migrate"], tmp_path).returncode == 1


def test_widget_driven_by_a_primitive_keeps_its_link(object_info):
    workflow = load("unified_simple")
    nodes = nodes_by_id(workflow)
    primitive = {"id": 20, "type": "PrimitiveNode", "pos": [0, 0], "size": [210, 80], "flags": {}, "order": 20,
                 "mode": 0, "inputs": [], "properties": {"Run widget replace on values": False},
                 "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [30], "widget": {"name": "weight"}}],
                 "widgets_values": [0.65, "fixed"]}
    workflow["nodes"].append(primitive)
    nodes[7]["inputs"].append({"name": "weight", "type": "FLOAT", "widget": {"name": "weight"}, "link": 30})
    workflow["links"].append([30, 20, 0, 7, len(nodes[7]["inputs"]) - 1, "FLOAT"])
    workflow["last_link_id"] = 30
    converted = convert(workflow).workflow
    _link_table_is_consistent(converted)
    assert validate_widgets(converted, object_info) == []
    weight = next(inp for inp in nodes_by_id(converted)[7]["inputs"] if inp["name"] == "weight")
    assert weight["widget"] == {"name": "weight"} and weight["link"] == 30
    assert to_api(converted, object_info)["7"]["inputs"]["weight"] == 0.65


SAMPLE_WIDGETS = {"weight": 1.0, "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0,
                  "embeds_scaling": "V only", "encode_batch_size": 0, "weight_faceidv2": 1.0, "sharpening": 0.0,
                  "weight_style": 1.0, "weight_composition": 1.0, "expand_style": False, "layer_weights": "",
                  "enhance_tiles": 2, "enhance_ratio": 0.5, "style_boost": 1.0, "composition_boost": 0.0,
                  "lora_strength": 0.6, "provider": "CPU", "ipadapter_file": "ip-adapter_sd15.safetensors",
                  "model_name": "buffalo_l", "method": "concat", "type": "fade", "strength": 1.0, "blur": 0,
                  "interpolation": "LANCZOS", "crop_position": "center", "filename_prefix": "IP_embeds",
                  "embeds": "x.ipadpt", "image_weight": 1.0, "prompt_weight": 1.0,
                  # the Flux packs
                  "ipadatper": "flux-ip-adapter.safetensors", "clip_vision": "clip-vit-large-patch14.safetensors",
                  "ip_scale": 0.92, "begin_strength": 0.0, "end_strength": 1.0, "smothing_type": "Sigmoid",
                  "ipadapter": "ip-adapter.bin", "start_percent": 0.0, "end_percent": 1.0, "weight_start": 0.0,
                  "weight_end": 1.0, "steps": 10,
                  # ComfyUI_InstantID
                  "instantid_file": "ip-adapter.bin", "ip_weight": 0.8, "cn_strength": 0.8, "noise": 0.35,
                  # PuLID_ComfyUI
                  "pulid_file": "ip-adapter_pulid_sdxl_fp16.safetensors", "projection": "ortho", "fidelity": 16}
SAMPLE_OVERRIDES = {"IPAdapter": {"weight_type": "standard"},
                    "IPAdapterFluxLoader": {"clip_vision": "google/siglip-so400m-patch14-384", "provider": "cuda"},
                    "IPAdapterFluxLoaderAdvanced": {"clip_vision": "google/siglip-so400m-patch14-384"},
                    "IPAdapterUnifiedLoader": {"preset": "PLUS (high strength)"},
                    "IPAdapterUnifiedLoaderFaceID": {"preset": "FACEID PORTRAIT UNNORM - SDXL only (strong)"},
                    "ApplyPulid": {"method": "style"}}


def test_every_mapped_node_type_converts_to_values_the_server_accepts(object_info):
    prompt = {}
    for index, kind in enumerate(k for k in mapping.RULES if k in mapping.SOURCES):
        values = {name: SAMPLE_WIDGETS.get(name) for name in mapping.SOURCES[kind]["widgets"]}
        values.update(SAMPLE_OVERRIDES.get(kind, {}))
        prompt[str(index + 1)] = {"class_type": kind, "inputs": values}
    result = convert(prompt)
    assert not [line for line in result.report if line.startswith("unmapped")]
    for node_id, node in result.workflow.items():
        kind = prompt[node_id]["class_type"]
        assert node["class_type"] == mapping.RULES[kind].target, kind
        if node["class_type"] in PENDING_TARGETS and node["class_type"] not in object_info:
            continue  # an InstantID or PuLID node not registered yet: checked here once it is
        info = object_info[node["class_type"]]
        for name, spec_kind, opts in widget_slots(info):
            if name is None:
                continue
            value = node["inputs"][name]
            options = spec_kind if isinstance(spec_kind, list) else opts.get("options")
            if options is not None and name not in ("embeds_file", "ipadapter_file", "pack", "instantid_file",
                                                    "pulid_file", "eva_file", "parser_file"):
                assert value in options, (kind, name, value)
            if "min" in opts:
                assert opts["min"] <= value <= opts["max"], (kind, name, value)


# ---------------------------------------------------------------------------------------------------------------
# The Flux IP-Adapter packs: XLabs-AI/x-flux-comfyui and Shakker-Labs/ComfyUI-IPAdapter-Flux (InstantX's adapter).
# Fixtures: their example workflows' IP-Adapter nodes (layouts as their nodes declare them), trimmed onto core nodes.
FLUX_DATA = ROOT / "tests" / "data" / "flux_packs"
SIGLIP = "siglip-so400m-patch14-384.safetensors"
FLUX_FILES = {  # the files the converted Flux fixtures name, by the node and widget that lists them
    ("CheckpointLoaderSimple", "ckpt_name"): "flux1-dev-fp8.safetensors",
    ("CLIPVisionLoader", "clip_name"): "clip-vit-large-patch14.safetensors",
    ("IPAKitCLIPVisionLoader", "clip_name"): SIGLIP,
    ("IPAKitModelLoader", "ipadapter_file"): ("flux-ip-adapter.safetensors", "ip-adapter.bin"),
}
OTHERS = ("note: graph: 9 other node(s) left as they are: CLIPTextEncode, CheckpointLoaderSimple, "
          "EmptySD3LatentImage, FluxGuidance, KSampler, LoadImage, SaveImage, VAEDecode")
PROVIDER = "dropped: ComfyUI places the models itself (on the GPU when there is one)"
REPO_ID = ("clip_vision 'google/siglip-so400m-patch14-384' is a Hugging Face repo id, not a file: download "
           "google/siglip-so400m-patch14-384's model.safetensors into models/clip_vision as " + SIGLIP)
FLUX_REPORTS = {
    "xlabs": [
        "mapped: node 10: LoadFluxIPAdapter -> IPAKitModelLoader",
        f"note: node 10 LoadFluxIPAdapter -> IPAKitModelLoader: provider 'CPU' {PROVIDER}",
        "mapped: node 11: ApplyFluxIPAdapter -> IPAKitApply",
        "mapped: node 13: ApplyAdvancedFluxIPAdapter -> IPAKitApplyAdvanced",
        "note: node 10 LoadFluxIPAdapter -> IPAKitModelLoader: the image encoder it loaded too is a node of its own "
        "here: added node 14 CLIPVisionLoader (clip_name 'clip-vit-large-patch14.safetensors'), linked to the "
        "clip_vision input of node(s) 11, 13",
        OTHERS,
        "summary: 3 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "instantx": [
        "mapped: node 10: IPAdapterFluxLoader -> IPAKitModelLoader",
        f"note: node 10 IPAdapterFluxLoader -> IPAKitModelLoader: provider 'cuda' {PROVIDER}",
        f"note: node 10 IPAdapterFluxLoader -> IPAKitModelLoader: {REPO_ID}",
        "mapped: node 11: ApplyIPAdapterFlux -> IPAKitApply",
        "note: node 10 IPAdapterFluxLoader -> IPAKitModelLoader: the image encoder it loaded too is a node of its "
        f"own here: added node 12 IPAKitCLIPVisionLoader (clip_name '{SIGLIP}'), linked to the clip_vision input "
        "of node(s) 11",
        OTHERS,
        "summary: 2 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "instantx_advanced": [
        "mapped: node 10: IPAdapterFluxLoaderAdvanced -> IPAKitModelLoader",
        f"note: node 10 IPAdapterFluxLoaderAdvanced -> IPAKitModelLoader: provider 'cuda' {PROVIDER}",
        f"note: node 10 IPAdapterFluxLoaderAdvanced -> IPAKitModelLoader: {REPO_ID}",
        "mapped: node 11: ApplyIPAdapterFluxAdvanced -> IPAKitApply",
        "lossy: node 11 ApplyIPAdapterFluxAdvanced -> IPAKitApply: the weight ramps from 0.2 to 1.0 over their "
        "first 10 steps (then stays at 1.0); this pack has no per-step weight: weight 0.6 (the ramp's mean) is used",
        "note: node 10 IPAdapterFluxLoaderAdvanced -> IPAKitModelLoader: the image encoder it loaded too is a node "
        f"of its own here: added node 12 IPAKitCLIPVisionLoader (clip_name '{SIGLIP}'), linked to the clip_vision "
        "input of node(s) 11",
        OTHERS,
        "summary: 2 node(s) converted, 0 left as they are, 1 lossy change(s)"],
}


def load_flux(name):
    return json.loads((FLUX_DATA / f"{name}.json").read_text())


def _input_link(workflow, node_id, name):
    """[link id, origin, origin slot, target, target slot, type] feeding input `name` of node node_id, or None."""
    node = nodes_by_id(workflow)[node_id]
    inp = next(i for i in node["inputs"] if i["name"] == name)
    return next((link for link in workflow["links"] if link[0] == inp["link"]), None)


@pytest.mark.parametrize("name", list(FLUX_REPORTS))
def test_flux_pack_workflow_converts_with_the_expected_report(name):
    source = load_flux(name)
    before = copy.deepcopy(source)
    result = convert(source)
    assert source == before, "the input workflow was modified"
    assert result.report == FLUX_REPORTS[name]
    assert result.exit_code == (2 if name == "instantx_advanced" else 0)
    converted = result.workflow
    _link_table_is_consistent(converted)
    new, = [n for n in converted["nodes"] if n["id"] not in {m["id"] for m in before["nodes"]}]
    assert converted["last_node_id"] == new["id"] == before["last_node_id"] + 1
    for node, old in zip(converted["nodes"], before["nodes"]):  # the nodes there were keep id, place and mode
        assert (node["id"], node["pos"], node["size"], node["mode"]) == (old["id"], old["pos"], old["size"],
                                                                        old["mode"])
        assert "cnr_id" not in node["properties"] and not any(t in json.dumps(node) for t in (
            "IP_ADAPTER_FLUX", "ip_adapter_flux", "ipadapter_flux", "Flux IP"))
    assert {n["type"] for n in converted["nodes"]} >= {"IPAKitModelLoader", "IPAKitApply"}


def test_xlabs_nodes_map_to_loader_clip_vision_and_apply_nodes():
    converted = convert(load_flux("xlabs")).workflow
    nodes = nodes_by_id(converted)
    assert nodes[10]["type"] == "IPAKitModelLoader"
    assert nodes[10]["widgets_values"] == ["flux-ip-adapter.safetensors"]  # models/xlabs/ipadapters is searched
    assert nodes[14]["type"] == "CLIPVisionLoader"  # XLabs' encoder is the plain CLIP ViT-L: core loader
    assert nodes[14]["widgets_values"] == ["clip-vit-large-patch14.safetensors"]
    assert nodes[14]["pos"] == [nodes[10]["pos"][0], nodes[10]["pos"][1] + nodes[10]["size"][1] + 40]
    assert nodes[11]["type"] == "IPAKitApply" and nodes[11]["widgets_values"] == [0.92, "linear", 0.0, 1.0]
    assert nodes[13]["type"] == "IPAKitApplyAdvanced" and nodes[13]["title"] == "block ramp"
    weight, weight_type, start, end, _, combine = nodes[13]["widgets_values"][:6]
    assert (weight, weight_type, start, end, combine) == (1.0, "linear", 0.0, 1.0, "average")
    assert nodes[13]["widgets_values"][8] == ", ".join(f"d{i}:{i / 18:.3f}" for i in range(19))
    for node_id in (11, 13):
        assert _input_link(converted, node_id, "clip_vision")[1:3] == [14, 0]
        assert _input_link(converted, node_id, "clip_vision")[5] == "CLIP_VISION"
        assert _input_link(converted, node_id, "image")[1] == 9
    assert _input_link(converted, 11, "ipadapter")[1:3] == [10, 0]
    assert _input_link(converted, 13, "ipadapter")[1:3] == [12, 0]  # through the reroute, which passes our type
    assert nodes[12]["inputs"][0]["type"] == nodes[12]["outputs"][0]["type"] == "IPADAPTER_KIT"
    assert _input_link(converted, 13, "model")[1] == 11 and _input_link(converted, 6, "model")[1] == 13


def _xlabs_strengths(begin, end, smoothing, size=19):
    """x-flux-comfyui utils.py's strength models, as written there."""
    half = size // 2
    if smoothing == "Linear":
        return [begin + (end - begin) * (i / (size - 1)) for i in range(size)]
    if smoothing == "First half":
        return [begin + (end - begin) * (i / (half - 1)) for i in range(half)] + [end] * (size - half)
    if smoothing == "Second half":
        return [begin] * (size - half) + [begin + (end - begin) * (i / (half - 1)) for i in range(half)]
    fade = 1 / (1 + np.exp(-(np.arange(size) - size / 2) * 8 / size))
    return list(begin + (end - begin) * (fade - 0.5))


@pytest.mark.parametrize("smoothing", ["Linear", "First half", "Second half", "Sigmoid"])
@pytest.mark.parametrize("begin, end", [(0.0, 1.0), (0.9, 0.2), (-0.5, 2.0)])
def test_xlabs_block_schedule_becomes_flux_block_weights(smoothing, begin, end):
    workflow = load_flux("xlabs")
    nodes_by_id(workflow)[13]["widgets_values"] = [begin, end, smoothing]
    result = convert(workflow)
    assert result.exit_code == 0
    text = nodes_by_id(result.workflow)[13]["widgets_values"][8]
    entries = [entry.split(":") for entry in text.split(", ")]
    assert [name for name, _ in entries] == [f"d{i}" for i in range(19)]  # every double block, in order
    assert all(len(value.split(".")[1]) == 3 for _, value in entries)
    expected = _xlabs_strengths(begin, end, smoothing)
    assert np.allclose([float(value) for _, value in entries], expected, atol=5e-4 + 1e-9, rtol=0)
    assert text == ", ".join(f"d{i}:{(round(float(w), 3) or 0.0):.3f}" for i, w in enumerate(expected))
    from ipadapter_kit.ipadapter_core.families.flux import FLUX  # what Apply (advanced) reads it with
    parsed = FLUX.parse_block_weights(text)
    assert list(parsed[:19]) == [float(value) for _, value in entries] and not any(parsed[19:])


def test_xlabs_sigmoid_and_half_schedules_have_their_shape():
    def weights(begin, end, smoothing):
        workflow = load_flux("xlabs")
        nodes_by_id(workflow)[13]["widgets_values"] = [begin, end, smoothing]
        text = nodes_by_id(convert(workflow).workflow)[13]["widgets_values"][8]
        return [float(entry.split(":")[1]) for entry in text.split(", ")]

    first, second = weights(0.0, 1.0, "First half"), weights(0.0, 1.0, "Second half")
    assert first[:9] == [round(i / 8, 3) for i in range(9)] and first[9:] == [1.0] * 10
    assert second[:10] == [0.0] * 10 and second[10:] == [round(i / 8, 3) for i in range(9)]
    sigmoid = weights(0.0, 1.0, "Sigmoid")  # their sigmoid is centred: it starts below begin, ends below end
    assert sigmoid[0] == -0.482 and sigmoid[-1] == 0.473 and sigmoid == sorted(sigmoid)


def test_xlabs_unknown_smoothing_is_lossy():
    workflow = load_flux("xlabs")
    nodes_by_id(workflow)[13]["widgets_values"] = [0.0, 1.0, "Cosine"]
    result = convert(workflow)
    assert problems(result) == ["lossy: node 13 ApplyAdvancedFluxIPAdapter -> IPAKitApplyAdvanced: smothing_type "
                                "'Cosine' is not one of ['Linear', 'First half', 'Second half', 'Sigmoid']; 'Linear' "
                                "is used"]
    assert nodes_by_id(result.workflow)[13]["widgets_values"][8].startswith("d0:0.000, d1:0.056, ")


def test_instantx_nodes_map_to_loader_siglip_loader_and_apply():
    converted = convert(load_flux("instantx")).workflow
    nodes = nodes_by_id(converted)
    assert nodes[10]["type"] == "IPAKitModelLoader" and nodes[10]["widgets_values"] == ["ip-adapter.bin"]
    assert nodes[12]["type"] == "IPAKitCLIPVisionLoader" and nodes[12]["widgets_values"] == [SIGLIP]
    assert nodes[11]["type"] == "IPAKitApply" and nodes[11]["widgets_values"] == [0.75, "linear", 0.2, 0.6]
    assert _input_link(converted, 11, "clip_vision")[1:3] == [12, 0]
    assert _input_link(converted, 11, "ipadapter")[1:3] == [10, 0]
    assert converted["last_link_id"] == max(link[0] for link in converted["links"]) == 14


@pytest.mark.parametrize("start, end, steps, weight, lossy", [
    (0.2, 1.0, 10, 0.6, True), (0.0, 1.0, 4, 0.5, True), (1.0, 0.0, 3, 0.5, True), (0.3, 0.9, 2, 0.6, True),
    (0.7, 0.7, 10, 0.7, False),  # a flat ramp is just a weight
    (0.0, 0.8, 1, 0.8, False),  # one step: their weight is weight_end throughout
])
def test_instantx_weight_ramp_becomes_its_mean(start, end, steps, weight, lossy):
    workflow = load_flux("instantx_advanced")
    nodes_by_id(workflow)[11]["widgets_values"] = [start, end, steps, 0.1, 0.9]
    result = convert(workflow)
    assert nodes_by_id(result.workflow)[11]["widgets_values"] == [weight, "linear", 0.1, 0.9]
    assert problems(result) == ([f"lossy: node 11 ApplyIPAdapterFluxAdvanced -> IPAKitApply: the weight ramps from "
                                 f"{start} to {end} over their first {steps} steps (then stays at {end}); this pack "
                                 f"has no per-step weight: weight {weight} (the ramp's mean) is used"]
                                if lossy else [])


def test_flux_api_prompt_converts_and_one_encoder_node_serves_both_applies():
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev-fp8.safetensors"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "10": {"class_type": "IPAdapterFluxLoader", "inputs": {
            "ipadapter": "ip-adapter.bin", "clip_vision": "google/siglip-so400m-patch14-384", "provider": "cpu"}},
        "11": {"class_type": "ApplyIPAdapterFlux", "inputs": {
            "model": ["1", 0], "ipadapter_flux": ["10", 0], "image": ["9", 0], "weight": 0.75, "start_percent": 0.0,
            "end_percent": 1.0}, "_meta": {"title": "Apply IPAdapter Flux Model"}},
        "12": {"class_type": "ApplyIPAdapterFluxAdvanced", "inputs": {
            "model": ["11", 0], "ipadapter_flux": ["10", 0], "image": ["9", 0], "weight_start": 0.5,
            "weight_end": 0.5, "steps": 10, "start_percent": 0.0, "end_percent": 0.5}},
    }
    result = convert(prompt)
    out = result.workflow
    assert out["13"] == {"class_type": "IPAKitCLIPVisionLoader", "inputs": {"clip_name": SIGLIP},
                         "_meta": {"title": "IPAdapter Kit: Load CLIP Vision"}}
    assert out["10"] == {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": "ip-adapter.bin"}}
    assert out["11"]["inputs"] == {"weight": 0.75, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0,
                                   "model": ["1", 0], "ipadapter": ["10", 0], "image": ["9", 0],
                                   "clip_vision": ["13", 0]}
    assert out["11"]["_meta"]["title"] == "IPAdapter Kit: Apply"
    assert out["12"]["class_type"] == "IPAKitApply" and out["12"]["inputs"]["weight"] == 0.5
    assert out["12"]["inputs"]["clip_vision"] == ["13", 0] and out["12"]["inputs"]["end_at"] == 0.5
    assert ("note: node 10 IPAdapterFluxLoader -> IPAKitModelLoader: the image encoder it loaded too is a node of its "
            f"own here: added node 13 IPAKitCLIPVisionLoader (clip_name '{SIGLIP}'), linked to the clip_vision "
            "input of node(s) 11, 12") in result.report
    assert result.exit_code == 0


def test_flux_apply_without_a_loader_it_can_take_the_encoder_from_is_lossy():
    workflow = load_flux("xlabs")
    nodes_by_id(workflow)[10]["widgets_values"] = ["flux-ip-adapter.safetensors", "model.safetensors"]  # old layout
    result = convert(workflow)
    assert problems(result) == [
        "unmapped: node 10 LoadFluxIPAdapter: left as it is: its 2 widget values do not match the 3 widgets "
        "(ipadatper, clip_vision, provider) of x-flux-comfyui's current node; saved by another version? Rebuild it "
        "by hand",
        "lossy: node 11 ApplyFluxIPAdapter -> IPAKitApply: clip_vision is not connected: node 10, which would give "
        "it, was not converted",
        "lossy: node 13 ApplyAdvancedFluxIPAdapter -> IPAKitApplyAdvanced: clip_vision is not connected: node 10, "
        "which would give it, was not converted"]
    assert len(result.workflow["nodes"]) == len(workflow["nodes"])
    _link_table_is_consistent(result.workflow)

    prompt = {"11": {"class_type": "ApplyFluxIPAdapter", "inputs": {"model": ["1", 0], "image": ["9", 0],
                                                                    "ip_scale": 0.5}}}
    result = convert(prompt)
    assert problems(result) == [
        "lossy: node 11 ApplyFluxIPAdapter -> IPAKitApply: clip_vision is not connected and no Flux IP-Adapter "
        "loader feeds this node: connect a Load CLIP Vision node (IPAdapter Kit: Load CLIP Vision for InstantX's "
        "SigLIP) to it"]


def test_samplers_that_bypass_model_patches_are_reported():
    workflow = load_flux("xlabs")
    sampler = nodes_by_id(workflow)[6]
    sampler["type"] = "XlabsSampler"  # what x-flux-comfyui's own workflows sample with
    sampler["widgets_values"] = [4, "fixed", 20, 1, 3.5, 0, 1]
    result = convert(workflow)
    assert problems(result) == [
        "lossy: node 6 XlabsSampler: it runs the Flux blocks itself, outside ComfyUI's model patches, so the "
        "IP-Adapter of node(s) 11, 13 has no effect through it: sample with KSampler or SamplerCustomAdvanced "
        "(FluxGuidance sets the guidance)"]
    assert nodes_by_id(result.workflow)[6]["type"] == "XlabsSampler"
    plain = load_flux("xlabs")  # an XlabsSampler that no converted node feeds is fine
    plain["nodes"].append({**copy.deepcopy(sampler), "id": 30, "inputs": []})
    assert problems(convert(plain)) == []


def test_unknown_nodes_taking_flux_pack_objects_are_reported():
    prompt = {"10": {"class_type": "LoadFluxIPAdapter", "inputs": {
                  "ipadatper": "flux-ip-adapter.safetensors", "clip_vision": "clip-vit-large-patch14.safetensors",
                  "provider": "GPU"}},
              "11": {"class_type": "ACME_FluxStack", "inputs": {"ip": ["10", 0], "strength": 0.5}}}
    result = convert(prompt)
    assert problems(result) == [
        "unmapped: node 11 ACME_FluxStack: left as it is: not an x-flux-comfyui node this converter knows, and it "
        "uses their IP-Adapter objects, which the nodes here do not produce"]
    assert "note: node 10 LoadFluxIPAdapter -> IPAKitModelLoader: provider 'GPU' " + PROVIDER in result.report
    assert set(result.workflow) == {"10", "11"}  # nothing links to an encoder node: none is added


def _flux_world_missing(object_info, wanted=FLUX_FILES):
    """The files of `wanted` the server does not list (the tiny world not there, or its folders not set)."""
    missing = []
    for (node, name), files in wanted.items():
        info = object_info.get(node)
        spec = next((kind, opts) for n, kind, opts in ordered_inputs(info) if n == name) if info else ([], {})
        options = spec[0] if isinstance(spec[0], list) else spec[1].get("options") or []
        missing += [f for f in ((files,) if isinstance(files, str) else files) if f not in options]
    return missing


@pytest.mark.parametrize("name", list(FLUX_REPORTS))
def test_converted_flux_workflow_is_valid_for_the_server(name, object_info):
    converted = convert(load_flux(name)).workflow
    found = validate_widgets(converted, object_info)
    missing = _flux_world_missing(object_info)
    assert all(any(f"{file!r} is not one of" in line for file in missing) for line in found), found
    prompt = to_api(converted, object_info)
    assert {node["class_type"] for node in prompt.values()} >= {"IPAKitModelLoader", "IPAKitApply"}


def small_flux(workflow, object_info):
    """The converted Flux graph at test size: 64x64 latent, 2 steps."""
    workflow = copy.deepcopy(workflow)
    set_widget(workflow, "EmptySD3LatentImage", "width", 64, object_info)
    set_widget(workflow, "EmptySD3LatentImage", "height", 64, object_info)
    set_widget(workflow, "KSampler", "steps", 2, object_info)
    return workflow


@pytest.mark.parametrize("name", list(FLUX_REPORTS))
def test_converted_flux_workflow_runs(name, comfy_server, object_info):
    missing = _flux_world_missing(object_info)
    if missing:
        pytest.skip(f"the tiny Flux world is not served yet (missing: {', '.join(missing)})")
    converted = small_flux(convert(load_flux(name)).workflow, object_info)
    with_adapter = run_one_image(comfy_server, to_api(converted, object_info))
    for node in converted["nodes"]:  # the same graph with the converted apply nodes bypassed
        if node["type"].startswith("IPAKitApply"):
            node["mode"] = 4
    without = run_one_image(comfy_server, to_api(converted, object_info))
    assert np.abs(with_adapter - without).max() > 0, "the converted IP-Adapter did not change the image"


def test_cli_converts_a_flux_pack_workflow(tmp_path):
    out = tmp_path / "converted.json"
    done = _cli(["-m", "migrate", str(FLUX_DATA / "xlabs.json"), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == convert(load_flux("xlabs")).workflow
    assert done.stderr.splitlines() == FLUX_REPORTS["xlabs"] + [f"wrote {out}"]


# ---------------------------------------------------------------------------------------------------------------
# Slickytail/ComfyUI-InstantX-IPAdapter-SD3 (InstantX's SD3.5 Large adapter). Fixtures: its example workflow's layout
# trimmed onto core nodes, as saved since its CLIP Vision Encode release (sd3) and by its first releases
# (sd3_first_release: SigLIP named by repo id in the loader, the image straight into the apply node).
SD3_DATA = ROOT / "tests" / "data" / "sd3_pack"
SIGCLIP = "sigclip_vision_patch14_384.safetensors"  # ComfyUI's SigLIP rehost, which the pack's README names
SD3_FILES = {
    ("CheckpointLoaderSimple", "ckpt_name"): "sd3.5_large_fp8_scaled.safetensors",
    ("CLIPVisionLoader", "clip_name"): (SIGCLIP, SIGLIP),
    ("IPAKitModelLoader", "ipadapter_file"): "ip-adapter_sd35_large.bin",
}
SD3_LOADER = "note: node 10 IPAdapterSD3Loader -> IPAKitModelLoader: "
SD3_APPLY = "note: node 11 ApplyIPAdapterSD3 -> IPAKitApply: "
SD3_OTHERS = ("CLIPTextEncode, CheckpointLoaderSimple, EmptySD3LatentImage, KSampler, LoadImage, SaveImage, "
              "VAEDecode")
SD3_REPORTS = {
    "sd3": [
        "mapped: node 10: IPAdapterSD3Loader -> IPAKitModelLoader",
        f"{SD3_LOADER}provider 'cuda' {PROVIDER}",
        "mapped: node 11: ApplyIPAdapterSD3 -> IPAKitApply",
        f"{SD3_APPLY}image_embed came from node 13 CLIPVisionEncode: its image and clip_vision are connected here "
        "instead (this node encodes the reference itself); node 13 is left as it is (delete it if nothing else "
        "uses it)",
        f"{SD3_APPLY}start_percent 0.0 / end_percent 0.8 count in 1 - sigma there; here start_at 0.0 / end_at 0.923 "
        "give the same sigmas with SD3.5 Large's shift 3.0",
        "note: graph: 10 other node(s) left as they are: " + SD3_OTHERS.replace(
            "CheckpointLoaderSimple", "CLIPVisionEncode, CLIPVisionLoader, CheckpointLoaderSimple"),
        "summary: 2 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "sd3_first_release": [
        "mapped: node 10: IPAdapterSD3Loader -> IPAKitModelLoader",
        f"{SD3_LOADER}provider 'cuda' {PROVIDER}",
        f"{SD3_LOADER}{REPO_ID}",
        "mapped: node 11: ApplyIPAdapterSD3 -> IPAKitApply",
        f"{SD3_APPLY}their first releases resized the whole reference to 384x384; here it is center-cropped to a "
        "square first (the same for square references)",
        f"{SD3_LOADER}the image encoder it loaded too is a node of its own here: added node 12 CLIPVisionLoader "
        f"(clip_name '{SIGLIP}'), linked to the clip_vision input of node(s) 11",
        "note: graph: 8 other node(s) left as they are: " + SD3_OTHERS,
        "summary: 2 node(s) converted, 0 left as they are, 0 lossy change(s)"],
}


def load_sd3(name):
    return json.loads((SD3_DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", list(SD3_REPORTS))
def test_sd3_pack_workflow_converts_with_the_expected_report(name):
    source = load_sd3(name)
    before = copy.deepcopy(source)
    result = convert(source)
    assert source == before, "the input workflow was modified"
    assert result.report == SD3_REPORTS[name]
    assert result.exit_code == 0 and result.unmapped == 0
    converted = result.workflow
    _link_table_is_consistent(converted)
    for node, old in zip(converted["nodes"], before["nodes"]):  # the nodes there were keep id, place and mode
        assert (node["id"], node["pos"], node["size"], node["mode"]) == (old["id"], old["pos"], old["size"],
                                                                        old["mode"])
        assert not any(t in json.dumps(node) for t in ("IP_ADAPTER_SD3", "image_embed", "SD3Loader", "SD3 Model"))
    added = [n for n in converted["nodes"] if n["id"] not in {m["id"] for m in before["nodes"]}]
    assert len(added) == (1 if name == "sd3_first_release" else 0)
    assert converted["last_node_id"] == before["last_node_id"] + len(added)


def test_sd3_encoder_output_becomes_the_apply_nodes_image_and_clip_vision():
    converted = convert(load_sd3("sd3")).workflow
    nodes = nodes_by_id(converted)
    assert nodes[10]["type"] == "IPAKitModelLoader" and nodes[10]["widgets_values"] == ["ip-adapter_sd35_large.bin"]
    assert nodes[11]["type"] == "IPAKitApply" and nodes[11]["widgets_values"] == [0.5, "linear", 0.0, 0.923]
    assert [inp["name"] for inp in nodes[11]["inputs"]] == ["model", "ipadapter", "image", "clip_vision",
                                                             "attn_mask"]
    assert _input_link(converted, 11, "model")[1:3] == [1, 0]
    assert _input_link(converted, 11, "ipadapter")[1:3] + [_input_link(converted, 11, "ipadapter")[5]] == [
        10, 0, "IPADAPTER_KIT"]
    image, clip_vision = _input_link(converted, 11, "image"), _input_link(converted, 11, "clip_vision")
    assert (image[1:3], image[5]) == ([9, 0], "IMAGE")  # what the CLIP Vision Encode node encoded
    assert (clip_vision[1:3], clip_vision[5]) == ([12, 0], "CLIP_VISION")  # with the SigLIP it was given
    assert nodes[12]["widgets_values"] == [SIGCLIP] and nodes[9]["outputs"][0]["links"] == [11, image[0]]
    assert nodes[13]["type"] == "CLIPVisionEncode" and nodes[13]["outputs"][0]["links"] == []
    assert _input_link(converted, 6, "model")[1:3] == [11, 0]
    assert converted["last_link_id"] == max(link[0] for link in converted["links"]) == 18


def test_sd3_first_release_loader_gets_a_siglip_loader_node():
    converted = convert(load_sd3("sd3_first_release")).workflow
    nodes = nodes_by_id(converted)
    assert nodes[10]["type"] == "IPAKitModelLoader" and nodes[10]["widgets_values"] == ["ip-adapter_sd35_large.bin"]
    assert nodes[12]["type"] == "CLIPVisionLoader" and nodes[12]["widgets_values"] == [SIGLIP]
    assert nodes[12]["pos"] == [nodes[10]["pos"][0], nodes[10]["pos"][1] + nodes[10]["size"][1] + 40]
    assert nodes[11]["type"] == "IPAKitApply" and nodes[11]["widgets_values"] == [0.5, "linear", 0.0, 1.0]
    assert _input_link(converted, 11, "clip_vision")[1:3] == [12, 0]
    assert _input_link(converted, 11, "image")[1:3] == [9, 0]


def sd3_prompt(weight=0.5, start=0.0, end=1.0, shift=None, crop="center"):
    """API prompt of the SD3 pack's current nodes; shift: a ModelSamplingSD3 node between checkpoint and apply."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_large_fp8_scaled.safetensors"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "10": {"class_type": "IPAdapterSD3Loader", "inputs": {"ipadapter": "ip-adapter_sd35_large.bin",
                                                              "provider": "cuda"}},
        "11": {"class_type": "ApplyIPAdapterSD3", "inputs": {
            "model": ["1", 0], "ipadapter": ["10", 0], "image_embed": ["13", 0], "weight": weight,
            "start_percent": start, "end_percent": end}, "_meta": {"title": "Apply IPAdapter SD3 Model"}},
        "12": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": SIGCLIP}},
        "13": {"class_type": "CLIPVisionEncode", "inputs": {"clip_vision": ["12", 0], "image": ["9", 0],
                                                            "crop": crop}},
    }
    if shift is not None:
        prompt["3"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": shift}}
        prompt["11"]["inputs"]["model"] = ["3", 0]
    return prompt


def test_sd3_api_prompt_converts():
    result = convert(sd3_prompt(weight=0.8))
    out = result.workflow
    assert out["10"] == {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": "ip-adapter_sd35_large.bin"}}
    assert out["11"]["class_type"] == "IPAKitApply"
    assert out["11"]["inputs"] == {"weight": 0.8, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0,
                                   "model": ["1", 0], "ipadapter": ["10", 0], "image": ["9", 0],
                                   "clip_vision": ["12", 0]}
    assert out["11"]["_meta"]["title"] == "IPAdapter Kit: Apply"
    assert out["13"] == sd3_prompt()["13"] and set(out) == set(sd3_prompt())  # nothing added, nothing removed
    assert mapped(result) == {"10": "IPAdapterSD3Loader -> IPAKitModelLoader", "11": "ApplyIPAdapterSD3 -> IPAKitApply"}
    assert problems(result) == [] and result.exit_code == 0

    first = {"1": sd3_prompt()["1"], "9": sd3_prompt()["9"],
             "10": {"class_type": "IPAdapterSD3Loader", "inputs": {
                 "ipadapter": "ip-adapter_sd35_large.bin", "clip_vision": "google/siglip-so400m-patch14-384",
                 "provider": "cpu"}},
             "11": {"class_type": "ApplyIPAdapterSD3", "inputs": {
                 "model": ["1", 0], "ipadapter": ["10", 0], "image": ["9", 0], "weight": 0.5, "start_percent": 0.0,
                 "end_percent": 1.0}}}
    result = convert(first)
    out = result.workflow
    assert out["12"] == {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": SIGLIP},
                         "_meta": {"title": "Load CLIP Vision"}}
    assert out["11"]["inputs"] == {"weight": 0.5, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0,
                                   "model": ["1", 0], "ipadapter": ["10", 0], "image": ["9", 0],
                                   "clip_vision": ["12", 0]}
    assert problems(result) == [] and result.exit_code == 0


@pytest.mark.parametrize("start, end, shift, expected", [
    (0.0, 1.0, None, (0.0, 1.0)), (0.2, 0.8, None, (0.429, 0.923)), (0.5, 1.0, None, (0.75, 1.0)),
    (0.2, 0.8, 1.0, (0.2, 0.8)),  # shift 1: ComfyUI's fraction is 1 - sigma too
    (0.3, 0.6, 6.0, (0.72, 0.9)), (0.2, 0.8, 0, (0.429, 0.923)),  # shift 0 (meaningless): SD3.5's is used
])
def test_sd3_percent_is_one_minus_sigma(start, end, shift, expected):
    from comfy.model_sampling import ModelSamplingDiscreteFlow  # what start_at / end_at are read with

    result = convert(sd3_prompt(start=start, end=end, shift=shift))
    inputs = result.workflow["11"]["inputs"]
    assert (inputs["start_at"], inputs["end_at"]) == expected
    sampling = ModelSamplingDiscreteFlow()
    sampling.set_parameters(shift=shift or mapping.SD35_SHIFT)
    for theirs, ours in ((start, inputs["start_at"]), (end, inputs["end_at"])):
        assert abs(sampling.percent_to_sigma(ours) - (1.0 - theirs)) < 2e-3  # the sigma where theirs switches
    notes = [line for line in result.report if "count in 1 - sigma" in line]
    where = "node 3 ModelSamplingSD3's" if shift else "SD3.5 Large's"
    assert notes == ([] if (start, end) == (0.0, 1.0) else [
        f"note: node 11 ApplyIPAdapterSD3 -> IPAKitApply: start_percent {start} / end_percent {end} count in 1 - "
        f"sigma there; here start_at {expected[0]} / end_at {expected[1]} give the same sigmas with {where} shift "
        f"{shift or 3.0}"])
    assert result.exit_code == 0


def test_sd3_reference_that_cannot_be_carried_is_lossy():
    result = convert(sd3_prompt(crop="none"))
    assert problems(result) == ["lossy: node 11 ApplyIPAdapterSD3 -> IPAKitApply: crop 'none' of node 13 "
                                "CLIPVisionEncode: the reference is center-cropped here; make it square first to "
                                "keep all of it"]
    prompt = sd3_prompt()
    prompt["13"] = {"class_type": "ACME_EncodeBatch", "inputs": {"clip_vision": ["12", 0], "images": ["9", 0]}}
    prompt["14"] = {"class_type": "ACME_SD3Stack", "inputs": {"ipadapter": ["10", 0]}}
    result = convert(prompt)
    assert problems(result) == [
        "lossy: node 11 ApplyIPAdapterSD3 -> IPAKitApply: link to image_embed removed: it comes from node 13 "
        "(ACME_EncodeBatch), not from a CLIP Vision Encode node: connect the reference image to image and connect a "
        f"Load CLIP Vision node with SigLIP ({SIGCLIP}) to clip_vision",
        "unmapped: node 14 ACME_SD3Stack: left as it is: not an ComfyUI-InstantX-IPAdapter-SD3 node this converter "
        "knows, and it uses their IP-Adapter objects, which the nodes here do not produce"]
    assert set(result.workflow["11"]["inputs"]) == {"weight", "weight_type", "start_at", "end_at", "model",
                                                    "ipadapter"}
    del prompt["13"]["inputs"]["images"]
    prompt["13"]["class_type"] = "CLIPVisionEncode"
    assert problems(convert(prompt))[0] == (
        "lossy: node 11 ApplyIPAdapterSD3 -> IPAKitApply: image is not connected: the image input of node 13 "
        "CLIPVisionEncode, which would give it, is not linked")
    workflow = load_sd3("sd3_first_release")
    nodes_by_id(workflow)[10]["widgets_values"] = ["ip-adapter_sd35_large.bin", SIGLIP, "x", "cuda"]
    result = convert(workflow)
    assert problems(result) == [
        "unmapped: node 10 IPAdapterSD3Loader: left as it is: its 4 widget values do not match the 2 widgets "
        "(ipadapter, provider) of ComfyUI-InstantX-IPAdapter-SD3's current node; saved by another version? Rebuild "
        "it by hand",
        "lossy: node 11 ApplyIPAdapterSD3 -> IPAKitApply: no loader of theirs that named SigLIP feeds this node: "
        f"connect a Load CLIP Vision node with SigLIP ({SIGCLIP}) to clip_vision"]
    _link_table_is_consistent(result.workflow)


@pytest.mark.parametrize("name", list(SD3_REPORTS))
def test_converted_sd3_workflow_is_valid_for_the_server(name, object_info):
    converted = convert(load_sd3(name)).workflow
    found = validate_widgets(converted, object_info)
    missing = _flux_world_missing(object_info, SD3_FILES)  # ComfyUI's SigLIP rehost is not in the tiny world
    assert all(any(f"{file!r} is not one of" in line for file in missing) for line in found), found
    prompt = to_api(converted, object_info)
    assert {node["class_type"] for node in prompt.values()} >= {"IPAKitModelLoader", "IPAKitApply",
                                                                 "CLIPVisionLoader"}
    apply, = [node for node in prompt.values() if node["class_type"] == "IPAKitApply"]
    unlinked = {"attn_mask"}  # an optional socket nothing feeds is not in an API prompt
    assert set(apply["inputs"]) == {name for name, _, _ in ordered_inputs(object_info["IPAKitApply"])} - unlinked



@pytest.mark.parametrize("name", list(SD3_REPORTS))
def test_converted_sd3_workflow_runs(name, comfy_server, object_info):
    converted = small_flux(convert(load_sd3(name)).workflow, object_info)
    for node in converted["nodes"]:  # the tiny world's SigLIP stands in for ComfyUI's rehost of it
        if node["type"] == "CLIPVisionLoader":
            node["widgets_values"] = ["siglip-so400m-patch14-384.safetensors"]
    with_adapter = run_one_image(comfy_server, to_api(converted, object_info))
    for node in converted["nodes"]:
        if node["type"].startswith("IPAKitApply"):
            node["mode"] = 4
    without = run_one_image(comfy_server, to_api(converted, object_info))
    assert np.abs(with_adapter - without).max() > 0, "the converted SD3.5 IP-Adapter did not change the image"


# ---------------------------------------------------------------------------------------------------------------
# cubiq's ComfyUI_InstantID. Fixtures: its examples/*.json as published (InstantID_*.json, at its commit 1ef34ef),
# the default example of its first releases (first_release_default.json, at 40b86b4: an ApplyInstantID with
# image_features and a core Apply ControlNet), and attention_controlnet.json (the basic example rebuilt with its
# InstantIDAttentionPatch, ApplyInstantIDControlNet and FaceKeypointsPreprocessor nodes).
INSTANTID_DATA = ROOT / "tests" / "data" / "instantid_pack"
INSTANTID_EXAMPLES = ["InstantID_basic", "InstantID_posed", "InstantID_depth", "InstantID_multi_id",
                      "InstantID_IPAdapter"]
LOADER = "mapped: node 11: InstantIDModelLoader -> IPAKitInstantIDLoader"
FACE = "mapped: node 38: InstantIDFaceAnalysis -> IPAKitInsightFaceLoader"


def basic_apply(node_id):
    return [f"mapped: node {node_id}: ApplyInstantID -> IPAKitApplyInstantID"]


def instantid_others(count, *extra):
    names = sorted({"CLIPTextEncode", "CheckpointLoaderSimple", "ControlNetLoader", "EmptyLatentImage", "KSampler",
                    "LoadImage", "PreviewImage", "VAEDecode", *extra})
    return f"note: graph: {count} other node(s) left as they are: {', '.join(names)}"


INSTANTID_REPORTS = {
    "InstantID_basic": [LOADER, FACE, *basic_apply(60), instantid_others(9),
                        "summary: 3 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "InstantID_posed": [LOADER, FACE, *basic_apply(60), instantid_others(10),
                        "summary: 3 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "InstantID_depth": [LOADER, FACE, *basic_apply(60),
                        instantid_others(13, "ControlNetApplyAdvanced", "Zoe-DepthMapPreprocessor"),
                        "summary: 3 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "InstantID_multi_id": [FACE, LOADER, *basic_apply(77), *basic_apply(60),
                           instantid_others(19, "ConditioningCombine", "ImageFlip+", "MaskComposite", "MaskFlip+",
                                            "SolidMask"),
                           "summary: 4 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "InstantID_IPAdapter": [LOADER, FACE, "mapped: node 68: IPAdapterModelLoader -> IPAKitModelLoader",
                            *basic_apply(60), "mapped: node 72: IPAdapterAdvanced -> IPAKitApplyAdvanced",
                            instantid_others(11, "CLIPVisionLoader"),
                            "summary: 5 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "attention_controlnet": [
        LOADER, FACE,
        "note: node 38 InstantIDFaceAnalysis -> IPAKitInsightFaceLoader: provider CUDA: only offered when the "
        "installed onnxruntime has it",
        "mapped: node 61: InstantIDAttentionPatch -> IPAKitInstantIDAttention",
        "mapped: node 62: ApplyInstantIDControlNet -> IPAKitInstantIDControlNet",
        "mapped: node 63: FaceKeypointsPreprocessor -> IPAKitFaceKeypoints", instantid_others(11),
        "summary: 5 node(s) converted, 0 left as they are, 0 lossy change(s)"],
    "first_release_default": [
        "mapped: node 58: FaceKeypointsPreprocessor -> IPAKitFaceKeypoints", LOADER, FACE,
        "unmapped: node 57 ApplyInstantID: left as it is: " + mapping.INSTANTID_FIRST_RELEASE,
        instantid_others(10, "ControlNetApplyAdvanced"),
        "summary: 3 node(s) converted, 1 left as they are, 0 lossy change(s)"],
}
# What the converted nodes hold: widgets_values, then (input name, origin node, origin slot, link type) of the links.
BASIC_INPUTS = ["model", "positive", "negative", "instantid", "insightface", "control_net", "image", "image_kps",
                "attn_mask"]


def load_instantid(name):
    return json.loads((INSTANTID_DATA / f"{name}.json").read_text())


def linked_inputs(workflow, node_id):
    """{input name: (origin, origin slot, link type)} of a UI node's linked inputs."""
    links = {link[0]: link for link in workflow["links"]}
    node = nodes_by_id(workflow)[node_id]
    return {inp["name"]: tuple(links[inp["link"]][1:3]) + (links[inp["link"]][5],)
            for inp in node["inputs"] if inp.get("link") is not None}


def test_instantid_fixtures_are_their_published_files():
    assert sorted(p.stem for p in INSTANTID_DATA.glob("*.json")) == sorted(INSTANTID_REPORTS)
    for name in INSTANTID_REPORTS:
        _link_table_is_consistent(load_instantid(name))


@pytest.mark.parametrize("name", list(INSTANTID_REPORTS))
def test_instantid_workflow_converts_with_the_expected_report(name):
    source = load_instantid(name)
    before = copy.deepcopy(source)
    result = convert(source)
    assert source == before, "the input workflow was modified"
    assert result.report == INSTANTID_REPORTS[name]
    assert result.exit_code == (2 if name == "first_release_default" else 0)
    converted = result.workflow
    _link_table_is_consistent(converted)
    assert [n["id"] for n in converted["nodes"]] == [n["id"] for n in before["nodes"]]  # nothing added or removed
    for node, old in zip(converted["nodes"], before["nodes"]):
        assert (node["pos"], node["size"], node["mode"]) == (old["pos"], old["size"], old["mode"])
        if node["type"].startswith("IPAKit"):  # their types and input names are gone
            sockets = (node.get("inputs") or []) + (node.get("outputs") or [])
            assert not {s["type"] for s in sockets} & {"INSTANTID", "FACEANALYSIS", "FACE_EMBEDS"}, node["id"]
            assert not {s["name"] for s in sockets} & {"mask", "faceanalysis", "face_embeds"}, node["id"]
    assert converted["last_link_id"] == before["last_link_id"] and converted["last_node_id"] == before["last_node_id"]


@pytest.mark.parametrize("name", INSTANTID_EXAMPLES)
def test_instantid_examples_keep_their_values_and_links(name):
    converted = convert(load_instantid(name)).workflow
    nodes = nodes_by_id(converted)
    assert nodes[11]["type"] == "IPAKitInstantIDLoader" and nodes[11]["widgets_values"] == ["ip-adapter.bin"]
    assert nodes[38]["type"] == "IPAKitInsightFaceLoader" and nodes[38]["widgets_values"] == ["antelopev2", "CPU", 640]
    applies = {"InstantID_multi_id": {77: 0.8, 60: 0.9}}.get(name, {60: 0.8})
    for node_id, weight in applies.items():
        node = nodes[node_id]
        assert node["type"] == "IPAKitApplyInstantID" and "title" not in node
        assert node["widgets_values"] == [weight, 0, 1]
        assert [inp["name"] for inp in node["inputs"]] == BASIC_INPUTS
        assert [out["name"] for out in node["outputs"]] == ["MODEL", "positive", "negative", "keypoints"]
        assert node["outputs"][3]["links"] == []
        links = linked_inputs(converted, node_id)
        assert links["instantid"] == (11, 0, "IPADAPTER_KIT") and links["insightface"] == (38, 0, "INSIGHTFACE_KIT")
        assert links["control_net"] == (16, 0, "CONTROL_NET") and links["model"][2] == "MODEL"
        assert links["positive"][2] == links["negative"][2] == "CONDITIONING" and links["image"][2] == "IMAGE"
    if name == "InstantID_multi_id":  # masks and keypoint pictures stay connected; the two applies chain
        assert linked_inputs(converted, 60)["attn_mask"] == (87, 0, "MASK")
        assert linked_inputs(converted, 77)["attn_mask"] == (88, 0, "MASK")
        assert linked_inputs(converted, 60)["image_kps"] == (82, 0, "IMAGE")
        assert linked_inputs(converted, 77)["image_kps"] == (84, 0, "IMAGE")
        assert linked_inputs(converted, 77)["model"] == (60, 0, "MODEL")
        assert linked_inputs(converted, 79) == {"conditioning_1": (77, 1, "CONDITIONING"),
                                                "conditioning_2": (60, 1, "CONDITIONING")}
        assert linked_inputs(converted, 3)["model"] == (77, 0, "MODEL")
    elif name == "InstantID_depth":
        assert linked_inputs(converted, 60)["image_kps"] == (74, 0, "IMAGE")
        assert linked_inputs(converted, 72)["positive"] == (60, 1, "CONDITIONING")
        assert linked_inputs(converted, 72)["negative"] == (60, 2, "CONDITIONING")
    elif name == "InstantID_IPAdapter":
        assert linked_inputs(converted, 72)["model"] == (60, 0, "MODEL")
        assert nodes[72]["type"] == "IPAKitApplyAdvanced" and nodes[68]["type"] == "IPAKitModelLoader"
    else:
        assert linked_inputs(converted, 3)["positive"] == (60, 1, "CONDITIONING")
        assert linked_inputs(converted, 3)["model"] == (60, 0, "MODEL")
    if name == "InstantID_posed":
        assert linked_inputs(converted, 60)["image_kps"] == (67, 0, "IMAGE")


def test_instantid_attention_and_controlnet_nodes_map_with_their_links():
    converted = convert(load_instantid("attention_controlnet")).workflow
    nodes = nodes_by_id(converted)
    assert nodes[38]["widgets_values"] == ["antelopev2", "CUDA", 640]
    attention, controlnet, keypoints = nodes[61], nodes[62], nodes[63]
    assert attention["type"] == "IPAKitInstantIDAttention" and attention["title"] == "face attention"
    assert attention["widgets_values"] == [0.9, 0, 1, 0.2, "average"]  # theirs always averages the references
    assert [out["name"] for out in attention["outputs"]] == ["MODEL", "face_tokens"]
    assert linked_inputs(converted, 61) == {"model": (4, 0, "MODEL"), "instantid": (11, 0, "IPADAPTER_KIT"),
                                            "insightface": (38, 0, "INSIGHTFACE_KIT"), "image": (13, 0, "IMAGE")}
    assert controlnet["type"] == "IPAKitInstantIDControlNet" and controlnet["widgets_values"] == [0.7, 0, 0.8]
    assert linked_inputs(converted, 62) == {
        "face_tokens": (61, 1, "IPAKIT_FACE_TOKENS"), "control_net": (16, 0, "CONTROL_NET"),
        "image_kps": (63, 0, "IMAGE"), "positive": (39, 0, "CONDITIONING"), "negative": (40, 0, "CONDITIONING")}
    assert keypoints["type"] == "IPAKitFaceKeypoints" and keypoints["widgets_values"] == []
    assert linked_inputs(converted, 63) == {"insightface": (38, 0, "INSIGHTFACE_KIT"), "image": (64, 0, "IMAGE")}
    assert [out["name"] for out in keypoints["outputs"]] == ["keypoints"]
    assert linked_inputs(converted, 65) == {"images": (63, 0, "IMAGE")}
    assert linked_inputs(converted, 3) == {"model": (61, 0, "MODEL"), "positive": (62, 0, "CONDITIONING"),
                                           "negative": (62, 1, "CONDITIONING"), "latent_image": (5, 0, "LATENT")}


@pytest.mark.parametrize("values, expected", [
    ([0.7, 0.5, 0.1, 0.9, 0.2, "norm average"], [0.7, 0.5, 0.1, 0.9, 0.2, "norm average"]),
    ([0.7, 0.5, 0.1, 0.9, 0.2], [0.7, 0.5, 0.1, 0.9, 0.2, "average"]),  # before combine_embeds (March 2024)
    ([0.7, 0.5, 0.1, 0.9], [0.7, 0.5, 0.1, 0.9, 0.0, "average"]),  # before noise (February 2024)
])
def test_instantid_advanced_node_in_each_saved_layout(values, expected):
    workflow = load_instantid("InstantID_posed")
    node = nodes_by_id(workflow)[60]
    node.update(type="ApplyInstantIDAdvanced", widgets_values=values)
    node["properties"]["Node name for S&R"] = "ApplyInstantIDAdvanced"
    result = convert(workflow)
    assert mapped(result)["60"] == "ApplyInstantIDAdvanced -> IPAKitApplyInstantIDAdvanced"
    assert problems(result) == []
    converted = nodes_by_id(result.workflow)[60]
    assert converted["widgets_values"] == expected
    assert linked_inputs(result.workflow, 60)["image_kps"] == (67, 0, "IMAGE")

    node["widgets_values"] = values + ["extra"] if len(values) == 6 else values[:3]
    result = convert(workflow)
    assert problems(result) == [
        f"unmapped: node 60 ApplyInstantIDAdvanced: left as it is: its {len(node['widgets_values'])} widget values "
        "do not match the 6 widgets (ip_weight, cn_strength, start_at, end_at, noise, combine_embeds) of "
        "ComfyUI_InstantID's current node; saved by another version? Rebuild it by hand"]


def test_their_basic_node_is_this_packs_basic_node():
    """ComfyUI_InstantID's Apply InstantID runs its advanced code with ip_weight = cn_strength = weight, noise 0.35 and
    'average'; the converter maps it onto the basic node here because that one does the same."""
    from ipadapter_kit.nodes import instantid as instantid_nodes

    calls = []
    original = instantid_nodes.apply_instantid
    instantid_nodes.apply_instantid = lambda *args: calls.append(args) or (None, None, None, None)
    try:
        instantid_nodes.ApplyInstantID.execute("model", "pos", "neg", "adapter", "face", "cn", "image", 0.7, 0.1, 0.9)
    finally:
        instantid_nodes.apply_instantid = original
    (args,) = calls
    assert args[7:13] == (0.7, 0.7, 0.1, 0.9, 0.35, "average")


def test_instantid_values_outside_this_packs_ranges_are_lossy():
    workflow = load_instantid("InstantID_basic")
    nodes_by_id(workflow)[60]["widgets_values"] = [6.0, 0.2, 0.8]  # above their own 5.0 (edited by hand)
    result = convert(workflow)
    assert nodes_by_id(result.workflow)[60]["widgets_values"] == [5.0, 0.2, 0.8]
    assert problems(result) == ["lossy: node 60 ApplyInstantID -> IPAKitApplyInstantID: weight: 6.0 is outside "
                                "0.0..5.0 here; 5.0 is used"]

    workflow = load_instantid("InstantID_IPAdapter")
    face = nodes_by_id(workflow)[38]
    face["widgets_values"] = ["TensorRT"]
    result = convert(workflow)
    assert problems(result) == ["lossy: node 38 InstantIDFaceAnalysis -> IPAKitInsightFaceLoader: provider "
                                "'TensorRT' is not offered by this pack; CPU is used"]
    face["widgets_values"] = ["ROCM"]
    result = convert(workflow)
    assert nodes_by_id(result.workflow)[38]["widgets_values"] == ["antelopev2", "ROCm", 640]
    assert ("note: node 38 InstantIDFaceAnalysis -> IPAKitInsightFaceLoader: provider ROCm: only offered when the "
            "installed onnxruntime has it") in result.report


def test_instantid_weight_from_a_primitive_keeps_its_link(object_info):
    workflow = load_instantid("InstantID_basic")
    nodes = nodes_by_id(workflow)
    workflow["nodes"].append({"id": 70, "type": "PrimitiveNode", "pos": [0, 0], "size": [210, 80], "flags": {},
                              "order": 20, "mode": 0, "inputs": [], "properties": {},
                              "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [230],
                                           "widget": {"name": "weight"}}],
                              "widgets_values": [0.65, "fixed"]})
    nodes[60]["inputs"].append({"name": "weight", "type": "FLOAT", "widget": {"name": "weight"}, "link": 230})
    workflow["links"].append([230, 70, 0, 60, len(nodes[60]["inputs"]) - 1, "FLOAT"])
    workflow["last_link_id"] = 230
    result = convert(workflow)
    assert problems(result) == []
    converted = result.workflow
    _link_table_is_consistent(converted)
    weight = next(inp for inp in nodes_by_id(converted)[60]["inputs"] if inp["name"] == "weight")
    assert weight["widget"] == {"name": "weight"} and weight["link"] == 230
    skip_unregistered(object_info, "IPAKitApplyInstantID")
    assert to_api(converted, object_info)["60"]["inputs"]["weight"] == 0.65


def instantid_prompt():
    """API prompt of ComfyUI_InstantID's posed example plus its attention / ControlNet pair and keypoints node."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl/AlbedoBaseXL.safetensors"}},
        "11": {"class_type": "InstantIDModelLoader", "inputs": {"instantid_file": "ip-adapter.bin"}},
        "13": {"class_type": "LoadImage", "inputs": {"image": "face.jpg"}},
        "16": {"class_type": "ControlNetLoader", "inputs": {
            "control_net_name": "instantid/diffusion_pytorch_model.safetensors"}},
        "38": {"class_type": "InstantIDFaceAnalysis", "inputs": {"provider": "CPU"}},
        "39": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a comic character"}},
        "40": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "photograph"}},
        "60": {"class_type": "ApplyInstantID", "_meta": {"title": "Apply InstantID"}, "inputs": {
            "instantid": ["11", 0], "insightface": ["38", 0], "control_net": ["16", 0], "image": ["13", 0],
            "model": ["4", 0], "positive": ["39", 0], "negative": ["40", 0], "image_kps": ["67", 0],
            "mask": ["68", 1], "weight": 0.75, "start_at": 0.0, "end_at": 0.9}},
        "61": {"class_type": "InstantIDAttentionPatch", "inputs": {
            "instantid": ["11", 0], "insightface": ["38", 0], "image": ["13", 0], "model": ["60", 0],
            "weight": 0.5, "start_at": 0.1, "end_at": 1.0, "noise": 0.3}},
        "62": {"class_type": "ApplyInstantIDControlNet", "inputs": {
            "face_embeds": ["61", 1], "control_net": ["16", 0], "image_kps": ["63", 0], "positive": ["60", 1],
            "negative": ["60", 2], "mask": ["68", 1], "strength": 0.4, "start_at": 0.0, "end_at": 0.5}},
        "63": {"class_type": "FaceKeypointsPreprocessor", "inputs": {"faceanalysis": ["38", 0], "image": ["67", 0]}},
        "67": {"class_type": "LoadImage", "inputs": {"image": "miranda.jpg"}},
        "68": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
        "69": {"class_type": "ApplyInstantIDAdvanced", "inputs": {
            "instantid": ["11", 0], "insightface": ["38", 0], "control_net": ["16", 0], "image": ["13", 0],
            "model": ["61", 0], "positive": ["62", 0], "negative": ["62", 1], "ip_weight": 0.6,
            "cn_strength": 0.3, "start_at": 0.0, "end_at": 1.0, "noise": 0.1, "combine_embeds": "concat"}},
    }


def test_instantid_api_prompt_converts():
    prompt = instantid_prompt()
    result = convert(prompt)
    out = result.workflow
    assert set(out) == set(prompt)  # nothing added, nothing removed
    assert out["11"] == {"class_type": "IPAKitInstantIDLoader", "inputs": {"instantid_file": "ip-adapter.bin"}}
    assert out["38"] == {"class_type": "IPAKitInsightFaceLoader",
                         "inputs": {"pack": "antelopev2", "provider": "CPU", "det_size": 640}}
    assert out["60"] == {"class_type": "IPAKitApplyInstantID", "_meta": {"title": "IPAdapter Kit: Apply InstantID"},
                         "inputs": {"weight": 0.75, "start_at": 0.0, "end_at": 0.9, "instantid": ["11", 0],
                                    "insightface": ["38", 0], "control_net": ["16", 0], "image": ["13", 0],
                                    "model": ["4", 0], "positive": ["39", 0], "negative": ["40", 0],
                                    "image_kps": ["67", 0], "attn_mask": ["68", 1]}}
    assert out["61"] == {"class_type": "IPAKitInstantIDAttention", "inputs": {
        "weight": 0.5, "start_at": 0.1, "end_at": 1.0, "noise": 0.3, "combine_embeds": "average",
        "instantid": ["11", 0], "insightface": ["38", 0], "image": ["13", 0], "model": ["60", 0]}}
    assert out["62"] == {"class_type": "IPAKitInstantIDControlNet", "inputs": {
        "strength": 0.4, "start_at": 0.0, "end_at": 0.5, "face_tokens": ["61", 1], "control_net": ["16", 0],
        "image_kps": ["63", 0], "positive": ["60", 1], "negative": ["60", 2], "attn_mask": ["68", 1]}}
    assert out["63"] == {"class_type": "IPAKitFaceKeypoints", "inputs": {"insightface": ["38", 0],
                                                                         "image": ["67", 0]}}
    assert out["69"]["class_type"] == "IPAKitApplyInstantIDAdvanced"
    assert {k: out["69"]["inputs"][k] for k in ("ip_weight", "cn_strength", "noise", "combine_embeds")} == {
        "ip_weight": 0.6, "cn_strength": 0.3, "noise": 0.1, "combine_embeds": "concat"}
    assert out["16"] == prompt["16"] and out["4"] == prompt["4"]
    assert mapped(result) == {"11": "InstantIDModelLoader -> IPAKitInstantIDLoader",
                              "38": "InstantIDFaceAnalysis -> IPAKitInsightFaceLoader",
                              "60": "ApplyInstantID -> IPAKitApplyInstantID",
                              "61": "InstantIDAttentionPatch -> IPAKitInstantIDAttention",
                              "62": "ApplyInstantIDControlNet -> IPAKitInstantIDControlNet",
                              "63": "FaceKeypointsPreprocessor -> IPAKitFaceKeypoints",
                              "69": "ApplyInstantIDAdvanced -> IPAKitApplyInstantIDAdvanced"}
    assert problems(result) == [] and result.exit_code == 0

    first = {"11": prompt["11"], "38": prompt["38"],
             "57": {"class_type": "ApplyInstantID", "inputs": {
                 "instantid": ["11", 0], "insightface": ["38", 0], "image_features": ["13", 0], "model": ["4", 0],
                 "positive": ["39", 0], "negative": ["40", 0], "weight": 0.8, "start_at": 0.0, "end_at": 1.0}}}
    result = convert(first)
    assert problems(result) == ["unmapped: node 57 ApplyInstantID: left as it is: " +
                                mapping.INSTANTID_FIRST_RELEASE]
    assert result.workflow["57"] == first["57"]


def test_face_analysis_of_other_packs_is_theirs_unless_linked_to_instantid_nodes():
    # other packs (InfiniteYou and more) load a FACEANALYSIS of their own: alone, their nodes are no concern
    other = {"1": {"class_type": "ACME_FaceAnalysisLoader", "inputs": {"provider": "CPU"}},
             "2": {"class_type": "ACME_ApplyFaceID", "inputs": {"face_analysis": ["1", 0], "weight": 1.0}},
             "3": {"class_type": "InstantIDModelLoader", "inputs": {"instantid_file": "ip-adapter.bin"}}}
    result = convert(other)
    assert problems(result) == [] and result.workflow["2"] == other["2"]
    mixed = copy.deepcopy(other)  # fed by InstantID's face analysis, which becomes this pack's InsightFace
    mixed["4"] = {"class_type": "InstantIDFaceAnalysis", "inputs": {"provider": "CPU"}}
    mixed["2"]["inputs"]["face_analysis"] = ["4", 0]
    mixed["5"] = {"class_type": "ApplyInstantIDControlNet", "inputs": {"face_embeds": ["6", 0]}}
    mixed["6"] = {"class_type": "ACME_FaceEmbeds", "inputs": {"face_analysis": ["1", 0]}}  # feeds an InstantID node
    found = problems(convert(mixed))
    foreign = ("left as it is: not an ComfyUI_InstantID node this converter knows, and it uses their IP-Adapter "
               "objects, which the nodes here do not produce")
    assert found == [f"unmapped: node 2 ACME_ApplyFaceID: {foreign}", f"unmapped: node 6 ACME_FaceEmbeds: {foreign}"]

    workflow = load_instantid("InstantID_basic")  # the same in a UI workflow
    nodes = nodes_by_id(workflow)
    loader = {"id": 80, "type": "ACME_FaceAnalysisLoader", "pos": [0, 0], "size": [315, 58], "flags": {},
              "order": 0, "mode": 0, "inputs": [],
              "outputs": [{"name": "FACEANALYSIS", "type": "FACEANALYSIS", "links": [300]}], "properties": {},
              "widgets_values": ["CPU"]}
    apply = {"id": 81, "type": "ACME_ApplyFaceID", "pos": [0, 100], "size": [315, 200], "flags": {}, "order": 1,
             "mode": 0, "inputs": [{"name": "face_analysis", "type": "FACEANALYSIS", "link": 300}],
             "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "properties": {}, "widgets_values": [1.0]}
    workflow["nodes"] += [loader, apply]
    workflow["links"].append([300, 80, 0, 81, 0, "FACEANALYSIS"])
    workflow["last_link_id"] = 300
    assert problems(convert(workflow)) == []
    # now the other pack's node takes InstantID's face analysis, and its loader feeds the InstantID node
    workflow["links"][-1] = [300, 38, 0, 81, 0, "FACEANALYSIS"]
    nodes[38]["outputs"][0]["links"].append(300)
    loader["outputs"][0]["links"] = [301]
    old = next(link for link in workflow["links"] if link[3] == 60 and link[4] == 1)
    nodes[38]["outputs"][0]["links"].remove(old[0])
    old[0:3] = [301, 80, 0]
    nodes[60]["inputs"][1]["link"] = 301
    workflow["last_link_id"] = 301
    _link_table_is_consistent(workflow)
    assert problems(convert(workflow)) == [f"unmapped: node 80 ACME_FaceAnalysisLoader: {foreign}",
                                           f"unmapped: node 81 ACME_ApplyFaceID: {foreign}"]


def test_reroutes_pass_instantid_types_on():
    workflow = load_instantid("InstantID_basic")
    nodes = nodes_by_id(workflow)
    link = next(link for link in workflow["links"] if link[1] == 11)  # loader -> apply, through a reroute now
    workflow["nodes"].append({"id": 90, "type": "Reroute", "pos": [600, 100], "size": [75, 26], "flags": {},
                              "order": 3, "mode": 0, "inputs": [{"name": "", "type": "*", "link": link[0]}],
                              "outputs": [{"name": "INSTANTID", "type": "INSTANTID", "links": [240]}],
                              "properties": {"showOutputText": False, "horizontal": False}})
    workflow["links"].append([240, 90, 0, 60, link[4], "INSTANTID"])
    nodes[60]["inputs"][link[4]]["link"] = 240
    link[3:5] = [90, 0]
    workflow["last_link_id"] = 240
    _link_table_is_consistent(workflow)
    result = convert(workflow)
    assert problems(result) == []
    converted = result.workflow
    _link_table_is_consistent(converted)
    assert nodes_by_id(converted)[90]["outputs"][0]["type"] == "IPADAPTER_KIT"
    assert linked_inputs(converted, 60)["instantid"] == (90, 0, "IPADAPTER_KIT")


INSTANTID_RUNNABLE_SHAPES = ["InstantID_basic", "InstantID_posed", "InstantID_IPAdapter", "attention_controlnet"]
THIRD_PARTY = {"Zoe-DepthMapPreprocessor", "ImageFlip+", "MaskFlip+"}  # other packs' nodes in their examples
FILE_WIDGETS = ("ckpt_name", "control_net_name", "image", "instantid_file", "pack", "ipadapter_file", "clip_name",
                "provider")  # and CUDA, which the report says is only offered where onnxruntime has it


@pytest.mark.parametrize("name", list(INSTANTID_REPORTS))
def test_converted_instantid_workflow_is_valid_for_the_server(name, object_info):
    converted = convert(load_instantid(name)).workflow
    used = sorted({node["type"] for node in converted["nodes"]} & PENDING_TARGETS)
    skip_unregistered(object_info, *used)
    found = validate_widgets(converted, object_info)
    for line in found:  # only the files of their examples, which the tiny world does not have, and other packs
        where, _, what = line.partition(": ") if "unknown node type" in line else line.partition(") ")
        if "unknown node type" in line:
            assert any(f"({kind})" in where for kind in THIRD_PARTY) or "(ApplyInstantID)" in where, line
        else:
            assert what.split(" ")[0].rstrip(":") in FILE_WIDGETS and "is not one of" in what, line
    if name in INSTANTID_RUNNABLE_SHAPES:
        prompt = to_api(converted, object_info)
        assert_required_inputs(prompt, object_info)


def test_cli_converts_an_instantid_workflow(tmp_path):
    out = tmp_path / "converted.json"
    done = _cli(["-m", "migrate", str(INSTANTID_DATA / "InstantID_multi_id.json"), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == convert(load_instantid("InstantID_multi_id")).workflow
    assert done.stderr.splitlines() == INSTANTID_REPORTS["InstantID_multi_id"] + [f"wrote {out}"]


INSTANTID_WORLD = {  # the tiny world's files standing in for their examples' (same names where theirs are fixed)
    ("CheckpointLoaderSimple", "ckpt_name"): "sd_xl_base_1.0.safetensors",
    ("IPAKitInstantIDLoader", "instantid_file"): "ip-adapter.bin",
    ("ControlNetLoader", "control_net_name"): "instantid/diffusion_pytorch_model.safetensors",
    ("IPAKitInsightFaceLoader", "pack"): "antelopev2",
    ("LoadImage", "image"): ("face_a.png", "face_b.png"),
}


@pytest.mark.parametrize("name", ["InstantID_basic", "InstantID_posed", "attention_controlnet"])
def test_converted_instantid_workflow_runs(name, comfy_server, object_info):
    converted = convert(load_instantid(name)).workflow
    skip_unregistered(object_info, *sorted({node["type"] for node in converted["nodes"]} & PENDING_TARGETS))
    missing = _flux_world_missing(object_info, INSTANTID_WORLD)
    if missing:
        pytest.skip(f"the tiny InstantID world is not served (missing: {', '.join(missing)})")
    converted = small(converted, object_info)
    set_widget(converted, "CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors", object_info)
    set_widget(converted, "IPAKitInsightFaceLoader", "provider", "CPU", object_info)
    for node in converted["nodes"]:
        if node["type"] == "LoadImage":  # the reference face; the pose picture (67, 64) is the other face
            node["widgets_values"][0] = "face_b.png" if node["id"] in (64, 67) else "face_a.png"
        if node["id"] == 15:  # their result preview: saved, so the run returns it
            node.update(type="SaveImage", widgets_values=["instantid"])
    with_instantid = run_one_image(comfy_server, to_api(converted, object_info))
    for node in converted["nodes"]:  # the same graph with the converted InstantID nodes bypassed
        if node["type"] in ("IPAKitApplyInstantID", "IPAKitInstantIDAttention", "IPAKitInstantIDControlNet"):
            node["mode"] = 4
    without = run_one_image(comfy_server, to_api(converted, object_info))
    assert np.abs(with_instantid - without).max() > 0, "the converted InstantID nodes did not change the image"


# ---------------------------------------------------------------------------------------------------------------
# cubiq's PuLID_ComfyUI (SDXL) and balazik's ComfyUI-PuLID-Flux. Fixtures (tests/data/pulid_pack/README.md): the
# examples/*.json of PuLID_ComfyUI as published (commit 4e1fd40), ComfyUI-PuLID-Flux's
# examples/pulid_flux_16bit_simple.json (commit a80912f) and its fork ComfyUI-PuLID-Flux-Enhanced's
# examples/flux_pulid_multi.json (commit bce908a, its fusion widgets), unchanged.
PULID_DATA = ROOT / "tests" / "data" / "pulid_pack"
PULID_EXAMPLES = ["PuLID_simple", "PuLID_attention_mask", "PuLID_IPAdapter_style_transfer", "PuLID_lightning_lora",
                  "PuLID_4-Step_lightning"]
EVA_DOWNLOAD = (
    "PuLID_ComfyUI downloaded the EVA-CLIP tower and the face parser itself (into the Hugging Face cache and "
    "facexlib's weights folder); here they are files: download EVA02_CLIP_L_336_psz14_s6B.pt "
    "(https://huggingface.co/QuanSun/EVA-CLIP/resolve/main/EVA02_CLIP_L_336_psz14_s6B.pt) into models/clip and "
    "parsing_bisenet.pth (https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth) into "
    "models/facexlib")
PULID_LOADERS = {"eva": ["mapped: node 19: PulidEvaClipLoader -> IPAKitEVACLIPLoader",
                         f"note: node 19 PulidEvaClipLoader -> IPAKitEVACLIPLoader: {EVA_DOWNLOAD}"],
                 "face": ["mapped: node 17: PulidInsightFaceLoader -> IPAKitInsightFaceLoader"],
                 "pulid": ["mapped: node 16: PulidModelLoader -> IPAKitPuLIDLoader"]}
PULID_LOADER_LINES = PULID_LOADERS["eva"] + PULID_LOADERS["face"] + PULID_LOADERS["pulid"]
FLUX_EVA_DOWNLOAD = EVA_DOWNLOAD.replace("PuLID_ComfyUI", "ComfyUI-PuLID-Flux")
PULID_FLUX_LOADERS = {"face": "mapped: node 53: PulidFluxInsightFaceLoader -> IPAKitInsightFaceLoader",
                      "eva": ["mapped: node 51: PulidFluxEvaClipLoader -> IPAKitEVACLIPLoader",
                              f"note: node 51 PulidFluxEvaClipLoader -> IPAKitEVACLIPLoader: {FLUX_EVA_DOWNLOAD}"],
                      "pulid": "mapped: node 45: PulidFluxModelLoader -> IPAKitPuLIDLoader"}
APPLY_PULID_FLUX = "mapped: node 62: ApplyPulidFlux -> IPAKitApplyPuLIDFlux"


def pulid_flux_others(*extra):
    names = sorted({"BasicGuider", "BasicScheduler", "CLIPTextEncode", "DualCLIPLoader", "EmptySD3LatentImage",
                    "FluxGuidance", "KSamplerSelect", "PreviewImage", "RandomNoise", "SamplerCustomAdvanced",
                    "UNETLoader", "VAEDecode", "VAELoader", *extra})
    return f"note: graph: 14 other node(s) left as they are: {', '.join(names)}"


def pulid_others(count, *extra):
    names = sorted({"CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage", "KSampler", "LoadImage",
                    "PreviewImage", "VAEDecode", *extra})
    return f"note: graph: {count} other node(s) left as they are: {', '.join(names)}"


def apply_pulid(node_id):
    return f"mapped: node {node_id}: ApplyPulid -> IPAKitApplyPuLID"


def converted_summary(count):
    return f"summary: {count} node(s) converted, 0 left as they are, 0 lossy change(s)"


PULID_REPORTS = {
    "PuLID_simple": [*PULID_LOADER_LINES, apply_pulid(33), pulid_others(8), converted_summary(4)],
    "PuLID_attention_mask": [apply_pulid(33), *PULID_LOADERS["pulid"], *PULID_LOADERS["eva"], *PULID_LOADERS["face"],
                             apply_pulid(47), pulid_others(13, "InvertMask", "MaskComposite", "SolidMask"),
                             converted_summary(5)],
    "PuLID_IPAdapter_style_transfer": [
        *PULID_LOADER_LINES, apply_pulid(33), "mapped: node 47: IPAdapterUnifiedLoader -> IPAKitUnifiedLoader",
        "mapped: node 46: IPAdapterAdvanced -> IPAKitApplyAdvanced", pulid_others(9), converted_summary(6)],
    "PuLID_lightning_lora": [*PULID_LOADER_LINES, apply_pulid(33), pulid_others(9, "LoraLoaderModelOnly"),
                             converted_summary(4)],
    "PuLID_4-Step_lightning": [*PULID_LOADER_LINES, apply_pulid(33), pulid_others(9, "UNETLoader"),
                               converted_summary(4)],
    "pulid_flux_16bit_simple": [  # balazik's ComfyUI-PuLID-Flux
        PULID_FLUX_LOADERS["face"], *PULID_FLUX_LOADERS["eva"], PULID_FLUX_LOADERS["pulid"], APPLY_PULID_FLUX,
        pulid_flux_others("LoadImage"), converted_summary(4)],
    "flux_pulid_multi": [  # its fork ComfyUI-PuLID-Flux-Enhanced: fusion 'mean', use_gray on, as here
        PULID_FLUX_LOADERS["face"], PULID_FLUX_LOADERS["pulid"], *PULID_FLUX_LOADERS["eva"], APPLY_PULID_FLUX,
        pulid_flux_others("LoadImagesFromDir //Inspire"), converted_summary(4)],
}
PULID_FLUX_EXAMPLES = ["pulid_flux_16bit_simple", "flux_pulid_multi"]
PULID_INPUTS = ["model", "pulid", "eva_clip", "insightface", "image", "attn_mask"]
THEIR_PULID_TYPES = {"PULID", "PULIDFLUX", "EVA_CLIP", "FACEANALYSIS"}


def load_pulid(name):
    return json.loads((PULID_DATA / f"{name}.json").read_text())


def test_pulid_fixtures_are_their_published_files():
    assert sorted(p.stem for p in PULID_DATA.glob("*.json")) == sorted(PULID_REPORTS)
    assert (PULID_DATA / "README.md").is_file()
    for name in PULID_REPORTS:
        _link_table_is_consistent(load_pulid(name))


@pytest.mark.parametrize("name", list(PULID_REPORTS))
def test_pulid_workflow_converts_with_the_expected_report(name):
    source = load_pulid(name)
    before = copy.deepcopy(source)
    result = convert(source)
    assert source == before, "the input workflow was modified"
    assert result.report == PULID_REPORTS[name]
    converted = result.workflow
    assert result.exit_code == 0
    _link_table_is_consistent(converted)
    assert [n["id"] for n in converted["nodes"]] == [n["id"] for n in before["nodes"]]  # nothing added or removed
    for node, old in zip(converted["nodes"], before["nodes"]):
        assert (node["pos"], node["size"], node["mode"]) == (old["pos"], old["size"], old["mode"])
        if node["type"].startswith("IPAKit"):  # their types and input names are gone
            sockets = (node.get("inputs") or []) + (node.get("outputs") or [])
            assert not {s["type"] for s in sockets} & THEIR_PULID_TYPES, node["id"]
            assert not {s["name"] for s in sockets} & {"face_analysis", "pulid_flux"}, node["id"]
    assert not {link[5] for link in converted["links"]} & THEIR_PULID_TYPES
    assert converted["last_link_id"] == before["last_link_id"] and converted["last_node_id"] == before["last_node_id"]


@pytest.mark.parametrize("name", PULID_EXAMPLES)
def test_pulid_examples_keep_their_values_and_links(name):
    converted = convert(load_pulid(name)).workflow
    nodes = nodes_by_id(converted)
    loader, face, eva = nodes[16], nodes[17], nodes[19]
    assert loader["type"] == "IPAKitPuLIDLoader"
    assert loader["widgets_values"] == ["ip-adapter_pulid_sdxl_fp16.safetensors"]
    assert loader["outputs"][0]["name"] == "PULID" and loader["outputs"][0]["type"] == "IPADAPTER_KIT"
    assert face["type"] == "IPAKitInsightFaceLoader" and face["widgets_values"] == ["antelopev2", "CPU", 640]
    assert eva["type"] == "IPAKitEVACLIPLoader"  # theirs had no widget: the files it downloaded
    assert eva["widgets_values"] == ["EVA02_CLIP_L_336_psz14_s6B.pt", "parsing_bisenet.pth"]
    assert eva["outputs"][0]["name"] == "EVA_CLIP" and eva["outputs"][0]["type"] == "IPAKIT_EVA_CLIP"
    weight = 0.7000000000000001 if name == "PuLID_attention_mask" else 0.8
    model = {"PuLID_lightning_lora": 45, "PuLID_4-Step_lightning": 41}.get(name, 4)
    applies = {33: (model, 12)} if name != "PuLID_attention_mask" else {33: (4, 12), 47: (33, 49)}
    for node_id, (model_from, image_from) in applies.items():
        node = nodes[node_id]
        assert node["type"] == "IPAKitApplyPuLID" and "title" not in node
        assert node["widgets_values"] == ["fidelity", weight, 0, 1]  # method, weight, start_at, end_at
        assert [inp["name"] for inp in node["inputs"]] == PULID_INPUTS
        assert [(out["name"], out["type"]) for out in node["outputs"]] == [("MODEL", "MODEL")]
        links = linked_inputs(converted, node_id)
        assert links["pulid"] == (16, 0, "IPADAPTER_KIT") and links["eva_clip"] == (19, 0, "IPAKIT_EVA_CLIP")
        assert links["insightface"] == (17, 0, "INSIGHTFACE_KIT")
        assert links["model"] == (model_from, 0, "MODEL") and links["image"] == (image_from, 0, "IMAGE")
    if name == "PuLID_attention_mask":  # each face keeps its mask; the two applies chain into the sampler
        assert linked_inputs(converted, 33)["attn_mask"] == (87, 0, "MASK")
        assert linked_inputs(converted, 47)["attn_mask"] == (48, 0, "MASK")
        assert linked_inputs(converted, 3)["model"] == (47, 0, "MODEL")
    elif name == "PuLID_IPAdapter_style_transfer":  # PuLID's model goes on to IPAdapter_plus's converted nodes
        assert linked_inputs(converted, 47)["model"] == (33, 0, "MODEL")
        assert nodes[46]["type"] == "IPAKitApplyAdvanced" and linked_inputs(converted, 3)["model"][0] == 46
    else:
        assert "attn_mask" not in linked_inputs(converted, 33)
        assert linked_inputs(converted, 3)["model"] == (33, 0, "MODEL")


def pulid_advanced(workflow, values):
    """The PuLID_simple example with its Apply PuLID swapped for Apply PuLID Advanced saved with these values."""
    node = nodes_by_id(workflow)[33]
    node.update(type="ApplyPulidAdvanced", widgets_values=values)
    node["properties"]["Node name for S&R"] = "ApplyPulidAdvanced"
    return workflow


def test_pulid_advanced_node_maps_its_widgets_by_name():
    # theirs: weight, projection, fidelity (the zero tokens), noise, start_at, end_at
    result = convert(pulid_advanced(load_pulid("PuLID_simple"), [0.9, "ortho", 16, 0.3, 0.1, 0.8]))
    assert mapped(result)["33"] == "ApplyPulidAdvanced -> IPAKitApplyPuLIDAdvanced"
    assert problems(result) == [] and result.exit_code == 0
    node = nodes_by_id(result.workflow)[33]
    names = [spec["name"] for spec in mapping.TARGETS["IPAKitApplyPuLIDAdvanced"]["inputs"] if spec.get("widget")]
    assert dict(zip(names, node["widgets_values"])) == {"weight": 0.9, "projection": "ortho", "fidelity": 16,
                                                         "noise": 0.3, "start_at": 0.1, "end_at": 0.8}
    assert [inp["name"] for inp in node["inputs"]] == PULID_INPUTS
    assert linked_inputs(result.workflow, 33)["insightface"] == (17, 0, "INSIGHTFACE_KIT")

    # in the API format the names say it, whatever their order
    prompt = {"1": {"class_type": "ApplyPulidAdvanced", "inputs": {
        "end_at": 0.9, "start_at": 0.2, "noise": 0.5, "fidelity": 0, "projection": "none", "weight": 1.5,
        "model": ["2", 0], "pulid": ["3", 0], "eva_clip": ["4", 0], "face_analysis": ["5", 0], "image": ["6", 0]}}}
    out = convert(prompt)
    assert problems(out) == []
    assert out.workflow["1"]["inputs"] == {
        "weight": 1.5, "projection": "none", "fidelity": 0, "noise": 0.5, "start_at": 0.2, "end_at": 0.9,
        "model": ["2", 0], "pulid": ["3", 0], "eva_clip": ["4", 0], "insightface": ["5", 0], "image": ["6", 0]}
    prompt["1"]["inputs"]["noise"] = -0.5  # theirs takes negative noise (uniform noise times -0.5); here 0..1
    out = convert(prompt)
    assert out.workflow["1"]["inputs"]["noise"] == 0.0
    assert problems(out) == ["lossy: node 1 ApplyPulidAdvanced -> IPAKitApplyPuLIDAdvanced: noise: -0.5 is outside "
                             "0.0..1.0 here; 0.0 is used"]

    workflow = pulid_advanced(load_pulid("PuLID_simple"), [0.9, "ortho", 16, 0.3, 0.1])  # one value short
    assert problems(convert(workflow)) == [
        "unmapped: node 33 ApplyPulidAdvanced: left as it is: its 5 widget values do not match the 6 widgets (weight, "
        "projection, fidelity, noise, start_at, end_at) of PuLID_ComfyUI's current node; saved by another version? "
        "Rebuild it by hand"]


def test_pulid_values_this_pack_does_not_take_are_reported():
    workflow = load_pulid("PuLID_simple")
    nodes = nodes_by_id(workflow)
    nodes[33]["widgets_values"] = ["sharp", 6.0, 0.0, 1.0]  # edited by hand: not theirs either
    nodes[17]["widgets_values"] = ["ROCM"]
    result = convert(workflow)
    converted = nodes_by_id(result.workflow)
    assert converted[33]["widgets_values"] == ["fidelity", 5.0, 0.0, 1.0]
    assert converted[17]["widgets_values"] == ["antelopev2", "ROCm", 640]
    assert problems(result) == [
        "lossy: node 33 ApplyPulid -> IPAKitApplyPuLID: method: 'sharp' is not one of ['fidelity', 'style', "
        "'neutral']; 'fidelity' is used",
        "lossy: node 33 ApplyPulid -> IPAKitApplyPuLID: weight: 6.0 is outside -1.0..5.0 here; 5.0 is used"]
    assert ("note: node 17 PulidInsightFaceLoader -> IPAKitInsightFaceLoader: provider ROCm: only offered when the "
            "installed onnxruntime has it") in result.report
    nodes[17]["widgets_values"] = ["TensorRT"]
    assert ("lossy: node 17 PulidInsightFaceLoader -> IPAKitInsightFaceLoader: provider 'TensorRT' is not offered by "
            "this pack; CPU is used") in problems(convert(workflow))


def pulid_prompt():
    """PuLID_simple's PuLID part in the API format, with an advanced apply after the basic one."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl/Proteus-RunDiffusion.safetensors"}},
        "12": {"class_type": "LoadImage", "inputs": {"image": "monalisa.png"}},
        "16": {"class_type": "PulidModelLoader", "inputs": {"pulid_file": "ip-adapter_pulid_sdxl_fp16.safetensors"}},
        "17": {"class_type": "PulidInsightFaceLoader", "inputs": {"provider": "CUDA"}},
        "19": {"class_type": "PulidEvaClipLoader", "_meta": {"title": "Load Eva Clip (PuLID)"}, "inputs": {}},
        "20": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
        "33": {"class_type": "ApplyPulid", "_meta": {"title": "Apply PuLID"}, "inputs": {
            "model": ["4", 0], "pulid": ["16", 0], "eva_clip": ["19", 0], "face_analysis": ["17", 0],
            "image": ["12", 0], "attn_mask": ["20", 1], "method": "style", "weight": 0.8, "start_at": 0.0,
            "end_at": 1.0}},
        "34": {"class_type": "ApplyPulidAdvanced", "_meta": {"title": "face"}, "inputs": {
            "model": ["33", 0], "pulid": ["16", 0], "eva_clip": ["19", 0], "face_analysis": ["17", 0],
            "image": ["12", 0], "weight": 0.6, "projection": "ortho_v2", "fidelity": 8, "noise": 0.1,
            "start_at": 0.2, "end_at": 0.9}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["34", 0], "seed": 51}},
    }


def test_pulid_api_prompt_converts():
    prompt = pulid_prompt()
    result = convert(prompt)
    out = result.workflow
    assert set(out) == set(prompt)  # nothing added, nothing removed
    assert out["16"] == {"class_type": "IPAKitPuLIDLoader",
                         "inputs": {"pulid_file": "ip-adapter_pulid_sdxl_fp16.safetensors"}}
    assert out["17"] == {"class_type": "IPAKitInsightFaceLoader",
                         "inputs": {"pack": "antelopev2", "provider": "CUDA", "det_size": 640}}
    assert out["19"] == {"class_type": "IPAKitEVACLIPLoader",
                         "_meta": {"title": "IPAdapter Kit: Load EVA-CLIP (PuLID)"},
                         "inputs": {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt", "parser_file": "parsing_bisenet.pth"}}
    assert out["33"] == {"class_type": "IPAKitApplyPuLID", "_meta": {"title": "IPAdapter Kit: Apply PuLID"},
                         "inputs": {"method": "style", "weight": 0.8, "start_at": 0.0, "end_at": 1.0,
                                    "model": ["4", 0], "pulid": ["16", 0], "eva_clip": ["19", 0],
                                    "insightface": ["17", 0], "image": ["12", 0], "attn_mask": ["20", 1]}}
    assert out["34"] == {"class_type": "IPAKitApplyPuLIDAdvanced", "_meta": {"title": "face"},
                         "inputs": {"weight": 0.6, "projection": "ortho_v2", "fidelity": 8, "noise": 0.1,
                                    "start_at": 0.2, "end_at": 0.9, "model": ["33", 0], "pulid": ["16", 0],
                                    "eva_clip": ["19", 0], "insightface": ["17", 0], "image": ["12", 0]}}
    assert out["3"] == prompt["3"] and out["4"] == prompt["4"] and out["12"] == prompt["12"]
    assert result.report == [
        "mapped: node 16: PulidModelLoader -> IPAKitPuLIDLoader",
        "mapped: node 17: PulidInsightFaceLoader -> IPAKitInsightFaceLoader",
        "note: node 17 PulidInsightFaceLoader -> IPAKitInsightFaceLoader: provider CUDA: only offered when the "
        "installed onnxruntime has it",
        "mapped: node 19: PulidEvaClipLoader -> IPAKitEVACLIPLoader",
        f"note: node 19 PulidEvaClipLoader -> IPAKitEVACLIPLoader: {EVA_DOWNLOAD}",
        "mapped: node 33: ApplyPulid -> IPAKitApplyPuLID",
        "mapped: node 34: ApplyPulidAdvanced -> IPAKitApplyPuLIDAdvanced",
        "note: graph: 4 other node(s) left as they are: CheckpointLoaderSimple, KSampler, LoadImage",
        "summary: 5 node(s) converted, 0 left as they are, 0 lossy change(s)"]
    assert result.exit_code == 0


@pytest.mark.parametrize("name", PULID_FLUX_EXAMPLES)
def test_pulid_flux_examples_keep_their_values_and_links(name):
    converted = convert(load_pulid(name)).workflow
    nodes = nodes_by_id(converted)
    loader, face, eva, apply = nodes[45], nodes[53], nodes[51], nodes[62]
    assert loader["type"] == "IPAKitPuLIDLoader" and loader["widgets_values"] == ["pulid_flux_v0.9.0.safetensors"]
    assert loader["outputs"][0]["name"] == "PULID" and loader["outputs"][0]["type"] == "IPADAPTER_KIT"
    assert face["type"] == "IPAKitInsightFaceLoader" and face["widgets_values"] == ["antelopev2", "CPU", 640]
    assert eva["type"] == "IPAKitEVACLIPLoader"  # theirs had no widget: the files it downloaded
    assert eva["widgets_values"] == ["EVA02_CLIP_L_336_psz14_s6B.pt", "parsing_bisenet.pth"]
    assert apply["type"] == "IPAKitApplyPuLIDFlux" and "title" not in apply
    # weight, start_at, end_at as saved (schedule fractions there too); the fork's fusion 'mean' / use_gray on are
    # what this node does
    assert apply["widgets_values"] == [1, 0, 1]
    assert [inp["name"] for inp in apply["inputs"]] == PULID_INPUTS
    assert [(out["name"], out["type"]) for out in apply["outputs"]] == [("MODEL", "MODEL")]
    image = {"pulid_flux_16bit_simple": 54, "flux_pulid_multi": 66}[name]
    assert linked_inputs(converted, 62) == {"model": (63, 0, "MODEL"), "pulid": (45, 0, "IPADAPTER_KIT"),
                                            "eva_clip": (51, 0, "IPAKIT_EVA_CLIP"),
                                            "insightface": (53, 0, "INSIGHTFACE_KIT"), "image": (image, 0, "IMAGE")}
    assert linked_inputs(converted, 47)["model"] == (62, 0, "MODEL")  # on to the guider, as before
    assert linked_inputs(converted, 17)["model"] == (63, 0, "MODEL")  # the scheduler keeps the plain model


def pulid_flux_prompt():
    """pulid_flux_16bit_simple's PuLID part in the API format, with a mask and other values."""
    return {
        "45": {"class_type": "PulidFluxModelLoader", "inputs": {"pulid_file": "pulid_flux_v0.9.1.safetensors"}},
        "51": {"class_type": "PulidFluxEvaClipLoader", "_meta": {"title": "Load Eva Clip (PuLID Flux)"}, "inputs": {}},
        "53": {"class_type": "PulidFluxInsightFaceLoader", "inputs": {"provider": "ROCM"}},
        "54": {"class_type": "LoadImage", "inputs": {"image": "einstein.jpg"}},
        "55": {"class_type": "LoadImage", "inputs": {"image": "mask.png"}},
        "62": {"class_type": "ApplyPulidFlux", "_meta": {"title": "Apply PuLID Flux"}, "inputs": {
            "model": ["63", 0], "pulid_flux": ["45", 0], "eva_clip": ["51", 0], "face_analysis": ["53", 0],
            "image": ["54", 0], "attn_mask": ["55", 1], "weight": 0.85, "start_at": 0.1, "end_at": 0.9}},
        "63": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "default"}},
        "47": {"class_type": "BasicGuider", "inputs": {"model": ["62", 0], "conditioning": ["26", 0]}},
    }


PULID_FLUX_MASK_NOTE = (
    "note: node 62 ApplyPulidFlux -> IPAKitApplyPuLIDFlux: attn_mask: ComfyUI-PuLID-Flux took the mask but never "
    "applied it (the identity acted on the whole picture; its fork ComfyUI_PuLID_Flux_ll applies it); here it limits "
    "where the identity acts: remove the link to get their picture")


def test_pulid_flux_api_prompt_converts():
    prompt = pulid_flux_prompt()
    result = convert(prompt)
    out = result.workflow
    assert set(out) == set(prompt)  # nothing added, nothing removed
    assert out["45"] == {"class_type": "IPAKitPuLIDLoader", "inputs": {"pulid_file": "pulid_flux_v0.9.1.safetensors"}}
    assert out["51"] == {"class_type": "IPAKitEVACLIPLoader",
                         "_meta": {"title": "IPAdapter Kit: Load EVA-CLIP (PuLID)"},
                         "inputs": {"eva_file": "EVA02_CLIP_L_336_psz14_s6B.pt", "parser_file": "parsing_bisenet.pth"}}
    assert out["53"] == {"class_type": "IPAKitInsightFaceLoader",
                         "inputs": {"pack": "antelopev2", "provider": "ROCm", "det_size": 640}}
    # start_at / end_at: their percent_to_sigma gate on the Flux sigma is this node's: the values carry over
    assert out["62"] == {"class_type": "IPAKitApplyPuLIDFlux", "_meta": {"title": "IPAdapter Kit: Apply PuLID (Flux)"},
                         "inputs": {"weight": 0.85, "start_at": 0.1, "end_at": 0.9, "model": ["63", 0],
                                    "pulid": ["45", 0], "eva_clip": ["51", 0], "insightface": ["53", 0],
                                    "image": ["54", 0], "attn_mask": ["55", 1]}}
    assert all(out[i] == prompt[i] for i in ("47", "54", "55", "63"))
    assert result.report == [
        "mapped: node 45: PulidFluxModelLoader -> IPAKitPuLIDLoader",
        "mapped: node 51: PulidFluxEvaClipLoader -> IPAKitEVACLIPLoader",
        f"note: node 51 PulidFluxEvaClipLoader -> IPAKitEVACLIPLoader: {FLUX_EVA_DOWNLOAD}",
        "mapped: node 53: PulidFluxInsightFaceLoader -> IPAKitInsightFaceLoader",
        "note: node 53 PulidFluxInsightFaceLoader -> IPAKitInsightFaceLoader: provider ROCm: only offered when the "
        "installed onnxruntime has it",
        APPLY_PULID_FLUX,
        PULID_FLUX_MASK_NOTE,
        "note: graph: 4 other node(s) left as they are: BasicGuider, LoadImage, UNETLoader",
        "summary: 4 node(s) converted, 0 left as they are, 0 lossy change(s)"]
    assert result.exit_code == 0

    # their apply fed by PuLID_ComfyUI's loaders (the same type names): all of it converts, onto the same objects
    mixed = pulid_prompt()
    mixed.update({k: v for k, v in pulid_flux_prompt().items() if k in ("62", "63", "54", "55")})
    mixed["62"]["inputs"].update(pulid_flux=["16", 0], eva_clip=["19", 0], face_analysis=["17", 0])
    result = convert(mixed)
    assert problems(result) == [] and result.exit_code == 0
    assert {k: v for k, v in result.workflow["62"]["inputs"].items() if k in ("pulid", "eva_clip", "insightface")} == {
        "pulid": ["16", 0], "eva_clip": ["19", 0], "insightface": ["17", 0]}
    assert result.workflow["19"]["class_type"] == "IPAKitEVACLIPLoader"


def enhanced_apply(**values):
    """ComfyUI-PuLID-Flux-Enhanced's ApplyPulidFlux in the API format (its fusion widgets)."""
    inputs = {"model": ["63", 0], "pulid_flux": ["45", 0], "eva_clip": ["51", 0], "face_analysis": ["53", 0],
              "image": ["54", 0], "weight": 0.9, "start_at": 0.0, "end_at": 0.8, "fusion": "mean",
              "fusion_weight_max": 1.0, "fusion_weight_min": 0.0, "train_step": 1000, "use_gray": True}
    inputs.update(values)
    return {"62": {"class_type": "ApplyPulidFlux", "inputs": inputs}}


def test_pulid_flux_forks_options_without_a_counterpart_are_reported():
    here = "node 62 ApplyPulidFlux -> IPAKitApplyPuLIDFlux"
    kept = "here the photos are averaged into one identity (their 'mean'; the same for one photo); weight, " \
           "start_at and end_at are kept"
    # their defaults (and 'train_weight' with no training step, which averages) are what this node does
    for values in ({}, {"fusion": "train_weight", "train_step": 0}, {"fusion_weight_max": 3.0, "train_step": 5}):
        result = convert(enhanced_apply(**values))
        assert problems(result) == [] and result.exit_code == 0, values
        assert result.workflow["62"]["inputs"] == {
            "weight": 0.9, "start_at": 0.0, "end_at": 0.8, "model": ["63", 0], "pulid": ["45", 0],
            "eva_clip": ["51", 0], "insightface": ["53", 0], "image": ["54", 0]}
    result = convert(enhanced_apply(fusion="auto_weight", fusion_weight_max=2.0, fusion_weight_min=0.5,
                                    use_gray=False, prior_image=["56", 0]))
    assert problems(result) == [
        f"lossy: {here}: link to prior_image removed: ComfyUI-PuLID-Flux-Enhanced added its photo to the references "
        "(and trained 'train_weight' towards it); to keep it as a reference, batch it with the image input (Image "
        "Batch)",
        f"lossy: {here}: fusion 'auto_weight' (and fusion_weight_min 0.5, fusion_weight_max 2.0) dropped: it weights "
        f"the photos by the rank of their norm when several photos are given; {kept}",
        f"lossy: {here}: use_gray False dropped: EVA-CLIP sees the face in color there; here it sees it in gray, as "
        "PuLID was trained (their use_gray on)"]
    assert result.exit_code == 2 and "prior_image" not in result.workflow["62"]["inputs"]
    assert set(result.workflow["62"]["inputs"]) == {"weight", "start_at", "end_at", "model", "pulid", "eva_clip",
                                                    "insightface", "image"}
    assert problems(convert(enhanced_apply(fusion="train_weight", train_step=500))) == [
        f"lossy: {here}: fusion 'train_weight' (and train_step 500) dropped: it trains the photos' weights when "
        f"several photos are given; {kept}"]

    # the same in a UI workflow: the fork's example saved with 'max' and colour faces
    workflow = load_pulid("flux_pulid_multi")
    nodes_by_id(workflow)[62]["widgets_values"] = [0.8, 0.1, 0.9, "max", 1, 0, 1000, False]
    result = convert(workflow)
    assert nodes_by_id(result.workflow)[62]["widgets_values"] == [0.8, 0.1, 0.9]
    assert problems(result) == [
        f"lossy: {here}: fusion 'max' dropped: it takes their largest value when several photos are given; {kept}",
        f"lossy: {here}: use_gray False dropped: EVA-CLIP sees the face in color there; here it sees it in gray, as "
        "PuLID was trained (their use_gray on)"]
    nodes_by_id(workflow)[62]["widgets_values"] = [0.8, 0.1, 0.9, "max", 1]  # neither theirs nor the fork's
    assert problems(convert(workflow)) == [
        "unmapped: node 62 ApplyPulidFlux: left as it is: its 5 widget values do not match the 3 widgets (weight, "
        "start_at, end_at) of ComfyUI-PuLID-Flux's current node; saved by another version? Rebuild it by hand"]

    # lldacing's ComfyUI_PuLID_Flux_ll: the options socket and its extra nodes
    prompt = enhanced_apply()
    for name in mapping.PULID_FLUX_FUSION:
        del prompt["62"]["inputs"][name]
    prompt["62"]["inputs"]["options"] = ["70", 0]
    prompt["70"] = {"class_type": "PulidFluxOptions", "inputs": {
        "input_faces_order": "left-right", "input_faces_index": 1, "input_faces_align_mode": 1}}
    prompt["71"] = {"class_type": "FixPulidFluxPatch", "inputs": {"model": ["62", 0]}}
    result = convert(prompt)
    assert problems(result) == [
        f"lossy: {here}: link to options removed: ComfyUI_PuLID_Flux_ll's choice of face (PulidFluxOptions) is not an "
        "option here: the largest face of each photo is used (their default: large-small, index 0)",
        f"unmapped: node 70 PulidFluxOptions: left as it is: {mapping.NOT_MAPPED['PulidFluxOptions']}",
        f"unmapped: node 71 FixPulidFluxPatch: left as it is: {mapping.NOT_MAPPED['FixPulidFluxPatch']}"]
    assert "options" not in result.workflow["62"]["inputs"] and result.workflow["71"] == prompt["71"]
    assert set(mapping.PULID_FLUX_NOT_MAPPED) == {"PulidFluxOptions", "PulidFluxFaceDetector", "FixPulidFluxPatch"}


def _add_reroute(workflow, node_id, link, link_type, new_link):
    """Routes the UI link `link` (its list in workflow["links"]) through a new reroute `node_id`."""
    nodes = nodes_by_id(workflow)
    workflow["nodes"].append({"id": node_id, "type": "Reroute", "pos": [600, 100], "size": [75, 26], "flags": {},
                              "order": 3, "mode": 0, "inputs": [{"name": "", "type": "*", "link": link[0]}],
                              "outputs": [{"name": link_type, "type": link_type, "links": [new_link]}],
                              "properties": {"showOutputText": False, "horizontal": False}})
    workflow["links"].append([new_link, node_id, 0, link[3], link[4], link_type])
    nodes[link[3]]["inputs"][link[4]]["link"] = new_link
    link[3:5] = [node_id, 0]
    workflow["last_link_id"] = max(workflow["last_link_id"], new_link)
    workflow["last_node_id"] = max(workflow["last_node_id"], node_id)
    _link_table_is_consistent(workflow)


def test_reroutes_pass_our_types_on_only_from_converted_nodes():
    workflow = load_pulid("PuLID_simple")
    for node_id, origin, kind, new_link in ((90, 19, "EVA_CLIP", 240), (91, 17, "FACEANALYSIS", 241)):
        _add_reroute(workflow, node_id, next(link for link in workflow["links"] if link[1] == origin), kind, new_link)
    result = convert(workflow)
    assert problems(result) == []
    converted = result.workflow
    _link_table_is_consistent(converted)
    nodes = nodes_by_id(converted)
    assert nodes[90]["outputs"][0]["type"] == "IPAKIT_EVA_CLIP" and nodes[91]["outputs"][0]["type"] == "INSIGHTFACE_KIT"
    assert linked_inputs(converted, 33)["eva_clip"] == (90, 0, "IPAKIT_EVA_CLIP")
    assert linked_inputs(converted, 33)["insightface"] == (91, 0, "INSIGHTFACE_KIT")

    # the same for PuLID-Flux's loaders (their PULIDFLUX too)
    workflow = load_pulid("pulid_flux_16bit_simple")
    for node_id, origin, kind, new_link in ((90, 51, "EVA_CLIP", 240), (91, 53, "FACEANALYSIS", 241),
                                            (92, 45, "PULIDFLUX", 242)):
        _add_reroute(workflow, node_id, next(link for link in workflow["links"] if link[1] == origin), kind, new_link)
    result = convert(workflow)
    assert problems(result) == []
    converted = result.workflow
    _link_table_is_consistent(converted)
    nodes = nodes_by_id(converted)
    assert [nodes[i]["outputs"][0]["type"] for i in (90, 91, 92)] == ["IPAKIT_EVA_CLIP", "INSIGHTFACE_KIT",
                                                                      "IPADAPTER_KIT"]
    assert linked_inputs(converted, 62)["pulid"] == (92, 0, "IPADAPTER_KIT")
    assert linked_inputs(converted, 62)["insightface"] == (91, 0, "INSIGHTFACE_KIT")


def test_unknown_nodes_linked_to_pulid_nodes_are_reported():
    foreign = ("left as it is: not an PuLID_ComfyUI node this converter knows, and it uses their IP-Adapter objects, "
               "which the nodes here do not produce")
    prompt = pulid_prompt()
    prompt["40"] = {"class_type": "ACME_PulidStack", "inputs": {"pulid": ["16", 0], "eva": ["19", 0]}}
    prompt["41"] = {"class_type": "ACME_FaceAnalysisLoader", "inputs": {"provider": "CPU"}}
    prompt["34"]["inputs"]["face_analysis"] = ["41", 0]  # another pack's FACEANALYSIS into their apply node
    result = convert(prompt)
    assert problems(result) == [f"unmapped: node 40 ACME_PulidStack: {foreign}",
                                f"unmapped: node 41 ACME_FaceAnalysisLoader: {foreign}"]
    assert result.workflow["40"] == prompt["40"]

    workflow = load_pulid("PuLID_simple")  # the same in a UI workflow: a node of another pack takes their EVA-CLIP
    nodes = nodes_by_id(workflow)
    workflow["nodes"].append({"id": 80, "type": "ACME_EvaProbe", "pos": [0, 0], "size": [315, 58], "flags": {},
                              "order": 0, "mode": 0, "outputs": [], "properties": {}, "widgets_values": [],
                              "inputs": [{"name": "eva_clip", "type": "EVA_CLIP", "link": 300}]})
    nodes[19]["outputs"][0]["links"].append(300)
    workflow["links"].append([300, 19, 0, 80, 0, "EVA_CLIP"])
    workflow["last_link_id"] = 300
    assert problems(convert(workflow)) == [f"unmapped: node 80 ACME_EvaProbe: {foreign}"]
    workflow["links"][-1][1] = 999  # not linked to their node: another pack's EVA_CLIP is no concern
    nodes[19]["outputs"][0]["links"].remove(300)
    workflow["nodes"].append({"id": 999, "type": "ACME_EvaLoader", "pos": [0, 0], "size": [315, 58], "flags": {},
                              "order": 0, "mode": 0, "inputs": [], "properties": {}, "widgets_values": [],
                              "outputs": [{"name": "EVA_CLIP", "type": "EVA_CLIP", "links": [300]}]})
    workflow["last_node_id"] = 999
    _link_table_is_consistent(workflow)
    assert problems(convert(workflow)) == []


PULID_FILE_WIDGETS = ("ckpt_name", "image", "pulid_file", "eva_file", "parser_file", "pack", "lora_name",
                      "unet_name", "provider")


@pytest.mark.parametrize("name", PULID_EXAMPLES)
def test_converted_pulid_workflow_is_valid_for_the_server(name, object_info):
    converted = convert(load_pulid(name)).workflow
    skip_unregistered(object_info, *sorted({node["type"] for node in converted["nodes"]} & PENDING_TARGETS))
    for line in validate_widgets(converted, object_info):  # only the files of their examples, not in the tiny world
        what = line.partition(") ")[2]
        assert what.split(" ")[0].rstrip(":") in PULID_FILE_WIDGETS and "is not one of" in what, line
    prompt = to_api(converted, object_info)
    assert_required_inputs(prompt, object_info)


def test_cli_converts_a_pulid_workflow(tmp_path):
    out = tmp_path / "converted.json"
    done = _cli(["-m", "migrate", str(PULID_DATA / "PuLID_attention_mask.json"), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == convert(load_pulid("PuLID_attention_mask")).workflow
    assert done.stderr.splitlines() == PULID_REPORTS["PuLID_attention_mask"] + [f"wrote {out}"]
    done = _cli(["-m", "migrate", str(PULID_DATA / "pulid_flux_16bit_simple.json"), str(out)], tmp_path)
    assert done.returncode == 0 and done.stderr.splitlines() == PULID_REPORTS["pulid_flux_16bit_simple"] + [
        f"wrote {out}"]
    assert json.loads(out.read_text()) == convert(load_pulid("pulid_flux_16bit_simple")).workflow
    done = _cli(["-m", "migrate", "--help"], tmp_path)
    assert done.returncode == 0 and "InstantID" in done.stderr and "PuLID (SDXL or Flux)" in done.stderr


PULID_WORLD = {  # the tiny world's files standing in for their examples' (the same names where theirs are fixed)
    ("CheckpointLoaderSimple", "ckpt_name"): "sd_xl_base_1.0.safetensors",
    ("IPAKitPuLIDLoader", "pulid_file"): "ip-adapter_pulid_sdxl_fp16.safetensors",
    ("IPAKitEVACLIPLoader", "eva_file"): "EVA02_CLIP_L_336_psz14_s6B.pt",
    ("IPAKitEVACLIPLoader", "parser_file"): "parsing_bisenet.pth",
    ("IPAKitInsightFaceLoader", "pack"): "antelopev2",
    ("LoadImage", "image"): ("face_a.png",),
}


def test_converted_pulid_workflow_runs(comfy_server, object_info):
    converted = convert(load_pulid("PuLID_simple")).workflow
    skip_unregistered(object_info, *sorted({node["type"] for node in converted["nodes"]} & PENDING_TARGETS))
    missing = _flux_world_missing(object_info, PULID_WORLD)
    if missing:
        pytest.skip(f"the tiny PuLID world is not served (missing: {', '.join(missing)})")
    converted = small(converted, object_info)
    set_widget(converted, "CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors", object_info)
    set_widget(converted, "LoadImage", "image", "face_a.png", object_info)
    for node in converted["nodes"]:
        if node["id"] == 10:  # their result preview: saved, so the run returns it
            node.update(type="SaveImage", widgets_values=["pulid"])
    with_pulid = run_one_image(comfy_server, to_api(converted, object_info))
    for node in converted["nodes"]:  # the same graph with the converted apply node bypassed
        if node["type"] == "IPAKitApplyPuLID":
            node["mode"] = 4
    without = run_one_image(comfy_server, to_api(converted, object_info))
    assert np.abs(with_pulid - without).max() > 0, "the converted PuLID node did not change the image"


PULID_FLUX_WORLD = {  # the tiny world's files standing in for balazik's example's
    ("CheckpointLoaderSimple", "ckpt_name"): "flux1-dev-fp8.safetensors",
    ("IPAKitPuLIDLoader", "pulid_file"): "pulid_flux_v0.9.1.safetensors",
    ("IPAKitEVACLIPLoader", "eva_file"): "EVA02_CLIP_L_336_psz14_s6B.pt",
    ("IPAKitEVACLIPLoader", "parser_file"): "parsing_bisenet.pth",
    ("IPAKitInsightFaceLoader", "pack"): "antelopev2",
    ("LoadImage", "image"): ("face_a.png", "face_b.png"),
}
PULID_FLUX_FILE_WIDGETS = ("pulid_file", "image", "unet_name", "clip_name1", "clip_name2", "vae_name")


def test_converted_pulid_flux_workflow_is_valid_for_the_server(object_info):
    converted = convert(load_pulid("pulid_flux_16bit_simple")).workflow
    assert "IPAKitApplyPuLIDFlux" in object_info
    for line in validate_widgets(converted, object_info):  # only the files of their example, not in the tiny world
        what = line.partition(") ")[2]
        assert what.split(" ")[0].rstrip(":") in PULID_FLUX_FILE_WIDGETS and "is not one of" in what, line
    prompt = to_api(converted, object_info)
    assert_required_inputs(prompt, object_info)
    assert prompt["62"]["inputs"] == {"model": ["63", 0], "pulid": ["45", 0], "eva_clip": ["51", 0],
                                      "insightface": ["53", 0], "image": ["54", 0], "weight": 1, "start_at": 0,
                                      "end_at": 1}


def _on_the_tiny_flux_checkpoint(prompt):
    """Their UNETLoader / DualCLIPLoader / VAELoader replaced by the tiny all-in-one Flux checkpoint (the world has
    no separate Flux files): node 63 loads it, its CLIP and VAE outputs feed what 64 and 10 fed."""
    prompt["63"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev-fp8.safetensors"}}
    moved = {"64": ["63", 1], "10": ["63", 2]}
    for node_id in moved:
        del prompt[node_id]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in moved:
                node["inputs"][name] = moved[str(value[0])]
    return prompt


def test_converted_pulid_flux_workflow_runs(comfy_server, object_info):
    missing = _flux_world_missing(object_info, PULID_FLUX_WORLD)
    if missing:
        pytest.skip(f"the tiny PuLID-Flux world is not served (missing: {', '.join(missing)})")
    converted = convert(load_pulid("pulid_flux_16bit_simple")).workflow
    set_widget(converted, "EmptySD3LatentImage", "width", 64, object_info)
    set_widget(converted, "EmptySD3LatentImage", "height", 64, object_info)
    set_widget(converted, "BasicScheduler", "steps", 2, object_info)
    set_widget(converted, "LoadImage", "image", "face_a.png", object_info)
    set_widget(converted, "IPAKitPuLIDLoader", "pulid_file", "pulid_flux_v0.9.1.safetensors", object_info)
    for node in converted["nodes"]:
        if node["id"] == 50:  # their result preview: saved, so the run returns it
            node.update(type="SaveImage", widgets_values=["pulid_flux"])
    runs = {}
    for face in ("face_a.png", "face_b.png", None):  # None: the converted apply node bypassed
        graph = copy.deepcopy(converted)
        if face:
            set_widget(graph, "LoadImage", "image", face, object_info)
        else:
            nodes_by_id(graph)[62]["mode"] = 4
        runs[face] = run_one_image(comfy_server, _on_the_tiny_flux_checkpoint(to_api(graph, object_info)))
    assert np.abs(runs["face_a.png"] - runs[None]).max() > 0, "the converted PuLID-Flux node did not change the image"
    assert np.abs(runs["face_a.png"] - runs["face_b.png"]).max() > 0, "the identity does not follow the photo"
