"""The converter on every workflow IPAdapter_plus ever published in its examples/ folder (v1 of 2023 to v2 of August
2024; tests/data/ipadapter_plus_examples/README.md), on each historical widget layout of its nodes, on its precise
weight types (against its own per-block formula) and on its per-frame weights. Every converted example runs through
the server on the tiny models (other packs' nodes on the test host's stand-ins in tests/host_support:
ComfyUI_essentials, ComfyUI_FaceAnalysis, ComfyUI-Kolors-MZ on a tiny Kolors); in a few of each era the adapter
visibly acts."""
import json
import pathlib
import types

import numpy as np
import pytest
import torch
from PIL import Image

from ipadapter_kit.ipadapter_core import attention, weight_types
from ipadapter_kit.migrate import convert, mapping
from workflow_api import set_widget, to_api, validate_widgets

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "data" / "ipadapter_plus_examples"
ALL_EXAMPLES = sorted(p.stem for p in EXAMPLES.glob("*.json"))
# Their nodes whose targets other parts of issue 14 add (per-frame weight nodes, Kolors FaceID): an example that
# only misses these is skipped until their RULES exist.
AWAITING = {"IPAdapterWeights": "IPAdapter Kit's per-frame weight nodes (IPAKitWeightsSchedule)",
            "IPAdapterFaceIDKolors": "Kolors FaceID on IPAdapter Kit: Apply FaceID (weight_kolors)"}


def load_example(name):
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def unmapped_types(result):
    return {line.split(": ")[1].split(" ")[-1] for line in result.report if line.startswith("unmapped:")}


def test_every_published_version_is_here():
    assert len(ALL_EXAMPLES) == 70
    index = (EXAMPLES / "README.md").read_text()
    assert all(f"| {name}.json |" in index for name in ALL_EXAMPLES)


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_published_example_converts_with_nothing_unmapped(name):
    result = convert(load_example(name))
    left = unmapped_types(result)
    waiting = {kind for kind in left if kind in AWAITING and kind not in mapping.RULES}
    if left and left == waiting:
        pytest.skip("needs " + "; ".join(AWAITING[kind] for kind in sorted(waiting)))
    assert not left, [line for line in result.report if line.startswith("unmapped:")]
    kinds = {node["type"] for node in result.workflow["nodes"]}
    assert not kinds & set(mapping.SOURCES), kinds & set(mapping.SOURCES)


# ---------------------------------------------------------------------------------------------------------------
# One node per historical widget layout: the values land on the right names here.
def one_node(kind, values, sockets=()):
    return {"nodes": [{"id": 1, "type": kind, "pos": [0, 0], "size": [300, 100], "mode": 0,
                       "inputs": [{"name": name, "type": "*", "link": None} for name in sockets],
                       "outputs": [], "widgets_values": list(values)}], "links": [], "last_node_id": 1,
            "last_link_id": 0}


def converted_widgets(node):
    names = []
    for spec in mapping.TARGETS[node["type"]]["inputs"]:
        if spec.get("widget"):
            names += [spec["name"]] + ([None] if spec.get("control") else [])
    assert len(names) == len(node["widgets_values"])
    return {name: value for name, value in zip(names, node["widgets_values"]) if name}


