"""InstantID (SDXL): the face's ArcFace identity as image tokens in the cross-attention, and IdentityNet, a
ControlNet that reads the face keypoints as its hint and the identity tokens instead of the text."""
import dataclasses

import torch

import comfy.model_management
from comfy_api.latest import io

from ..ipadapter_core import embeds as core_embeds
from ..ipadapter_core import keypoints as core_keypoints
from ..ipadapter_core.attention import ImagePrompt
from ..ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from . import clip_encode, faces, model_cache, patching, paths
from .types import FaceTokens, InsightFace, IPAdapter

CATEGORY = "ipadapter_kit/instantid"
FOLDER = "instantid"
COMBINE = ("average", "norm average", "concat")
BASIC_NOISE = 0.35  # what the basic node of cubiq's ComfyUI_InstantID uses, so its workflows look the same here


@dataclasses.dataclass(frozen=True)
class IdentityTokens:
    """The identity tokens IdentityNet reads as its context: (1, T, width) for the positive and the negative."""

    cond: torch.Tensor
    uncond: torch.Tensor


def check_instantid(adapter):
    if adapter.spec.kind != "instantid":
        raise InvalidInputError(f"{adapter.name} is a {adapter.spec.kind} adapter, not InstantID: load InstantX's "
                                "InstantID ip-adapter.bin (models/instantid) with IPAdapter Kit: Load InstantID.")


def check_sdxl(model):
    family, _ = patching.model_family(model)
    if family.name != "SDXL":
        raise IncompatibleModelError(f"InstantID works on SDXL models only; this model is {family.name}. Load an SDXL "
                                     "checkpoint (InstantID's IdentityNet and adapter were trained on SDXL).")


def identity_embeds(insightface, image):
    """The raw ArcFace embedding of the largest face in each reference (R, 512); errors name a reference without one."""
    clip_encode.check_images(image, "image")
    return faces.analyze(insightface, image).raw


def negative_embeds(embeds, noise):
    """Zeros, or noise x uniform noise seeded by the embeddings (as ComfyUI_InstantID, so its graphs reproduce)."""
    if not 0.0 <= noise <= 1.0:
        raise InvalidInputError(f"noise {noise} is outside 0..1.")
    if noise == 0:
        return torch.zeros_like(embeds)
    generator = torch.Generator().manual_seed(int(torch.sum(embeds).item()) % 1000000007)
    return noise * torch.rand(embeds.shape, generator=generator, dtype=embeds.dtype)


def keypoint_images(insightface, image, what="image_kps"):
    """IdentityNet's hint: the five keypoints of the largest face of each image, drawn on black (B, H, W, 3)."""
    clip_encode.check_images(image, what)
    try:
        result = faces.analyze(insightface, image)
    except InvalidInputError as e:
        raise InvalidInputError(f"{what}: {e}") from e
    return core_keypoints.keypoint_images(result.kps, image.shape[1], image.shape[2])


def apply_attention(model, adapter, insightface, image, weight, start_at, end_at, noise, combine, attn_mask=None):
    """(patched model, IdentityTokens): the identity tokens steer the cross-attention like an IP-Adapter."""
    check_instantid(adapter)
    check_sdxl(model)
    if combine not in COMBINE:
        raise InvalidInputError(f"combine_embeds {combine!r} is not one of {COMBINE}.")
    embeds = core_embeds.combine(identity_embeds(insightface, image), combine)
    return attention_from_embeds(model, adapter, embeds, negative_embeds(embeds, noise), weight, start_at, end_at,
                                 attn_mask)


