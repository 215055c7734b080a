"""Apply nodes: put one adapter's image prompt on a MODEL."""
import torch
from comfy_api.latest import io

from ..ipadapter_core.attention import EMBEDS_SCALING
from ..ipadapter_core.embeds import COMBINE_EMBEDS, check_encoder
from ..ipadapter_core.errors import InvalidInputError
from ..ipadapter_core.weight_types import WEIGHT_TYPES
from . import clip_encode, patching
from .types import Embeds, FrameWeights, IPAdapter

CATEGORY = "ipadapter_kit"


def weight_inputs():
    return [
        io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05,
                       tooltip="Strength of the image prompt (0 = no effect; negative pushes away from it)."),
        io.Combo.Input("weight_type", options=list(WEIGHT_TYPES), default="linear",
                       tooltip="How the weight is spread over the UNet blocks (style transfer, composition, ...). "
                               "Flux and SD3.5: linear or the ease curves over their blocks."),
        io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Fraction of the schedule where the image prompt starts."),
        io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Fraction of the schedule where it stops (end_at <= start_at: no effect)."),
    ]


def resolve_clip_vision(adapter, clip_vision):
    """The CLIP_VISION to encode with: the input, else the unified loader's, else a clear error."""
    clip_vision = clip_vision if clip_vision is not None else adapter.clip_vision
    if clip_vision is None and adapter.spec.clip_dim is not None:
        raise InvalidInputError(f"{adapter.name} needs a CLIP vision model ({adapter.spec.encoder_name()}): connect "
                                "a Load CLIP Vision node to clip_vision, or use the unified loader.")
    return clip_vision


def masked(image, mask):
    """Reference pixels outside the mask set to black (mask resized to the image)."""
    if mask is None:
        return image
    mask = patching.prepare_masks(mask, image.shape[0], "mask", "Give one mask, or one per image.")
    mask = torch.nn.functional.interpolate(mask.unsqueeze(1), size=image.shape[1:3], mode="bilinear")
    return image[..., :3] * mask.squeeze(1).unsqueeze(-1)


def encode_pair(adapter, image, clip_vision, image_negative=None, batch_size=None):
    """(cond, uncond) encoder outputs for reference images and an optional negative image.

    batch_size: images per encoder call (0: all at once; None: clip_encode's default)."""
    spec = adapter.spec
    if spec.kind == "pulid":
        raise InvalidInputError(f"{adapter.name} is PuLID's adapter: it reads a face's ArcFace embedding and EVA-CLIP "
                                "features, not CLIP images. Use IPAdapter Kit: Apply PuLID.")
    if spec.kind == "instantid":
        raise InvalidInputError(f"{adapter.name} is InstantID's adapter: it takes a face's InsightFace embedding, not "
                                "CLIP images. Use IPAdapter Kit: Apply InstantID.")
    if spec.clip_output is None:
        raise InvalidInputError(f"{adapter.name} is a FaceID adapter: it takes InsightFace embeddings, not CLIP "
                                "images. Use the FaceID nodes.")
    clip_vision = resolve_clip_vision(adapter, clip_vision)
    cond = clip_encode.encode(clip_vision, image, spec.clip_output, "image", batch_size)
    check_encoder(spec, cond, adapter.name)
    if image_negative is not None:
        uncond = clip_encode.encode(clip_vision, image_negative, spec.clip_output, "image_negative", batch_size)
        uncond = uncond[:1].expand(cond.shape[0], *uncond.shape[1:]) if uncond.shape[0] != cond.shape[0] else uncond
    elif spec.step_tokens:  # InstantX SD3.5 (and diffusers) use zero hidden states as the negative
        uncond = torch.zeros_like(cond)
    else:
        uncond = clip_encode.default_negative(clip_vision, spec.clip_output, cond)
    return cond, uncond


class Apply(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApply",
            display_name="IPAdapter Kit: Apply",
            category=CATEGORY,
            description="Adds an image prompt to the model: the reference image steers generation through the "
                        "adapter's decoupled cross-attention. Chain several to stack adapters.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5, SDXL, Flux or SD3.5 Large model to patch (a patched copy is returned)."),
                IPAdapter.Input("ipadapter", tooltip="From Load IP-Adapter or the unified loader."),
                io.Image.Input("image", tooltip="Reference image(s); several are joined into one prompt (concat)."),
                *weight_inputs(),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision model; optional when the unified loader supplied one."),
                io.Mask.Input("attn_mask", optional=True,
                              tooltip="Where the image prompt acts (1 = full strength, 0 = none); resized to every "
                                      "attention resolution."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, ipadapter, image, weight, weight_type, start_at, end_at, clip_vision=None,
                attn_mask=None):
        patching.check_model(model, ipadapter)  # the family first: an adapter of another family has another encoder
        cond, uncond = encode_pair(ipadapter, image, clip_vision)
        return io.NodeOutput(patching.apply_embeds(model, ipadapter, cond, uncond, weight=weight,
                                                   weight_type=weight_type, start_at=start_at, end_at=end_at,
                                                   attn_mask=attn_mask))


class ApplyAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyAdvanced",
            display_name="IPAdapter Kit: Apply (advanced)",
            category=CATEGORY,
            description="Image prompt with every control: several references with their own weights and masks in "
                        "one node, negative image, per-block weights, K/V scaling, schedule range, per-frame "
                        "references.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5, SDXL, Flux or SD3.5 Large model to patch (a patched copy is returned)."),
                IPAdapter.Input("ipadapter", tooltip="From Load IP-Adapter or the unified loader."),
                *weight_inputs(),
                io.Float.Input("weight_composition", default=1.0, min=-1.0, max=5.0, step=0.05,
                               tooltip="Weight of the composition blocks for the 'style and composition' and "
                                       "'precise' weight types."),
                io.Combo.Input("combine_embeds", options=list(COMBINE_EMBEDS), default="concat",
                               tooltip="How several references combine: concat/add/subtract/average/norm average "
                                       "as in IPAdapter_plus, max/min (element-wise), or separate: one attention "
                                       "per reference, each with its own weight and mask."),
                io.Combo.Input("embeds_scaling", options=list(EMBEDS_SCALING), default="V only",
                               tooltip="Where the weight is applied: V only (classic), K+V, and variants scaled "
                                       "by layer width."),
                io.String.Input("reference_weights", default="", optional=True,
                                tooltip="With combine_embeds 'separate': one weight per reference, e.g. '1.0, 0.6' "
                                        "(empty = all 1)."),
                io.String.Input("block_weights", default="", optional=True, multiline=True,
                                tooltip="Free per-block weights replacing weight_type: 'index:weight, ...' "
                                        "(IPAdapter_plus layer indices) or an InstantStyle dict such as "
                                        "{\"up\": {\"block_0\": [0.0, 1.0, 0.0]}}; for Flux 'd<i>:<w>, "
                                        "s<i>:<w>' (double / single blocks, d* / s* for all); for SD3.5 '<i>:<w>' "
                                        "(joint blocks 0..37, * for all). Multiplied by weight."),
                io.Boolean.Input("unfold_batch", default=False, optional=True,
                                 tooltip="Animation: reference i conditions latent i instead of all (latents past the last reference take the last one)."),
                io.Image.Input("image", optional=True, tooltip="Reference image(s) (or connect embeds)."),
                Embeds.Input("embeds", optional=True, tooltip="Pre-encoded references from the Encode node."),
                io.Image.Input("image_negative", optional=True,
                               tooltip="Negative reference; default is the adapter's own (zero / black image)."),
                io.Mask.Input("attn_mask", optional=True,
                              tooltip="Where the image prompt acts: one mask for all, or one per reference "
                                      "(combine_embeds 'separate'). Resized to every attention resolution."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision model; optional when the unified loader supplied one."),
                FrameWeights.Input("frame_weights", optional=True,
                                   tooltip="Animation: one weight per latent of the batch, from Frame Weights."),
                io.Int.Input("encode_batch_size", default=0, min=0, max=4096, optional=True,
                             tooltip="Reference images per CLIP vision call (0 = all at once); lower it when "
                                     "encoding many images runs out of memory. The result is the same."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, ipadapter, weight, weight_type, start_at, end_at, weight_composition, combine_embeds,
                embeds_scaling, reference_weights="", block_weights="", unfold_batch=False, image=None, embeds=None,
                image_negative=None, attn_mask=None, clip_vision=None, frame_weights=None, encode_batch_size=0):
        patching.check_model(model, ipadapter)  # the family first: an adapter of another family has another encoder
        if embeds is not None:
            cond, uncond = embeds.cond, embeds.uncond
        elif image is not None:
            cond, uncond = encode_pair(ipadapter, image, clip_vision, image_negative, encode_batch_size)
        else:
            raise InvalidInputError("connect reference images to 'image' or pre-encoded references to 'embeds'.")
        return io.NodeOutput(patching.apply_embeds(
            model, ipadapter, cond, uncond, weight=weight, weight_type=weight_type,
            weight_composition=weight_composition, block_weights=block_weights or "", start_at=start_at,
            end_at=end_at, combine=combine_embeds, embeds_scaling=embeds_scaling,
            reference_weights=reference_weights or "", attn_mask=attn_mask, unfold_batch=unfold_batch,
            frame_weights=frame_weights))


class Encode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitEncode",
            display_name="IPAdapter Kit: Encode",
            category=CATEGORY,
            description="Encodes reference images with CLIP vision once, for reuse by several apply nodes.",
            inputs=[
                IPAdapter.Input("ipadapter", tooltip="Decides which CLIP-vision output is kept."),
                io.Image.Input("image", tooltip="Reference image(s)."),
                io.Float.Input("weight", default=1.0, min=-1.0, max=3.0, step=0.01,
                               tooltip="Scales the embeddings (before combining several Encode outputs)."),
                io.Image.Input("image_negative", optional=True, tooltip="Negative reference (optional)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Only the masked part of the reference is encoded (the rest is black)."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model."),
            ],
            outputs=[Embeds.Output(display_name="embeds")],
        )

    @classmethod
    def execute(cls, ipadapter, image, weight=1.0, image_negative=None, mask=None, clip_vision=None):
        cond, uncond = encode_pair(ipadapter, masked(image, mask), clip_vision, image_negative)
        return io.NodeOutput(patching.EncodedReferences(cond=cond * weight, uncond=uncond,
                                                        clip_output=ipadapter.spec.clip_output))
