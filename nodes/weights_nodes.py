"""Weight editors: per-block weights with a preview picture, per-frame weights for batches and animations."""
import numpy as np
import torch
from PIL import Image, ImageDraw

from comfy_api.latest import io

from ..ipadapter_core import schedules, weight_types
from ..ipadapter_core.blocks import patch_keys
from .types import FrameWeights as FrameWeightsType
from .types import WeightsStrategy

CATEGORY = "ipadapter_kit/weights"
BLOCK_PRESETS = {
    "custom": None,
    "InstantStyle: style only": ("style transfer", 1.0, 0.0),
    "InstantStyle: style + layout": ("style and composition", 1.0, 1.0),
    "all blocks": ("linear", 1.0, 1.0),
}


def block_values(arch, weights):
    """[(label, value)] per cross-attention block in run order from per-layer weights."""
    first_layer = {}
    for layer, (block, number, _) in enumerate(patch_keys(arch)):
        first_layer.setdefault((block, number), layer)
    labels = {"input": "in", "middle": "mid", "output": "out"}
    return [(labels[block] + ("" if block == "middle" else str(number)), weights[first_layer[(block, number)]])
            for block, number in weight_types.execution_blocks(arch)]


def block_text(arch, weights):
    """'index:weight, ...' in IPAdapter_plus block indices (what block_weights inputs read)."""
    return ", ".join(f"{i}:{value:g}" for i, (_, value) in enumerate(block_values(arch, weights)))


def bar_chart(labels, values, title, size=(512, 256)):
    """An IMAGE (1, H, W, 3) bar chart of values, labelled below each bar."""
    width, height = size
    img = Image.new("RGB", size, (24, 24, 28))
    draw = ImageDraw.Draw(img)
    top = max([1.0] + [abs(v) for v in values])
    base, plot_h = height - 28, height - 56
    step = (width - 20) / max(1, len(values))
    draw.text((10, 6), title, fill=(230, 230, 230))
    draw.line((10, base, width - 10, base), fill=(120, 120, 120))
    for i, (label, value) in enumerate(zip(labels, values)):
        x0 = 10 + i * step + step * 0.15
        x1 = 10 + (i + 1) * step - step * 0.15
        y = base - plot_h * value / top
        draw.rectangle((x0, min(y, base), x1, max(y, base)), fill=(90, 160, 240) if value >= 0 else (240, 110, 90))
        draw.text((x0, base + 4), label, fill=(200, 200, 200))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


class BlockWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitBlockWeights",
            display_name="IPAdapter Kit: Block Weights",
            category=CATEGORY,
            description="Named per-block presets (InstantStyle) or free values, as the text an apply node's "
                        "block_weights reads, with a picture of the weights over the UNet blocks.",
            inputs=[
                io.Combo.Input("arch", options=list(weight_types.ARCHS), default="SDXL",
                               tooltip="The model family the weights are for."),
                io.Combo.Input("preset", options=list(BLOCK_PRESETS), default="InstantStyle: style only",
                               tooltip="A named preset, or custom to use the values below."),
                io.String.Input("values", default="", multiline=True,
                                tooltip="custom: 'index:weight, ...' (IPAdapter_plus block indices) or an "
                                        "InstantStyle dict; blocks not named get 0."),
            ],
            outputs=[io.String.Output(display_name="block_weights"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, arch, preset, values):
        if BLOCK_PRESETS[preset] is None:
            table = weight_types.parse_block_weights(values, arch)
            weights = [table[i] for i in range(len(table))]
        else:
            kind, weight, composition = BLOCK_PRESETS[preset]
            weights = weight_types.layer_weights(kind, arch, weight, composition)
        labels, bars = zip(*block_values(arch, weights))
        return io.NodeOutput(block_text(arch, weights), bar_chart(labels, bars, f"{arch} block weights ({preset})"))


class FrameWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitFrameWeights",
            display_name="IPAdapter Kit: Frame Weights",
            category=CATEGORY,
            description="One image-prompt weight per frame of a batch or animation (connect to an apply node's "
                        "frame_weights), with a plot of the schedule.",
            inputs=[
                io.String.Input("weights", default="1.0, 0.0",
                                tooltip="Keyframe values: the list itself (custom list, alternate), or the first "
                                        "and last values of a ramp (linear, ease), or the range (random)."),
                io.Combo.Input("schedule", options=list(schedules.SCHEDULES), default="linear",
                               tooltip="How the values are spread over the frames."),
                io.Int.Input("frames", default=16, min=1, max=4096, tooltip="Number of frames (latent batch size)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the random schedule."),
            ],
            outputs=[FrameWeightsType.Output(display_name="frame_weights"), io.Image.Output(display_name="plot")],
        )

    @classmethod
    def execute(cls, weights, schedule, frames, seed):
        values = schedules.frame_weights(schedule, schedules.parse_values(weights), frames, seed)
        labels = [str(i) if frames <= 24 or i % max(1, frames // 12) == 0 else "" for i in range(frames)]
        return io.NodeOutput(tuple(values), bar_chart(labels, values, f"weight per frame ({schedule})"))


FRAMES_MAX = schedules.FRAME_LIMIT


def frame_widgets():
    """The widgets of IPAdapter_plus's IPAdapter Weights, with its names, order, options and defaults."""
    return [
        io.String.Input("weights", default="1.0, 0.0", multiline=True,
                        tooltip="custom: the weight of each frame of a transition (commas or new lines); other "
                                "timings: the first and last values ramp from one to the other."),
        io.Combo.Input("timing", options=list(schedules.TIMINGS), default="linear",
                       tooltip="custom: the list as it is; the others ramp from the first to the last value "
                               "(IPAdapter_plus's curves and names); random: values between them (see seed)."),
        io.Int.Input("frames", default=0, min=0, max=FRAMES_MAX,
                     tooltip="Frames of one transition (at least 2; ignored by custom, which takes the list)."),
        io.Int.Input("start_frame", default=0, min=0, max=FRAMES_MAX,
                     tooltip="The ramp starts here; the frames before hold the first value."),
        io.Int.Input("end_frame", default=FRAMES_MAX, min=0, max=FRAMES_MAX,
                     tooltip="The ramp ends here (at most frames); the frames from here on hold the last value."),
        io.Int.Input("add_starting_frames", default=0, min=0, max=FRAMES_MAX,
                     tooltip="With an image: frames added before the batch, holding the first weight and image."),
        io.Int.Input("add_ending_frames", default=0, min=0, max=FRAMES_MAX,
                     tooltip="With an image: frames added after the batch, holding the last weight and image."),
        io.Combo.Input("method", options=list(schedules.METHODS), default="full batch",
                       tooltip="With an image: full batch (one transition per image: image_1), shift batches "
                               "(image i to i+1: image_1 -> image_2), alternate batches (as shift, every other "
                               "transition fading back with the curve mirrored)."),
    ]


def schedule_outputs(strategy, image):
    """weights, weights_invert, total_frames, image_1, image_2 of a strategy for an optional image batch."""
    plan = schedules.batch_schedule(strategy, 0 if image is None else image.shape[0])

    def frames_of(indices):
        return None if indices is None else image[torch.tensor(indices, dtype=torch.long, device=image.device)]

    return plan.weights, plan.weights_invert, plan.total_frames, frames_of(plan.image_1), frames_of(plan.image_2)


def schedule_output_sockets():
    return [FrameWeightsType.Output(display_name="weights"), FrameWeightsType.Output(display_name="weights_invert"),
            io.Int.Output(display_name="total_frames"), io.Image.Output(display_name="image_1"),
            io.Image.Output(display_name="image_2")]


class WeightsSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitWeightsSchedule",
            display_name="IPAdapter Kit: Weights Schedule",
            category=CATEGORY,
            description="IPAdapter_plus's IPAdapter Weights: a weight per frame for cross-fading reference images "
                        "in an animation (connect weights to an apply node's frame_weights and image_1 to its "
                        "image, with unfold_batch), and the image sequences that go with them.",
            inputs=[*frame_widgets(), io.Image.Input("image", optional=True,
                                                     tooltip="The reference images to fade between."),
                    io.Int.Input("seed", default=0, min=0, max=2**31 - 1, optional=True,
                                 tooltip="Seed of the random timing (IPAdapter_plus's was unseeded).")],
            outputs=[*schedule_output_sockets(), WeightsStrategy.Output(display_name="weights_strategy")],
        )

    @classmethod
    def execute(cls, weights, timing, frames, start_frame, end_frame, add_starting_frames, add_ending_frames, method,
                image=None, seed=0):
        strategy = schedules.WeightsStrategy(weights, timing, frames, start_frame, end_frame, add_starting_frames,
                                             add_ending_frames, method, 0 if image is None else image.shape[0], seed)
        return io.NodeOutput(*schedule_outputs(strategy, image), strategy)


class WeightsFromStrategy(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitWeightsFromStrategy",
            display_name="IPAdapter Kit: Weights From Strategy",
            category=CATEGORY,
            description="The schedule of a Weights Schedule node's settings, for another batch of images.",
            inputs=[WeightsStrategy.Input("weights_strategy", tooltip="A Weights Schedule node's settings."),
                    io.Image.Input("image", optional=True, tooltip="The reference images to fade between.")],
            outputs=[*schedule_output_sockets(), WeightsStrategy.Output(display_name="weights_strategy")],
        )

    @classmethod
    def execute(cls, weights_strategy, image=None):
        return io.NodeOutput(*schedule_outputs(weights_strategy, image), weights_strategy)


class PromptScheduleFromStrategy(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitPromptScheduleFromStrategy",
            display_name="IPAdapter Kit: Prompt Schedule From Strategy",
            category=CATEGORY,
            description="A batch prompt schedule (FizzNodes' format) that changes prompt with each reference image "
                        "of a Weights Schedule.",
            inputs=[WeightsStrategy.Input("weights_strategy",
                                          tooltip="The Weights Schedule whose reference images the prompts follow."),
                    io.String.Input("prompt", default="", multiline=True,
                                    tooltip="One prompt per line, one line per reference image (the last repeats).")],
            outputs=[io.String.Output(display_name="prompt_schedule")],
        )

    @classmethod
    def execute(cls, weights_strategy, prompt):
        return io.NodeOutput(schedules.prompt_schedule(weights_strategy, prompt))


class CombineWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitCombineWeights",
            display_name="IPAdapter Kit: Combine Weights",
            category=CATEGORY,
            description="Two frame weight schedules one after the other.",
            inputs=[FrameWeightsType.Input("weights_1", tooltip="The first frames' weights."),
                    FrameWeightsType.Input("weights_2", tooltip="The weights of the frames that follow.")],
            outputs=[FrameWeightsType.Output(display_name="weights"), io.Int.Output(display_name="count")],
        )

    @classmethod
    def execute(cls, weights_1, weights_2):
        weights = tuple(schedules.combine_weights(weights_1, weights_2))
        return io.NodeOutput(weights, len(weights))


NODES = [WeightsSchedule, WeightsFromStrategy, PromptScheduleFromStrategy, CombineWeights]
