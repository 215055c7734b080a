"""FaceID nodes: InsightFace ID embeddings (plus CLIP crops for FaceID Plus) as image prompts, and the paired LoRA."""
import dataclasses
import logging
import re

import numpy as np
import torch

import comfy.sd
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..ipadapter_core import embeds as core_embeds
from ..ipadapter_core import lora as core_lora
from ..ipadapter_core.attention import EMBEDS_SCALING
from ..ipadapter_core.embeds import COMBINE_EMBEDS
from ..ipadapter_core.errors import IncompatibleModelError, InvalidInputError
from ..ipadapter_core.projections import through_context_projection
from . import clip_encode, discovery, faces, model_cache, patching, presets
from .apply import resolve_clip_vision, weight_inputs
from .types import FrameWeights, InsightFace, IPAdapter

CATEGORY = "ipadapter_kit/faceid"
FACEID_KINDS = ("faceid", "faceid_plus")
CROP_SIZE = 224
KOLORS_CROP_SIZE = 336  # Kolors FaceID-Plus crops faces for CLIP-ViT-L-14-336

# preset -> arch -> (adapter patterns, LoRA patterns or None); flags for what the weights cannot tell.
PRESETS = {
    "FACEID": {"SD1.5": ([r"ip-adapter-faceid_sd15\."], [r"ip-adapter-faceid_sd15_lora\."]),
               "SDXL": ([r"ip-adapter-faceid_sdxl\."], [r"ip-adapter-faceid_sdxl_lora\."])},
    "FACEID PLUS - SD1.5 only": {"SD1.5": ([r"ip-adapter-faceid-plus_sd15\."], [r"ip-adapter-faceid-plus_sd15_lora\."])},
    "FACEID PLUS V2": {"SD1.5": ([r"ip-adapter-faceid-plusv2_sd15\."], [r"ip-adapter-faceid-plusv2_sd15_lora\."]),
                       "SDXL": ([r"ip-adapter-faceid-plusv2_sdxl\."], [r"ip-adapter-faceid-plusv2_sdxl_lora\."])},
    "FACEID PORTRAIT (style transfer)": {
        "SD1.5": ([r"ip-adapter-faceid-portrait-v11_sd15\.", r"ip-adapter-faceid-portrait_sd15\."], None),
        "SDXL": ([r"ip-adapter-faceid-portrait_sdxl\."], None)},
    "FACEID PORTRAIT UNNORM - SDXL only (strong)": {"SDXL": ([r"ip-adapter-faceid-portrait_sdxl_unnorm\."], None)},
}
# What each preset's adapter is, as its tensors tell: projection kind and image tokens.
PRESET_SHAPES = {"FACEID": ("faceid", 4), "FACEID PLUS - SD1.5 only": ("faceid_plus", 4),
                 "FACEID PLUS V2": ("faceid_plus", 4), "FACEID PORTRAIT (style transfer)": ("faceid", 16),
                 "FACEID PORTRAIT UNNORM - SDXL only (strong)": ("faceid", 16)}
PLUS_V2_PRESETS = ("FACEID PLUS V2",)
UNNORM_PRESETS = ("FACEID PORTRAIT UNNORM - SDXL only (strong)",)
LORA_SOURCES = ("auto (file in models/loras, else embedded)", "file in models/loras", "embedded in the adapter",
                "none")
PLUS_VERSIONS = ("v2 (shortcut)", "v1")
EMBEDDINGS = ("normalized", "unnormalized (portrait unnorm)")


def check_faceid(adapter):
    if adapter.spec.kind == "instantid":
        raise InvalidInputError(f"{adapter.name} is InstantID's adapter, not FaceID: use IPAdapter Kit: Apply "
                                "InstantID (with IdentityNet) or InstantID Attention.")
    if adapter.spec.kind == "pulid":
        raise InvalidInputError(f"{adapter.name} is PuLID's adapter, not FaceID: it also needs EVA-CLIP features. Use "
                                "IPAdapter Kit: Apply PuLID.")
    if adapter.spec.kind not in FACEID_KINDS:
        raise InvalidInputError(f"{adapter.name} is a {adapter.spec.kind} adapter, not FaceID: use the IPAdapter Kit "
                                "Apply nodes with a CLIP vision model instead.")