LANCZOS = "lanczos" if "lanczos" in mapping.INTERPOLATIONS else "lanczos (antialiased bicubic)"
LAYOUTS = [  # (their type, saved values, our type, values expected here)
    # v1 IPAdapterApply, 414486b (Sept 2023) -> 77554c8 (Nov 2023); its weight_type is embeds_scaling here
    ("IPAdapterApply", [0.8], "IPAKitApplyAdvanced",
     {"weight": 0.8, "weight_type": "linear", "embeds_scaling": "V only", "start_at": 0.0, "end_at": 1.0}),
    ("IPAdapterApply", [0.7, 0.0], "IPAKitApplyAdvanced", {"weight": 0.7, "embeds_scaling": "V only"}),
    ("IPAdapterApply", [0.7, 0.0, "channel penalty"], "IPAKitApplyAdvanced",
     {"weight": 0.7, "embeds_scaling": "K+mean(V) w/ C penalty"}),
    ("IPAdapterApply", [0.7, 0.0, "linear", 0.1, 0.9], "IPAKitApplyAdvanced",
     {"weight": 0.7, "weight_type": "linear", "embeds_scaling": "K+V", "start_at": 0.1, "end_at": 0.9}),
    ("IPAdapterApply", [0.9, 0.0, "original", 0.2, 0.8, True], "IPAKitApplyAdvanced",
     {"weight": 0.9, "embeds_scaling": "V only", "start_at": 0.2, "end_at": 0.8, "unfold_batch": True}),
    ("IPAdapterApplyFaceID", [0.9, 0.0, "linear", 0.1, 0.9, True, 1.5, False], "IPAKitApplyFaceID",
     {"weight": 0.9, "embeds_scaling": "K+V", "start_at": 0.1, "end_at": 0.9, "plus_version": "v2 (shortcut)",
      "weight_faceidv2": 1.5}),
    ("IPAdapterApplyFaceID", [0.9, 0.0, "original", 0.0, 1.0, False, 1.0, False], "IPAKitApplyFaceID",
     {"plus_version": "v1", "embeds_scaling": "V only"}),
    ("IPAdapterApplyEncoded", [1.1], "IPAKitApplyAdvanced", {"weight": 1.1, "embeds_scaling": "V only"}),
    ("IPAdapterApplyEncoded", [1.1, "linear"], "IPAKitApplyAdvanced", {"weight": 1.1, "embeds_scaling": "K+V"}),
    ("IPAdapterApplyEncoded", [1.1, "linear", 0.2, 0.8], "IPAKitApplyAdvanced",
     {"embeds_scaling": "K+V", "start_at": 0.2, "end_at": 0.8}),
    ("IPAdapterApplyEncoded", [1.1, "channel penalty", 0.2, 0.8, True], "IPAKitApplyAdvanced",
     {"embeds_scaling": "K+mean(V) w/ C penalty", "unfold_batch": True}),
    ("IPAdapterTilesMasked", [0.65, 0.0, "original", 0.1, 0.9, 1, 0.6], "IPAKitApplyTiled",
     {"weight": 0.65, "embeds_scaling": "V only", "start_at": 0.1, "end_at": 0.9, "mode": "tiles with masks"}),
    ("IPAdapterEncoder", [True, 0.0], "IPAKitEncode", {"weight": 1.0}),
    ("IPAdapterEncoder", [False, 0.0, 0.5, 1.0, 1.0, 1.0], "IPAKitEncode", {"weight": 0.25}),  # v1 squared it
    ("IPAdapterEncoder", [1.5], "IPAKitEncode", {"weight": 1.5}),
    ("PrepImageForClipVision", ["lanczos", "top", 0.1, False], "IPAKitPrepImage",
     {"interpolation": LANCZOS, "crop_position": "top", "sharpening": 0.1}),
    ("PrepImageForClipVision", ["BICUBIC", "left", 0.0], "IPAKitPrepImage",
     {"interpolation": "bicubic", "crop_position": "left"}),
    ("PrepImageForInsightFace", ["left", 0.2, False], "IPAKitPrepImage",
     {"crop_position": "left", "sharpening": 0.2, "size": 640, "interpolation": LANCZOS}),
    ("InsightFaceLoader", ["ROCM"], "IPAKitInsightFaceLoader", {"provider": "ROCm", "pack": "buffalo_l"}),
    ("IPAdapterInsightFaceLoader", ["CPU"], "IPAKitInsightFaceLoader", {"provider": "CPU", "pack": "buffalo_l"}),
    ("IPAdapterInsightFaceLoader", ["CPU", "antelopev2"], "IPAKitInsightFaceLoader", {"pack": "antelopev2"}),
    # v2 before weight_type (53a06f1) / embeds_scaling (ece285d) / encode_batch_size (a336127, d76bdbd)
    ("IPAdapter", [0.6, 0.1, 0.9], "IPAKitApply",
     {"weight": 0.6, "start_at": 0.1, "end_at": 0.9, "weight_type": "linear"}),
    ("IPAdapterAdvanced", [0.7, "ease in", "add", 0.1, 0.9], "IPAKitApplyAdvanced",
     {"weight": 0.7, "weight_type": "ease in", "combine_embeds": "add", "start_at": 0.1, "end_at": 0.9,
      "embeds_scaling": "V only"}),
    ("IPAdapterBatch", [0.7, "ease out", 0.1, 0.9], "IPAKitApplyAdvanced",
     {"weight": 0.7, "weight_type": "ease out", "start_at": 0.1, "end_at": 0.9, "unfold_batch": True}),
    ("IPAdapterBatch", [0.7, "ease out", 0.1, 0.9, "K+V"], "IPAKitApplyAdvanced",
     {"weight_type": "ease out", "embeds_scaling": "K+V", "unfold_batch": True}),
    ("IPAdapterFaceID", [0.8, 2.0, "ease in", "average", 0.1, 0.9], "IPAKitApplyFaceID",
     {"weight": 0.8, "weight_faceidv2": 2.0, "weight_type": "ease in", "combine_embeds": "average",
      "start_at": 0.1, "end_at": 0.9}),
    ("IPAdapterFaceID", [0.8, 2.0, "linear", "concat", 0.0, 1.0, "K+V", "0:1.0, 3:0.5"], "IPAKitApplyFaceID",
     {"embeds_scaling": "K+V", "block_weights": "0:1.0, 3:0.5"}),
    ("IPAdapterTiled", [0.7, "ease in", "concat", 0.1, 0.9, 0.0], "IPAKitApplyTiled",
     {"weight": 0.7, "weight_type": "ease in", "start_at": 0.1, "end_at": 0.9}),
    ("IPAdapterTiledBatch", [0.7, "ease in", 0.1, 0.9, 0.0], "IPAKitApplyTiled",
     {"weight": 0.7, "weight_type": "ease in", "start_at": 0.1, "end_at": 0.9}),
    ("IPAdapterTiledBatch", [0.7, "ease in", 0.1, 0.9, 0.0, "K+V"], "IPAKitApplyTiled",
     {"weight_type": "ease in", "embeds_scaling": "K+V"}),
    ("IPAdapterEmbeds", [0.8, "ease in", 0.1, 0.9], "IPAKitApplyAdvanced",
     {"weight": 0.8, "weight_type": "ease in", "start_at": 0.1, "end_at": 0.9}),
]