def attention_from_embeds(model, adapter, embeds, uncond, weight, start_at, end_at, attn_mask=None):
    """(patched model, IdentityTokens) for ArcFace embeddings: the same tokens steer the cross-attention and feed
    IdentityNet, so the resampler runs once."""
    family = patching.check_model(model, adapter)
    cond_tokens, uncond_tokens = patching.project_tokens(adapter, embeds, uncond, "concat", core_embeds.project)
    patched = model.clone() if end_at <= start_at else patching.install(model, adapter, ImagePrompt(
        weights=adapter.weights, cond=cond_tokens, uncond=uncond_tokens,
        layer_weights=family.layer_weights("linear", weight, None, adapter.spec.num_layers),
        masks=patching.prepare_masks(attn_mask, 1), sigma_range=patching.sigma_range(model, start_at, end_at)),
        family)
    device = comfy.model_management.intermediate_device()
    return patched, IdentityTokens(cond_tokens.to(device), uncond_tokens.to(device))


def apply_controlnet(tokens, control_net, keypoints, positive, negative, strength, start_at, end_at, attn_mask=None):
    """(positive, negative) with IdentityNet attached: hint = the keypoints image, context = the identity tokens
    (the positive's for the positive, the negative's for the negative); attn_mask limits the positive to it."""
    if strength == 0 or start_at >= end_at:
        return positive, negative
    if not hasattr(control_net, "set_cond_hint"):
        raise InvalidInputError(f"control_net: expected a CONTROL_NET (IdentityNet from Load ControlNet Model), got "
                                f"{type(control_net).__name__}.")
    clip_encode.check_images(keypoints, "image_kps")
    mask = patching.prepare_masks(attn_mask, 1, "attn_mask", "Give one mask.")
    hint = keypoints[..., :3].movedim(-1, 1)
    nets = {}
    out = []
    for conditioning, context, is_positive in ((positive, tokens.cond, True), (negative, tokens.uncond, False)):
        rows = []
        for embedding, options in conditioning:
            options = options.copy()
            previous = options.get("control")
            net = nets.get(previous)
            if net is None:
                net = control_net.copy().set_cond_hint(hint, strength, (start_at, end_at))
                net.set_previous_controlnet(previous)
                nets[previous] = net
            options["control"] = net
            options["control_apply_to_uncond"] = False
            options["cross_attn_controlnet"] = context
            if mask is not None and is_positive:
                options["mask"] = mask
                options["set_area_to_bounds"] = False
            rows.append([embedding, options])
        out.append(rows)
    return out[0], out[1]


def apply_instantid(model, positive, negative, instantid, insightface, control_net, image, ip_weight, cn_strength,
                    start_at, end_at, noise, combine, image_kps=None, attn_mask=None):
    """Both halves: (model, positive, negative, keypoints image)."""
    patched, tokens = apply_attention(model, instantid, insightface, image, ip_weight, start_at, end_at, noise,
                                      combine, attn_mask)
    source = image_kps if image_kps is not None else image[:1]
    keypoints = keypoint_images(insightface, source, "image_kps" if image_kps is not None else "image")
    positive, negative = apply_controlnet(tokens, control_net, keypoints, positive, negative, cn_strength, start_at,
                                          end_at, attn_mask)
    return patched, positive, negative, keypoints


def _sockets():
    return [
        io.Model.Input("model", tooltip="An SDXL model (a patched copy is returned)."),
        io.Conditioning.Input("positive", tooltip="Gets IdentityNet (reading the face's identity tokens)."),
        io.Conditioning.Input("negative", tooltip="Gets IdentityNet (reading the negative's identity tokens)."),
        IPAdapter.Input("instantid", tooltip="From IPAdapter Kit: Load InstantID."),
        InsightFace.Input("insightface", tooltip="From IPAdapter Kit: Load InsightFace (pack antelopev2)."),
        io.ControlNet.Input("control_net", tooltip="IdentityNet, loaded with Load ControlNet Model."),
        io.Image.Input("image", tooltip="Reference face(s); several are combined into one identity."),
    ]


def _range_inputs():
    return [
        io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Fraction of the schedule where both halves start."),
        io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001,
                       tooltip="Fraction of the schedule where both halves stop."),
    ]


