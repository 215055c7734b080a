"""Per-layer weight multipliers: the IPAdapter_plus weight types and free per-block weights, as data.

Semantics follow ComfyUI_IPAdapter_plus (cubiq), re-expressed on ComfyUI's real attn2 keys and this pack's
layer order (blocks.py). That pack numbers the UNet's cross-attention *blocks* (ComfyUI's transformer_index:
input blocks, then middle, then output blocks); `execution_blocks` gives that numbering.
"""
import json
import math
import re

from .blocks import LAYOUTS, patch_keys
from .errors import InvalidInputError

# Published widget values: keep the strings and their order.
WEIGHT_TYPES = (
    "linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
    "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
    "style and composition", "style transfer precise", "composition precise",
)
ARCHS = tuple(LAYOUTS)

# Blocks that carry style, and composition blocks with their factor (InstantStyle's blocks as IPAdapter_plus uses them).
STYLE_BLOCKS = {
    "SD1.5": frozenset([("input", 1), ("input", 2), ("input", 4), ("input", 5)]
                       + [("output", n) for n in range(5, 12)]),
    "SDXL": frozenset([("output", 1)]),
}
COMPOSITION_BLOCKS = {
    "SD1.5": {("input", 7): 0.25, ("input", 8): 1.0},
    "SDXL": {("input", 8): 1.0},
}

# Whole-UNet types: factor per block kind (missing kind = 1).
BLOCK_KIND_FACTORS = {
    "linear": {},
    "weak input": {"input": 0.2},
    "weak output": {"output": 0.2},
    "weak middle": {"middle": 0.2},
    "strong middle": {"input": 0.2, "output": 0.2},
}
# Curves over the block's run position p = index / block count; factor = 0.05 + 0.95 * curve(p).
CURVES = {
    "ease in": lambda p: 1.0 - p,
    "ease out": lambda p: p,
    "ease in-out": lambda p: 1.0 - abs(2.0 * p - 1.0),
    "reverse in-out": lambda p: abs(2.0 * p - 1.0),
}
# Block-selective types: (factor on style blocks, input driving composition blocks, factor on every other block).
BLOCK_SELECTIVE = {
    "style transfer": (1.0, None, 0.0),
    "composition": (0.0, "weight", 0.0),
    "strong style transfer": (1.0, None, 1.0),
    "style and composition": (1.0, "weight_composition", 0.0),
    "style transfer precise": (1.0, "weight_composition", 0.0),
    "composition precise": (1.0, "weight_composition", 0.1),
}
# Precise types feed the image to the unconditional pass only on these blocks (steering away from it there).
INVERTED_BLOCKS = {"style transfer precise": "composition", "composition precise": "all but composition"}

# diffusers (InstantStyle) naming: side -> (ComfyUI block kind, attentions per diffusers block, block id offset).
DIFFUSERS_SIDES = {"down": ("input", 2, 1), "up": ("output", 3, 0)}


def _check_arch(arch):
    """Raises InvalidInputError for an architecture without a layer table."""
    if arch not in LAYOUTS:
        raise InvalidInputError(f"unknown architecture {arch!r}; expected one of: {', '.join(ARCHS)}")


def _check_type(weight_type):
    """Raises InvalidInputError for a weight type that is not one of WEIGHT_TYPES."""
    if weight_type not in WEIGHT_TYPES:
        raise InvalidInputError(f"unknown weight type {weight_type!r}; expected one of: {', '.join(WEIGHT_TYPES)}")


def execution_blocks(arch):
    """ComfyUI (block, id) pairs with cross-attention in run order; position = IPAdapter_plus layer index."""
    _check_arch(arch)
    order = {"input": 0, "middle": 1, "output": 2}
    return sorted({(block, number) for block, number, _ in LAYOUTS[arch]}, key=lambda k: (order[k[0]], k[1]))


def _expand(block_values, arch):
    """Per-layer values in adapter layer order from {(block, id): value}; blocks not given are 0."""
    return [float(block_values.get((block, number), 0.0)) for block, number, _ in patch_keys(arch)]


def _block_factors(weight_type, arch, weight, weight_composition):
    """{(block, id): multiplier} for one weight type."""
    blocks = execution_blocks(arch)
    if weight_type in BLOCK_KIND_FACTORS:
        return {b: weight * BLOCK_KIND_FACTORS[weight_type].get(b[0], 1.0) for b in blocks}
    if weight_type in CURVES:
        curve = CURVES[weight_type]
        return {b: weight * (0.05 + 0.95 * curve(i / len(blocks))) for i, b in enumerate(blocks)}
    style_factor, composition_input, other_factor = BLOCK_SELECTIVE[weight_type]
    composition_weight = {None: 0.0, "weight": weight, "weight_composition": weight_composition}[composition_input]
    composition = COMPOSITION_BLOCKS[arch]
    factors = {}
    for b in blocks:
        if b in composition:
            factors[b] = composition_weight * composition[b]
        else:
            factors[b] = weight * (style_factor if b in STYLE_BLOCKS[arch] else other_factor)
    return factors


def layer_weights(weight_type, arch, weight, weight_composition=None):
    """Effective multiplier of each adapter layer (adapter layer order) for a weight type."""
    _check_type(weight_type)
    _check_arch(arch)
    weight_composition = weight if weight_composition is None else weight_composition
    return _expand(_block_factors(weight_type, arch, weight, weight_composition), arch)