@pytest.mark.parametrize("kind, values, target, expected", LAYOUTS,
                         ids=[f"{row[0]}-{len(row[1])}" for row in LAYOUTS])
def test_each_historical_layout_lands_on_the_right_names(kind, values, target, expected):
    sockets = ("insightface",) if kind in ("IPAdapterFaceID", "IPAdapterApplyFaceID") else ()
    result = convert(one_node(kind, values, sockets))
    node = result.workflow["nodes"][0]
    assert node["type"] == target, result.report
    got = converted_widgets(node)
    assert {name: got[name] for name in expected} == expected, result.report
    assert not [line for line in result.report if line.startswith("unmapped:")]


@pytest.mark.parametrize("kind, values", [
    ("IPAdapter", ["0.6", 0.1, 0.9]),  # as many values as an old layout, of the wrong kinds
    ("IPAdapterApply", [0.7, "linear", 0.0]),
    ("IPAdapterAdvanced", [0.7, "linear"]),  # as many values as no layout
])
def test_values_that_fit_no_layout_are_left_alone_with_the_layout_message(kind, values):
    result = convert(one_node(kind, values))
    assert result.workflow["nodes"][0]["type"] == kind
    assert any(line.startswith(f"unmapped: node 1 {kind}: left as it is: its {len(values)} widget values do not "
                               "match") for line in result.report), result.report


# ---------------------------------------------------------------------------------------------------------------
# v1's extra behaviours: noise as a negative image node, the CLIP-vision-output era, the encoder without adapter.
def example_node(workflow, kind):
    return next(node for node in workflow["nodes"] if node["type"] == kind)


