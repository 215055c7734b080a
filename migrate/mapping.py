"""The data of the converter: other packs' node layouts, this pack's node layouts, and the rules between them.

SOURCES describes the nodes of ComfyUI_IPAdapter_plus (v2), of the two Flux IP-Adapter packs (XLabs-AI's
x-flux-comfyui, Shakker-Labs' ComfyUI-IPAdapter-Flux for InstantX's adapter), of Slickytail's
ComfyUI-InstantX-IPAdapter-SD3 (InstantX's SD3.5 Large adapter), of cubiq's ComfyUI_InstantID (InstantID: face
IP-Adapter plus IdentityNet ControlNet), of cubiq's PuLID_ComfyUI (PuLID for SDXL) and of balazik's ComfyUI-PuLID-Flux
(PuLID for Flux, and its forks that keep its node ids) as their INPUT_TYPES declare them: socket inputs, widgets in
widgets_values order (and the layouts of earlier releases or of forks), outputs by slot. TARGETS
describes the nodes the converter writes (this pack's, plus core nodes it adds) as /object_info reports them (a test
compares them with the live server, so they cannot drift). RULES says, per source node type, which node of this pack
replaces it and how names and values carry over. Adding a mapping is one RULES entry (plus the TARGETS entry of a new
node).
IPAdapter_plus's v1 nodes (before its 2024-03-23 rewrite) and every release's widget layouts are among SOURCES.
"""
import math
from dataclasses import dataclass, field

# ---------------------------------------------------------------------------------------------------------------
# Socket types. Theirs -> ours: the objects differ, so the type names do too.
IPADAPTER, EMBEDS = "IPADAPTER_KIT", "IPADAPTER_KIT_EMBEDS"
PARAMS, INSIGHTFACE = "IPADAPTER_KIT_PARAMS", "INSIGHTFACE_KIT"
FACE_TOKENS, EVA_CLIP = "IPAKIT_FACE_TOKENS", "IPAKIT_EVA_CLIP"
PLUS, XLABS, INSTANTX = "IPAdapter_plus", "x-flux-comfyui", "ComfyUI-IPAdapter-Flux"
SD3, INSTANTID, PULID = "ComfyUI-InstantX-IPAdapter-SD3", "ComfyUI_InstantID", "PuLID_ComfyUI"
PULID_FLUX = "ComfyUI-PuLID-Flux"
SOCKET_TYPES = {"IPADAPTER": IPADAPTER, "EMBEDS": EMBEDS, "IPADAPTER_PARAMS": PARAMS, "INSIGHTFACE": INSIGHTFACE,
                "IP_ADAPTER_FLUX": IPADAPTER, "IP_ADAPTER_FLUX_INSTANTX": IPADAPTER,
                "IP_ADAPTER_SD3_INSTANTX": IPADAPTER, "INSTANTID": IPADAPTER, "FACEANALYSIS": INSIGHTFACE,
                "FACE_EMBEDS": FACE_TOKENS, "PULID": IPADAPTER, "EVA_CLIP": EVA_CLIP, "PULIDFLUX": IPADAPTER,
                "WEIGHTS_STRATEGY": "IPADAPTER_KIT_WEIGHTS_STRATEGY"}
# Types only the source packs' objects travel on (-> the pack): a node we do not know that touches one is reported.
SOURCE_TYPES = {**{kind: PLUS for kind in ("IPADAPTER", "EMBEDS", "IPADAPTER_PARAMS", "INSIGHTFACE",
                                           "WEIGHTS_STRATEGY")},
                "IP_ADAPTER_FLUX": XLABS, "IP_ADAPTER_FLUX_INSTANTX": INSTANTX, "IP_ADAPTER_SD3_INSTANTX": SD3,
                **dict.fromkeys(("INSTANTID", "FACEANALYSIS", "FACE_EMBEDS"), INSTANTID),
                **dict.fromkeys(("PULID", "EVA_CLIP"), PULID), "PULIDFLUX": PULID_FLUX}
# Of those, the ones other packs use too (ComfyUI_InstantID, PuLID_ComfyUI and ComfyUI-PuLID-Flux all load a
# FACEANALYSIS, so do InfiniteYou and others; both PuLID packs load an EVA_CLIP; forks keep their pack's type names,
# PULIDFLUX too): a node we do not know counts as touching one only through a link to or from a node of a source
# pack, not by having a socket of that type, and the pack it is reported with is that node's (PACK_OF), not
# SOURCE_TYPES'.
SHARED_SOURCE_TYPES = frozenset(("INSTANTID", "FACEANALYSIS", "FACE_EMBEDS", "PULID", "EVA_CLIP", "PULIDFLUX"))
FLUX_DOUBLE_BLOCKS = 19  # Flux dev / schnell; block_weights names them d0..d18
SD35_SHIFT = 3.0  # the flow shift of SD3.5 Large (ComfyUI's SD3 model config) when no ModelSamplingSD3 sets one

WEIGHT_TYPES = ("linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
                "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
                "style and composition", "style transfer precise", "composition precise")
COMBINE = ("concat", "add", "subtract", "average", "norm average", "separate", "max", "min")
SCALING = ("V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty")
UNIFIED_PRESETS = ("LIGHT - SD1.5 only (low strength)", "STANDARD (medium strength)", "VIT-G (medium strength)",
                   "PLUS (high strength)", "PLUS FACE (portraits)", "FULL FACE - SD1.5 only (portraits stronger)",
                   "COMPOSITION (SD1.5 / SDXL)", "KOLORS PLUS (Kolors only)")
FACEID_PRESETS = ("FACEID", "FACEID PLUS - SD1.5 only", "FACEID PLUS V2", "FACEID PORTRAIT (style transfer)",
                  "FACEID PORTRAIT UNNORM - SDXL only (strong)")
PROVIDERS = ("CPU", "CUDA", "ROCm", "CoreML", "DirectML", "OpenVINO")  # the server lists those onnxruntime offers
LORA_SOURCES = ("auto (file in models/loras, else embedded)", "file in models/loras", "embedded in the adapter", "none")
PLUS_VERSIONS = ("v2 (shortcut)", "v1")
EMBEDDINGS = ("normalized", "unnormalized (portrait unnorm)")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest", "area", "lanczos (antialiased bicubic)", "lanczos")
CROP_POSITIONS = ("center", "top", "bottom", "left", "right", "pad")
NOISE_TYPES = ("fade", "dissolve", "gaussian", "shuffle")
TILE_MODES = ("tiles with masks", "enhance whole image")
INSTANTID_COMBINE = ("average", "norm average", "concat")
INSTANTID_PACK = "antelopev2"  # the InsightFace pack ComfyUI_InstantID always loads (InstantID was trained on it)
PULID_PACK = "antelopev2"  # the one PuLID_ComfyUI and ComfyUI-PuLID-Flux always load (det_size 640, as here)


# ---------------------------------------------------------------------------------------------------------------
# Input specs, one dict per input in the server's input order (required first, then optional).
def sock(name, kind, optional=False):
    return {"name": name, "type": kind, "optional": optional}


def num(name, kind, default, low, high, optional=False, control=False):
    """A FLOAT or INT widget; control: the frontend adds a control_after_generate value after it."""
    return {"name": name, "type": kind, "widget": True, "default": default, "min": low, "max": high,
            "optional": optional, "control": control}


def combo(name, options, default=None, optional=False, dynamic=False):
    """A COMBO widget; dynamic: the server lists files or devices, so options here are only what is known."""
    return {"name": name, "type": "COMBO", "widget": True, "options": tuple(options),
            "default": (options[0] if options else None) if default is None else default, "optional": optional,
            "dynamic": dynamic}


def text(name, default="", optional=False, multiline=False):
    return {"name": name, "type": "STRING", "widget": True, "default": default, "optional": optional,
            "multiline": multiline}


def flag(name, default=False, optional=False):
    return {"name": name, "type": "BOOLEAN", "widget": True, "default": default, "optional": optional}


def weight(name="weight", high=5.0):
    return num(name, "FLOAT", 1.0, -1.0, high)


def schedule():
    return [num("start_at", "FLOAT", 0.0, 0.0, 1.0), num("end_at", "FLOAT", 1.0, 0.0, 1.0)]


def node(title, inputs, outputs):
    """outputs: [(name, type)] by slot."""
    return {"title": title, "inputs": list(inputs), "outputs": [tuple(o) for o in outputs]}


