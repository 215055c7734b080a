"""Per-frame weight schedules for batches and animations (one weight per latent in the batch)."""
import math
import random
from dataclasses import dataclass
from typing import Optional

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


# ---------------------------------------------------------------------------------------------------------------
# IPAdapter_plus's "IPAdapter Weights" family: a weight curve per transition between two reference images, laid out
# over a batch of images (full batch, shift, alternate), with the image sequences that go with the weights.
TIMINGS = ("custom", "linear", "ease_in_out", "ease_in", "ease_out", "random")
METHODS = ("full batch", "shift batches", "alternate batches")
FRAME_LIMIT = 9999  # their widgets' maximum


@dataclass(frozen=True)
class WeightsStrategy:
    """The settings of a Weights Schedule node, to rebuild the same schedule elsewhere (their WEIGHTS_STRATEGY)."""

    weights: str = "1.0, 0.0"
    timing: str = "linear"
    frames: int = 0
    start_frame: int = 0
    end_frame: int = FRAME_LIMIT
    add_starting_frames: int = 0
    add_ending_frames: int = 0
    method: str = "full batch"
    image_count: int = 0  # images given to the node that made the strategy (the prompt schedule's prompt count)
    seed: int = 0  # the random timing's seed

    def __post_init__(self):
        if self.timing not in TIMINGS:
            raise InvalidInputError(f"timing {self.timing!r} is not one of {TIMINGS}.")
        if self.method not in METHODS:
            raise InvalidInputError(f"method {self.method!r} is not one of {METHODS}.")
        for name in ("frames", "start_frame", "end_frame", "add_starting_frames", "add_ending_frames", "image_count"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"{name} must be 0 or more, got {getattr(self, name)}.")


@dataclass(frozen=True)
class BatchSchedule:
    """Weights per frame and, with images, which image each frame's image_1 / image_2 shows (indices, or None)."""

    weights: tuple
    image_1: Optional[tuple] = None
    image_2: Optional[tuple] = None

    @property
    def weights_invert(self):
        """The weights in reverse order (their weights_invert: the curve for the other image of each pair)."""
        return self.weights[::-1]

    @property
    def total_frames(self):
        return len(self.weights)


def parse_weight_list(text):
    """'1.0, 0.5' or one value per line -> [1.0, 0.5]; empty text -> []."""
    items = [v for v in str(text).replace("\n", ",").split(",") if v.strip()]
    try:
        values = [float(v) for v in items]
    except ValueError:
        raise InvalidInputError(f"weights: '{text}' is not a list of numbers separated by commas or new lines "
                                "(e.g. '1.0, 0.0').")
    if not all(math.isfinite(v) for v in values):
        raise InvalidInputError(f"weights: '{text}' holds a value that is not a finite number.")
    return values


def eased(timing, start, end, step, last):
    """The value at step (0..last) of a ramp from start to end, with IPAdapter_plus's curve for each timing name
    (their ease_in rises fast and settles, their ease_out starts slowly: the names are kept as they are)."""
    if timing == "linear":
        return start + (end - start) * step / last  # multiplied first: the same floats as theirs
    position = step / last
    if timing == "ease_in_out":
        shape = (1 - math.cos(position * math.pi)) / 2
    elif timing == "ease_in":
        shape = math.sin(position * math.pi / 2)
    elif timing == "ease_out":
        shape = 1 - math.cos(position * math.pi / 2)
    else:
        raise InvalidInputError(f"timing {timing!r} is not a ramp; use one of {TIMINGS[1:5]}.")
    return start + (end - start) * shape


def transition_weights(strategy):
    """The weights of one transition: the custom list, or a ramp of `frames` frames (at least 2) that holds the first
    value before start_frame and the last from end_frame on."""
    values = parse_weight_list(strategy.weights)
    if strategy.timing == "custom":
        return values or [0.0]
    start, end = (values[0], values[-1]) if values else (0.0, 1.0)
    frames = max(strategy.frames, 2)
    end_frame = min(strategy.end_frame, frames)
    ramp_frames = end_frame - strategy.start_frame
    if ramp_frames < 1:
        return step_weights(strategy, start, end, frames, end_frame)
    if strategy.timing == "random":
        rng = random.Random(strategy.seed)
        ramp = [rng.uniform(start, end) for _ in range(ramp_frames)]
    else:  # the last ramp frame is exactly the end value
        ramp = [eased(strategy.timing, start, end, i, ramp_frames - 1) for i in range(ramp_frames - 1)] + [end]
    return [start] * strategy.start_frame + ramp + [end] * (frames - end_frame)