def link_source(workflow, node, input_name):
    """(origin node, origin slot) of a node's input."""
    link_id = next(inp["link"] for inp in node["inputs"] if inp["name"] == input_name)
    link = next(link for link in workflow["links"] if link[0] == link_id)
    origin = next(n for n in workflow["nodes"] if n["id"] == link[1])
    return origin, link[2]


def test_v1_noise_becomes_a_noise_negative_of_the_same_image():
    original = load_example("IPAdapter_weight_types__5b9d099f")  # three IPAdapterApply, noise 0.3
    result = convert(original)
    workflow = result.workflow
    applies = [node for node in workflow["nodes"] if node["type"] == "IPAKitApplyAdvanced"]
    assert len(applies) == 3
    for apply in applies:
        noise, slot = link_source(workflow, apply, "image_negative")
        assert noise["type"] == "IPAKitNoiseImage" and slot == 0
        assert converted_widgets(noise)["type"] == "shuffle" and converted_widgets(noise)["strength"] == 0.3
        assert link_source(workflow, noise, "image") == link_source(workflow, apply, "image")
    assert result.unmapped == 0


def test_v1_clip_vision_output_era_takes_the_encoders_image_and_clip_vision():
    original = load_example("face__677d90bc")  # September 2023: IPAdapterCLIPVisionEncode -> IPAdapterApply
    theirs = example_node(original, "IPAdapterCLIPVisionEncode")
    workflow = convert(original).workflow
    apply = example_node(workflow, "IPAKitApplyAdvanced")
    encoder = next(n for n in workflow["nodes"] if n["id"] == theirs["id"])
    assert encoder["type"] == "CLIPVisionEncode"
    for name in ("image", "clip_vision"):
        assert link_source(workflow, apply, name) == link_source(workflow, encoder, name)
    assert "clip_vision_output" not in {inp["name"] for inp in apply["inputs"]}


def test_v1_encoder_gets_the_adapter_of_the_apply_node_using_its_embeds():
    workflow = convert(load_example("IPAdapter_weighted__7eeb8c46")).workflow
    apply = example_node(workflow, "IPAKitApplyAdvanced")
    for encode in (node for node in workflow["nodes"] if node["type"] == "IPAKitEncode"):
        assert link_source(workflow, encode, "ipadapter") == link_source(workflow, apply, "ipadapter")


def test_v1_faceid_insightface_through_clip_vision_goes_to_insightface():
    original = load_example("FaceID_basic__c6b06ad8")  # December 2023: InsightFace in the clip_vision socket
    workflow = convert(original).workflow
    apply = example_node(workflow, "IPAKitApplyFaceID")
    loader, _ = link_source(workflow, apply, "insightface")
    assert loader["type"] == "IPAKitInsightFaceLoader" and converted_widgets(loader)["pack"] == "buffalo_l"


