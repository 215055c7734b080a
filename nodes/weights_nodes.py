"""Weight editors: per-block weights with a preview picture."""
import numpy as np
import torch
from PIL import Image, ImageDraw

from comfy_api.latest import io

from ..ipadapter_core import schedules, weight_types
from ..ipadapter_core.blocks import patch_keys
from .types import FrameWeights as FrameWeightsType

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
