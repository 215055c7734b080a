"""Nodes that put several image prompts on a model at once: style + composition, tiles, regions."""
import dataclasses

import torch

import node_helpers
from comfy_api.latest import io

from ..ipadapter_core import tiles
from ..ipadapter_core.attention import EMBEDS_SCALING
from ..ipadapter_core.embeds import COMBINE_EMBEDS
from ..ipadapter_core.errors import InvalidInputError
from ..ipadapter_core.weight_types import WEIGHT_TYPES
from . import clip_encode, patching
from .apply import encode_pair, resolve_clip_vision
from .types import FrameWeights, IPAdapter, Params

CATEGORY = "ipadapter_kit"


def schedule_inputs():
    return [
        io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Schedule start fraction."),
        io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001, tooltip="Schedule end fraction."),
        io.Combo.Input("embeds_scaling", options=list(EMBEDS_SCALING), default="V only",
                       tooltip="Where the weight is applied (V only is the classic behaviour)."),
    ]


def unfold_input():
    return io.Boolean.Input("unfold_batch", default=False, optional=True,
                            tooltip="Animation: reference i conditions latent i instead of all (latents past the last reference take the last one).")


def frame_weights_input():
    return FrameWeights.Input("frame_weights", optional=True,
                              tooltip="Animation: one weight per latent of the batch, from Frame Weights.")


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
                unfold_input(),
                frame_weights_input(),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, ipadapter, image_style, image_composition, weight_style, weight_composition,
                expand_style, combine_embeds, start_at, end_at, embeds_scaling, image_negative=None, attn_mask=None,
                clip_vision=None, unfold_batch=False, frame_weights=None):
        patching.check_model(model, ipadapter)
        common = dict(start_at=start_at, end_at=end_at, combine=combine_embeds, embeds_scaling=embeds_scaling,
                      attn_mask=attn_mask, unfold_batch=unfold_batch, frame_weights=frame_weights)
        cond, uncond = encode_pair(ipadapter, image_style, clip_vision, image_negative)
        styled = patching.apply_embeds(model, ipadapter, cond, uncond, weight=weight_style,
                                       weight_type="strong style transfer" if expand_style else "style transfer",
                                       **common)
        cond, uncond = encode_pair(ipadapter, image_composition, clip_vision, image_negative)
        return io.NodeOutput(patching.apply_embeds(styled, ipadapter, cond, uncond, weight=weight_composition,
                                                   weight_type="composition", **common))


TILE_MODES = ("tiles with masks", "enhance whole image")


def rows_like(embeds, count):
    """embeds with count rows: the last row repeated, or the first count rows (IPAdapter_plus's negative sizing)."""
    if embeds.shape[0] >= count:
        return embeds[:count]
    return torch.cat([embeds, embeds[-1:].expand(count - embeds.shape[0], *embeds.shape[1:])])


def checked_mask(attn_mask):
    """A MASK (H, W) or (B, H, W) as (B, H, W), with the usual clear errors."""
    count = attn_mask.shape[0] if attn_mask.ndim == 3 else 1
    return patching.prepare_masks(attn_mask, count)


