"""The IPAdapter_plus workflow converter (migrate/): its embedded node layouts against the live server, the mapping of
hand-built IPAdapter_plus workflows (UI and API format), the converted graphs run through the server, and the CLI."""
import ast
import copy
import json
import os
import pathlib
import subprocess
import sys

import pytest
from PIL import Image

from ipadapter_kit.migrate import convert, mapping
from workflow_api import ordered_inputs, to_api, validate_widgets, widget_slots

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


# ---------------------------------------------------------------------------------------------------------------
# The embedded data cannot drift from the nodes.
def test_embedded_target_layouts_match_the_live_server(object_info):
    for node_id, target in mapping.TARGETS.items():
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
    for key, rule in mapping.RULES.items():
        assert rule.target in mapping.TARGETS and rule.target in object_info, key
        names = {s["name"] for s in mapping.TARGETS[rule.target]["inputs"]}
        source = mapping.SOURCES[key.split("@")[0].split("+")[0]]
        theirs = set(source["sockets"]) | set(source["widgets"])
        assert set(rule.rename) <= theirs and set(rule.drop) <= theirs, key
        assert set(rule.rename.values()) <= names and set(rule.fixed) <= names and set(rule.values) <= names, key
        for _, variant in rule.variants:
            assert variant in mapping.RULES or f"{key}@{variant}" in mapping.RULES, key
        for their_slot, our_slot in rule.outputs.items():
            assert their_slot < len(source["outputs"]) and (our_slot is None or our_slot < len(
                mapping.TARGETS[rule.target]["outputs"])), key
    assert not set(mapping.RULES) & set(mapping.NOT_MAPPED)


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
                    "9": "IPAdapterLoadEmbeds -> IPAKitLoadEmbeds", "10": "IPAdapterEmbeds -> IPAKitApplyAdvanced",
                    "11": "IPAdapterClipVisionEnhancer -> IPAKitApplyTiled",
                    "12": "IPAdapterCombineEmbeds -> IPAKitCombineEmbeds"},
                   ["unmapped: node 7 ACME_IPAdapterStack: left as it is: not an IPAdapter_plus node",
                    "unmapped: node 8 IPAdapterWeights: left as it is: its FLOAT list drives a batch node",
                    "lossy: node 9 IPAdapterLoadEmbeds -> IPAKitLoadEmbeds: cat.ipadpt is a pickled",
                    "lossy: node 11 IPAdapterClipVisionEnhancer -> IPAKitApplyTiled: enhance_tiles 2 dropped",
                    "lossy: node 12 IPAdapterCombineEmbeds -> IPAKitCombineEmbeds: method 'max' is not available"]),
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
        assert not new["type"].startswith(("IPAdapter", "PrepImageForClipVision")) or new["type"] in (
            "IPAdapterWeights",), new["type"]


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
                         "node 8 (IPAdapterWeights): unknown node type",
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
    assert masked[8]["widgets_values"] == ["lanczos (antialiased bicubic)", "top", 0.0, 224]
    assert masked[9]["widgets_values"] == ["fade", 0.6, 0, "fixed"]
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
    nodes_by_id(workflow)[7]["widgets_values"] = [0.8, 0.0, 1.0]
    result = convert(workflow)
    assert nodes_by_id(result.workflow)[7]["type"] == "IPAdapter"
    assert any(line.startswith("unmapped: node 7 IPAdapter: left as it is: its 3 widget values")
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
    assert "unmapped: node 8 IPAdapterWeights" in done.stderr
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
                  "embeds": "x.ipadpt", "image_weight": 1.0, "prompt_weight": 1.0}
SAMPLE_OVERRIDES = {"IPAdapter": {"weight_type": "standard"},
                    "IPAdapterUnifiedLoader": {"preset": "PLUS (high strength)"},
                    "IPAdapterUnifiedLoaderFaceID": {"preset": "FACEID PORTRAIT UNNORM - SDXL only (strong)"}}


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
        info = object_info[node["class_type"]]
        for name, spec_kind, opts in widget_slots(info):
            if name is None:
                continue
            value = node["inputs"][name]
            options = spec_kind if isinstance(spec_kind, list) else opts.get("options")
            if options is not None and name not in ("embeds_file", "ipadapter_file", "pack"):
                assert value in options, (kind, name, value)
            if "min" in opts:
                assert opts["min"] <= value <= opts["max"], (kind, name, value)
