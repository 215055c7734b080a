"""What the DiT families share: weight types as curves over the adapter's layers, and block-weight parsing."""
import re

import torch

from ..errors import InvalidInputError
from ..weight_types import CURVES, WEIGHT_TYPES

WEIGHT_TYPES_DIT = ("linear",) + tuple(CURVES)


def layer_weights(family, weight_type, weight, layers, example):
    """Per-layer weights over family.keys(): one weight everywhere, or a curve over the adapter's `layers`."""
    if weight_type not in WEIGHT_TYPES_DIT:
        known = "one of " + ", ".join(WEIGHT_TYPES) if weight_type not in WEIGHT_TYPES else \
            "defined on UNet blocks (SD1.5 / SDXL)"
        raise InvalidInputError(f"weight type {weight_type!r} is {known}; for {family.name} use "
                                f"{', '.join(WEIGHT_TYPES_DIT)}, or per-block weights such as {example!r} in "
                                "block_weights.")
    total = len(family.keys())
    if weight_type == "linear":
        return (float(weight),) * total
    curve = CURVES[weight_type]
    return tuple(weight * (0.05 + 0.95 * curve(i / layers)) if i < layers else 0.0 for i in range(total))


def parse_block_weights(family, text, kinds, example):
    """Per-layer weights from 'index:weight' entries; kinds maps an entry prefix ('d', 's', '') to (name, count,
    first layer). '*' as index means every block of that kind; blocks not named get 0."""
    prefixes = "|".join(sorted((re.escape(p) for p in kinds if p), key=len, reverse=True))
    pattern = rf"({prefixes})?\s*(\d+|\*)\s*:\s*(\S+)" if prefixes else r"()(\d+|\*)\s*:\s*(\S+)"
    syntax = " or ".join(f"'{p}<index>:<weight>' ({name})" for p, (name, _, _) in kinds.items())
    values = {}
    for entry in (e.strip() for e in re.split(r"[,\n]", text or "")):
        if not entry:
            continue
        m = re.fullmatch(pattern, entry, re.IGNORECASE)
        try:
            value = float(m.group(3)) if m and (m.group(1) or "").lower() in kinds else float("nan")
        except ValueError:
            value = float("nan")
        if not torch.isfinite(torch.tensor(value)):
            raise InvalidInputError(f"{family.name} block weights entry {entry!r} is not {syntax} with a finite "
                                    f"weight; e.g. {example!r}.")
        name, count, offset = kinds[(m.group(1) or "").lower()]
        indices = range(count) if m.group(2) == "*" else [int(m.group(2))]
        for index in indices:
            if not 0 <= index < count:
                raise InvalidInputError(f"{entry!r}: {family.name} has {count} {name}s, indices 0..{count - 1}; "
                                        f"e.g. {example!r}.")
            values[offset + index] = value
    if not values:
        raise InvalidInputError(f"{family.name} block weights {text!r} name no block; e.g. {example!r}.")
    return tuple(values.get(i, 0.0) for i in range(len(family.keys())))
