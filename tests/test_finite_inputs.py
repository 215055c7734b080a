"""Every FLOAT input of every node is finite or gets a typed error, whether it is a widget value or a link.

ComfyUI's validation lets NaN through (NaN < min and NaN > max are both False) and never sees linked values; before
the guard a NaN weight gave a black image reported as a success and a NaN start_at a raw IndexError.
"""
import math

import pytest

import graphs
from comfy_server import execution_error
from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from ipadapter_kit.nodes import NODES, checks

CLIP_H = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"


def float_inputs(world_paths):
    """(node, input id) of every FLOAT input of the pack (schemas list the model folders, so after world_paths)."""
    return [(node, name) for node in NODES for name in checks.float_inputs(node)]


def test_the_pack_has_float_inputs_to_guard(world_paths):
    names = {(node.define_schema().node_id, name) for node, name in float_inputs(world_paths)}
    assert {("IPAKitApply", "weight"), ("IPAKitApplyAdvanced", "weight_composition"),
            ("IPAKitApply", "start_at")} <= names


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("node", NODES, ids=[node.__name__ for node in NODES])
def test_every_float_input_of_every_node_is_guarded(world_paths, node, value):
    """The check runs before execute's body: with only the bad value given, the typed error comes first."""
    schema = node.define_schema()
    for name, spec in checks.float_inputs(node).items():
        with pytest.raises(InvalidInputError) as caught:
            node.execute(**{name: value})
        message = str(caught.value)
        for part in (schema.node_id, f"'{name}'", f"received {value!r}", checks.allowed_range(spec)):
            assert part in message, (part, message)


def test_finite_values_and_left_out_optional_inputs_pass_the_check(world_paths):
    for node, name in float_inputs(world_paths):
        checks.check_floats(node, checks.float_inputs(node), {name: 0.5})
        checks.check_floats(node, checks.float_inputs(node), {name: None})
        checks.check_floats(node, checks.float_inputs(node), {name: 2})


def test_numpy_scalars_from_other_packs_are_checked_too(world_paths):
    import numpy as np

    node, name = float_inputs(world_paths)[0]
    with pytest.raises(InvalidInputError, match="received"):
        checks.check_floats(node, checks.float_inputs(node), {name: np.float32("nan")})


def test_guarding_twice_wraps_once():
    node = NODES[0]
    inner = node.execute.__func__.__wrapped__
    checks.guarded(node)
    assert node.execute.__func__.__wrapped__ is inner


# ---------------------------------------------------------------- through the server

def _apply_prompt(advanced=False, **widgets):
    prompt = graphs.txt2img(prefix="finite")
    inputs = {"model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": ["img", 0], "clip_vision": ["cv", 0],
              "weight": 1.0, "weight_type": "linear", "start_at": 0.0, "end_at": 1.0}
    if advanced:
        inputs.update({"weight_composition": 1.0, "combine_embeds": "concat", "embeds_scaling": "V only"})
    inputs.update(widgets)
    prompt.update({
        "ipa": {"class_type": "IPAKitModelLoader", "inputs": {"ipadapter_file": "ip-adapter_sd15.safetensors"}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_H}},
        "img": {"class_type": "LoadImage", "inputs": {"image": "reference_a.png"}},
        "apply": {"class_type": "IPAKitApplyAdvanced" if advanced else "IPAKitApply", "inputs": inputs},
    })
    prompt["sampler"]["inputs"]["model"] = ["apply", 0]
    return prompt


def _linked(name, advanced=False):
    """The input fed by core's Float primitive node holding NaN."""
    prompt = _apply_prompt(advanced, **{name: ["nan_float", 0]})
    prompt["nan_float"] = {"class_type": "PrimitiveFloat", "inputs": {"value": math.nan}}
    return prompt


CASES = {
    "weight_json": (lambda: _apply_prompt(weight=math.nan), "IPAKitApply", "weight"),
    "start_at_json": (lambda: _apply_prompt(start_at=math.nan), "IPAKitApply", "start_at"),
    "weight_composition_json": (lambda: _apply_prompt(True, weight_composition=math.nan), "IPAKitApplyAdvanced",
                                "weight_composition"),
    "weight_link": (lambda: _linked("weight"), "IPAKitApply", "weight"),
    "start_at_link": (lambda: _linked("start_at", True), "IPAKitApplyAdvanced", "start_at"),
    "weight_composition_link": (lambda: _linked("weight_composition", True), "IPAKitApplyAdvanced",
                                "weight_composition"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_nan_through_the_server_is_a_typed_execution_error(comfy_server, case):
    bad, node_type, name = CASES[case]
    entry = comfy_server.run(bad())
    error = execution_error(entry)
    assert entry["status"]["status_str"] == "error" and error is not None, entry["status"]
    assert error["exception_type"].endswith("InvalidInputError") and error["node_type"] == node_type, error
    message = error["exception_message"]
    for part in (node_type, f"'{name}'", "received nan", "expected a finite number from"):
        assert part in message, (part, message)
    assert comfy_server.process.poll() is None