def test_api_prompt_v1_apply_gets_its_noise_node():
    prompt = {
        "1": {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": "ip-adapter_sd15.safetensors"}},
        "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit-h.safetensors"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15.safetensors"}},
        "5": {"class_type": "IPAdapterApply", "inputs": {
            "ipadapter": ["1", 0], "clip_vision": ["2", 0], "image": ["3", 0], "model": ["4", 0], "weight": 0.8,
            "noise": 0.4, "weight_type": "channel penalty", "start_at": 0.0, "end_at": 1.0,
            "unfold_batch": False}},
    }
    prompt = convert(prompt).workflow
    apply = prompt["5"]["inputs"]
    assert prompt["5"]["class_type"] == "IPAKitApplyAdvanced"
    assert apply["embeds_scaling"] == "K+mean(V) w/ C penalty" and apply["weight_type"] == "linear"
    noise = prompt[apply["image_negative"][0]]
    assert noise["class_type"] == "IPAKitNoiseImage" and noise["inputs"]["image"] == ["3", 0]
    assert noise["inputs"]["strength"] == 0.4 and noise["inputs"]["type"] == "shuffle"


# ---------------------------------------------------------------------------------------------------------------
# Precise weight types: IPAdapter_plus (IPAdapterPlus.py, ipadapter_execute) gives the composition blocks `weight`
# when the type comes from a weight_type widget (no style_boost / composition_boost).
def plus_precise_block_weights(weight_type, arch, weight):
    """Their per-block weights {IPAdapter_plus block index: weight} for a precise type set by the widget."""
    w = wc = weight
    if arch == "SDXL":
        if weight_type == "style transfer precise":
            return {3: wc, 6: w}
        return {0: w * .1, 1: w * .1, 2: w * .1, 3: wc, 4: w * .1, 5: w * .1, 6: w, 7: w * .1, 8: w * .1,
                9: w * .1, 10: w * .1}
    if weight_type == "style transfer precise":
        return {0: w, 1: w, 2: w, 3: w, 4: wc * 0.25, 5: wc, 9: w, 10: w, 11: w, 12: w, 13: w, 14: w, 15: w}
    return {0: w, 1: w, 2: w, 3: w, 4: wc * 0.25, 5: wc, 6: w * .1, 7: w * .1, 8: w * .1, 9: w, 10: w, 11: w,
            12: w, 13: w, 14: w, 15: w}


PRECISE_NODES = [("IPAdapterAdvanced", lambda w, t: [w, t, "concat", 0.0, 1.0, "V only"]),
                 ("IPAdapterBatch", lambda w, t: [w, t, 0.0, 1.0, "V only", 0]),
                 ("IPAdapterMS", lambda w, t: [w, 1.0, t, "concat", 0.0, 1.0, "V only", ""]),
                 ("IPAdapterEmbeds", lambda w, t: [w, t, 0.0, 1.0, "V only"])]


@pytest.mark.parametrize("kind, values", PRECISE_NODES, ids=[row[0] for row in PRECISE_NODES])
@pytest.mark.parametrize("weight_type", ["style transfer precise", "composition precise"])
@pytest.mark.parametrize("weight", [0.6, 1.3])
@pytest.mark.parametrize("arch", ["SD1.5", "SDXL"])
def test_precise_weight_types_keep_their_per_block_weights(kind, values, weight_type, weight, arch):
    node = convert(one_node(kind, values(weight, weight_type))).workflow["nodes"][0]
    ours = converted_widgets(node)
    assert ours["weight_type"] == weight_type
    factors = weight_types._block_factors(weight_type, arch, ours["weight"], ours["weight_composition"])
    blocks = weight_types.execution_blocks(arch)
    theirs = plus_precise_block_weights(weight_type, arch, weight)
    assert [round(factors[b], 9) for b in blocks] == [round(theirs.get(i, 0.0), 9) for i in range(len(blocks))]


# ---------------------------------------------------------------------------------------------------------------
# Per-frame weights: their FLOAT list into a weight widget-turned-input becomes a link into frame_weights.
def frame_weights_workflow(batch_type):
    values = {"IPAdapterBatch": [0.7, "linear", 0.0, 1.0, "V only", 0],
              "IPAAdapterFaceIDBatch": [0.7, 1.0, "linear", "concat", 0.0, 1.0, "V only"]}[batch_type]
    return {"nodes": [
        {"id": 1, "type": "IPAdapterWeights", "inputs": [], "mode": 0,
         "outputs": [{"name": "weights", "type": "FLOAT", "links": [1]},
                     {"name": "weights_invert", "type": "FLOAT", "links": []}],
         "widgets_values": ["1.0, 0.0", "linear", 6, 0, 9999, 0, 0, "full batch"]},
        {"id": 2, "type": batch_type, "mode": 0, "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}],
         "inputs": [{"name": "model", "type": "MODEL", "link": None},
                    {"name": "ipadapter", "type": "IPADAPTER", "link": None},
                    {"name": "image", "type": "IMAGE", "link": None},
                    {"name": "weight", "type": "FLOAT", "link": 1, "widget": {"name": "weight"}}],
         "widgets_values": values}],
        "links": [[1, 1, 0, 2, 3, "FLOAT"]], "last_link_id": 1, "last_node_id": 2}


def test_per_frame_weights_link_goes_into_frame_weights():
    result = convert(frame_weights_workflow("IPAdapterBatch"))
    workflow = result.workflow
    batch = next(node for node in workflow["nodes"] if node["id"] == 2)
    assert batch["type"] == "IPAKitApplyAdvanced"
    assert converted_widgets(batch)["weight"] == 1.0
    origin, slot = link_source(workflow, batch, "frame_weights")
    assert origin["id"] == 1 and slot == 0
    assert "weight" not in {inp["name"] for inp in batch["inputs"]}
    assert any("now go into frame_weights" in line for line in result.report)


def test_per_frame_weights_into_a_target_without_frame_weights_are_reported():
    result = convert(frame_weights_workflow("IPAAdapterFaceIDBatch"))
    batch = next(node for node in result.workflow["nodes"] if node["id"] == 2)
    has = any(s["name"] == "frame_weights" for s in mapping.TARGETS[batch["type"]]["inputs"])
    if has:
        assert link_source(result.workflow, batch, "frame_weights")[0]["id"] == 1
    else:
        assert any("brings a weight per frame" in line for line in result.report), result.report


@pytest.mark.parametrize("name", ["ipadapter_weights__7a715d7c", "ipadapter_weights__8388cb35"])
def test_their_weights_examples_feed_frame_weights(name):
    workflow = convert(load_example(name)).workflow
    applies = [node for node in workflow["nodes"] if node["type"] == "IPAKitApplyAdvanced"]
    fed = [node for node in applies if any(inp["name"] == "frame_weights" and inp["link"] is not None
                                           for inp in node["inputs"])]
    assert fed and all(converted_widgets(node)["weight"] == 1.0 for node in fed)


# ---------------------------------------------------------------------------------------------------------------
# Converted examples run through the server on the tiny models (the files they name are swapped for the tiny
# world's; everything else runs as converted, at test size).
WORLD_ADAPTERS = {"ip-adapter-faceid-portrait_sd15.bin": "ip-adapter-faceid_sd15.bin"}
WORLD_FILES = {("CLIPVisionLoader", "clip_name"): "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
               ("ControlNetLoader", "control_net_name"): "control_v11p_sd15_canny_fp16.safetensors",
               ("LoraLoaderModelOnly", "lora_name"): "ip-adapter-faceid_sd15_lora.safetensors",
               ("IPAKitInsightFaceLoader", "provider"): "CPU"}
KOLORS_CLIP_VISION = "clip-vit-large-patch14-336.bin"  # in the world under its own name: Kolors examples keep it


def world_file(name, folder):
    """A tiny-world file for the file their example names (same base name, .bin or .safetensors)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = WORLD_ADAPTERS.get(base, base)
    stem = base.rsplit(".", 1)[0]
    for candidate in (base, f"{stem}.safetensors", f"{stem}.bin"):
        if (ROOT / ".fixtures" / "world" / "models" / folder / candidate).exists():
            return candidate
    return None


def checkpoint_vae_instead_of_vae_loaders(workflow):
    """Their VAE files are not in the tiny world: what a VAE loader fed takes the checkpoint's VAE instead (Kolors
    examples load no checkpoint: their sdxl_vae.safetensors is in the world)."""
    checkpoint = next((node for node in workflow["nodes"] if node["type"] == "CheckpointLoaderSimple"), None)
    if checkpoint is None:
        return
    loaders = {node["id"] for node in workflow["nodes"] if node["type"] == "VAELoader"}
    for link in workflow["links"]:
        if link[1] in loaders:
            link[1], link[2] = checkpoint["id"], 2
            checkpoint["outputs"][2]["links"] = (checkpoint["outputs"][2].get("links") or []) + [link[0]]
    workflow["nodes"] = [node for node in workflow["nodes"] if node["id"] not in loaders]


def tiny_world(workflow, object_info):
    """Their example at test size (64x64 latents, 3 steps) on the tiny world's files."""
    kinds = {node["type"] for node in workflow["nodes"]}
    for kind, name, value in (("EmptyLatentImage", "width", 64), ("EmptyLatentImage", "height", 64),
                              ("KSampler", "steps", 3), ("BasicScheduler", "steps", 3),
                              ("ImageScale", "width", 64), ("ImageScale", "height", 64),
                              ("DualCFGGuider", "style", "regular")):  # (an input newer than their example)
        if kind in kinds:
            set_widget(workflow, kind, name, value, object_info)
    for checkpoint in (node for node in workflow["nodes"] if node["type"] == "CheckpointLoaderSimple"):
        sdxl = "xl" in checkpoint["widgets_values"][0].lower()
        checkpoint["widgets_values"][0] = "sd_xl_base_1.0.safetensors" if sdxl else "v1-5-pruned-emaonly.safetensors"
    checkpoint_vae_instead_of_vae_loaders(workflow)
    kept = [node for node in workflow["nodes"]
            if node["type"] == "CLIPVisionLoader" and node["widgets_values"][0] == KOLORS_CLIP_VISION]
    for (kind, name), value in WORLD_FILES.items():
        if kind in kinds:
            set_widget(workflow, kind, name, value, object_info)
    for node in kept:
        node["widgets_values"][0] = KOLORS_CLIP_VISION
    if "LoadImage" in kinds:
        faces = kinds & {"IPAKitApplyFaceID", "IPAKitUnifiedFaceIDLoader"}
        set_widget(workflow, "LoadImage", "image", "face_a.png" if faces else "reference_a.png", object_info)
    for node in workflow["nodes"]:
        if node["type"] == "IPAKitModelLoader":
            found = world_file(node["widgets_values"][0], "ipadapter")
            assert found, node["widgets_values"]
            node["widgets_values"][0] = found
        if node["type"] == "PreviewImage":  # saved, so the run returns it
            node.update(type="SaveImage", widgets_values=["history"])
    return workflow


