"""Per-frame weight schedules for batches and animations (one weight per latent in the batch)."""
import math
import random

from .errors import InvalidInputError

SCHEDULES = ("custom list", "linear", "ease in-out", "alternate", "random", "fixed")


def parse_values(text):
    """'1.0, 0.5' -> [1.0, 0.5]; at least one finite number."""
    try:
        values = [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise InvalidInputError(f"weights: '{text}' is not a comma-separated list of numbers (e.g. '1.0, 0.2').")
    if not values or not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"weights: '{text}' needs at least one finite number (e.g. '1.0, 0.2').")
    return values


def frame_weights(schedule, values, frames, seed=0):
    """One weight per frame from keyframe values and a schedule."""
    if schedule not in SCHEDULES:
        raise InvalidInputError(f"schedule {schedule!r} is not one of {SCHEDULES}.")
    if frames < 1:
        raise InvalidInputError(f"frames must be at least 1, got {frames}.")
    first, last = values[0], values[-1]
    positions = [i / (frames - 1) if frames > 1 else 0.0 for i in range(frames)]
    if schedule == "custom list":
        return [values[min(i, len(values) - 1)] for i in range(frames)]
    if schedule == "linear":
        return [first + (last - first) * p for p in positions]
    if schedule == "ease in-out":
        return [first + (last - first) * (1 - math.cos(math.pi * p)) / 2 for p in positions]
    if schedule == "alternate":
        return [values[i % len(values)] for i in range(frames)]
    if schedule == "random":
        rng = random.Random(seed)
        low, high = min(values), max(values)
        return [rng.uniform(low, high) for _ in range(frames)]
    return [first] * frames
