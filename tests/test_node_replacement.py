"""IPAdapter_plus node replacements through ComfyUI's Node Replacement API: the list derived from the converter's
rules, the no-op on hosts without the API (ComfyUI 0.3.75), and on hosts with it (newer ComfyUI) IPAdapter_plus node
ids posted to /prompt, which the server replaces before validating the prompt.
Run against a newer host with COMFYUI_ROOT=... HOST_PYTHON=... (see tests/host_env.py)."""
import asyncio
import dataclasses
import json

import numpy as np
import pytest
from comfy_api.latest import io
from PIL import Image

import graphs
from ipadapter_kit import comfy_entrypoint
from ipadapter_kit.migrate import mapping, replacements
from ipadapter_kit.nodes import NODES, paths
from ipadapter_kit.nodes import replacements as registration

HAS_API = hasattr(io, "NodeReplace")
needs_api = pytest.mark.skipif(not HAS_API, reason="this ComfyUI has no Node Replacement API (io.NodeReplace and "
                                                    "ComfyAPI().node_replacement came after 0.3.75)")
SD15, CLIP_H = "ip-adapter_sd15.safetensors", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


def by_old_id():
    return {spec["old_node_id"]: spec for spec in replacements.plus_replacements()}


# ---------------------------------------------------------------- the derived list
def test_exactly_the_rules_the_api_can_express_are_replaced():
    assert {old: spec["new_node_id"] for old, spec in by_old_id().items()} == {
        "IPAdapterModelLoader": "IPAKitModelLoader", "IPAdapterUnifiedLoader": "IPAKitUnifiedLoader",
        "IPAdapterPromptScheduleFromWeightsStrategy": "IPAKitPromptScheduleFromStrategy"}
    plus_rules = [kind for kind in mapping.RULES if mapping.PACK_OF.get(kind) == mapping.PLUS]
    left_out = {kind: replacements.inexact_reason(kind) for kind in plus_rules if kind not in by_old_id()}
    assert all(left_out.values()), left_out
    assert "variants" in left_out["IPAdapterAdvanced"]  # FaceID adapters go to another node
    assert "translates values" in left_out["IPAdapterCombineEmbeds"]
    assert "outputs" in left_out["IPAdapterEncoder"]
    assert "optional input" in left_out["IPAdapterClipVisionEnhancer"]
    # the server's replacement reads every mapped old input, and an unlinked optional one is not in the prompt
    assert "optional input" in left_out["IPAdapterPreciseStyleTransfer"]
    assert "core node" in left_out["IPAdapterCLIPVisionEncode"]  # v1's encoder: replacements name this pack's nodes


def test_each_mapping_names_real_inputs_and_outputs_of_both_nodes():
    paths.register_model_folders()  # the loaders' schemas list their folders
    schemas = {node.define_schema().node_id: node.define_schema() for node in NODES}
    for old, spec in by_old_id().items():
        source, target = mapping.SOURCES[old], mapping.TARGETS[spec["new_node_id"]]
        ours = {item.id: item for item in schemas[spec["new_node_id"]].inputs}
        assert spec["old_widget_ids"] == list(source["widgets"])
        for entry in spec["input_mapping"]:
            assert entry["new_id"] in ours, (old, entry)
            if "old_id" in entry:
                assert entry["old_id"] in {*source["sockets"], *source["widgets"]}, (old, entry)
                if entry["old_id"] in source["sockets"]:  # so it is always in the prompt
                    assert not ours[entry["new_id"]].optional, (old, entry)
        set_ids = {entry["new_id"] for entry in spec["input_mapping"]}
        assert {i for i, item in ours.items() if not item.optional} <= set_ids, old
        assert spec["output_mapping"] is None  # same slots (see replacements.replacement for why none at all)
        for (_, theirs), (_, kind) in zip(source["outputs"], target["outputs"]):
            assert mapping.SOCKET_TYPES.get(theirs, theirs) == kind, old
        assert len(target["outputs"]) >= len(source["outputs"]), old


def test_the_list_follows_the_rules(monkeypatch):
    """Derived, not a second table: a value translation drops a rule, a fixed value becomes a set_value."""
    loader = mapping.RULES["IPAdapterModelLoader"]
    monkeypatch.setitem(mapping.RULES, "IPAdapterModelLoader",
                        dataclasses.replace(loader, values={"ipadapter_file": mapping.repo_id_file}))
    assert "IPAdapterModelLoader" not in by_old_id()
    unified = mapping.RULES["IPAdapterUnifiedLoader"]
    monkeypatch.setitem(mapping.RULES, "IPAdapterUnifiedLoader",
                        dataclasses.replace(unified, fixed={"preset": "PLUS (high strength)"}))
    assert {"new_id": "preset", "set_value": "PLUS (high strength)"} in by_old_id()["IPAdapterUnifiedLoader"][
        "input_mapping"]