@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.get("/object_info")


RUN_EXAMPLES = [name for name in ALL_EXAMPLES]
FILE_WIDGETS = ("ckpt_name", "vae_name", "ipadapter_file", "clip_name", "image", "lora_name", "control_net_name",
                "embeds_file", "unet_name", "pack")


def links_are_consistent(workflow):
    links = {link[0]: link for link in workflow["links"]}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for link_id, (_, origin, slot, target, target_slot, _) in links.items():
        assert link_id in nodes[origin]["outputs"][slot]["links"], link_id
        assert nodes[target]["inputs"][target_slot]["link"] == link_id, link_id
    for node in workflow["nodes"]:
        assert all(inp.get("link") is None or inp["link"] in links for inp in node.get("inputs") or [])
        assert all(lid in links for out in node.get("outputs") or [] for lid in out.get("links") or [])


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_every_converted_example_is_valid_for_the_server(name, object_info):
    """Everything converted is a registered node with values it accepts (their files aside: other names here)."""
    result = convert(load_example(name))
    links_are_consistent(result.workflow)
    ours = {node["id"] for node in result.workflow["nodes"] if node["type"] in mapping.TARGETS}
    found = [problem for problem in validate_widgets(result.workflow, object_info)
             if int(problem.split(" ")[1]) in ours and not problem.split(") ", 1)[-1].startswith(FILE_WIDGETS)]
    assert found == []