def apply_embedded_lora(model, adapter, strength):
    """model clone with the LoRA stored in a FaceID file applied at strength."""
    arch, _ = patching.model_arch(model)
    lora = core_lora.embedded_lora(adapter.weights.ip_adapter.state_dict(), arch)
    if not lora:
        raise InvalidInputError(f"{adapter.name} carries no LoRA weights (only FaceID, FaceID Plus and Plus v2 files "
                                "do); set the LoRA strength to 0 or use the LoRA file.")
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0.0)
    return patched


def apply_lora_file(model, name, strength):
    """model clone with a LoRA file from models/loras, through ComfyUI's own loader."""
    lora = comfy.utils.load_torch_file(model_cache.resolve("loras", name), safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, strength, 0.0)
    return patched


def kolors_crops(image, result):
    """KOLORS_CROP_SIZE px ArcFace-aligned crops of the kept faces (Kolors FaceID-Plus reads CLIP-ViT-L at 336 px)."""
    _, face_align = faces._insightface_modules()
    frames = faces.to_bgr_frames(image)
    crops = [face_align.norm_crop(frames[index], landmark=kps.numpy(), image_size=KOLORS_CROP_SIZE)
             for index, kps in zip(result.kept, result.kps)]
    return torch.from_numpy(np.ascontiguousarray(np.stack(crops)[..., ::-1])).float() / 255.0


def to_count(embeds, count):
    """embeds with count rows: cut, or the last row repeated (how IPAdapter_plus sizes a negative batch)."""
    if embeds.shape[0] >= count:
        return embeds[:count]
    return torch.cat([embeds, embeds[-1:].expand(count - embeds.shape[0], *embeds.shape[1:])])


def face_embeds(adapter, insightface, image, clip_vision, unnorm, skip_no_face, image_negative=None):
    """((ids, clip hidden), (zero ids, negative hidden), face result) for the references in image.

    The negative of the identity is zeros; FaceID Plus encodes image_negative (whole, not face-cropped) for its CLIP
    part, else a black image, as IPAdapter_plus does.
    """
    result = faces.analyze(insightface, image, skip_missing=skip_no_face)
    ids = (result.raw if unnorm else result.normed).float()
    hidden = uncond_hidden = None
    if adapter.spec.kind == "faceid_plus":
        clip_vision = resolve_clip_vision(adapter, clip_vision)
        if adapter.spec.token_dim is not None:
            result = dataclasses.replace(result, crops=kolors_crops(image, result))
        hidden = clip_encode.encode(clip_vision, result.crops, "penultimate_hidden_states", "face crops")
        core_embeds.check_encoder(adapter.spec, hidden, adapter.name)
        if image_negative is None:
            uncond_hidden = clip_encode.default_negative(clip_vision, "penultimate_hidden_states", hidden)
        else:
            negative = clip_encode.encode(clip_vision, image_negative, "penultimate_hidden_states", "image_negative")
            core_embeds.check_encoder(adapter.spec, negative, adapter.name)
            uncond_hidden = to_count(negative, hidden.shape[0])
    elif image_negative is not None:
        logging.warning("IPAdapter Kit: %s reads no CLIP features (FaceID / Portrait), so image_negative has no "
                        "effect (its negative is a zero identity, as in IPAdapter_plus); disconnect it.", adapter.name)
    return (ids, hidden), (torch.zeros_like(ids), uncond_hidden), result