# ---------------------------------------------------------------------------------------------------------------
# This pack's nodes, and the core nodes the converter adds (what it writes). Checked against /object_info by
# tests/test_migrate.py.
TARGETS = {
    "IPAKitModelLoader": node("IPAdapter Kit: Load IP-Adapter", [combo("ipadapter_file", (), dynamic=True)],
                              [("IPADAPTER", IPADAPTER)]),
    "CLIPVisionEncode": node("CLIP Vision Encode",  # core
                             [sock("clip_vision", "CLIP_VISION"), sock("image", "IMAGE"),
                              combo("crop", ("center", "none"), dynamic=True)],  # (declares no default)
                             [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")]),
    "IPAKitCLIPVisionLoader": node("IPAdapter Kit: Load CLIP Vision", [combo("clip_name", (), dynamic=True)],
                                   [("CLIP_VISION", "CLIP_VISION")]),
    "CLIPVisionLoader": node("Load CLIP Vision", [combo("clip_name", (), dynamic=True)],  # core
                             [("CLIP_VISION", "CLIP_VISION")]),
    "IPAKitUnifiedLoader": node(
        "IPAdapter Kit: Unified Loader",
        [sock("model", "MODEL"), combo("preset", UNIFIED_PRESETS, "STANDARD (medium strength)")],
        [("MODEL", "MODEL"), ("IPADAPTER", IPADAPTER), ("CLIP_VISION", "CLIP_VISION")]),
    "IPAKitEncode": node(
        "IPAdapter Kit: Encode",
        [sock("ipadapter", IPADAPTER), sock("image", "IMAGE"), weight(high=3.0),
         sock("image_negative", "IMAGE", True), sock("mask", "MASK", True), sock("clip_vision", "CLIP_VISION", True)],
        [("embeds", EMBEDS)]),
    "IPAKitApply": node(
        "IPAdapter Kit: Apply",
        [sock("model", "MODEL"), sock("ipadapter", IPADAPTER), sock("image", "IMAGE"), weight(),
         combo("weight_type", WEIGHT_TYPES), *schedule(), sock("clip_vision", "CLIP_VISION", True),
         sock("attn_mask", "MASK", True)],
        [("MODEL", "MODEL")]),
    "IPAKitApplyAdvanced": node(
        "IPAdapter Kit: Apply (advanced)",
        [sock("model", "MODEL"), sock("ipadapter", IPADAPTER), weight(), combo("weight_type", WEIGHT_TYPES),
         *schedule(), weight("weight_composition"), combo("combine_embeds", COMBINE), combo("embeds_scaling", SCALING),
         text("reference_weights", optional=True), text("block_weights", optional=True, multiline=True),
         flag("unfold_batch", optional=True), sock("image", "IMAGE", True), sock("embeds", EMBEDS, True),
         sock("image_negative", "IMAGE", True), sock("attn_mask", "MASK", True),
         sock("clip_vision", "CLIP_VISION", True), sock("frame_weights", "IPADAPTER_KIT_FRAME_WEIGHTS", True),
         num("encode_batch_size", "INT", 0, 0, 4096, optional=True)],
        [("MODEL", "MODEL")]),
    "IPAKitInsightFaceLoader": node(
        "IPAdapter Kit: Load InsightFace",
        [combo("pack", (), dynamic=True), combo("provider", PROVIDERS, dynamic=True),
         num("det_size", "INT", 640, 160, 1280)],
        [("insightface", INSIGHTFACE)]),
    "IPAKitUnifiedFaceIDLoader": node(
        "IPAdapter Kit: Unified FaceID Loader",
        [sock("model", "MODEL"), combo("preset", FACEID_PRESETS, "FACEID PLUS V2"),
         num("lora_strength", "FLOAT", 0.6, -2.0, 2.0), combo("lora_source", LORA_SOURCES),
         combo("provider", PROVIDERS, dynamic=True), num("det_size", "INT", 640, 160, 1280)],
        [("MODEL", "MODEL"), ("IPADAPTER", IPADAPTER), ("INSIGHTFACE", INSIGHTFACE), ("CLIP_VISION", "CLIP_VISION")]),
    "IPAKitApplyFaceID": node(
        "IPAdapter Kit: Apply FaceID",
        [sock("model", "MODEL"), sock("ipadapter", IPADAPTER), sock("insightface", INSIGHTFACE),
         sock("image", "IMAGE"), weight(), combo("weight_type", WEIGHT_TYPES), *schedule(),
         weight("weight_faceidv2"), combo("plus_version", PLUS_VERSIONS), combo("embeddings", EMBEDDINGS),
         combo("combine_embeds", COMBINE), combo("embeds_scaling", SCALING), flag("skip_no_face"),
         text("reference_weights", optional=True), text("block_weights", optional=True, multiline=True),
         sock("clip_vision", "CLIP_VISION", True), sock("attn_mask", "MASK", True),
         flag("unfold_batch", optional=True), num("weight_kolors", "FLOAT", 1.0, -1.0, 5.0, optional=True),
         sock("image_negative", "IMAGE", True), sock("frame_weights", "IPADAPTER_KIT_FRAME_WEIGHTS", True)],
        [("MODEL", "MODEL"), ("face_crops", "IMAGE")]),
    "IPAKitCombineEmbeds": node(
        "IPAdapter Kit: Combine Embeds",
        [sock("embed1", EMBEDS), combo("method", COMBINE), *[sock(f"embed{i}", EMBEDS, True) for i in range(2, 6)]],
        [("embeds", EMBEDS)]),
    "IPAKitSaveEmbeds": node("IPAdapter Kit: Save Embeds",
                             [sock("embeds", EMBEDS), text("filename_prefix", "ipadapter_embeds")],
                             [("path", "STRING")]),
    "IPAKitLoadEmbeds": node("IPAdapter Kit: Load Embeds", [combo("embeds_file", (), dynamic=True)],
                             [("embeds", EMBEDS)]),
    "IPAKitPrepImage": node(
        "IPAdapter Kit: Prep Image For CLIP Vision",
        [sock("image", "IMAGE"), combo("interpolation", INTERPOLATIONS, "lanczos (antialiased bicubic)"),
         combo("crop_position", CROP_POSITIONS), num("sharpening", "FLOAT", 0.0, 0.0, 1.0),
         num("size", "INT", 224, 64, 1024)],
        [("IMAGE", "IMAGE")]),
    "IPAKitNoiseImage": node(
        "IPAdapter Kit: Noise Negative",
        [combo("type", NOISE_TYPES), num("strength", "FLOAT", 0.5, 0.0, 1.0),
         num("seed", "INT", 0, 0, 2**31 - 1, control=True), sock("image", "IMAGE", True),
         num("blur", "INT", 0, 0, 32, optional=True)],
        [("IMAGE", "IMAGE")]),
    "IPAKitStyleComposition": node(
        "IPAdapter Kit: Style & Composition",
        [sock("model", "MODEL"), sock("ipadapter", IPADAPTER), sock("image_style", "IMAGE"),
         sock("image_composition", "IMAGE"), weight("weight_style"), weight("weight_composition"),
         flag("expand_style"), combo("combine_embeds", COMBINE, "average"), *schedule(),
         combo("embeds_scaling", SCALING), sock("image_negative", "IMAGE", True), sock("attn_mask", "MASK", True),
         sock("clip_vision", "CLIP_VISION", True), flag("unfold_batch", optional=True),
         sock("frame_weights", "IPADAPTER_KIT_FRAME_WEIGHTS", True)],
        [("MODEL", "MODEL")]),
    "IPAKitApplyTiled": node(
        "IPAdapter Kit: Apply Tiled",
        [sock("model", "MODEL"), sock("ipadapter", IPADAPTER), sock("image", "IMAGE"), weight(),
         combo("weight_type", WEIGHT_TYPES), combo("mode", TILE_MODES), num("overlap", "FLOAT", 0.15, 0.0, 0.9),
         num("enhance_ratio", "FLOAT", 0.5, 0.0, 2.0), *schedule(), combo("embeds_scaling", SCALING),
         sock("image_negative", "IMAGE", True), sock("clip_vision", "CLIP_VISION", True),
         num("enhance_tiles", "INT", 2, 1, 16, optional=True), num("sharpening", "FLOAT", 0.0, 0.0, 1.0, optional=True),
         combo("combine_embeds", COMBINE, optional=True), flag("unfold_batch", optional=True),
         sock("attn_mask", "MASK", True), sock("frame_weights", "IPADAPTER_KIT_FRAME_WEIGHTS", True)],
        [("MODEL", "MODEL"), ("tiles", "IMAGE"), ("masks", "MASK")]),
    "IPAKitRegionalConditioning": node(
        "IPAdapter Kit: Regional Conditioning",
        [sock("image", "IMAGE"), weight("image_weight"), num("prompt_weight", "FLOAT", 1.0, 0.0, 10.0),
         combo("weight_type", WEIGHT_TYPES), *schedule(), sock("mask", "MASK", True),
         sock("positive", "CONDITIONING", True), sock("negative", "CONDITIONING", True),
         flag("unfold_batch", optional=True), sock("frame_weights", "IPADAPTER_KIT_FRAME_WEIGHTS", True)],
        [("IPADAPTER_PARAMS", PARAMS), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    "IPAKitCombineParams": node(
        "IPAdapter Kit: Combine Params",
        [sock("params_1", PARAMS), sock("params_2", PARAMS), *[sock(f"params_{i}", PARAMS, True) for i in (3, 4, 5)]],
        [("IPADAPTER_PARAMS", PARAMS)]),
    "IPAKitApplyRegions": node(
        "IPAdapter Kit: Apply Regions",
        [sock("model", "MODEL"), sock("ipadapter", IPADAPTER), sock("ipadapter_params", PARAMS),
         combo("combine_embeds", COMBINE), combo("embeds_scaling", SCALING), sock("image_negative", "IMAGE", True),
         sock("clip_vision", "CLIP_VISION", True)],
        [("MODEL", "MODEL")]),
}

# InstantID (the nodes are newer than the converter's other targets: tests/test_migrate.py skips the live check of
# one the server does not register yet).
_INSTANTID_SOCKETS = [sock("model", "MODEL"), sock("positive", "CONDITIONING"), sock("negative", "CONDITIONING"),
                      sock("instantid", IPADAPTER), sock("insightface", INSIGHTFACE),
                      sock("control_net", "CONTROL_NET"), sock("image", "IMAGE")]
_INSTANTID_OPTIONAL = [sock("image_kps", "IMAGE", True), sock("attn_mask", "MASK", True)]
_INSTANTID_OUTPUTS = [("MODEL", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                      ("keypoints", "IMAGE")]
INSTANTID_TARGETS = {
    "IPAKitInstantIDLoader": node("IPAdapter Kit: Load InstantID", [combo("instantid_file", (), dynamic=True)],
                                  [("INSTANTID", IPADAPTER)]),
    "IPAKitFaceKeypoints": node("IPAdapter Kit: Face Keypoints",
                                [sock("insightface", INSIGHTFACE), sock("image", "IMAGE")], [("keypoints", "IMAGE")]),
    "IPAKitApplyInstantID": node(
        "IPAdapter Kit: Apply InstantID",
        [*_INSTANTID_SOCKETS, num("weight", "FLOAT", 0.8, 0.0, 5.0), *schedule(), *_INSTANTID_OPTIONAL],
        _INSTANTID_OUTPUTS),
    "IPAKitApplyInstantIDAdvanced": node(
        "IPAdapter Kit: Apply InstantID (advanced)",
        [*_INSTANTID_SOCKETS, num("ip_weight", "FLOAT", 0.8, 0.0, 3.0), num("cn_strength", "FLOAT", 0.8, 0.0, 10.0),
         *schedule(), num("noise", "FLOAT", 0.0, 0.0, 1.0), combo("combine_embeds", INSTANTID_COMBINE),
         *_INSTANTID_OPTIONAL],
        _INSTANTID_OUTPUTS),
    "IPAKitInstantIDAttention": node(
        "IPAdapter Kit: InstantID Attention",
        [sock("model", "MODEL"), sock("instantid", IPADAPTER), sock("insightface", INSIGHTFACE),
         sock("image", "IMAGE"), num("weight", "FLOAT", 1.0, -1.0, 3.0), *schedule(),
         num("noise", "FLOAT", 0.0, 0.0, 1.0), combo("combine_embeds", INSTANTID_COMBINE),
         sock("attn_mask", "MASK", True)],
        [("MODEL", "MODEL"), ("face_tokens", FACE_TOKENS)]),
    "IPAKitInstantIDControlNet": node(
        "IPAdapter Kit: InstantID ControlNet",
        [sock("face_tokens", FACE_TOKENS), sock("control_net", "CONTROL_NET"), sock("image_kps", "IMAGE"),
         sock("positive", "CONDITIONING"), sock("negative", "CONDITIONING"),
         num("strength", "FLOAT", 1.0, 0.0, 10.0), *schedule(), sock("attn_mask", "MASK", True)],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
}
TARGETS.update(INSTANTID_TARGETS)

# PuLID for SDXL (newer still: tests/test_migrate.py skips the live check of one the server does not register yet).
# Their advanced node's noise goes down to -1 (negative noise); here it is 0..1, so a negative one is reported.
PULID_PROJECTIONS = ("ortho_v2", "ortho", "none")
PULID_METHODS = ("fidelity", "style", "neutral")
EVA_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"  # EVA02-CLIP-L-14-336, the tower PuLID was trained with
FACE_PARSER_FILE = "parsing_bisenet.pth"  # facexlib's BiSeNet face parser
_PULID_SOCKETS = [sock("model", "MODEL"), sock("pulid", IPADAPTER), sock("eva_clip", EVA_CLIP),
                  sock("insightface", INSIGHTFACE), sock("image", "IMAGE")]
PULID_TARGETS = {
    "IPAKitPuLIDLoader": node("IPAdapter Kit: Load PuLID", [combo("pulid_file", (), dynamic=True)],
                              [("PULID", IPADAPTER)]),
    "IPAKitEVACLIPLoader": node(
        "IPAdapter Kit: Load EVA-CLIP (PuLID)",
        [combo("eva_file", (), dynamic=True), combo("parser_file", (), dynamic=True)],
        [("EVA_CLIP", EVA_CLIP)]),
    "IPAKitApplyPuLID": node(
        "IPAdapter Kit: Apply PuLID",
        [*_PULID_SOCKETS, combo("method", PULID_METHODS), weight(), *schedule(), sock("attn_mask", "MASK", True)],
        [("MODEL", "MODEL")]),
    "IPAKitApplyPuLIDAdvanced": node(
        "IPAdapter Kit: Apply PuLID (advanced)",
        [*_PULID_SOCKETS, weight(), combo("projection", PULID_PROJECTIONS), num("fidelity", "INT", 8, 0, 32),
         num("noise", "FLOAT", 0.0, 0.0, 1.0), *schedule(), sock("attn_mask", "MASK", True)],
        [("MODEL", "MODEL")]),
    "IPAKitApplyPuLIDFlux": node(
        "IPAdapter Kit: Apply PuLID (Flux)",
        [*_PULID_SOCKETS, weight(), *schedule(), sock("attn_mask", "MASK", True)],
        [("MODEL", "MODEL")]),
}
TARGETS.update(PULID_TARGETS)

# Per-frame weights (IPAdapter_plus's IPAdapter Weights family).
FRAME_WEIGHTS, WEIGHTS_STRATEGY = "IPADAPTER_KIT_FRAME_WEIGHTS", "IPADAPTER_KIT_WEIGHTS_STRATEGY"
TIMINGS = ("custom", "linear", "ease_in_out", "ease_in", "ease_out", "random")
BATCH_METHODS = ("full batch", "shift batches", "alternate batches")
SCHEDULE_OUTPUTS = [("weights", FRAME_WEIGHTS), ("weights_invert", FRAME_WEIGHTS), ("total_frames", "INT"),
                    ("image_1", "IMAGE"), ("image_2", "IMAGE"), ("weights_strategy", WEIGHTS_STRATEGY)]
FRAME_TARGETS = {
    "IPAKitWeightsSchedule": node(
        "IPAdapter Kit: Weights Schedule",
        [text("weights", "1.0, 0.0", multiline=True), combo("timing", TIMINGS, "linear"),
         *(num(name, "INT", default, 0, 9999) for name, default in (
             ("frames", 0), ("start_frame", 0), ("end_frame", 9999), ("add_starting_frames", 0),
             ("add_ending_frames", 0))),
         combo("method", BATCH_METHODS), sock("image", "IMAGE", True),
         num("seed", "INT", 0, 0, 2**31 - 1, True, control=True)],
        SCHEDULE_OUTPUTS),
    "IPAKitWeightsFromStrategy": node(
        "IPAdapter Kit: Weights From Strategy",
        [sock("weights_strategy", WEIGHTS_STRATEGY), sock("image", "IMAGE", True)], SCHEDULE_OUTPUTS),
    "IPAKitPromptScheduleFromStrategy": node(
        "IPAdapter Kit: Prompt Schedule From Strategy",
        [sock("weights_strategy", WEIGHTS_STRATEGY), text("prompt", multiline=True)], [("prompt_schedule", "STRING")]),
    "IPAKitCombineWeights": node(
        "IPAdapter Kit: Combine Weights",
        [sock("weights_1", FRAME_WEIGHTS), sock("weights_2", FRAME_WEIGHTS)],
        [("weights", FRAME_WEIGHTS), ("count", "INT")]),
}
TARGETS.update(FRAME_TARGETS)


def seeded_timing(value):
    """IPAdapter_plus's random timing drew new values on every run; the Weights Schedule's seed fixes them."""
    if value == "random":
        return value, (NOTE, "timing random: IPAdapter_plus drew new random weights on every run; here the seed "
                             "input (0) fixes them: change it for other values")
    return value, None


# ---------------------------------------------------------------------------------------------------------------
# IPAdapter_plus v2 nodes (what the converter reads): sockets and widgets in the order of their INPUT_TYPES.
def theirs(title, sockets, widgets, outputs, older=(), retired=None):
    """sockets: [(name, type)]; widgets: names in widgets_values order; outputs: [(name, type)] by slot;
    older: the widget layouts of earlier releases, or of forks that keep the node id (told apart by their number of
    values);
    retired: (input names only earlier releases had, why such a node is left as it is)."""
    return {"title": title, "sockets": dict(sockets), "widgets": tuple(widgets), "outputs": [tuple(o) for o in outputs],
            "older": tuple(tuple(layout) for layout in older), "retired": retired}


def retired_layout(kind, input_names):
    """Why a node of type kind saved with these input names cannot be converted (an earlier release's sockets),
    or None."""
    retired = SOURCES[kind].get("retired") if kind in SOURCES else None
    if retired and set(retired[0]) & set(input_names):
        return retired[1]
    return None


def _fits(layout, values):
    """Whether saved widget values fit a layout: as many, and each of the kind its widget holds."""
    if len(layout) != len(values):
        return False
    for name, value in zip(layout, values):
        kind = WIDGET_KINDS.get(name)
        if value is None or kind is None:
            continue
        if kind == "flag" and not isinstance(value, bool):
            return False
        if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return False
        if kind == "text" and not isinstance(value, str):
            return False
    return True


def pick_layout(kind, values):
    """The layout (widget names) saved values of a node type were written with, or None when none fits."""
    return next((layout for layout in widget_layouts(kind) if _fits(layout, values)), None)


def widget_layouts(kind):
    """The widget layouts a node type may have been saved with, current first (core nodes: CORE_WIDGETS)."""
    if kind in SOURCES:
        return (SOURCES[kind]["widgets"], *SOURCES[kind]["older"])
    return (CORE_WIDGETS[kind],) if kind in CORE_WIDGETS else ()


_APPLY_SOCKETS = [("model", "MODEL"), ("ipadapter", "IPADAPTER"), ("image", "IMAGE"), ("image_negative", "IMAGE"),
                  ("attn_mask", "MASK"), ("clip_vision", "CLIP_VISION")]
_FACE_SOCKETS = _APPLY_SOCKETS + [("insightface", "INSIGHTFACE")]
_SC_SOCKETS = [("model", "MODEL"), ("ipadapter", "IPADAPTER"), ("image_style", "IMAGE"),
               ("image_composition", "IMAGE"), ("image_negative", "IMAGE"), ("attn_mask", "MASK"),
               ("clip_vision", "CLIP_VISION")]
_EMBEDS_SOCKETS = [("model", "MODEL"), ("ipadapter", "IPADAPTER"), ("pos_embed", "EMBEDS"), ("neg_embed", "EMBEDS"),
                   ("attn_mask", "MASK"), ("clip_vision", "CLIP_VISION")]
_MODEL = [("MODEL", "MODEL")]
# Their v2 apply nodes of 643cb81 (2024-03-23) until ece285d (2024-03-25) added embeds_scaling.
_BEFORE_SCALING = {
    "IPAdapterAdvanced": ["weight", "weight_type", "combine_embeds", "start_at", "end_at"],
    "IPAdapterFaceID": ["weight", "weight_faceidv2", "weight_type", "combine_embeds", "start_at", "end_at"],
    "IPAdapterTiled": ["weight", "weight_type", "combine_embeds", "start_at", "end_at", "sharpening"],
}
# IPAdapter_plus v1 (IPAdapterPlus.py from 414486b, 2023-09-03, until the v2 rewrite 643cb81, 2024-03-23): layouts
# oldest first. Its weight_type (original / linear / channel penalty) is what embeds_scaling is in v2 and here.
V1_APPLY_LAYOUTS = (["weight"],  # clip_vision_output era (414486b..1cbe9c8); a hidden noise 3497984..1cbe9c8
                    ["weight", "noise"],  # 1cbe9c8 (2023-09-15)
                    ["weight", "noise", "weight_type"],  # d723aeb (2023-11-07)
                    ["weight", "noise", "weight_type", "start_at", "end_at"])  # 1ed4f93 (2023-11-26)
V1_ENCODER_LAYOUTS = (["plus", "noise"],  # 93d973a (2023-09-29): one image
                      # b07f982 (2023-10-12) to 643cb81: up to four images, each with a weight
                      ["ipadapter_plus", "noise", "weight_1", "weight_2", "weight_3", "weight_4"])
_V1_APPLY_SOCKETS = [("ipadapter", "IPADAPTER"), ("clip_vision", "CLIP_VISION"), ("image", "IMAGE"),
                     ("model", "MODEL"), ("attn_mask", "MASK"), ("insightface", "INSIGHTFACE"),
                     ("clip_vision_output", "CLIP_VISION_OUTPUT"), ("mask", "MASK")]
V1_SOURCES = {
    "IPAdapterApply": theirs("Apply IPAdapter", _V1_APPLY_SOCKETS,
                             ["weight", "noise", "weight_type", "start_at", "end_at", "unfold_batch"], _MODEL,
                             older=V1_APPLY_LAYOUTS),
    "IPAdapterApplyFaceID": theirs("Apply IPAdapter FaceID", _V1_APPLY_SOCKETS,
                                   ["weight", "noise", "weight_type", "start_at", "end_at", "faceid_v2", "weight_v2",
                                    "unfold_batch"], _MODEL),
    "IPAdapterApplyEncoded": theirs("Apply IPAdapter from Encoded",
                                    [("ipadapter", "IPADAPTER"), ("embeds", "EMBEDS"), ("model", "MODEL"),
                                     ("attn_mask", "MASK")],
                                    ["weight", "weight_type", "start_at", "end_at", "unfold_batch"], _MODEL,
                                    older=[["weight"], ["weight", "weight_type"],
                                           ["weight", "weight_type", "start_at", "end_at"]]),
    "IPAdapterTilesMasked": theirs("Masked Tiles IPAdapter", _V1_APPLY_SOCKETS[:4],
                                   ["weight", "noise", "weight_type", "start_at", "end_at", "short_side_tiles",
                                    "tile_weight"], _MODEL),
    "IPAdapterCLIPVisionEncode": theirs("IPAdapter CLIP Vision Encode",
                                        [("clip_vision", "CLIP_VISION"), ("image", "IMAGE")], [],
                                        [("CLIP_VISION_OUTPUT", "CLIP_VISION_OUTPUT")]),
    "IPAdapterBatchEmbeds": theirs("Batch Embeds", [("embed1", "EMBEDS"), ("embed2", "EMBEDS")], [],
                                   [("EMBEDS", "EMBEDS")]),
    "InsightFaceLoader": theirs("Load InsightFace", [], ["provider"], [("INSIGHTFACE", "INSIGHTFACE")]),
    "PrepImageForInsightFace": theirs("Prepare Image For InsightFace", [("image", "IMAGE")],
                                      ["crop_position", "sharpening", "pad_around"], [("IMAGE", "IMAGE")]),
}
# Their outputs that carry a weight per frame (a FLOAT list) by slot: linked to a weight input, they go into
# frame_weights here (IPAdapterWeightsFromStrategy returns what IPAdapterWeights does).
PER_FRAME_OUTPUTS = {"IPAdapterWeights": (0, 1), "IPAdapterWeightsFromStrategy": (0, 1),
                     "IPAdapterCombineWeights": (0,)}
FRAME_WEIGHTS_TYPE = "IPADAPTER_KIT_FRAME_WEIGHTS"
# The kind of value each of their widgets holds (a layout is only read when the saved values fit it).
WIDGET_KINDS = {
    **dict.fromkeys(("weight", "noise", "start_at", "end_at", "weight_v2", "weight_faceidv2", "sharpening",
                     "tile_weight", "weight_1", "weight_2", "weight_3", "weight_4", "weight_style",
                     "weight_composition", "enhance_ratio", "lora_strength", "style_boost", "composition_boost",
                     "image_weight", "prompt_weight", "strength"), "number"),
    **dict.fromkeys(("short_side_tiles", "encode_batch_size", "enhance_tiles", "blur", "frames", "start_frame",
                     "end_frame", "add_starting_frames", "add_ending_frames"), "number"),
    **dict.fromkeys(("weight_type", "combine_embeds", "embeds_scaling", "interpolation", "crop_position", "preset",
                     "provider", "model_name", "method", "timing", "layer_weights", "type"), "text"),
    **dict.fromkeys(("unfold_batch", "faceid_v2", "plus", "ipadapter_plus", "pad_around", "add_weight",
                     "expand_style"), "flag"),
}
_LOADER_SOCKETS = [("model", "MODEL"), ("ipadapter", "IPADAPTER")]

SOURCES = {
    "IPAdapter": theirs("IPAdapter", [("model", "MODEL"), ("ipadapter", "IPADAPTER"), ("image", "IMAGE"),
                                      ("attn_mask", "MASK")],
                        ["weight", "start_at", "end_at", "weight_type"], _MODEL,
                        older=[["weight", "start_at", "end_at"]]),  # before 53a06f1 (2024-03-29)
    "IPAdapterAdvanced": theirs("IPAdapter Advanced", _APPLY_SOCKETS,
                                ["weight", "weight_type", "combine_embeds", "start_at", "end_at", "embeds_scaling"],
                                _MODEL, older=[_BEFORE_SCALING["IPAdapterAdvanced"]]),
    "IPAdapterBatch": theirs("IPAdapter Batch (Adv.)", _APPLY_SOCKETS,
                             ["weight", "weight_type", "start_at", "end_at", "embeds_scaling", "encode_batch_size"],
                             _MODEL, older=[["weight", "weight_type", "start_at", "end_at", "embeds_scaling"],
                                            ["weight", "weight_type", "start_at", "end_at"]]),
    "IPAdapterFaceID": theirs("IPAdapter FaceID", _FACE_SOCKETS,
                              ["weight", "weight_faceidv2", "weight_type", "combine_embeds", "start_at", "end_at",
                               "embeds_scaling"], [("MODEL", "MODEL"), ("face_image", "IMAGE")],
                              older=[_BEFORE_SCALING["IPAdapterFaceID"],
                                     # b334a5c to 1f38315 (April 2024): the Mad Scientist's layer_weights lived here
                                     ["weight", "weight_faceidv2", "weight_type", "combine_embeds", "start_at",
                                      "end_at", "embeds_scaling", "layer_weights"]]),
    "IPAdapterFaceIDKolors": theirs("IPAdapter FaceID Kolors", _FACE_SOCKETS,
                                    ["weight", "weight_faceidv2", "weight_kolors", "weight_type", "combine_embeds",
                                     "start_at", "end_at", "embeds_scaling"],
                                    [("MODEL", "MODEL"), ("face_image", "IMAGE")]),
    "IPAAdapterFaceIDBatch": theirs("IPAdapter FaceID Batch", _FACE_SOCKETS,
                                    ["weight", "weight_faceidv2", "weight_type", "combine_embeds", "start_at",
                                     "end_at", "embeds_scaling"], [("MODEL", "MODEL"), ("face_image", "IMAGE")]),
    "IPAdapterTiled": theirs("IPAdapter Tiled", _APPLY_SOCKETS,
                             ["weight", "weight_type", "combine_embeds", "start_at", "end_at", "sharpening",
                              "embeds_scaling"], [("MODEL", "MODEL"), ("tiles", "IMAGE"), ("masks", "MASK")],
                             older=[_BEFORE_SCALING["IPAdapterTiled"]]),
    "IPAdapterTiledBatch": theirs("IPAdapter Tiled Batch", _APPLY_SOCKETS,
                                  ["weight", "weight_type", "start_at", "end_at", "sharpening", "embeds_scaling",
                                   "encode_batch_size"], [("MODEL", "MODEL"), ("tiles", "IMAGE"), ("masks", "MASK")],
                                  older=[["weight", "weight_type", "start_at", "end_at", "sharpening",
                                          "embeds_scaling"],
                                         ["weight", "weight_type", "start_at", "end_at", "sharpening"]]),
    "IPAdapterEmbeds": theirs("IPAdapter Embeds", _EMBEDS_SOCKETS,
                              ["weight", "weight_type", "start_at", "end_at", "embeds_scaling"], _MODEL,
                              older=[["weight", "weight_type", "start_at", "end_at"]]),
    "IPAdapterEmbedsBatch": theirs("IPAdapter Embeds Batch", _EMBEDS_SOCKETS,
                                   ["weight", "weight_type", "start_at", "end_at", "embeds_scaling"], _MODEL),
    "IPAdapterStyleComposition": theirs("IPAdapter Style & Composition SDXL", _SC_SOCKETS,
                                        ["weight_style", "weight_composition", "expand_style", "combine_embeds",
                                         "start_at", "end_at", "embeds_scaling"], _MODEL),
    "IPAdapterStyleCompositionBatch": theirs("IPAdapter Style & Composition Batch SDXL", _SC_SOCKETS,
                                             ["weight_style", "weight_composition", "expand_style", "start_at",
                                              "end_at", "embeds_scaling"], _MODEL),
    "IPAdapterMS": theirs("IPAdapter Mad Scientist", _FACE_SOCKETS,
                          ["weight", "weight_faceidv2", "weight_type", "combine_embeds", "start_at", "end_at",
                           "embeds_scaling", "layer_weights"], _MODEL),
    "IPAdapterClipVisionEnhancer": theirs("IPAdapter ClipVision Enhancer", _APPLY_SOCKETS,
                                          ["weight", "weight_type", "combine_embeds", "start_at", "end_at",
                                           "embeds_scaling", "enhance_tiles", "enhance_ratio"], _MODEL),
    "IPAdapterClipVisionEnhancerBatch": theirs("IPAdapter ClipVision Enhancer Batch", _APPLY_SOCKETS,
                                               ["weight", "weight_type", "start_at", "end_at", "embeds_scaling",
                                                "enhance_tiles", "enhance_ratio", "encode_batch_size"], _MODEL),
    "IPAdapterFromParams": theirs("IPAdapter from Params",
                                  [("model", "MODEL"), ("ipadapter", "IPADAPTER"),
                                   ("ipadapter_params", "IPADAPTER_PARAMS"), ("image_negative", "IMAGE"),
                                   ("clip_vision", "CLIP_VISION")], ["combine_embeds", "embeds_scaling"], _MODEL),
    "IPAdapterPreciseStyleTransfer": theirs("IPAdapter Precise Style Transfer", _APPLY_SOCKETS,
                                            ["weight", "style_boost", "combine_embeds", "start_at", "end_at",
                                             "embeds_scaling"], _MODEL),
    "IPAdapterPreciseStyleTransferBatch": theirs("IPAdapter Precise Style Transfer Batch", _APPLY_SOCKETS,
                                                 ["weight", "style_boost", "combine_embeds", "start_at", "end_at",
                                                  "embeds_scaling"], _MODEL),
    "IPAdapterPreciseComposition": theirs("IPAdapter Precise Composition", _APPLY_SOCKETS,
                                          ["weight", "composition_boost", "combine_embeds", "start_at", "end_at",
                                           "embeds_scaling"], _MODEL),
    "IPAdapterPreciseCompositionBatch": theirs("IPAdapter Precise Composition Batch", _APPLY_SOCKETS,
                                               ["weight", "composition_boost", "combine_embeds", "start_at",
                                                "end_at", "embeds_scaling"], _MODEL),
    "IPAdapterUnifiedLoader": theirs("IPAdapter Unified Loader", _LOADER_SOCKETS, ["preset"],
                                     [("model", "MODEL"), ("ipadapter", "IPADAPTER")]),
    "IPAdapterUnifiedLoaderFaceID": theirs("IPAdapter Unified Loader FaceID", _LOADER_SOCKETS,
                                           ["preset", "lora_strength", "provider"],
                                           [("MODEL", "MODEL"), ("ipadapter", "IPADAPTER")]),
    "IPAdapterUnifiedLoaderCommunity": theirs("IPAdapter Unified Loader Community", _LOADER_SOCKETS, ["preset"],
                                              [("model", "MODEL"), ("ipadapter", "IPADAPTER")]),
    "IPAdapterModelLoader": theirs("IPAdapter Model Loader", [], ["ipadapter_file"], [("IPADAPTER", "IPADAPTER")]),
    "IPAdapterInsightFaceLoader": theirs("IPAdapter InsightFace Loader", [], ["provider", "model_name"],
                                         [("INSIGHTFACE", "INSIGHTFACE")],
                                         older=[["provider"]]),  # before ce9b621 (2024-08-02): buffalo_l
    "IPAdapterEncoder": theirs("IPAdapter Encoder",
                               [("ipadapter", "IPADAPTER"), ("image", "IMAGE"), ("mask", "MASK"),
                                ("clip_vision", "CLIP_VISION"), *[(f"image_{i}", "IMAGE") for i in range(1, 5)]],
                               ["weight"], [("pos_embed", "EMBEDS"), ("neg_embed", "EMBEDS")],
                               older=V1_ENCODER_LAYOUTS),
    "IPAdapterCombineEmbeds": theirs("IPAdapter Combine Embeds",
                                     [(f"embed{i}", "EMBEDS") for i in range(1, 6)], ["method"],
                                     [("EMBEDS", "EMBEDS")]),
    "IPAdapterNoise": theirs("IPAdapter Noise", [("image_optional", "IMAGE")], ["type", "strength", "blur"],
                             [("IMAGE", "IMAGE")]),
    "PrepImageForClipVision": theirs("Prep Image For ClipVision", [("image", "IMAGE")],
                                     ["interpolation", "crop_position", "sharpening"], [("IMAGE", "IMAGE")],
                                     older=[["interpolation", "crop_position", "sharpening", "add_weight"]]),
    "IPAdapterSaveEmbeds": theirs("IPAdapter Save Embeds", [("embeds", "EMBEDS")], ["filename_prefix"], []),
    "IPAdapterLoadEmbeds": theirs("IPAdapter Load Embeds", [], ["embeds"], [("EMBEDS", "EMBEDS")]),
    "IPAdapterRegionalConditioning": theirs(
        "IPAdapter Regional Conditioning",
        [("image", "IMAGE"), ("mask", "MASK"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
        ["image_weight", "prompt_weight", "weight_type", "start_at", "end_at"],
        [("IPADAPTER_PARAMS", "IPADAPTER_PARAMS"), ("POSITIVE", "CONDITIONING"), ("NEGATIVE", "CONDITIONING")]),
    "IPAdapterCombineParams": theirs("IPAdapter Combine Params",
                                     [(f"params_{i}", "IPADAPTER_PARAMS") for i in range(1, 6)], [],
                                     [("IPADAPTER_PARAMS", "IPADAPTER_PARAMS")]),
    "IPAdapterWeights": theirs(
        "IPAdapter Weights", [("image", "IMAGE")],
        ["weights", "timing", "frames", "start_frame", "end_frame", "add_starting_frames", "add_ending_frames",
         "method"],
        [("weights", "FLOAT"), ("weights_invert", "FLOAT"), ("total_frames", "INT"), ("image_1", "IMAGE"),
         ("image_2", "IMAGE"), ("weights_strategy", "WEIGHTS_STRATEGY")],
        older=[["weights", "timing", "frames", "start_frame", "end_frame"]]),  # b5ee09e (2024-04-12) to 57e1caf
    # a subclass of IPAdapterWeights: its outputs too
    "IPAdapterWeightsFromStrategy": theirs(
        "IPAdapter Weights From Strategy", [("weights_strategy", "WEIGHTS_STRATEGY"), ("image", "IMAGE")], [],
        [("weights", "FLOAT"), ("weights_invert", "FLOAT"), ("total_frames", "INT"), ("image_1", "IMAGE"),
         ("image_2", "IMAGE"), ("weights_strategy", "WEIGHTS_STRATEGY")]),
    "IPAdapterPromptScheduleFromWeightsStrategy": theirs(
        "Prompt Schedule From Weights Strategy", [("weights_strategy", "WEIGHTS_STRATEGY")], ["prompt"],
        [("prompt_schedule", "STRING")]),
    "IPAdapterCombineWeights": theirs("IPAdapter Combine Weights", [], ["weights_1", "weights_2"],
                                      [("weights", "FLOAT"), ("count", "INT")]),
}
SOURCES.update(V1_SOURCES)

# The Flux IP-Adapter packs. Their loaders load adapter and image encoder in one node; here those are two nodes.
_XLABS_APPLY = [("model", "MODEL"), ("ip_adapter_flux", "IP_ADAPTER_FLUX"), ("image", "IMAGE")]
_INSTANTX_APPLY = [("model", "MODEL"), ("ipadapter_flux", "IP_ADAPTER_FLUX_INSTANTX"), ("image", "IMAGE")]
FLUX_SOURCES = {
    XLABS: {  # nodes.py (its NODE_CLASS_MAPPINGS; 'ipadatper' and 'smothing_type' are spelt so there)
        "LoadFluxIPAdapter": theirs("Load Flux IPAdatpter", [], ["ipadatper", "clip_vision", "provider"],
                                    [("ipadapterFlux", "IP_ADAPTER_FLUX")]),
        "ApplyFluxIPAdapter": theirs("Apply Flux IPAdapter", _XLABS_APPLY, ["ip_scale"], _MODEL),
        "ApplyAdvancedFluxIPAdapter": theirs("Apply Advanced Flux IPAdapter", _XLABS_APPLY,
                                             ["begin_strength", "end_strength", "smothing_type"], _MODEL),
    },
    INSTANTX: {  # ipadapter_flux.py, ipadapter_flux_advanced.py
        "IPAdapterFluxLoader": theirs("Load IPAdapter Flux Model", [], ["ipadapter", "clip_vision", "provider"],
                                      [("ipadapterFlux", "IP_ADAPTER_FLUX_INSTANTX")]),
        "IPAdapterFluxLoaderAdvanced": theirs("Load IPAdapter Flux Model (Advanced)", [],
                                              ["ipadapter", "clip_vision", "provider"],
                                              [("ipadapterFlux", "IP_ADAPTER_FLUX_INSTANTX")]),
        "ApplyIPAdapterFlux": theirs("Apply IPAdapter Flux Model", _INSTANTX_APPLY,
                                     ["weight", "start_percent", "end_percent"], _MODEL),
        "ApplyIPAdapterFluxAdvanced": theirs("Apply IPAdapter Flux Model (Advanced)", _INSTANTX_APPLY,
                                             ["weight_start", "weight_end", "steps", "start_percent", "end_percent"],
                                             _MODEL),
    },
}
# ComfyUI-InstantX-IPAdapter-SD3 (nodes.py). Its first releases (December 2024) loaded SigLIP in the loader, named
# by repo id, and took the image; since then the apply node takes a core CLIP Vision Encode output.
_SD3_ADAPTER = [("ipadapter", "IP_ADAPTER_SD3_INSTANTX")]
SD3_SOURCES = {
    SD3: {
        "IPAdapterSD3Loader": theirs("Load IPAdapter SD3 Model", [], ["ipadapter", "provider"], _SD3_ADAPTER,
                                     older=[["ipadapter", "clip_vision", "provider"]]),
        "ApplyIPAdapterSD3": theirs("Apply IPAdapter SD3 Model",
                                    [("model", "MODEL"), *_SD3_ADAPTER, ("image_embed", "CLIP_VISION_OUTPUT"),
                                     ("image", "IMAGE")],  # image: first releases
                                    ["weight", "start_percent", "end_percent"], _MODEL),
    },
}
# cubiq's ComfyUI_InstantID (InstantID.py). Its first releases (10-20 February 2024) had an ApplyInstantID that took
# image_features and attn_mask and left the IdentityNet to a core Apply ControlNet node; its Apply InstantID
# Advanced gained noise (27 February 2024), then combine_embeds (29 March 2024).
_INSTANTID_APPLY = [("instantid", "INSTANTID"), ("insightface", "FACEANALYSIS"), ("control_net", "CONTROL_NET"),
                    ("image", "IMAGE"), ("model", "MODEL"), ("positive", "CONDITIONING"),
                    ("negative", "CONDITIONING"), ("image_kps", "IMAGE"), ("mask", "MASK")]
_INSTANTID_OUT = [("MODEL", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")]
_INSTANTID_SCHEDULE = ["start_at", "end_at"]
INSTANTID_FIRST_RELEASE = (
    "saved by ComfyUI_InstantID's first releases (February 2024: an image_features input, the InstantID ControlNet "
    "applied by a separate Apply ControlNet node); rebuild it with IPAdapter Kit: Apply InstantID, which applies "
    "the InstantID ControlNet itself (connect the ControlNet loader to it and, for a pose, the pose picture to "
    "image_kps), then remove that Apply ControlNet node")
INSTANTID_SOURCES = {
    INSTANTID: {
        "InstantIDModelLoader": theirs("Load InstantID Model", [], ["instantid_file"], [("INSTANTID", "INSTANTID")]),
        "InstantIDFaceAnalysis": theirs("InstantID Face Analysis", [], ["provider"],
                                        [("FACEANALYSIS", "FACEANALYSIS")]),
        "FaceKeypointsPreprocessor": theirs("Face Keypoints Preprocessor",
                                            [("faceanalysis", "FACEANALYSIS"), ("image", "IMAGE")], [],
                                            [("IMAGE", "IMAGE")]),
        "ApplyInstantID": theirs("Apply InstantID", _INSTANTID_APPLY, ["weight", *_INSTANTID_SCHEDULE],
                                 _INSTANTID_OUT, retired=(("image_features", "attn_mask"), INSTANTID_FIRST_RELEASE)),
        "ApplyInstantIDAdvanced": theirs(
            "Apply InstantID Advanced", _INSTANTID_APPLY,
            ["ip_weight", "cn_strength", *_INSTANTID_SCHEDULE, "noise", "combine_embeds"], _INSTANTID_OUT,
            older=[["ip_weight", "cn_strength", *_INSTANTID_SCHEDULE, "noise"],
                   ["ip_weight", "cn_strength", *_INSTANTID_SCHEDULE]]),
        "InstantIDAttentionPatch": theirs(
            "InstantID Patch Attention",
            [("instantid", "INSTANTID"), ("insightface", "FACEANALYSIS"), ("image", "IMAGE"), ("model", "MODEL"),
             ("mask", "MASK")],
            ["weight", *_INSTANTID_SCHEDULE, "noise"], [("MODEL", "MODEL"), ("FACE_EMBEDS", "FACE_EMBEDS")]),
        "ApplyInstantIDControlNet": theirs(
            "InstantID Apply ControlNet",
            [("face_embeds", "FACE_EMBEDS"), ("control_net", "CONTROL_NET"), ("image_kps", "IMAGE"),
             ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("mask", "MASK")],
            ["strength", *_INSTANTID_SCHEDULE], [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
    },
}
# cubiq's PuLID_ComfyUI (pulid.py). Its widgets kept one layout from its first release (8 May 2024, ApplyPulid;
# ApplyPulidAdvanced since 13 May 2024) to its last (commit 4e1fd40): later releases only added attn_mask (a socket)
# and providers. Its EVA-CLIP loader has no widget: it downloaded EVA02-CLIP-L-14-336 itself.
_PULID_APPLY = [("model", "MODEL"), ("pulid", "PULID"), ("eva_clip", "EVA_CLIP"), ("face_analysis", "FACEANALYSIS"),
                ("image", "IMAGE"), ("attn_mask", "MASK")]
PULID_SOURCES = {
    PULID: {
        "PulidModelLoader": theirs("Load PuLID Model", [], ["pulid_file"], [("PULID", "PULID")]),
        "PulidInsightFaceLoader": theirs("Load InsightFace (PuLID)", [], ["provider"],
                                         [("FACEANALYSIS", "FACEANALYSIS")]),
        "PulidEvaClipLoader": theirs("Load Eva Clip (PuLID)", [], [], [("EVA_CLIP", "EVA_CLIP")]),
        "ApplyPulid": theirs("Apply PuLID", _PULID_APPLY, ["method", "weight", "start_at", "end_at"], _MODEL),
        "ApplyPulidAdvanced": theirs("Apply PuLID Advanced", _PULID_APPLY,
                                     ["weight", "projection", "fidelity", "noise", "start_at", "end_at"], _MODEL),
    },
}
# balazik's ComfyUI-PuLID-Flux (pulidflux.py). Its ApplyPulidFlux kept one layout through all its commits (eecd526 to
# a80912f, October 2024); attn_mask is declared but unused there ("TODO: Add masking support!"). Forks keep the
# node ids: sipie800's ComfyUI-PuLID-Flux-Enhanced adds the fusion widgets (since its first commit, 12 October 2024)
# and a prior_image socket (28 October 2024); lldacing's ComfyUI_PuLID_Flux_ll adds an options socket (its face
# choice, from PulidFluxOptions) and applies attn_mask. Their InsightFace loader always loads antelopev2 (det_size
# 640); their EVA-CLIP loader has no widget (it downloads EVA02-CLIP-L-14-336, facexlib its face parser).
PULID_FLUX_FUSION = ("fusion", "fusion_weight_max", "fusion_weight_min", "train_step", "use_gray")
_PULID_FLUX_APPLY = [("model", "MODEL"), ("pulid_flux", "PULIDFLUX"), ("eva_clip", "EVA_CLIP"),
                     ("face_analysis", "FACEANALYSIS"), ("image", "IMAGE"), ("attn_mask", "MASK"),
                     ("prior_image", "IMAGE"), ("options", "OPTIONS")]  # the last two: forks only
PULID_FLUX_SOURCES = {
    PULID_FLUX: {
        "PulidFluxModelLoader": theirs("Load PuLID Flux Model", [], ["pulid_file"], [("PULIDFLUX", "PULIDFLUX")]),
        "PulidFluxInsightFaceLoader": theirs("Load InsightFace (PuLID Flux)", [], ["provider"],
                                             [("FACEANALYSIS", "FACEANALYSIS")]),
        "PulidFluxEvaClipLoader": theirs("Load Eva Clip (PuLID Flux)", [], [], [("EVA_CLIP", "EVA_CLIP")]),
        "ApplyPulidFlux": theirs("Apply PuLID Flux", _PULID_FLUX_APPLY, ["weight", "start_at", "end_at"], _MODEL,
                                 older=[["weight", "start_at", "end_at", *PULID_FLUX_FUSION]]),  # the Enhanced fork
    },
}
# Core nodes whose widgets the converter reads (widgets_values order).
CORE_WIDGETS = {"CLIPVisionEncode": ("crop",), "ModelSamplingSD3": ("shift",)}
PACK_OF = dict.fromkeys(SOURCES, PLUS)  # source node type -> its pack (for the report)
for _pack, _nodes in {**FLUX_SOURCES, **SD3_SOURCES, **INSTANTID_SOURCES, **PULID_SOURCES,
                      **PULID_FLUX_SOURCES}.items():
    SOURCES.update(_nodes)
    PACK_OF.update(dict.fromkeys(_nodes, _pack))

# Samplers that run the model's blocks themselves, outside ComfyUI's model patches (the adapters here are patches):
# one fed by a converted node is reported.
PATCH_BLIND_SAMPLERS = {
    "XlabsSampler": "it runs the Flux blocks itself, outside ComfyUI's model patches, so the IP-Adapter of node(s) "
                    "{nodes} has no effect through it: sample with KSampler or SamplerCustomAdvanced (FluxGuidance "
                    "sets the guidance)",
}

# IPAdapter_plus nodes with no counterpart here (yet): left as they are and reported with the reason.
NOT_MAPPED = {
}
# The extra nodes of lldacing's ComfyUI_PuLID_Flux_ll (a fork of ComfyUI-PuLID-Flux; its four nodes convert).
PULID_FLUX_NOT_MAPPED = {
    "PulidFluxOptions": "ComfyUI_PuLID_Flux_ll's choice of face (order, index, align mode) is not an option here: "
                        "IPAdapter Kit: Apply PuLID (Flux) uses the largest face of each photo; crop the photo to "
                        "the face you want",
    "PulidFluxFaceDetector": "ComfyUI_PuLID_Flux_ll's face preview: IPAdapter Kit: Face Crops shows the faces found "
                             "(the largest of each photo)",
    "FixPulidFluxPatch": "ComfyUI_PuLID_Flux_ll's repair of its own model patch; IPAdapter Kit: Apply PuLID (Flux) "
                         "needs none: link the model going into this node to where its output went, then delete it",
}
NOT_MAPPED.update(PULID_FLUX_NOT_MAPPED)


# ---------------------------------------------------------------------------------------------------------------
# Value translations: value -> (new value, None) or (new value, (level, message)).
LOSSY, NOTE = "lossy", "note"


def simple_weight_type(value):
    """The simple IPAdapter node's three choices, as its apply function reads them."""
    if str(value).startswith("style"):
        return "style transfer", None
    if value == "prompt is more important":
        return "ease out", None
    return "linear", None


TRUE_LANCZOS = "lanczos"  # PIL's Lanczos, once IPAdapter Kit: Prep Image offers it
PLUS_INTERPOLATION = {"LANCZOS": "lanczos (antialiased bicubic)", "BICUBIC": "bicubic", "BILINEAR": "bilinear",
                      "NEAREST": "nearest", "BOX": "area",
                      # their first PrepImageForClipVision (93d973a, September 2023) resized with torch's modes
                      "bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "area": "area",
                      "nearest-exact": "nearest", "lanczos": "lanczos (antialiased bicubic)"}


def interpolation(value):
    if value in ("LANCZOS", "lanczos") and TRUE_LANCZOS in INTERPOLATIONS:
        return TRUE_LANCZOS, None
    if value in PLUS_INTERPOLATION:
        new = PLUS_INTERPOLATION[value]
        if value in ("BICUBIC", "BILINEAR"):
            return new, (NOTE, f"interpolation {value}: PIL antialiases when shrinking, '{new}' here does not; "
                               "'lanczos (antialiased bicubic)' is the closest to it")
        return new, None
    return "bilinear", (LOSSY, f"interpolation {value!r} has no counterpart; 'bilinear' is used")


PLUS_PROVIDERS = {"ROCM": "ROCm"}  # their spelling -> ours; the others are spelt alike


def provider(value):
    if PLUS_PROVIDERS.get(value, value) in PROVIDERS:
        new = PLUS_PROVIDERS.get(value, value)
        if new != "CPU":
            return new, (NOTE, f"provider {new}: only offered when the installed onnxruntime has it")
        return new, None
    return "CPU", (LOSSY, f"provider {value!r} is not offered by this pack; CPU is used")


COMMUNITY_PRESETS = {"Composition": "COMPOSITION (SD1.5 / SDXL)", "Kolors": "KOLORS PLUS (Kolors only)"}


def community_preset(value):
    """IPAdapter_plus's Community loader presets are unified-loader presets here."""
    if value in COMMUNITY_PRESETS:
        return COMMUNITY_PRESETS[value], None
    return COMMUNITY_PRESETS["Composition"], (LOSSY, f"preset {value!r} is not a Community preset; 'Composition' "
                                                     "is used")


# IPAdapter_plus v1's weight_type is how the weight scales the attention, which its v2 (and this pack) call
# embeds_scaling: 'original' scales the adapter's attention output (= its values, 'V only'), 'linear' its keys and
# values ('K+V'), 'channel penalty' its keys and the mean of its values by weight * channels / 1280.
V1_SCALING = {"original": "V only", "linear": "K+V", "channel penalty": "K+mean(V) w/ C penalty"}


def v1_embeds_scaling(value):
    if value in V1_SCALING:
        return V1_SCALING[value], None
    return "V only", (LOSSY, f"weight_type {value!r} is not one of IPAdapter_plus v1's {list(V1_SCALING)}; "
                             "embeds_scaling 'V only' (their 'original') is used")


def combine_method(value):
    if value in COMBINE:
        return value, None
    return "average", (LOSSY, f"method {value!r} is not available here; 'average' is used")


def repo_id_file(value):
    """The InstantX packs' loaders name their encoder by Hugging Face repo id; here it is a file in
    models/clip_vision."""
    name = str(value)
    if "/" not in name:
        return name, None
    file_name = name.rstrip("/").rsplit("/", 1)[1] + ".safetensors"
    return file_name, (NOTE, f"clip_vision {name!r} is a Hugging Face repo id, not a file: download {name}'s "
                             f"model.safetensors into models/clip_vision as {file_name}")


def embeds_file(value):
    name = str(value)
    stem = name[:-len(".ipadpt")] if name.endswith(".ipadpt") else name.rsplit(".", 1)[0]
    return stem + ".safetensors", (LOSSY, f"{name} is a pickled IPAdapter_plus embeds file, which this pack never "
                                          "loads: encode the reference again and save it with IPAdapter Kit: Save "
                                          f"Embeds, then move the .safetensors file into the input folder "
                                          f"(the widget now names {stem}.safetensors)")


# XLabs' Apply Advanced Flux IPAdapter: a strength per double block (utils.py of x-flux-comfyui), as they compute it.
def _ramp(start, finish, size):
    return [start + (finish - start) * (i / (size - 1)) for i in range(size)]


def xlabs_block_strengths(begin, end, smoothing, count=FLUX_DOUBLE_BLOCKS):
    """Their LinearStrengthModel / FirstHalfStrengthModel / SecondHalfStrengthModel / SigmoidStrengthModel."""
    half = count // 2
    if smoothing == "Linear":
        return _ramp(begin, end, count)
    if smoothing == "First half":
        return _ramp(begin, end, half) + [end] * (count - half)
    if smoothing == "Second half":
        return [begin] * (count - half) + _ramp(begin, end, half)
    if smoothing == "Sigmoid":
        def fade(x, x1, x2):
            return 1 / (1 + math.exp(-(x - (x1 + x2) / 2) * 8 / (x2 - x1)))
        return [begin + (end - begin) * (fade(i, 0, count) - 0.5) for i in range(count)]
    raise ValueError(smoothing)


XLABS_SMOOTHING = ("Linear", "First half", "Second half", "Sigmoid")


def flux_double_block_weights(strengths):
    """This pack's Flux block_weights text: 'd0:<w>, d1:<w>, ...' (3 decimals)."""
    return ", ".join(f"d{i}:{(round(w, 3) or 0.0):.3f}" for i, w in enumerate(strengths))


def instantx_ramp_mean(start, end, steps):
    """Mean of ComfyUI-IPAdapter-Flux's advanced per-step weight: start -> end linearly over `steps` steps."""
    if steps <= 1:
        return end
    ramp = [start + (end - start) * (k - 1) / (steps - 1) for k in range(1, steps + 1)]
    return round(sum(ramp) / len(ramp), 6)


def sd3_schedule_fraction(percent, shift=SD35_SHIFT):
    """start_at / end_at for the SD3 pack's start / end percent, which is 1 - sigma: the fraction ComfyUI's flow
    sampling (time_snr_shift with this shift) turns into that sigma (3 decimals, the widget's step)."""
    if percent <= 0.0 or percent >= 1.0:
        return min(max(float(percent), 0.0), 1.0)
    sigma = 1.0 - percent
    return round(1.0 - sigma / (shift - (shift - 1.0) * sigma), 3)


# ---------------------------------------------------------------------------------------------------------------
ANY = object()  # a dropped widget whose value never changes the result
NOTED = object()  # a dropped widget reported as a note, whatever its value


@dataclass
class Extra:
    """A node the converter adds next to a converted node (their one node is two here), made when a link needs it.

    widgets: our widget -> their widget of the converted node that gives its value (others: the default).
    values: our widget -> translation function, as in Rule.values. what: what it loads, for the report.
    """

    target: str
    widgets: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    what: str = "part of it"
    fixed: dict = field(default_factory=dict)  # our widget -> value
    links: dict = field(default_factory=dict)  # our input -> their inputs of the converted node (first linked feeds it)


@dataclass
class Rule:
    """How one IPAdapter_plus node type becomes one node of this pack.

    rename: their input/widget name -> ours (names not listed keep their name).
    drop: their name -> (harmless values, why it is dropped). A widget whose value is not harmless is reported as
        lossy (ANY: never; NOTED: always as a note). A linked socket is reported as a note with ANY, else as lossy;
        unlinked sockets are harmless (None in the tuple says so).
    fixed: our widget -> value set whatever theirs was.
    values: our widget -> translation function (see above).
    outputs: their output slot -> our slot, or None (dropped; why in output_notes). Default: the same slot.
    lossy / notes: always reported. hooks: names of special steps in convert.py (FaceID wiring, ...).
    variants: [(condition name, key of another rule)]: the first condition that holds picks that rule instead.
    adds: name -> Extra: nodes added next to this one when a hook links to them (their widgets are taken from
        this node's); see the clip_vision_from_loader hook.
    """

    target: str
    rename: dict = field(default_factory=dict)
    drop: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    output_notes: dict = field(default_factory=dict)
    lossy: tuple = ()
    notes: tuple = ()
    hooks: tuple = ()
    variants: tuple = ()
    adds: dict = field(default_factory=dict)


NO_UNFOLD = "it unfolds the batch (reference i on frame i); this node applies every reference to every frame"
ENCODE_BATCH = {"encode_batch_size": ((ANY,), "encode_batch_size only splits the CLIP encoding for memory")}
FACEID_VARIANT = ("faceid_adapter", "faceid")
PIPELINE_INPUT = {"ipadapter": ((None, ANY), "the pipeline input is not needed: loaders here share loaded files")}

RULES = {
    "IPAdapterModelLoader": Rule("IPAKitModelLoader"),
    "IPAdapterUnifiedLoader": Rule("IPAKitUnifiedLoader", drop=PIPELINE_INPUT),
    "IPAdapterUnifiedLoaderCommunity": Rule("IPAKitUnifiedLoader", drop=PIPELINE_INPUT,
                                            values={"preset": community_preset}),
    "IPAdapterUnifiedLoaderFaceID": Rule(
        "IPAKitUnifiedFaceIDLoader", drop=PIPELINE_INPUT, values={"provider": provider},
        fixed={"lora_source": LORA_SOURCES[0]}),
    "IPAdapterInsightFaceLoader": Rule("IPAKitInsightFaceLoader", rename={"model_name": "pack"},
                                       values={"provider": provider}),
    "IPAdapter": Rule("IPAKitApply", values={"weight_type": simple_weight_type},
                      variants=(FACEID_VARIANT, ("attn_mask_linked", "IPAdapter+mask"))),
    "IPAdapter+mask": Rule("IPAKitApplyAdvanced", values={"weight_type": simple_weight_type}),
    "IPAdapter@faceid": Rule("IPAKitApplyFaceID", values={"weight_type": simple_weight_type},
                             hooks=("faceid", "faceidv2_from_weight")),
    "IPAdapterAdvanced": Rule("IPAKitApplyAdvanced", variants=(FACEID_VARIANT,)),
    "IPAdapterAdvanced@faceid": Rule("IPAKitApplyFaceID", hooks=("faceid", "faceidv2_from_weight")),
    "IPAdapterBatch": Rule("IPAKitApplyAdvanced", fixed={"unfold_batch": True}, drop=ENCODE_BATCH,
                           variants=(FACEID_VARIANT,)),
    "IPAdapterBatch@faceid": Rule("IPAKitApplyFaceID", hooks=("faceid", "faceidv2_from_weight"),
                                  fixed={"unfold_batch": True}, drop=ENCODE_BATCH),
    "IPAdapterFaceID": Rule("IPAKitApplyFaceID", hooks=("faceid", "layer_weights"),
                            rename={"layer_weights": "block_weights"}),  # its April 2024 layout had them
    "IPAAdapterFaceIDBatch": Rule("IPAKitApplyFaceID", hooks=("faceid",), fixed={"unfold_batch": True}),
    "IPAdapterFaceIDKolors": Rule("IPAKitApplyFaceID", hooks=("faceid",)),
    "IPAdapterMS": Rule("IPAKitApplyAdvanced", rename={"layer_weights": "block_weights"}, hooks=("layer_weights",),
                        drop={"weight_faceidv2": ((ANY,), "only FaceID Plus v2 adapters use it"),
                              "insightface": ((None,), "only FaceID adapters use it")},
                        variants=(FACEID_VARIANT,)),
    "IPAdapterMS@faceid": Rule("IPAKitApplyFaceID", rename={"layer_weights": "block_weights"},
                               hooks=("faceid", "layer_weights")),
    "IPAdapterPreciseStyleTransfer": Rule(
        "IPAKitApplyAdvanced", rename={"style_boost": "weight_composition"},
        fixed={"weight_type": "style transfer precise"}),
    "IPAdapterPreciseStyleTransferBatch": Rule(
        "IPAKitApplyAdvanced", rename={"style_boost": "weight_composition"},
        fixed={"weight_type": "style transfer precise", "unfold_batch": True}),
    # Theirs: the composition blocks take `weight`, every other block `composition_boost`; ours: the composition
    # blocks take weight_composition and the others `weight`.
    "IPAdapterPreciseComposition": Rule(
        "IPAKitApplyAdvanced", rename={"weight": "weight_composition", "composition_boost": "weight"},
        fixed={"weight_type": "composition precise"}),
    "IPAdapterPreciseCompositionBatch": Rule(
        "IPAKitApplyAdvanced", rename={"weight": "weight_composition", "composition_boost": "weight"},
        fixed={"weight_type": "composition precise", "unfold_batch": True}),
    "IPAdapterStyleComposition": Rule("IPAKitStyleComposition"),
    "IPAdapterStyleCompositionBatch": Rule("IPAKitStyleComposition",
                                           fixed={"combine_embeds": "concat", "unfold_batch": True}),
    # overlap 0: the fewest 256-pixel tiles that cover the reference, as IPAdapter_plus cuts them
    "IPAdapterTiled": Rule("IPAKitApplyTiled", fixed={"mode": TILE_MODES[0], "overlap": 0.0}),
    "IPAdapterTiledBatch": Rule("IPAKitApplyTiled", fixed={"mode": TILE_MODES[0], "overlap": 0.0,
                                                           "unfold_batch": True}, drop=ENCODE_BATCH),
    "IPAdapterClipVisionEnhancer": Rule("IPAKitApplyTiled", fixed={"mode": TILE_MODES[1]}),
    "IPAdapterClipVisionEnhancerBatch": Rule("IPAKitApplyTiled", fixed={"mode": TILE_MODES[1], "unfold_batch": True},
                                             drop=ENCODE_BATCH),
    "IPAdapterEncoder": Rule("IPAKitEncode", outputs={0: 0, 1: None},
                             output_notes={1: "the embeds output here carries its own negative (the same zero / "
                                              "black-image negative IPAdapter_plus's encoder gives)"}),
    "IPAdapterEmbeds": Rule("IPAKitApplyAdvanced", rename={"pos_embed": "embeds"}, hooks=("neg_embed",)),
    "IPAdapterEmbedsBatch": Rule("IPAKitApplyAdvanced", rename={"pos_embed": "embeds"}, hooks=("neg_embed",),
                                 fixed={"unfold_batch": True}),
    "IPAdapterCombineEmbeds": Rule("IPAKitCombineEmbeds", values={"method": combine_method}),
    "IPAdapterSaveEmbeds": Rule("IPAKitSaveEmbeds",
                                notes=("embeds are saved as .safetensors (not IPAdapter_plus's pickled .ipadpt)",)),
    "IPAdapterLoadEmbeds": Rule("IPAKitLoadEmbeds", rename={"embeds": "embeds_file"},
                                values={"embeds_file": embeds_file}),
    "PrepImageForClipVision": Rule(
        "IPAKitPrepImage", values={"interpolation": interpolation}, hooks=("sharpening",)),
    "IPAdapterNoise": Rule(
        "IPAKitNoiseImage", rename={"image_optional": "image"}, hooks=("noise_blur",),
        notes=("the noise is drawn differently (same type and strength, other pixels; seeded by 'seed')",)),
    "IPAdapterRegionalConditioning": Rule("IPAKitRegionalConditioning"),
    "IPAdapterCombineParams": Rule("IPAKitCombineParams"),
    "IPAdapterFromParams": Rule("IPAKitApplyRegions"),
    "IPAdapterWeights": Rule("IPAKitWeightsSchedule", values={"timing": seeded_timing}),
    "IPAdapterWeightsFromStrategy": Rule("IPAKitWeightsFromStrategy"),
    "IPAdapterPromptScheduleFromWeightsStrategy": Rule("IPAKitPromptScheduleFromStrategy"),
    # Their two inputs are FLOAT widgets (lists when linked); here both are schedule sockets.
    "IPAdapterCombineWeights": Rule("IPAKitCombineWeights"),
}
for _kind in ("IPAdapterAdvanced", "IPAdapterBatch", "IPAdapterMS", "IPAdapterEmbeds", "IPAdapterEmbedsBatch"):
    RULES[_kind].hooks += ("precise_weight",)
RULES["IPAdapterInsightFaceLoader"].hooks += ("insightface_pack",)
RULES["IPAdapterEncoder"].variants += (("v1_encoder", "IPAdapterEncoder@v1"),)
RULES["PrepImageForClipVision"].drop["add_weight"] = (
    (False,), "it batched the prepared image twice (two copies of the same reference); connect the image twice "
              "through Image Batch to keep that")

# IPAdapter_plus v1. Its `noise` made the negative reference a distorted copy of the reference (elastic transform of
# strength noise * 3.5, flipped both ways, plus gaussian noise of 0.3 - 0.25 * noise), seeded 0: here an IPAdapter
# Kit: Noise Negative node ('shuffle', strength = noise) of the same image feeds image_negative.
V1_BUFFALO = "buffalo_l"  # the InsightFace pack v1 always loaded
V1_NOISE_NEGATIVE = Extra("IPAKitNoiseImage", {"strength": "noise"}, fixed={"type": "shuffle"},
                          links={"image": ("image", "image_1")}, what="its noise (a noisy negative reference)")
V1_APPLY = {"rename": {"weight_type": "embeds_scaling", "mask": "attn_mask"},
            "values": {"embeds_scaling": v1_embeds_scaling}, "fixed": {"weight_type": "linear"},
            "adds": {"noise": V1_NOISE_NEGATIVE}}
V1_FACEID_HOOKS = ("v1_insightface_socket", "faceid", "v1_faceid_version", "v1_clip_vision_output", "v1_noise",
                   "unfold_batch")
RULES.update({
    "IPAdapterApply": Rule("IPAKitApplyAdvanced", hooks=("v1_clip_vision_output", "v1_noise", "unfold_batch"),
                           variants=(FACEID_VARIANT,), **V1_APPLY),
    "IPAdapterApply@faceid": Rule("IPAKitApplyFaceID", hooks=V1_FACEID_HOOKS, **V1_APPLY),
    "IPAdapterApplyFaceID": Rule("IPAKitApplyFaceID", hooks=V1_FACEID_HOOKS,
                                 **{**V1_APPLY, "rename": {**V1_APPLY["rename"], "weight_v2": "weight_faceidv2"}}),
    "IPAdapterApplyEncoded": Rule("IPAKitApplyAdvanced", hooks=("unfold_batch",),
                                  **{**V1_APPLY, "rename": {"weight_type": "embeds_scaling"}, "adds": {}}),
    "IPAdapterTilesMasked": Rule(
        "IPAKitApplyTiled", hooks=("v1_noise",),
        drop={"short_side_tiles": ((), "their tiles were short_side_tiles 224-pixel squares across the short side "
                                       "plus the whole image; here square tiles follow the long side (overlap 0.15)"),
              "tile_weight": ((), "their tiles' masks had this weight (the whole image 1.0); here each tile acts "
                                  "with the full weight on its part of the picture")},
        **{**V1_APPLY, "rename": {"weight_type": "embeds_scaling"},
           "fixed": {"weight_type": "linear", "mode": TILE_MODES[0]}}),
    # Its output only fed their v1 apply nodes, which take the image and CLIP vision here (hook
    # v1_clip_vision_output); it stays as ComfyUI's own CLIP Vision Encode (the same center crop).
    "IPAdapterCLIPVisionEncode": Rule("CLIPVisionEncode", fixed={"crop": "center"}),
    "IPAdapterBatchEmbeds": Rule("IPAKitCombineEmbeds", fixed={"method": "concat"}),
    "InsightFaceLoader": Rule("IPAKitInsightFaceLoader", values={"provider": provider},
                              fixed={"pack": V1_BUFFALO}),
    "PrepImageForInsightFace": Rule(
        "IPAKitPrepImage", hooks=("sharpening",), fixed={"size": 640, "interpolation": interpolation("LANCZOS")[0]},
        drop={"pad_around": ((False,), "their 580-pixel image inside a 30-pixel white border (it helped InsightFace "
                                       "find faces touching the edge) is a plain 640-pixel image here")}),
    "IPAdapterEncoder@v1": Rule(
        "IPAKitEncode", rename={"image_1": "image"}, hooks=("v1_encoder", "v1_noise"),
        drop={name: ((ANY,), "the adapter here tells plus models apart itself") for name in ("plus", "ipadapter_plus")},
        adds={"noise": V1_NOISE_NEGATIVE}),
})

# The Flux packs. Their adapter files stay where they are (this pack also searches models/xlabs/ipadapters and
# models/ipadapter-flux); their encoder moves to a CLIP vision loader node of its own, linked to each apply node.
PROVIDER_DROP = {"provider": ((NOTED,), "ComfyUI places the models itself (on the GPU when there is one)")}
FLUX_APPLY_HOOKS = ("clip_vision_from_loader",)
ENCODER = "the image encoder it loaded too"
INSTANTX_LOADER = Rule("IPAKitModelLoader", rename={"ipadapter": "ipadapter_file"}, drop=PROVIDER_DROP,
                       adds={"clip_vision": Extra("IPAKitCLIPVisionLoader", {"clip_name": "clip_vision"},
                                                  {"clip_name": repo_id_file}, what=ENCODER)})
INSTANTX_NAMES = {"ipadapter_flux": "ipadapter", "start_percent": "start_at", "end_percent": "end_at"}
RULES.update({
    "LoadFluxIPAdapter": Rule("IPAKitModelLoader", rename={"ipadatper": "ipadapter_file"}, drop=PROVIDER_DROP,
                              adds={"clip_vision": Extra("CLIPVisionLoader", {"clip_name": "clip_vision"},
                                                         what=ENCODER)}),
    "ApplyFluxIPAdapter": Rule("IPAKitApply", rename={"ip_adapter_flux": "ipadapter", "ip_scale": "weight"},
                               hooks=FLUX_APPLY_HOOKS),
    # Their per-double-block strengths become block_weights (times weight 1.0); they average the references' CLIP
    # embeds, as combine_embeds 'average' does.
    "ApplyAdvancedFluxIPAdapter": Rule("IPAKitApplyAdvanced", rename={"ip_adapter_flux": "ipadapter"},
                                       fixed={"weight": 1.0, "combine_embeds": "average"},
                                       hooks=("xlabs_block_strengths", *FLUX_APPLY_HOOKS)),
    "IPAdapterFluxLoader": INSTANTX_LOADER,
    "IPAdapterFluxLoaderAdvanced": INSTANTX_LOADER,
    "ApplyIPAdapterFlux": Rule("IPAKitApply", rename=INSTANTX_NAMES, hooks=FLUX_APPLY_HOOKS),
    "ApplyIPAdapterFluxAdvanced": Rule("IPAKitApply", rename=INSTANTX_NAMES,
                                       hooks=("instantx_weight_ramp", *FLUX_APPLY_HOOKS)),
})

# ComfyUI-InstantX-IPAdapter-SD3. Their adapter file stays in models/ipadapter. The first releases' loader named
# SigLIP (a repo id): it becomes a CLIP vision loader node of its own; later workflows have one already, feeding a
# CLIP Vision Encode node whose image and encoder go straight to the apply node here (it encodes them itself).
RULES.update({
    "IPAdapterSD3Loader": Rule("IPAKitModelLoader", rename={"ipadapter": "ipadapter_file"}, drop=PROVIDER_DROP,
                               adds={"clip_vision": Extra("CLIPVisionLoader", {"clip_name": "clip_vision"},
                                                          {"clip_name": repo_id_file}, what=ENCODER)}),
    "ApplyIPAdapterSD3": Rule("IPAKitApply", hooks=("sd3_reference", "sd3_schedule")),
})

# cubiq's ComfyUI_InstantID. Its adapter files stay in models/instantid, its InsightFace pack in
# models/insightface/models/antelopev2; the IdentityNet ControlNet stays a core ControlNet loader's file.
INSTANTID_MASK = {"mask": "attn_mask"}
RULES.update({
    "InstantIDModelLoader": Rule("IPAKitInstantIDLoader"),
    "InstantIDFaceAnalysis": Rule("IPAKitInsightFaceLoader", values={"provider": provider},
                                  fixed={"pack": INSTANTID_PACK}),
    "FaceKeypointsPreprocessor": Rule("IPAKitFaceKeypoints", rename={"faceanalysis": "insightface"}),
    # Their basic node is their advanced one with ip_weight = cn_strength = weight, noise 0.35 and 'average'; so is
    # the basic node here (tests/test_migrate.py holds it to that).
    "ApplyInstantID": Rule("IPAKitApplyInstantID", rename=INSTANTID_MASK),
    "ApplyInstantIDAdvanced": Rule("IPAKitApplyInstantIDAdvanced", rename=INSTANTID_MASK),
    # Their attention patch always averages several references.
    "InstantIDAttentionPatch": Rule("IPAKitInstantIDAttention", rename=INSTANTID_MASK,
                                    fixed={"combine_embeds": "average"}),
    "ApplyInstantIDControlNet": Rule("IPAKitInstantIDControlNet",
                                     rename={"face_embeds": "face_tokens", **INSTANTID_MASK}),
})

# cubiq's PuLID_ComfyUI (SDXL). Its PuLID file stays in models/pulid, its InsightFace pack in
# models/insightface/models/antelopev2. Its EVA-CLIP loader downloaded the EVA tower and facexlib its face parser;
# here both are files (EVA02_CLIP_L_336_psz14_s6B.pt in models/clip or models/clip_vision, parsing_bisenet.pth in
# models/facexlib). Their apply nodes' widgets carry over by name (their advanced fidelity is the number of zero
# tokens, as here).
EVA_URL = f"https://huggingface.co/QuanSun/EVA-CLIP/resolve/main/{EVA_FILE}"
FACE_PARSER_URL = f"https://github.com/xinntao/facexlib/releases/download/v0.2.0/{FACE_PARSER_FILE}"


def eva_download(pack):
    """The note for a PuLID pack's EVA-CLIP loader, which downloaded what is a file here."""
    return (f"{pack} downloaded the EVA-CLIP tower and the face parser itself (into the Hugging Face cache and "
            f"facexlib's weights folder); here they are files: download {EVA_FILE} ({EVA_URL}) into models/clip and "
            f"{FACE_PARSER_FILE} ({FACE_PARSER_URL}) into models/facexlib")


PULID_EVA_DOWNLOAD = eva_download(PULID)
PULID_FACE = {"face_analysis": "insightface"}
RULES.update({
    "PulidModelLoader": Rule("IPAKitPuLIDLoader"),
    "PulidInsightFaceLoader": Rule("IPAKitInsightFaceLoader", values={"provider": provider},
                                   fixed={"pack": PULID_PACK}),
    "PulidEvaClipLoader": Rule("IPAKitEVACLIPLoader", fixed={"eva_file": EVA_FILE, "parser_file": FACE_PARSER_FILE},
                               notes=(PULID_EVA_DOWNLOAD,)),
    "ApplyPulid": Rule("IPAKitApplyPuLID", rename=PULID_FACE),
    "ApplyPulidAdvanced": Rule("IPAKitApplyPuLIDAdvanced", rename=PULID_FACE),
})

# balazik's ComfyUI-PuLID-Flux and the forks that keep its node ids. Its PuLID file stays in models/pulid (Load PuLID
# reads the SDXL and the Flux releases), its InsightFace pack in models/insightface/models/antelopev2, and its EVA-CLIP
# loader becomes the files, as for PuLID_ComfyUI. start_at / end_at carry over as they are: theirs gate the identity
# on sigma_start >= timestep >= sigma_end with model_sampling.percent_to_sigma(start_at / end_at), and a Flux model's
# timestep is its sigma (ModelSamplingFlux.timestep), which is how start_at / end_at gate here (schedule fractions
# through percent_to_sigma, both ends included).
PULID_DET_SIZE = 640
PULID_FLUX_EVA_DOWNLOAD = eva_download(PULID_FLUX)
PULID_FLUX_MASK = (
    "attn_mask: ComfyUI-PuLID-Flux took the mask but never applied it (the identity acted on the whole picture; its "
    "fork ComfyUI_PuLID_Flux_ll applies it); here it limits where the identity acts: remove the link to get their "
    "picture")
PULID_FLUX_APPLY = {
    "rename": {"pulid_flux": "pulid", **PULID_FACE},
    "hooks": ("pulid_flux_fusion",),
    "drop": {
        "prior_image": ((None,), "ComfyUI-PuLID-Flux-Enhanced added its photo to the references (and trained "
                                 "'train_weight' towards it); to keep it as a reference, batch it with the image input "
                                 "(Image Batch)"),
        "options": ((None,), "ComfyUI_PuLID_Flux_ll's choice of face (PulidFluxOptions) is not an option here: the "
                             "largest face of each photo is used (their default: large-small, index 0)")},
}
RULES.update({
    "PulidFluxModelLoader": Rule("IPAKitPuLIDLoader"),
    "PulidFluxInsightFaceLoader": Rule("IPAKitInsightFaceLoader", values={"provider": provider},
                                       fixed={"pack": PULID_PACK, "det_size": PULID_DET_SIZE}),
    "PulidFluxEvaClipLoader": Rule("IPAKitEVACLIPLoader",
                                   fixed={"eva_file": EVA_FILE, "parser_file": FACE_PARSER_FILE},
                                   notes=(PULID_FLUX_EVA_DOWNLOAD,)),
    "ApplyPulidFlux": Rule("IPAKitApplyPuLIDFlux", variants=(("attn_mask_linked", "ApplyPulidFlux+mask"),),
                           **PULID_FLUX_APPLY),
    "ApplyPulidFlux+mask": Rule("IPAKitApplyPuLIDFlux", notes=(PULID_FLUX_MASK,), **PULID_FLUX_APPLY),
})
