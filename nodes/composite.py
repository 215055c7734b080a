"""Nodes that put several image prompts on a model at once: style + composition, tiles, regions."""
import dataclasses

import torch

import node_helpers
from comfy_api.latest import io

from ..ipadapter_core import image_ops
from ..ipadapter_core.attention import EMBEDS_SCALING
from ..ipadapter_core.embeds import COMBINE_EMBEDS
from ..ipadapter_core.errors import InvalidInputError
from ..ipadapter_core.weight_types import WEIGHT_TYPES
from . import clip_encode, patching
from .apply import encode_pair, resolve_clip_vision
from .types import IPAdapter, Params

CATEGORY = "ipadapter_kit"


def schedule_inputs():
    return [
        io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Schedule start fraction."),
        io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="Schedule end fraction."),
        io.Combo.Input("embeds_scaling", options=list(EMBEDS_SCALING), default="V only",
                       tooltip="Where the weight is applied (V only is the classic behaviour)."),
    ]


class StyleComposition(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitStyleComposition",
            display_name="IPAdapter Kit: Style & Composition",
            category=CATEGORY,
            description="One reference for style (style blocks) and another for composition (composition blocks), "
                        "each with its own weight, in one node (InstantStyle blocks; SDXL and SD1.5).",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL model to patch."),
                IPAdapter.Input("ipadapter", tooltip="A CLIP-vision adapter (plus or composition adapters work best)."),
                io.Image.Input("image_style", tooltip="Reference for colours, textures, style."),
                io.Image.Input("image_composition", tooltip="Reference for layout and shapes."),
                io.Float.Input("weight_style", default=1.0, min=-1.0, max=5.0, step=0.05, tooltip="Style weight."),
                io.Float.Input("weight_composition", default=1.0, min=-1.0, max=5.0, step=0.05,
                               tooltip="Composition weight."),
                io.Boolean.Input("expand_style", default=False,
                                 tooltip="Apply the style reference to every block but the composition ones."),
                io.Combo.Input("combine_embeds", options=list(COMBINE_EMBEDS), default="average",
                               tooltip="How several images per input combine."),
                *schedule_inputs(),
                io.Image.Input("image_negative", optional=True, tooltip="Negative reference (optional)."),
                io.Mask.Input("attn_mask", optional=True, tooltip="Where both prompts act."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, ipadapter, image_style, image_composition, weight_style, weight_composition,
                expand_style, combine_embeds, start_at, end_at, embeds_scaling, image_negative=None, attn_mask=None,
                clip_vision=None):
        common = dict(start_at=start_at, end_at=end_at, combine=combine_embeds, embeds_scaling=embeds_scaling,
                      attn_mask=attn_mask)
        cond, uncond = encode_pair(ipadapter, image_style, clip_vision, image_negative)
        styled = patching.apply_embeds(model, ipadapter, cond, uncond, weight=weight_style,
                                       weight_type="strong style transfer" if expand_style else "style transfer",
                                       **common)
        cond, uncond = encode_pair(ipadapter, image_composition, clip_vision, image_negative)
        return io.NodeOutput(patching.apply_embeds(styled, ipadapter, cond, uncond, weight=weight_composition,
                                                   weight_type="composition", **common))


TILE_MODES = ("tiles with masks", "enhance whole image")


class ApplyTiled(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyTiled",
            display_name="IPAdapter Kit: Apply Tiled",
            category=CATEGORY,
            description="For non-square references: cuts the reference into square tiles at the encoder size so "
                        "nothing is cropped away. Each tile conditions its own region of the picture, or "
                        "(enhance) the tiles' embeddings are added to the whole image's.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL model to patch."),
                IPAdapter.Input("ipadapter", tooltip="A CLIP-vision adapter."),
                io.Image.Input("image", tooltip="One non-square reference image."),
                io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05, tooltip="Strength."),
                io.Combo.Input("weight_type", options=list(WEIGHT_TYPES), default="linear",
                               tooltip="How the weight is spread over the UNet blocks."),
                io.Combo.Input("mode", options=list(TILE_MODES), default=TILE_MODES[0],
                               tooltip="tiles with masks: tile i acts on its own part of the picture; enhance: "
                                       "one prompt from the whole image plus the tiles' details."),
                io.Float.Input("overlap", default=0.15, min=0.0, max=0.9, step=0.05,
                               tooltip="How much neighbouring tiles overlap."),
                io.Float.Input("enhance_ratio", default=0.5, min=0.0, max=2.0, step=0.05,
                               tooltip="Enhance mode: how much of the tiles' embeddings is added."),
                *schedule_inputs(),
                io.Image.Input("image_negative", optional=True, tooltip="Negative reference (optional)."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model."),
            ],
            outputs=[io.Model.Output(), io.Image.Output(display_name="tiles"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, model, ipadapter, image, weight, weight_type, mode, overlap, enhance_ratio, start_at, end_at,
                embeds_scaling, image_negative=None, clip_vision=None):
        clip_encode.check_images(image)
        image = clip_encode.to_rgb(image[:1])
        _, height, width, _ = image.shape
        boxes = image_ops.tile_boxes(height, width, overlap)
        tiles = torch.cat([image_ops.resize(image[:, t:t + s, left:left + s], 224) for t, left, s in boxes])
        common = dict(weight=weight, weight_type=weight_type, start_at=start_at, end_at=end_at,
                      embeds_scaling=embeds_scaling)
        if mode == TILE_MODES[0]:
            masks = image_ops.tile_masks(boxes, height, width, (64, round(64 * width / height)))
            cond, uncond = encode_pair(ipadapter, tiles, clip_vision, image_negative)
            patched = patching.apply_embeds(model, ipadapter, cond, uncond, combine="separate", attn_mask=masks,
                                            **common)
        else:
            whole = image_ops.prep_for_clip(image, 224, crop_position="pad")
            masks = torch.ones(1, height, width)
            cond, uncond = encode_pair(ipadapter, torch.cat([whole, tiles]), clip_vision, image_negative)
            cond = cond[:1] + enhance_ratio * cond[1:].mean(dim=0, keepdim=True)
            patched = patching.apply_embeds(model, ipadapter, cond, uncond[:1], combine="concat", **common)
        return io.NodeOutput(patched, tiles, masks)


@dataclasses.dataclass(frozen=True)
class Region:
    """One reference bound to a region, as the regional nodes pass it on."""

    image: torch.Tensor
    mask: object
    weight: float
    weight_type: str
    start_at: float
    end_at: float


class RegionalConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitRegionalConditioning",
            display_name="IPAdapter Kit: Regional Conditioning",
            category=CATEGORY,
            description="Binds a reference image and weight to a mask region; also masks text conditioning to the "
                        "same region. Combine regions with Combine Params and apply them all with Apply Regions.",
            inputs=[
                io.Image.Input("image", tooltip="Reference for this region."),
                io.Float.Input("image_weight", default=1.0, min=-1.0, max=5.0, step=0.05,
                               tooltip="Image prompt strength in this region."),
                io.Float.Input("prompt_weight", default=1.0, min=0.0, max=10.0, step=0.05,
                               tooltip="Strength of the masked text conditioning."),
                io.Combo.Input("weight_type", options=list(WEIGHT_TYPES), default="linear",
                               tooltip="How the weight is spread over the UNet blocks."),
                io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Schedule start."),
                io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="Schedule end."),
                io.Mask.Input("mask", optional=True, tooltip="The region (default: everywhere)."),
                io.Conditioning.Input("positive", optional=True, tooltip="Text conditioning to confine to the region."),
                io.Conditioning.Input("negative", optional=True, tooltip="Negative text conditioning for the region."),
            ],
            outputs=[Params.Output(display_name="IPADAPTER_PARAMS"), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, image, image_weight, prompt_weight, weight_type, start_at, end_at, mask=None, positive=None,
                negative=None):
        clip_encode.check_images(image)
        region = Region(image=image, mask=mask, weight=image_weight, weight_type=weight_type, start_at=start_at,
                        end_at=end_at)
        if mask is not None:
            values = {"mask": mask if mask.ndim == 3 else mask.unsqueeze(0), "set_area_to_bounds": False,
                      "mask_strength": prompt_weight}
            positive = node_helpers.conditioning_set_values(positive, values) if positive is not None else None
            negative = node_helpers.conditioning_set_values(negative, values) if negative is not None else None
        return io.NodeOutput((region,), positive, negative)