def context_projection(model, adapter):
    """(weight, bias) of the Kolors UNet's encoder_hid_proj (ChatGLM width -> context width) for Kolors FaceID-Plus."""
    spec = adapter.spec
    linear = getattr(model.model.diffusion_model, "encoder_hid_proj", None)
    weight, bias = getattr(linear, "weight", None), getattr(linear, "bias", None)
    wanted = (spec.cross_dim, spec.token_dim)
    if weight is None or bias is None or tuple(weight.shape) != wanted:
        found = "none" if weight is None else f"weight {tuple(weight.shape)}{'' if bias is not None else ', no bias'}"
        raise IncompatibleModelError(
            f"{adapter.name} is Kolors FaceID-Plus: its {spec.token_dim}-wide tokens (ChatGLM's width) go through the "
            f"Kolors UNet's encoder_hid_proj ({spec.token_dim} -> {spec.cross_dim}), but this model has {found}. "
            "Load the Kolors UNet with a loader that keeps encoder_hid_proj on the model (e.g. ComfyUI-Kolors-MZ's "
            "KolorsUNETLoaderV2; its legacy Kolors UNET Loader hands it to the text encode instead), or use "
            "Kolors-IP-Adapter-Plus.")
    return weight.detach(), bias.detach()


def faceid_projector(shortcut, scale, context=None, weight_kolors=1.0):
    """The projector for patching.apply_embeds: FaceID tokens, then (Kolors) the UNet's encoder_hid_proj."""
    def projector(weights, ids, hidden, method):
        if context is None:
            return core_embeds.project_faceid(weights, ids, hidden, method, shortcut=shortcut, scale=scale)
        with torch.no_grad():
            tokens = weights.image_proj(ids, hidden, shortcut=shortcut, scale=scale)
            return core_embeds.join(through_context_projection(tokens, *context, weight_kolors), method)
    return projector


def find_adapter(preset, arch):
    """The FaceID file for a preset and model family: by name and tensors, else by tensors among unnamed files."""
    patterns, _ = PRESETS[preset][arch]
    kind, tokens = PRESET_SHAPES[preset]
    wanted = presets.release_name(patterns[0], ".bin")
    encoder = presets.ENCODER_RELEASES["vit-h"][0]
    return discovery.find("ipadapter", patterns, discovery.adapter_fits(arch, (kind,), encoder, tokens),
                          f"{wanted}{presets.download_source(wanted)}", claimed=presets.release_patterns(PRESETS),
                          unique=True)