class ApplyTiled(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyTiled",
            display_name="IPAdapter Kit: Apply Tiled",
            category=CATEGORY,
            description="Large or non-square references without cropping detail away. tiles with masks "
                        "(IPAdapter_plus's Tiled): the reference is scaled to a 256-pixel short side and cut into "
                        "256-pixel tiles, each conditioning its own part of the picture. enhance whole image "
                        "(IPAdapter_plus's ClipVision Enhancer): the whole image's CLIP embedding is joined by "
                        "the merged embedding of an enhance_tiles x enhance_tiles grid of it.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5 or SDXL model to patch."),
                IPAdapter.Input("ipadapter", tooltip="A CLIP-vision adapter."),
                io.Image.Input("image", tooltip="Reference image(s), combined per tile by combine_embeds."),
                io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05, tooltip="Strength."),
                io.Combo.Input("weight_type", options=list(WEIGHT_TYPES), default="linear",
                               tooltip="How the weight is spread over the UNet blocks."),
                io.Combo.Input("mode", options=list(TILE_MODES), default=TILE_MODES[0],
                               tooltip="tiles with masks: tile i acts on its own part of the picture; enhance: "
                                       "one prompt from the whole image plus its grid of tiles."),
                io.Float.Input("overlap", default=0.15, min=0.0, max=0.9, step=0.05,
                               tooltip="Tiles mode: the least fraction neighbouring tiles share (0: "
                                       "IPAdapter_plus's layout, the fewest tiles that cover the image)."),
                io.Float.Input("enhance_ratio", default=0.5, min=0.0, max=2.0, step=0.05,
                               tooltip="Enhance mode: weight of the whole image's embedding next to its tiles' "
                                       "(0: tiles only; with several images: ratio * whole + (1 - ratio) * "
                                       "tiles), as IPAdapter_plus's enhance_ratio."),
                *schedule_inputs(),
                io.Image.Input("image_negative", optional=True, tooltip="Negative reference (optional)."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model."),
                io.Int.Input("enhance_tiles", default=2, min=1, max=tiles.MAX_ENHANCE_TILES, optional=True,
                             tooltip="Enhance mode: the image is cut into an N x N grid whatever its aspect "
                                     "(1: the whole image only)."),
                io.Float.Input("sharpening", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Contrast-adaptive sharpening of the reference before it is cut (0: none)."),
                io.Combo.Input("combine_embeds", options=list(COMBINE_EMBEDS), default="concat", optional=True,
                               tooltip="How several images (per tile), or the whole image and its tiles "
                                       "(enhance), combine."),
                unfold_input(),
                io.Mask.Input("attn_mask", optional=True,
                              tooltip="Where the image prompt acts; in tiles mode each tile keeps its part of it."),
                frame_weights_input(),
            ],
            outputs=[io.Model.Output(), io.Image.Output(display_name="tiles"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, model, ipadapter, image, weight, weight_type, mode, overlap, enhance_ratio, start_at, end_at,
                embeds_scaling, image_negative=None, clip_vision=None, enhance_tiles=2, sharpening=0.0,
                combine_embeds="concat", unfold_batch=False, attn_mask=None, frame_weights=None):
        patching.check_model(model, ipadapter)
        clip_encode.check_images(image)
        if mode not in TILE_MODES:
            raise InvalidInputError(f"mode {mode!r} is not one of {TILE_MODES}.")
        image = clip_encode.to_rgb(image)
        common = dict(weight=weight, weight_type=weight_type, start_at=start_at, end_at=end_at,
                      embeds_scaling=embeds_scaling, combine=combine_embeds, unfold_batch=unfold_batch,
                      frame_weights=frame_weights)
        if mode == TILE_MODES[0]:
            return io.NodeOutput(*apply_tiles(model, ipadapter, image, overlap, sharpening, attn_mask,
                                              image_negative, clip_vision, common))
        image = tiles.contrast_adaptive_sharpening(image, sharpening)
        return io.NodeOutput(*apply_enhanced(model, ipadapter, image, enhance_tiles, enhance_ratio, attn_mask,
                                             image_negative, clip_vision, common))


def apply_tiles(model, ipadapter, image, overlap, sharpening, attn_mask, image_negative, clip_vision, common):
    """IPAdapter_plus's Tiled: one image prompt per 256-pixel tile, masked to the tile's part of the picture."""
    framed, framed_mask = tiles.frame_reference(image, None if attn_mask is None else checked_mask(attn_mask))
    framed = tiles.contrast_adaptive_sharpening(framed, sharpening)
    cut = tiles.cut_tiles(framed, framed_mask, overlap)
    for tile, tile_mask in cut:
        cond, uncond = encode_pair(ipadapter, tile, clip_vision, image_negative)
        model = patching.apply_embeds(model, ipadapter, cond, uncond, attn_mask=tile_mask, **common)
    return model, torch.cat([tile for tile, _ in cut]), torch.cat([tile_mask for _, tile_mask in cut])


def apply_enhanced(model, ipadapter, image, count, ratio, attn_mask, image_negative, clip_vision, common):
    """IPAdapter_plus's ClipVision Enhancer: the whole image's encoding with its count x count grid's, merged."""
    tiles.check_enhance_tiles(count)
    cond, uncond = encode_pair(ipadapter, image, clip_vision, image_negative)
    grid = image
    if count > 1:
        grid = tiles.grid_tiles(image, count)
        encoded = clip_encode.encode(resolve_clip_vision(ipadapter, clip_vision), grid, ipadapter.spec.clip_output)
        cond = tiles.enhance(cond, tiles.merge_tiles(encoded, count), ratio)
        uncond = rows_like(uncond, cond.shape[0])
    patched = patching.apply_embeds(model, ipadapter, cond, uncond, attn_mask=attn_mask, **common)
    return patched, grid, torch.ones(1, *image.shape[1:3])


@dataclasses.dataclass(frozen=True)
class Region:
    """One reference bound to a region, as the regional nodes pass it on."""

    image: torch.Tensor
    mask: object
    weight: float
    weight_type: str
    start_at: float
    end_at: float
    unfold_batch: bool = False
    frame_weights: object = None


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
                unfold_input(),
                frame_weights_input(),
            ],
            outputs=[Params.Output(display_name="IPADAPTER_PARAMS"), io.Conditioning.Output(display_name="positive"),
                     io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, image, image_weight, prompt_weight, weight_type, start_at, end_at, mask=None, positive=None,
                negative=None, unfold_batch=False, frame_weights=None):
        clip_encode.check_images(image)
        region = Region(image=image, mask=mask, weight=image_weight, weight_type=weight_type, start_at=start_at,
                        end_at=end_at, unfold_batch=unfold_batch, frame_weights=frame_weights)
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
        patching.check_model(model, ipadapter)
        resolve_clip_vision(ipadapter, clip_vision)
        for region in ipadapter_params:
            cond, uncond = encode_pair(ipadapter, region.image, clip_vision, image_negative)
            model = patching.apply_embeds(model, ipadapter, cond, uncond, weight=region.weight,
                                          weight_type=region.weight_type, start_at=region.start_at,
                                          end_at=region.end_at, combine=combine_embeds,
                                          embeds_scaling=embeds_scaling, attn_mask=region.mask,
                                          unfold_batch=region.unfold_batch, frame_weights=region.frame_weights)
        return io.NodeOutput(model)
