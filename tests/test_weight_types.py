"""Weight types and free block weights: the per-layer facts IPAdapter_plus and diffusers define, on our layer order."""
import json
import math

import pytest

from ipadapter_kit.ipadapter_core import blocks, weight_types
from ipadapter_kit.ipadapter_core.errors import InvalidInputError

LAYER_COUNT = {"SD1.5": 16, "SDXL": 70}
# ComfyUI cross-attention blocks in run order (input, middle, output), written out independently of the module.
RUN_ORDER = {
    "SD1.5": [("input", 1), ("input", 2), ("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0)]
    + [("output", n) for n in range(3, 12)],
    "SDXL": [("input", 4), ("input", 5), ("input", 7), ("input", 8), ("middle", 0)]
    + [("output", n) for n in range(6)],
}
SD15_STYLE = {("input", 1), ("input", 2), ("input", 4), ("input", 5)} | {("output", n) for n in range(5, 12)}


def layers_of(arch, *wanted):
    """Adapter layer indices whose ComfyUI key is in one of the given (block, id) pairs."""
    return {i for i, (block, number, _) in enumerate(blocks.patch_keys(arch)) if (block, number) in wanted}


def by_block(arch, values):
    """{(block, id): value}, asserting every transformer of a block got the same value."""
    out = {}
    for (block, number, _), value in zip(blocks.patch_keys(arch), values):
        assert out.setdefault((block, number), value) == pytest.approx(value), (block, number)
    return out


def nonzero(values):
    """Indices of non-zero entries."""
    return {i for i, v in enumerate(values) if v != 0}


def test_published_weight_type_names():
    assert weight_types.WEIGHT_TYPES == (
        "linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
        "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
        "style and composition", "style transfer precise", "composition precise")


@pytest.mark.parametrize("arch", ["SD1.5", "SDXL"])
@pytest.mark.parametrize("weight_type", weight_types.WEIGHT_TYPES)
def test_every_type_gives_one_finite_weight_per_layer_and_one_per_block(weight_type, arch):
    values = weight_types.layer_weights(weight_type, arch, 0.8, 0.3)
    assert len(values) == LAYER_COUNT[arch]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
    assert set(by_block(arch, values)) == set(RUN_ORDER[arch])
    doubled = weight_types.layer_weights(weight_type, arch, 1.6, 0.6)
    assert doubled == pytest.approx([2 * v for v in values])


@pytest.mark.parametrize("arch", ["SD1.5", "SDXL"])
def test_linear_is_the_plain_weight_everywhere(arch):
    assert weight_types.layer_weights("linear", arch, 0.7) == pytest.approx([0.7] * LAYER_COUNT[arch])


def test_sdxl_style_transfer_is_output_block_1_only():
    values = weight_types.layer_weights("style transfer", "SDXL", 0.9)
    assert nonzero(values) == layers_of("SDXL", ("output", 1)) == set(range(34, 44))
    assert {values[i] for i in range(34, 44)} == {0.9}


def test_sdxl_composition_is_input_block_8_only():
    values = weight_types.layer_weights("composition", "SDXL", 1.2)
    assert nonzero(values) == layers_of("SDXL", ("input", 8)) == set(range(14, 24))
    assert {values[i] for i in range(14, 24)} == {1.2}


def test_sd15_style_transfer_skips_input_7_8_middle_and_output_3_4():
    per_block = by_block("SD1.5", weight_types.layer_weights("style transfer", "SD1.5", 1.0))
    assert {b for b, v in per_block.items() if v == 0} == {
        ("input", 7), ("input", 8), ("middle", 0), ("output", 3), ("output", 4)}
    assert {b for b, v in per_block.items() if v == 1.0} == SD15_STYLE


def test_sd15_composition_is_a_quarter_on_input_7_and_full_on_input_8():
    per_block = by_block("SD1.5", weight_types.layer_weights("composition", "SD1.5", 2.0))
    assert {b: v for b, v in per_block.items() if v} == {("input", 7): 0.5, ("input", 8): 2.0}


@pytest.mark.parametrize("arch, off", [("SDXL", {("input", 8)}), ("SD1.5", {("input", 7), ("input", 8)})])
def test_strong_style_transfer_is_everything_but_the_composition_blocks(arch, off):
    per_block = by_block(arch, weight_types.layer_weights("strong style transfer", arch, 1.0))
    assert {b for b, v in per_block.items() if v == 0} == off
    assert all(v == 1.0 for b, v in per_block.items() if b not in off)


@pytest.mark.parametrize("weight_type", ["style and composition", "style transfer precise"])
def test_style_and_composition_split_weight_and_weight_composition(weight_type):
    sdxl = by_block("SDXL", weight_types.layer_weights(weight_type, "SDXL", 0.9, 0.4))
    assert {b: v for b, v in sdxl.items() if v} == {("output", 1): 0.9, ("input", 8): 0.4}
    sd15 = by_block("SD1.5", weight_types.layer_weights(weight_type, "SD1.5", 0.9, 0.4))
    assert sd15[("input", 7)] == pytest.approx(0.1) and sd15[("input", 8)] == pytest.approx(0.4)
    assert {b for b, v in sd15.items() if v == 0.9} == SD15_STYLE
    assert weight_types.layer_weights(weight_type, "SDXL", 0.6) == weight_types.layer_weights(
        weight_type, "SDXL", 0.6, 0.6)


def test_composition_precise_keeps_a_tenth_outside_style_and_composition():
    sdxl = by_block("SDXL", weight_types.layer_weights("composition precise", "SDXL", 1.0, 0.5))
    assert sdxl.pop(("input", 8)) == 0.5 and sdxl.pop(("output", 1)) == 1.0
    assert len(sdxl) == 9 and all(v == pytest.approx(0.1) for v in sdxl.values())
    sd15 = by_block("SD1.5", weight_types.layer_weights("composition precise", "SD1.5", 1.0, 1.0))
    assert {b for b, v in sd15.items() if v == pytest.approx(0.1)} == {("middle", 0), ("output", 3), ("output", 4)}
    assert (sd15[("input", 7)], sd15[("input", 8)]) == (0.25, 1.0)


def test_precise_types_invert_composition_or_everything_else():
    assert weight_types.inverted_layers("style transfer precise", "SDXL") == layers_of("SDXL", ("input", 8))
    assert weight_types.inverted_layers("style transfer precise", "SD1.5") == {4, 5}
    everything = set(range(70))
    assert weight_types.inverted_layers("composition precise", "SDXL") == everything - layers_of("SDXL", ("input", 8))
    assert weight_types.inverted_layers("composition precise", "SD1.5") == set(range(16)) - {4, 5}
    for weight_type in weight_types.WEIGHT_TYPES[:-2]:
        assert weight_types.inverted_layers(weight_type, "SDXL") == frozenset()


@pytest.mark.parametrize("arch", ["SD1.5", "SDXL"])
def test_ease_in_falls_along_the_run_order_and_mirrors_ease_out(arch):
    n = len(RUN_ORDER[arch])
    ease_in = by_block(arch, weight_types.layer_weights("ease in", arch, 1.0))
    ease_out = by_block(arch, weight_types.layer_weights("ease out", arch, 1.0))
    for position, block in enumerate(RUN_ORDER[arch]):
        assert ease_in[block] == pytest.approx(0.05 + 0.95 * (1 - position / n))
        assert ease_in[block] + ease_out[block] == pytest.approx(1.05)
    assert ease_in[RUN_ORDER[arch][0]] == 1.0 and ease_out[RUN_ORDER[arch][0]] == pytest.approx(0.05)


def test_ease_in_out_peaks_mid_run_and_reverse_is_its_mirror():
    sd15 = by_block("SD1.5", weight_types.layer_weights("ease in-out", "SD1.5", 1.0))
    assert max(sd15, key=sd15.get) == ("output", 4) and sd15[("output", 4)] == pytest.approx(1.0)
    sdxl = by_block("SDXL", weight_types.layer_weights("ease in-out", "SDXL", 1.0))
    top = max(sdxl.values())
    assert {b for b, v in sdxl.items() if v == pytest.approx(top)} == {("output", 0), ("output", 1)}
    reverse = by_block("SDXL", weight_types.layer_weights("reverse in-out", "SDXL", 1.0))
    assert all(sdxl[b] + reverse[b] == pytest.approx(1.05) for b in sdxl)


@pytest.mark.parametrize("arch", ["SD1.5", "SDXL"])
@pytest.mark.parametrize("weight_type, lowered", [
    ("weak input", {"input"}), ("weak output", {"output"}), ("weak middle", {"middle"}),
    ("strong middle", {"input", "output"})])
def test_block_kind_types_lower_only_their_blocks_to_a_fifth(weight_type, lowered, arch):
    values = weight_types.layer_weights(weight_type, arch, 1.5)
    for (block, _, _), value in zip(blocks.patch_keys(arch), values):
        assert value == pytest.approx(0.3 if block in lowered else 1.5), block


@pytest.mark.parametrize("bad, expected", [(("sharp", "SDXL"), "sharp"), (("linear", "SD3"), "SD3")])
def test_unknown_type_or_arch_is_named_with_the_choices(bad, expected):
    with pytest.raises(InvalidInputError) as info:
        weight_types.layer_weights(*bad, 1.0)
    message = str(info.value)
    assert expected in message and ("style transfer precise" in message or "SDXL" in message)


def test_layer_weight_string_indexes_blocks_in_run_order():
    values = weight_types.parse_block_weights("3:1.0, 6:1.0", "SDXL")
    assert sorted(values) == list(range(70))
    assert [values[i] for i in range(70)] == weight_types.layer_weights("style and composition", "SDXL", 1.0)
    sd15 = weight_types.parse_block_weights("6:0.5,\n 7: 2", "SD1.5")
    assert {i: v for i, v in sd15.items() if v} == {15: 0.5, 6: 2.0}  # middle is the last layer, output 3 is 6


def test_full_layer_weight_string_matches_linear():
    text = ", ".join(f"{i}:0.75" for i in range(16))
    values = weight_types.parse_block_weights(text, "SD1.5")
    assert [values[i] for i in range(16)] == weight_types.layer_weights("linear", "SD1.5", 0.75)


def test_instantstyle_style_block_is_comfyui_output_1():
    style = weight_types.parse_block_weights({"up": {"block_0": [0.0, 1.0, 0.0]}}, "SDXL")
    assert nonzero([style[i] for i in range(70)]) == layers_of("SDXL", ("output", 1))
    assert len(nonzero([style[i] for i in range(70)])) == 10
    assert style == weight_types.parse_block_weights("6:1.0", "SDXL")
    layout = weight_types.parse_block_weights({"down": {"block_2": [0.0, 1.0]}}, "SDXL")
    assert layout == weight_types.parse_block_weights("3:1.0", "SDXL")


def test_instantstyle_scalars_lists_mid_and_json_on_sd15():
    config = {"down": {"block_2": [0.0, 1.0]}, "up": {"block_1": 0.5}, "mid": [2.0]}
    values = weight_types.parse_block_weights(config, "SD1.5")
    assert by_block("SD1.5", [values[i] for i in range(16)]) == {
        **{b: 0.0 for b in RUN_ORDER["SD1.5"]},
        ("input", 8): 1.0, ("output", 3): 0.5, ("output", 4): 0.5, ("output", 5): 0.5, ("middle", 0): 2.0}
    assert weight_types.parse_block_weights(json.dumps(config), "SD1.5") == values
    everything_down = weight_types.parse_block_weights({"down": 1.0}, "SDXL")
    assert nonzero([everything_down[i] for i in range(70)]) == set(range(24))


@pytest.mark.parametrize("text", ["abc", "3", "3:x", "1.5:1", "3:1:2", "11:1", "-1:1", "3:nan", "3:inf",
                                  "3:1, 3:2", "", " , "])
def test_bad_layer_weight_strings_are_refused_with_an_example(text):
    with pytest.raises(InvalidInputError) as info:
        weight_types.parse_block_weights(text, "SDXL")
    message = str(info.value)
    assert "3:1.0, 6:1.0" in message or "twice" in message


def test_last_index_is_accepted_and_one_past_it_is_not():
    assert weight_types.parse_block_weights("15:1", "SD1.5")[14] == 1.0
    with pytest.raises(InvalidInputError, match="0..15"):
        weight_types.parse_block_weights("16:1", "SD1.5")


@pytest.mark.parametrize("config, fragment", [
    ({"up": {"block_2": 1.0}}, "block_0, block_1"),
    ({"down": {"block_0": 1.0}}, "block_1, block_2"),
    ({"up": {"block_0": [0.0, 1.0]}}, "expected 1 or 3"),
    ({"middle": 1.0}, "'down', 'mid', 'up'"),
    ({"mid": "strong"}, "finite number"),
    ({"up": {"block_1": [0.0, float("nan"), 1.0]}}, "finite number"),
    ({"down": True}, "finite number"),
    ('{"up": {"block_0": [0.0, 1.0, 0.0]', "JSON"),
    (3.0, "string or a dict"),
])
def test_bad_instantstyle_configs_are_refused(config, fragment):
    with pytest.raises(InvalidInputError) as info:
        weight_types.parse_block_weights(config, "SDXL")
    assert fragment in str(info.value)