def _optional_inputs():
    return [
        io.Image.Input("image_kps", optional=True,
                       tooltip="Pose: the face keypoints are taken from this image (default: the first reference)."),
        io.Mask.Input("attn_mask", optional=True,
                      tooltip="Where the face goes: limits the identity tokens and the positive prompt to the mask."),
    ]


def _outputs():
    return [io.Model.Output(display_name="MODEL"), io.Conditioning.Output(display_name="positive"),
            io.Conditioning.Output(display_name="negative"), io.Image.Output(display_name="keypoints")]


class InstantIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitInstantIDLoader",
            display_name="IPAdapter Kit: Load InstantID",
            category=CATEGORY,
            description="Loads InstantX's InstantID adapter (ip-adapter.bin) from models/instantid; recognised by its "
                        "tensors, loaded without running code from the file.",
            inputs=[io.Combo.Input("instantid_file", options=paths.weight_files(FOLDER),
                                   tooltip="InstantID's ip-adapter.bin in models/instantid.")],
            outputs=[IPAdapter.Output(display_name="INSTANTID")],
        )

    @classmethod
    def execute(cls, instantid_file):
        adapter = model_cache.load_adapter(instantid_file, FOLDER)
        check_instantid(adapter)
        return io.NodeOutput(adapter)


class FaceKeypoints(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitFaceKeypoints",
            display_name="IPAdapter Kit: Face Keypoints",
            category=CATEGORY,
            description="IdentityNet's hint: the five keypoints (eyes, nose, mouth corners) of the largest face of "
                        "each image, drawn on black at the image's size.",
            inputs=[InsightFace.Input("insightface", tooltip="From IPAdapter Kit: Load InsightFace."),
                    io.Image.Input("image", tooltip="Face or pose image(s).")],
            outputs=[io.Image.Output(display_name="keypoints")],
        )

    @classmethod
    def execute(cls, insightface, image):
        return io.NodeOutput(keypoint_images(insightface, image, "image"))


class ApplyInstantID(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyInstantID",
            display_name="IPAdapter Kit: Apply InstantID",
            category=CATEGORY,
            description="Keeps a face's identity on SDXL: its ArcFace embedding steers the cross-attention and "
                        "IdentityNet follows its keypoints (or a pose image's). Stacks with IP-Adapter and FaceID.",
            inputs=[*_sockets(),
                    io.Float.Input("weight", default=0.8, min=0.0, max=5.0, step=0.01,
                                   tooltip="Strength of both the identity tokens and IdentityNet."),
                    *_range_inputs(), *_optional_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, model, positive, negative, instantid, insightface, control_net, image, weight, start_at, end_at,
                image_kps=None, attn_mask=None):
        return io.NodeOutput(*apply_instantid(model, positive, negative, instantid, insightface, control_net, image,
                                              weight, weight, start_at, end_at, BASIC_NOISE, "average", image_kps,
                                              attn_mask))


class ApplyInstantIDAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyInstantIDAdvanced",
            display_name="IPAdapter Kit: Apply InstantID (advanced)",
            category=CATEGORY,
            description="Apply InstantID with separate strengths for the identity tokens and IdentityNet, the "
                        "negative's noise and how several references combine.",
            inputs=[*_sockets(),
                    io.Float.Input("ip_weight", default=0.8, min=0.0, max=3.0, step=0.01,
                                   tooltip="Strength of the identity tokens in the cross-attention (0 = none)."),
                    io.Float.Input("cn_strength", default=0.8, min=0.0, max=10.0, step=0.01,
                                   tooltip="Strength of IdentityNet (0 = not attached)."),
                    *_range_inputs(),
                    io.Float.Input("noise", default=0.0, min=0.0, max=1.0, step=0.05,
                                   tooltip="The negative's identity: 0 = zeros (the release), more = noise (softer)."),
                    io.Combo.Input("combine_embeds", options=list(COMBINE), default="average",
                                   tooltip="Several references: averaged embeddings, or all their tokens (concat)."),
                    *_optional_inputs()],
            outputs=_outputs(),
        )

    @classmethod
    def execute(cls, model, positive, negative, instantid, insightface, control_net, image, ip_weight, cn_strength,
                start_at, end_at, noise, combine_embeds, image_kps=None, attn_mask=None):
        return io.NodeOutput(*apply_instantid(model, positive, negative, instantid, insightface, control_net, image,
                                              ip_weight, cn_strength, start_at, end_at, noise, combine_embeds,
                                              image_kps, attn_mask))


class InstantIDAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitInstantIDAttention",
            display_name="IPAdapter Kit: InstantID Attention",
            category=CATEGORY,
            description="InstantID's first half only: the identity tokens in the cross-attention. Its face_tokens "
                        "feed IPAdapter Kit: InstantID ControlNet.",
            inputs=[io.Model.Input("model", tooltip="An SDXL model (a patched copy is returned)."),
                    IPAdapter.Input("instantid", tooltip="From IPAdapter Kit: Load InstantID."),
                    InsightFace.Input("insightface", tooltip="From IPAdapter Kit: Load InsightFace."),
                    io.Image.Input("image", tooltip="Reference face(s)."),
                    io.Float.Input("weight", default=1.0, min=-1.0, max=3.0, step=0.01,
                                   tooltip="Strength of the identity tokens (0 = the model unchanged)."),
                    *_range_inputs(),
                    io.Float.Input("noise", default=0.0, min=0.0, max=1.0, step=0.05,
                                   tooltip="The negative's identity: 0 = zeros, more = noise."),
                    io.Combo.Input("combine_embeds", options=list(COMBINE), default="average",
                                   tooltip="Several references: averaged embeddings, or all their tokens (concat)."),
                    io.Mask.Input("attn_mask", optional=True, tooltip="Where the identity tokens act.")],
            outputs=[io.Model.Output(display_name="MODEL"), FaceTokens.Output(display_name="face_tokens")],
        )

    @classmethod
    def execute(cls, model, instantid, insightface, image, weight, start_at, end_at, noise, combine_embeds,
                attn_mask=None):
        return io.NodeOutput(*apply_attention(model, instantid, insightface, image, weight, start_at, end_at, noise,
                                              combine_embeds, attn_mask))


class InstantIDControlNet(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitInstantIDControlNet",
            display_name="IPAdapter Kit: InstantID ControlNet",
            category=CATEGORY,
            description="InstantID's second half only: IdentityNet with a keypoints hint, reading the identity "
                        "tokens as its context.",
            inputs=[FaceTokens.Input("face_tokens", tooltip="From IPAdapter Kit: InstantID Attention."),
                    io.ControlNet.Input("control_net", tooltip="IdentityNet, loaded with Load ControlNet Model."),
                    io.Image.Input("image_kps", tooltip="The keypoints image (IPAdapter Kit: Face Keypoints)."),
                    io.Conditioning.Input("positive", tooltip="Gets IdentityNet with the face's identity tokens."),
                    io.Conditioning.Input("negative", tooltip="Gets IdentityNet with the negative's tokens."),
                    io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01,
                                   tooltip="IdentityNet's strength (0 = not attached)."),
                    *_range_inputs(),
                    io.Mask.Input("attn_mask", optional=True, tooltip="Limits the positive prompt to the mask.")],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(cls, face_tokens, control_net, image_kps, positive, negative, strength, start_at, end_at,
                attn_mask=None):
        if not isinstance(face_tokens, IdentityTokens):
            raise InvalidInputError("face_tokens: connect the face_tokens output of IPAdapter Kit: InstantID "
                                    "Attention.")
        return io.NodeOutput(*apply_controlnet(face_tokens, control_net, image_kps, positive, negative, strength,
                                               start_at, end_at, attn_mask))


NODES = [InstantIDLoader, FaceKeypoints, ApplyInstantID, ApplyInstantIDAdvanced, InstantIDAttention,
         InstantIDControlNet]