class ApplyFaceID(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyFaceID",
            display_name="IPAdapter Kit: Apply FaceID",
            category=CATEGORY,
            description="Face image prompt: InsightFace identity embeddings of the reference faces (plus CLIP "
                        "features of the aligned crops for FaceID Plus and Kolors FaceID-Plus). Several photos of one "
                        "person work best with Portrait adapters. Only use faces of people who agreed to it.",
            inputs=[
                io.Model.Input("model", tooltip="The SD1.5, SDXL or Kolors model to patch (a patched copy is "
                                                "returned)."),
                IPAdapter.Input("ipadapter", tooltip="A FaceID adapter (FaceID, Plus, Plus v2, Portrait, Kolors "
                                                     "FaceID-Plus)."),
                InsightFace.Input("insightface", tooltip="From the InsightFace loader (antelopev2 for Kolors)."),
                io.Image.Input("image", tooltip="Reference photo(s); the largest face in each is used."),
                *weight_inputs(),
                io.Float.Input("weight_faceidv2", default=1.0, min=-1.0, max=5.0, step=0.05,
                               tooltip="Plus v2 and Kolors only: strength of the identity shortcut added to the "
                                       "refined tokens."),
                io.Combo.Input("plus_version", options=list(PLUS_VERSIONS), default=PLUS_VERSIONS[0],
                               tooltip="FaceID Plus files do not say whether they are v1 or v2: v2 adds the "
                                       "identity shortcut (the unified loader sets this for you; Kolors is always "
                                       "v2)."),
                io.Combo.Input("embeddings", options=list(EMBEDDINGS), default=EMBEDDINGS[0],
                               tooltip="Unnormalized embeddings are what 'portrait unnorm' SDXL expects."),
                io.Combo.Input("combine_embeds", options=list(COMBINE_EMBEDS), default="concat",
                               tooltip="How several faces combine (Portrait adapters expect concat)."),
                io.Combo.Input("embeds_scaling", options=list(EMBEDS_SCALING), default="V only",
                               tooltip="Where the weight is applied (V only is the classic behaviour)."),
                io.Boolean.Input("skip_no_face", default=False,
                                 tooltip="Drop references where no face is found instead of stopping with an error."),
                io.String.Input("reference_weights", default="", optional=True,
                                tooltip="With combine_embeds 'separate': one weight per face, e.g. '1.0, 0.6'."),
                io.String.Input("block_weights", default="", optional=True, multiline=True,
                                tooltip="Free per-block weights replacing weight_type ('index:weight, ...' or an "
                                        "InstantStyle dict); multiplied by weight."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="FaceID Plus only: CLIP vision model for the face crops (CLIP-ViT-L-336 "
                                            "for Kolors)."),
                io.Mask.Input("attn_mask", optional=True,
                              tooltip="Where the face prompt acts: one mask, or one per face with 'separate'."),
                io.Boolean.Input("unfold_batch", default=False, optional=True,
                                 tooltip="One face per latent frame (AnimateDiff batches) instead of combining them."),
                io.Float.Input("weight_kolors", default=1.0, min=-1.0, max=5.0, step=0.05, optional=True,
                               tooltip="Kolors FaceID-Plus only: scales the Kolors UNet's encoder_hid_proj that maps "
                                       "the face tokens to the cross-attention width."),
                io.Image.Input("image_negative", optional=True,
                               tooltip="FaceID Plus / Kolors: negative image for the CLIP part (default: black); "
                                       "the identity's negative stays zero."),
                FrameWeights.Input("frame_weights", optional=True,
                                   tooltip="Per-frame weights (from a frame weights node), multiplied by weight."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Image.Output(display_name="face_crops")],
        )

    @classmethod
    def execute(cls, model, ipadapter, insightface, image, weight, weight_type, start_at, end_at, weight_faceidv2,
                plus_version, embeddings, combine_embeds, embeds_scaling, skip_no_face, reference_weights="",
                block_weights="", clip_vision=None, attn_mask=None, unfold_batch=False, weight_kolors=1.0,
                image_negative=None, frame_weights=None):
        check_faceid(ipadapter)
        patching.check_model(model, ipadapter)
        kolors = ipadapter.spec.token_dim is not None
        context = context_projection(model, ipadapter) if kolors else None
        if weight_kolors != 1.0 and not kolors:
            logging.warning("IPAdapter Kit: weight_kolors only acts on Kolors FaceID-Plus; %s ignores it.",
                            ipadapter.name)
        unnorm = embeddings == EMBEDDINGS[1] or ipadapter.unnorm
        cond, uncond, result = face_embeds(ipadapter, insightface, image, clip_vision, unnorm, skip_no_face,
                                           image_negative)
        shortcut = kolors or (plus_version == PLUS_VERSIONS[0] if ipadapter.plus_v2 is None else ipadapter.plus_v2)
        projector = faceid_projector(shortcut, weight_faceidv2, context, weight_kolors)
        patched = patching.apply_embeds(model, ipadapter, cond, uncond, weight=weight, weight_type=weight_type,
                                        start_at=start_at, end_at=end_at, combine=combine_embeds,
                                        embeds_scaling=embeds_scaling, attn_mask=attn_mask, projector=projector,
                                        reference_weights=reference_weights or "", block_weights=block_weights or "",
                                        unfold_batch=unfold_batch, frame_weights=frame_weights)
        return io.NodeOutput(patched, result.crops)


class FaceIDLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitFaceIDLoRA",
            display_name="IPAdapter Kit: FaceID LoRA (embedded)",
            category=CATEGORY,
            description="Applies the LoRA stored inside a FaceID adapter file to the model, as a weight patch on a "
                        "copy. Use it when you load FaceID with the plain loader; the unified FaceID loader does it "
                        "for you.",
            inputs=[
                io.Model.Input("model", tooltip="The model the FaceID adapter will patch."),
                IPAdapter.Input("ipadapter", tooltip="A FaceID, FaceID Plus or Plus v2 adapter."),
                io.Float.Input("strength", default=0.6, min=-2.0, max=2.0, step=0.05,
                               tooltip="LoRA strength (0.6 to 0.8 is usual for FaceID)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, ipadapter, strength):
        check_faceid(ipadapter)
        return io.NodeOutput(model.clone() if strength == 0 else apply_embedded_lora(model, ipadapter, strength))


class UnifiedFaceIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitUnifiedFaceIDLoader",
            display_name="IPAdapter Kit: Unified FaceID Loader",
            category=CATEGORY,
            description="Finds the FaceID adapter, its LoRA and the CLIP-vision model for a preset and the model's "
                        "family among your files (IPAdapter_plus's names), applies the LoRA and loads InsightFace.",
            inputs=[
                io.Model.Input("model", tooltip="Decides SD1.5 or SDXL; returned with the LoRA applied."),
                io.Combo.Input("preset", options=list(PRESETS), default="FACEID PLUS V2",
                               tooltip="Which FaceID release to use."),
                io.Float.Input("lora_strength", default=0.6, min=-2.0, max=2.0, step=0.05,
                               tooltip="Strength of the paired FaceID LoRA (0 = none)."),
                io.Combo.Input("lora_source", options=list(LORA_SOURCES), default=LORA_SOURCES[0],
                               tooltip="Where the LoRA comes from: the _lora file in models/loras, or the copy "
                                       "stored in the adapter file (same weights)."),
                io.Combo.Input("provider", options=faces.available_providers(), default="CPU",
                               tooltip="onnxruntime device for InsightFace."),
                io.Int.Input("det_size", default=640, min=160, max=1280, step=32,
                             tooltip="Face detection size (smaller sizes are tried when no face is found)."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), IPAdapter.Output(display_name="IPADAPTER"),
                     InsightFace.Output(display_name="INSIGHTFACE"), io.ClipVision.Output(display_name="CLIP_VISION")],
        )

    @classmethod
    def execute(cls, model, preset, lora_strength, lora_source, provider, det_size):
        arch, _ = patching.model_arch(model)
        if arch not in PRESETS[preset]:
            raise IncompatibleModelError(f"preset '{preset}' has no {arch} release; pick another preset.")
        _, lora_patterns = PRESETS[preset][arch]
        adapter = model_cache.load_adapter(find_adapter(preset, arch))
        check_faceid(adapter)
        clip_vision = None
        if adapter.spec.kind == "faceid_plus":
            clip_vision = presets.load_clip_vision(presets.find_encoder("vit-h", adapter.spec))
        adapter = dataclasses.replace(adapter, clip_vision=clip_vision, plus_v2=preset in PLUS_V2_PRESETS,
                                      unnorm=preset in UNNORM_PRESETS)
        model = cls.with_lora(model, adapter, lora_patterns, lora_strength, lora_source)
        insightface = faces.load_analyzer("buffalo_l", provider, det_size)
        return io.NodeOutput(model, adapter, insightface, clip_vision)

    @staticmethod
    def with_lora(model, adapter, lora_patterns, strength, source):
        if strength == 0 or source == "none" or lora_patterns is None:
            return model
        if source != "embedded in the adapter":
            names = [n for n in folder_paths.get_filename_list("loras")
                     if any(re.search(p, n.rsplit("/", 1)[-1], re.IGNORECASE) for p in lora_patterns)]
            if names:
                return apply_lora_file(model, names[0], strength)
            if source == "file in models/loras":
                wanted = presets.release_name(lora_patterns[0], ".safetensors")
                raise InvalidInputError(f"no FaceID LoRA file: put {wanted}{presets.download_source(wanted)} in "
                                        "models/loras/, or choose the LoRA embedded in the adapter.")
            logging.info("IPAdapter Kit: no %s in models/loras, using the LoRA embedded in %s", lora_patterns[0],
                         adapter.name)
        return apply_embedded_lora(model, adapter, strength)