class CombineParams(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitCombineParams",
            display_name="IPAdapter Kit: Combine Params",
            category=CATEGORY,
            description="Collects several regions into one list for Apply Regions.",
            inputs=[Params.Input("params_1", tooltip="Regions."), Params.Input("params_2", tooltip="More regions."),
                    *[Params.Input(f"params_{i}", optional=True, tooltip="More regions (optional).")
                      for i in range(3, 6)]],
            outputs=[Params.Output(display_name="IPADAPTER_PARAMS")],
        )

    @classmethod
    def execute(cls, params_1, params_2, **more):
        return io.NodeOutput(tuple(params_1) + tuple(params_2) + tuple(
            r for k in sorted(more) if more[k] is not None for r in more[k]))


class ApplyRegions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyRegions",
            display_name="IPAdapter Kit: Apply Regions",
            category=CATEGORY,
            description="Applies every region (reference + mask + weight) to the model in one node.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL model to patch."),
                IPAdapter.Input("ipadapter", tooltip="A CLIP-vision adapter."),
                Params.Input("ipadapter_params", tooltip="From Regional Conditioning / Combine Params."),
                io.Combo.Input("combine_embeds", options=list(COMBINE_EMBEDS), default="concat",
                               tooltip="How several images inside one region combine."),
                io.Combo.Input("embeds_scaling", options=list(EMBEDS_SCALING), default="V only",
                               tooltip="Where the weight is applied."),
                io.Image.Input("image_negative", optional=True, tooltip="Negative reference (optional)."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, ipadapter, ipadapter_params, combine_embeds, embeds_scaling, image_negative=None,
                clip_vision=None):
        if not ipadapter_params:
            raise InvalidInputError("ipadapter_params is empty: connect at least one Regional Conditioning.")
        resolve_clip_vision(ipadapter, clip_vision)
        for region in ipadapter_params:
            cond, uncond = encode_pair(ipadapter, region.image, clip_vision, image_negative)
            model = patching.apply_embeds(model, ipadapter, cond, uncond, weight=region.weight,
                                          weight_type=region.weight_type, start_at=region.start_at,
                                          end_at=region.end_at, combine=combine_embeds,
                                          embeds_scaling=embeds_scaling, attn_mask=region.mask)
        return io.NodeOutput(model)