def inverted_layers(weight_type, arch):
    """Layers where a precise type conditions only the unconditional pass (positive pass gets no image)."""
    _check_type(weight_type)
    _check_arch(arch)
    which = INVERTED_BLOCKS.get(weight_type)
    if which is None:
        return frozenset()
    composition = COMPOSITION_BLOCKS[arch]
    return frozenset(i for i, (block, number, _) in enumerate(patch_keys(arch))
                     if ((block, number) in composition) == (which == "composition"))


def _example(arch):
    """A valid layer-weights string for messages (style and composition blocks on)."""
    positions = {b: i for i, b in enumerate(execution_blocks(arch))}
    chosen = sorted(COMPOSITION_BLOCKS[arch]) + sorted(STYLE_BLOCKS[arch])[:1]
    return ", ".join(f"{positions[b]}:1.0" for b in sorted(chosen, key=positions.get))


def _number(value, where):
    """A finite float from a JSON/dict value, or InvalidInputError naming where it was."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"block weight at {where} is {value!r}; expected a finite number such as 0.0 or 1.0")
    return float(value)


def _parse_pairs(text, arch):
    """{(block, id): value} from IPAdapter_plus's 'index:weight, ...' string."""
    blocks = execution_blocks(arch)
    example = _example(arch)
    values = {}
    for entry in (e.strip() for e in re.split(r"[,\n]", text)):
        if not entry:
            continue
        parts = entry.split(":")
        try:
            index, value = int(parts[0]), float(parts[1])
            if len(parts) != 2:
                raise ValueError
        except (ValueError, IndexError):
            raise InvalidInputError(f"layer weights entry {entry!r} is not 'index:weight'; expected comma-separated "
                                    f"pairs of an integer and a number, e.g. {example!r}") from None
        if not 0 <= index < len(blocks):
            raise InvalidInputError(f"layer index {index} in {entry!r} is out of range for {arch}: expected "
                                    f"0..{len(blocks) - 1} (input blocks, middle, output blocks), e.g. {example!r}")
        if not math.isfinite(value):
            raise InvalidInputError(f"layer weight {entry!r} is not a finite number; e.g. {example!r}")
        if blocks[index] in values:
            raise InvalidInputError(f"layer index {index} is given twice in {text!r}; give each index once")
        values[blocks[index]] = value
    if not values:
        raise InvalidInputError(f"layer weights string {text!r} has no 'index:weight' pairs; e.g. {example!r}")
    return values


def _parse_instantstyle(config, arch):
    """{(block, id): value} from diffusers' set_ip_adapter_scale dict; blocks not named are 0."""
    unknown = sorted(map(str, set(config) - {"down", "mid", "up"}))
    if unknown:
        raise InvalidInputError(f"unknown block group(s) {unknown} in {config!r}; expected keys 'down', 'mid', 'up', "
                                "e.g. {'down': {'block_2': [0.0, 1.0]}, 'up': {'block_0': [0.0, 1.0, 0.0]}}")
    values = {}
    if "mid" in config:
        mid = config["mid"]
        if isinstance(mid, (list, tuple)) and len(mid) == 1:
            mid = mid[0]
        values[("middle", 0)] = _number(mid, "mid")
    for side, (kind, per_block, offset) in DIFFUSERS_SIDES.items():
        if side not in config:
            continue
        valid = sorted({(number - offset) // 3 for block, number in execution_blocks(arch) if block == kind})
        spec = config[side]
        if not isinstance(spec, dict):
            spec = {f"block_{i}": spec for i in valid}
        for name, scales in spec.items():
            match = re.fullmatch(r"block_(\d+)", str(name))
            if not match or int(match.group(1)) not in valid:
                raise InvalidInputError(f"{side}.{name} has no cross-attention in {arch}; expected one of "
                                        f"{', '.join(f'block_{i}' for i in valid)}")
            scales = list(scales) if isinstance(scales, (list, tuple)) else [scales]
            if len(scales) == 1:
                scales = scales * per_block
            if len(scales) != per_block:
                raise InvalidInputError(f"{side}.{name} has {len(scales)} scales; expected 1 or {per_block} "
                                        f"(one per attention), e.g. {[0.0] * (per_block - 1) + [1.0]}")
            for j, scale in enumerate(scales):
                values[(kind, 3 * int(match.group(1)) + j + offset)] = _number(scale, f"{side}.{name}[{j}]")
    return values


def parse_block_weights(text_or_dict, arch):
    """{adapter layer: weight} for every layer from an 'index:weight' string or an InstantStyle dict (or its JSON)."""
    _check_arch(arch)
    config = text_or_dict
    if isinstance(config, str) and config.strip().startswith("{"):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"block weights {text_or_dict!r} look like JSON but do not parse ({exc}); "
                                    'e.g. {"up": {"block_0": [0.0, 1.0, 0.0]}}') from None
    if isinstance(config, str):
        values = _parse_pairs(config, arch)
    elif isinstance(config, dict):
        values = _parse_instantstyle(config, arch)
    else:
        raise InvalidInputError(f"block weights must be a string or a dict, got {type(text_or_dict).__name__}; "
                                f"e.g. {_example(arch)!r}")
    return dict(enumerate(_expand(values, arch)))