# ---------------------------------------------------------------- hosts without the API
@pytest.mark.skipif(HAS_API, reason="this ComfyUI has the Node Replacement API")
def test_without_the_api_the_entrypoint_registers_the_nodes_and_no_replacement(caplog):
    extension = asyncio.run(comfy_entrypoint())
    asyncio.run(extension.on_load())
    assert asyncio.run(extension.get_node_list()) == list(NODES)
    assert asyncio.run(registration.register_plus_replacements()) == 0
    assert "replacements failed" not in caplog.text


def test_a_failing_registration_is_logged_and_never_raised_out_of_on_load(monkeypatch, caplog):
    async def broken():
        raise RuntimeError("registry gone")

    monkeypatch.setattr(registration, "register_plus_replacements", broken)
    extension = asyncio.run(comfy_entrypoint())
    assert asyncio.run(extension.on_load()) is None
    assert "replacements failed" in caplog.text and "registry gone" in caplog.text


# ---------------------------------------------------------------- hosts with the API
@needs_api
def test_on_load_registers_each_replacement_as_a_node_replace(monkeypatch):
    import comfy_api.latest

    registered = []

    class Registry:
        async def register(self, node_replace):
            registered.append(node_replace)

    class FakeAPI:
        node_replacement = Registry()

    monkeypatch.setattr(comfy_api.latest, "ComfyAPI", FakeAPI)
    asyncio.run(asyncio.run(comfy_entrypoint()).on_load())
    assert all(isinstance(item, io.NodeReplace) for item in registered)
    assert [item.as_dict() for item in registered] == replacements.plus_replacements()


# ---------------------------------------------------------------- hosts with the API: the live server
def plus_node(class_type, inputs):
    # the host's replacement copies "_meta" (KeyError without it); the frontend's API export always writes it
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": class_type}}


def adapter_prompt(loader, prefix):
    """A model loader node of type `loader` + core Load CLIP Vision + IPAdapter Kit: Apply, on tiny SD1.5."""
    prompt = graphs.txt2img(seed=5, steps=2, prefix=prefix)
    prompt.update({
        "img": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "ipa": plus_node(loader, {"ipadapter_file": SD15}),
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_H}},
        "apply": {"class_type": "IPAKitApply", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": ["img", 0], "clip_vision": ["cv", 0],
            "weight": 1.0, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0}},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def unified_prompt(loader, prefix, chained):
    """Two unified loaders of type `loader` in a row (chained: the second gets the first's pipeline, as
    IPAdapter_plus graphs do) -> IPAdapter Kit: Apply."""
    prompt = graphs.txt2img(seed=5, steps=2, prefix=prefix)
    second = {"model": ["first", 0], "preset": "PLUS (high strength)"}
    if chained:
        second["ipadapter"] = ["first", 1]
    prompt.update({
        "img": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "first": plus_node(loader, {"model": ["ckpt", 0], "preset": "STANDARD (medium strength)"}),
        "second": plus_node(loader, second),
        "apply": {"class_type": "IPAKitApply", "inputs": {
            "model": ["second", 0], "ipadapter": ["second", 1], "image": ["img", 0],
            "weight": 1.0, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0}},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def saved_pixels(server, prompt):
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    [path] = server.output_images(entry)
    return np.asarray(Image.open(path), dtype=np.int16)


@needs_api
def test_server_lists_our_replacements(comfy_server):
    listed = comfy_server.get("/node_replacements")
    for old, spec in by_old_id().items():
        assert spec in listed.get(old, []), (old, listed.get(old))
    assert "IPAdapterAdvanced" not in listed


@needs_api
def test_plus_model_loader_posted_to_prompt_runs_as_ours(comfy_server):
    ours = saved_pixels(comfy_server, adapter_prompt("IPAKitModelLoader", "replace_ours"))
    theirs = saved_pixels(comfy_server, adapter_prompt("IPAdapterModelLoader", "replace_plus"))
    np.testing.assert_array_equal(theirs, ours)


@needs_api
def test_chained_plus_unified_loaders_posted_to_prompt_run_as_ours(comfy_server):
    """The pipeline input is dropped (loaders here share loaded files); the links between the two replaced
    loaders (IPADAPTER -> IPADAPTER_KIT on both sides) and to Apply hold."""
    ours = saved_pixels(comfy_server, unified_prompt("IPAKitUnifiedLoader", "replace_uni_ours", chained=False))
    theirs = saved_pixels(comfy_server, unified_prompt("IPAdapterUnifiedLoader", "replace_uni_plus", chained=True))
    np.testing.assert_array_equal(theirs, ours)


@needs_api
def test_plus_nodes_without_an_exact_replacement_stay_missing(comfy_server):
    prompt = adapter_prompt("IPAdapterModelLoader", "replace_missing")
    prompt["apply"] = plus_node("IPAdapterAdvanced", {
        "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": ["img", 0], "weight": 1.0, "weight_type": "linear",
        "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"})
    prompt_id, error = comfy_server.queue(prompt)
    assert prompt_id is None and "IPAdapterAdvanced" in json.dumps(error), error