@pytest.mark.parametrize("name", RUN_EXAMPLES)
def test_converted_example_runs(name, comfy_server, object_info):
    converted = convert(load_example(name)).workflow
    kinds = {node["type"] for node in converted["nodes"] if node.get("mode", 0) == 0}
    # Other packs' nodes (ComfyUI_essentials, ComfyUI_FaceAnalysis, ComfyUI-Kolors-MZ) have test stand-ins here.
    elsewhere = sorted(kind for kind in kinds
                       if kind not in object_info and kind not in ("Reroute", "Note", "MarkdownNote", "PrimitiveNode"))
    assert not elsewhere, f"needs nodes that are not registered here: {', '.join(elsewhere)}"
    workflow = tiny_world(converted, object_info)
    assert validate_widgets(workflow, object_info) == []
    entry = comfy_server.run(to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    paths = comfy_server.output_images(entry)
    assert paths
    for path in paths:
        with Image.open(path) as image:
            assert max(np.asarray(image).shape[:2]) <= 128


def run_images(server, workflow, object_info):
    entry = server.run(to_api(workflow, object_info))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:3000]
    images = []
    for path in sorted(server.output_images(entry)):
        with Image.open(path) as image:
            images.append(np.asarray(image).astype(np.int16))
    return images


@pytest.mark.parametrize("name", ["face__677d90bc", "IPAdapter_weight_types__5b9d099f", "FaceID_Plus_v2__0fabaa3c",
                                  "ipadapter_advanced__ae712dde", "ipadapter_precise_weight_type__bbe21a30",
                                  "ipadapter_kolors__2a201cd6", "IPAdapter_FaceIDv2_Kolors__96f56a83"])