def step_weights(strategy, start, end, frames, end_frame):
    """No ramp (start_frame at or past end_frame): IPAdapter_plus holds the first value for start_frame frames (the
    last of them switched to the end value, except with random) and the end value for the frames after end_frame,
    so the transition has start_frame + frames - end_frame frames."""
    if strategy.start_frame == 0:
        raise InvalidInputError(f"end_frame {strategy.end_frame} leaves no frame for the ramp: raise end_frame above "
                                f"start_frame ({strategy.start_frame}).")
    held = [start] * strategy.start_frame
    if strategy.timing != "random":
        held[-1] = end
    return held + [end] * (frames - end_frame)


def image_pairs(method, image_count):
    """(image_1, image_2 or None, inverted) per transition: which images each transition fades between, and whether
    it runs the curve inverted (alternate batches' every other transition)."""
    if method == "full batch":
        return [(i, None, False) for i in range(image_count)]
    if image_count < 2:
        raise InvalidInputError(f"method '{method}' fades from one image to the next and needs at least 2 images, got "
                                f"{image_count}; use 'full batch' for a single image.")
    if method == "shift batches":
        return [(t, t + 1, False) for t in range(image_count - 1)]
    # alternate: the images at even positions stay image_1 and the odd ones image_2, so every other transition fades
    # back (A->B, then C<-B, then C->D, ...), running the curve mirrored within its own range
    return [(2 * ((t + 1) // 2), 2 * (t // 2) + 1, t % 2 == 1) for t in range(image_count - 1)]


def batch_schedule(strategy, image_count=0):
    """The weights per frame (and the image sequences) of a Weights Schedule node given image_count images
    (0: no image input): IPAdapter_plus's IPAdapterWeights, with the random timing seeded."""
    curve = transition_weights(strategy)
    if image_count == 0:  # no images: one transition, and (as theirs) no added frames
        return BatchSchedule(tuple(curve))
    low, high = min(curve), max(curve)
    mirrored = [high - (w - low) for w in curve]
    weights, first, second = [], [], []
    pairs = image_pairs(strategy.method, image_count)
    for one, two, inverted in pairs:
        weights += mirrored if inverted else curve
        first += [one] * len(curve)
        second += [two] * len(curve)
    lead, tail = strategy.add_starting_frames, strategy.add_ending_frames
    weights = [weights[0]] * lead + weights + [weights[-1]] * tail
    first = [0] * lead + first + [image_count - 1] * tail
    second = None if pairs[0][1] is None else tuple([0] * lead + second + [image_count - 1] * tail)
    return BatchSchedule(tuple(weights), tuple(first), second)


def prompt_schedule(strategy, prompt):
    """A FizzNodes batch prompt schedule ('"frame": "prompt",' per line): one prompt line per image of the strategy
    (the last repeated, extra lines dropped), keyed at the first frame of its transition."""
    lines = [line for line in str(prompt).split("\n") if line.strip()]
    count = strategy.image_count
    if not lines or count == 0:
        return ""
    lines = (lines + [lines[-1]] * count)[:count]
    # the transition's real length (theirs multiplies by the frames widget, which is 0 by default)
    per_image = len(transition_weights(strategy))
    lead = strategy.add_starting_frames
    keys = ([(0, lines[0])] if lead > 0 else []) + [(i * per_image + lead, line) for i, line in enumerate(lines)]
    if strategy.add_ending_frames > 0:
        keys.append((count * per_image + lead, lines[-1]))
    return "".join(f'"{frame}": "{line}",\n' for frame, line in keys)


def combine_weights(first, second):
    """Two weight lists (or single weights) one after the other."""
    def as_list(weights):
        return [float(weights)] if isinstance(weights, (int, float)) else [float(w) for w in weights]
    return as_list(first) + as_list(second)