def test_converted_example_of_each_era_changes_the_picture(name, comfy_server, object_info):
    """v1 of 2023 and 2024 (noise, FaceID), v2 of March 2024 and of August 2024, Kolors (Plus, FaceID-Plus): the
    converted apply nodes act."""
    workflow = tiny_world(convert(load_example(name)).workflow, object_info)
    with_adapter = run_images(comfy_server, workflow, object_info)
    for node in workflow["nodes"]:
        if node["type"].startswith("IPAKitApply"):
            node["mode"] = 4
    without = run_images(comfy_server, workflow, object_info)
    assert len(with_adapter) == len(without)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(with_adapter, without)), "the adapter changed nothing"


# ---------------------------------------------------------------------------------------------------------------
# v1's weight_type is embeds_scaling here: its attention term (IPAdapterPlus.py of 90d3451, CrossAttentionPatch) equals
# this pack's for the mode the converter picks.
def v1_attention_term(q, k, v, weight, weight_type):
    """IPAdapter_plus v1's image attention for one head: weight on the output ('original'), on K and V ('linear'),
    or on K and the mean of V times channels / 1280 ('channel penalty')."""
    if weight_type == "linear":
        k, v = k * weight, v * weight
    elif weight_type == "channel penalty":
        penalty = weight * k.shape[2] / 1280.0
        mean = v.mean(dim=1, keepdim=True)
        k, v = k * penalty, (v - mean) + mean * penalty
    out = torch.softmax(q @ k.transpose(1, 2) / q.shape[2] ** 0.5, dim=-1) @ v
    return out * weight if weight_type == "original" else out


@pytest.mark.parametrize("weight_type", list(mapping.V1_SCALING))
@pytest.mark.parametrize("weight", [0.35, 1.7])
def test_v1_weight_type_becomes_the_embeds_scaling_with_the_same_attention(weight_type, weight):
    gen = torch.Generator().manual_seed(0)
    width, tokens = 640, 4
    kv = types.SimpleNamespace(k_weight=torch.randn(width, 768, generator=gen) / 30,
                               v_weight=torch.randn(width, 768, generator=gen) / 30,
                               k_bias=None, v_bias=None, rms_eps=None)
    image_tokens = torch.randn(1, tokens, 768, generator=gen)
    q = torch.randn(1, 9, width, generator=gen)
    node = convert(one_node("IPAdapterApply", [weight, 0.0, weight_type, 0.0, 1.0, False])).workflow["nodes"][0]
    ours = converted_widgets(node)
    prompt = types.SimpleNamespace(layer_weights=(ours["weight"],), ref_weights=(1.0,),
                                   embeds_scaling=ours["embeds_scaling"])
    k, v = attention.scaled_kv(prompt, 0, image_tokens, kv, width)
    here = torch.softmax(q @ k.transpose(1, 2) / width ** 0.5, dim=-1) @ v
    k_plain, v_plain = attention.project_kv(image_tokens, kv, width)
    theirs = v1_attention_term(q, k_plain, v_plain, weight, weight_type)
    assert torch.allclose(here, theirs, atol=1e-5, rtol=1e-4)
