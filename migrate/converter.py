"""The converter: plans each source node's replacement from mapping.RULES, then rewrites the graph.

Source nodes are those of ComfyUI_IPAdapter_plus, of the Flux IP-Adapter packs (x-flux-comfyui,
ComfyUI-IPAdapter-Flux), of the SD3.5 one (ComfyUI-InstantX-IPAdapter-SD3), of ComfyUI_InstantID, of PuLID_ComfyUI and
of ComfyUI-PuLID-Flux (and its forks).
Both formats go through the same plan: UI workflows (nodes / links / widgets_values, also their subgraphs) and API
prompts ({id: {class_type, inputs}}). Node ids, positions, sizes, titles, colours and modes are kept; nodes a rule adds
(the Flux and SD3 loaders' CLIP vision loader) get new ids.
IPAdapter_plus's v1 nodes (before its 2024-03-23 rewrite) and every release's widget layouts convert too.
"""
import copy
import json
from collections import namedtuple
from dataclasses import dataclass, field

from . import mapping
from .mapping import ANY, LOSSY, NOTE, NOTED, PACK_OF, PLUS, RULES, SOURCES, TARGETS

UNMAPPED = "unmapped"
REROUTE = "Reroute"
CONTROL_DEFAULT = "fixed"


@dataclass
class Conversion:
    """The converted workflow, the report lines, and whether everything mapped without loss."""

    workflow: dict
    report: list
    unmapped: int = 0
    lossy: int = 0

    @property
    def exit_code(self):
        """0 when every source node mapped without a lossy change, else 2."""
        return 2 if self.unmapped or self.lossy else 0


# The node a plan adds as `name` (mapping.Rule.adds) next to the converted node `owner`: an origin in add_links.
Added = namedtuple("Added", "owner name")


@dataclass
class Plan:
    """What one source node becomes."""

    source: str
    target: str
    widgets: dict  # our widget name -> value (every widget of the target)
    input_map: dict = field(default_factory=dict)  # their linked input name -> our input name, or None (dropped)
    add_links: dict = field(default_factory=dict)  # our input name -> (source node id or Added, source slot)
    rule_key: str = ""  # the RULES entry used (a variant's key when one applied)
    extras: dict = field(default_factory=dict)  # Rule.adds name -> (target, {widget: value}, what) it may add

    def output_slot(self, slot):
        """Our output slot for their output slot, or None when that output has no counterpart."""
        rule = RULES[self.rule_key]
        if slot in rule.outputs:
            return rule.outputs[slot]
        return slot if slot < len(TARGETS[self.target]["outputs"]) else None


class Report:
    def __init__(self):
        self.lines = []
        self.counts = {UNMAPPED: 0, LOSSY: 0, NOTE: 0}

    def add(self, level, where, message):
        line = f"{level}: {where}: {message}"
        if line not in self.lines:
            self.lines.append(line)
            self.counts[level] = self.counts.get(level, 0) + 1


def target_widgets(target):
    return [spec for spec in TARGETS[target]["inputs"] if spec.get("widget")]


def target_sockets(target):
    return [spec for spec in TARGETS[target]["inputs"] if not spec.get("widget")]


def target_spec(target, name):
    for spec in TARGETS[target]["inputs"]:
        if spec["name"] == name:
            return spec
    return None


def checked(spec, value):
    """(value fitted to our input spec, problem or None)."""
    kind = spec["type"]
    if kind in ("FLOAT", "INT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return spec["default"], f"{value!r} is not a number; the default {spec['default']!r} is used"
        if kind == "INT" and value != int(value):
            return int(round(value)), f"{value!r} rounded to {int(round(value))}"
        value = int(value) if kind == "INT" else value
        fitted = min(max(value, spec["min"]), spec["max"])
        if fitted != value:
            return fitted, f"{value!r} is outside {spec['min']}..{spec['max']} here; {fitted!r} is used"
        return value, None
    if kind == "COMBO":
        if spec.get("dynamic") or value in spec["options"]:
            return value, None
        return spec["default"], f"{value!r} is not one of {list(spec['options'])}; {spec['default']!r} is used"
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return bool(value), f"{value!r} read as {bool(value)}"
    if kind == "STRING" and not isinstance(value, str):
        return str(value), None
    return value, None


# ---------------------------------------------------------------------------------------------------------------
class NodeView:
    """One node of either format, seen the same way: type, widget values by name, linked inputs by name."""

    def __init__(self, graph, node_id, kind, widgets, linked, problem=None):
        self.graph, self.id, self.type = graph, node_id, kind
        self.widgets = widgets  # their widget name -> value
        self.linked = linked  # their input name -> (source id, source slot)
        self.problem = problem  # why the node cannot be read (widget layout mismatch), or None
        self.touches = set()  # the source packs whose socket types it has (unknown nodes are reported then)

    def source(self, name):
        """(node id, slot) feeding input `name`, through reroutes, or None."""
        if name not in self.linked:
            return None
        return self.graph.follow(*self.linked[name])


def _condition(view, name):
    if name == "attn_mask_linked":
        return "attn_mask" in view.linked
    if name == "faceid_adapter":
        return is_faceid_adapter(view)
    if name == "v1_encoder":
        return "noise" in view.widgets
    raise KeyError(name)


def is_faceid_adapter(view):
    """Whether the adapter reaching this node is a FaceID one (their apply nodes take both kinds)."""
    if "insightface" in view.linked:
        return True
    src = view.source("ipadapter")
    if src is None:
        return False
    kind = view.graph.type_of(src[0])
    if kind == "IPAdapterUnifiedLoaderFaceID":
        return True
    if kind == "IPAdapterModelLoader":
        return "faceid" in str(view.graph.widgets_of(src[0]).get("ipadapter_file", "")).lower()
    return False


def plan_node(view, report, where):
    """The Plan for one source node (a variant rule when its condition holds); findings go to the report."""
    key = view.type
    rule = RULES[key]
    for condition, variant in rule.variants:
        if _condition(view, condition):
            key = variant if variant in RULES else f"{view.type}@{variant}"
            rule = RULES[key]
            break
    target = rule.target
    here = f"{where} {view.type} -> {target}"
    report.add("mapped", where, f"{view.type} -> {target}")
    widgets = {spec["name"]: spec["default"] for spec in target_widgets(target)}
    plan = Plan(source=view.type, target=target, widgets=widgets, rule_key=key)
    # Their widgets a hook or an added node reads instead of a widget here.
    taken = {name for hook in rule.hooks for name in HOOK_WIDGETS.get(hook, ())}
    taken |= {theirs for extra in rule.adds.values() for theirs in extra.widgets.values()}

    for name, value in view.widgets.items():
        ours = rule.rename.get(name, name)
        if name in taken:
            continue
        if name in rule.drop:
            harmless, why = rule.drop[name]
            if NOTED in harmless:
                report.add(NOTE, here, f"{name} {value!r} dropped: {why}")
            elif ANY not in harmless and value not in harmless:
                report.add(LOSSY, here, f"{name} {value!r} dropped: {why}")
            continue
        spec = target_spec(target, ours)
        if spec is None or not spec.get("widget"):
            report.add(LOSSY, here, f"{name} {value!r} has no counterpart and was dropped")
            continue
        if ours in rule.values:
            value, message = rule.values[ours](value)
            if message:
                report.add(message[0], here, message[1])
        value, problem = checked(spec, value)
        if problem:
            report.add(LOSSY, here, f"{ours}: {problem}")
        widgets[ours] = value
    for ours, value in rule.fixed.items():
        widgets[ours] = value
    for extra_name, extra in rule.adds.items():
        values = {spec["name"]: spec["default"] for spec in target_widgets(extra.target)}
        values.update(extra.fixed)
        for ours, theirs in extra.widgets.items():
            if theirs not in view.widgets:
                continue
            value = view.widgets[theirs]
            if ours in extra.values:
                value, message = extra.values[ours](value)
                if message:
                    report.add(message[0], here, message[1])
            value, problem = checked(target_spec(extra.target, ours), value)
            if problem:
                report.add(LOSSY, here, f"{theirs} (now {ours} of {extra.target}): {problem}")
            values[ours] = value
        inputs = {}
        for ours, candidates in extra.links.items():
            linked = [view.source(theirs) for theirs in candidates if theirs in view.linked]
            if linked:
                inputs[ours] = linked[0]
        plan.extras[extra_name] = (extra.target, values, extra.what, inputs)

    owned = {name for hook in rule.hooks for name in HOOK_INPUTS.get(hook, ())}
    for name in view.linked:
        ours = rule.rename.get(name, name)
        if name in owned:
            continue
        if name in taken:
            plan.input_map[name] = None
            report.add(LOSSY, here, f"link to {name} removed: its value saved in the workflow "
                                    f"({view.widgets.get(name)!r}) was used")
            continue
        if name in rule.drop:
            harmless, why = rule.drop[name]
            plan.input_map[name] = None
            report.add(NOTE if ANY in harmless else LOSSY, here, f"link to {name} removed: {why}")
            continue
        if target_spec(target, ours) is None:
            plan.input_map[name] = None
            report.add(LOSSY, here, f"link to {name} removed: the node here has no such input")
            continue
        plan.input_map[name] = ours
        if ours == "weight" and frame_weights_source(view, name):
            retarget_frame_weights(view, plan, report, here, name)
            continue
        if ours in rule.values:
            report.add(NOTE, here, f"{ours} comes from a link: its values are not translated, check them")

    for hook in rule.hooks:
        HOOKS[hook](view, plan, report, here)
    for message in rule.lossy:
        report.add(LOSSY, here, message)
    for message in rule.notes:
        report.add(NOTE, here, message)
    return plan


FRAME_WEIGHTS = "frame_weights"


def frame_weights_source(view, name):
    """Whether input `name` is fed a weight per frame: an output of theirs that carries a FLOAT list
    (mapping.PER_FRAME_OUTPUTS), or a frame-weights output of this pack."""
    src = view.source(name)
    if src is None:
        return False
    kind, slot = view.graph.type_of(src[0]), src[1]
    if slot in mapping.PER_FRAME_OUTPUTS.get(kind, ()):
        return True
    outputs = (TARGETS.get(kind) or {}).get("outputs") or []
    return isinstance(slot, int) and 0 <= slot < len(outputs) and outputs[slot][1] == mapping.FRAME_WEIGHTS_TYPE


def retarget_frame_weights(view, plan, report, here, name):
    """Their weight widget turned into an input and fed a FLOAT list (a weight per frame); here that list goes into
    frame_weights, which multiplies a weight of 1.0."""
    spec = target_spec(plan.target, FRAME_WEIGHTS)
    if spec is None or spec.get("widget"):
        plan.input_map[name] = None
        report.add(LOSSY, here, f"link to {name} removed: it brings a weight per frame, and {plan.target} has no "
                                f"{FRAME_WEIGHTS} input")
        return
    plan.input_map[name] = FRAME_WEIGHTS
    if "weight" in plan.widgets:
        plan.widgets["weight"] = 1.0
    report.add(NOTE, here, f"the per-frame weights linked to {name} now go into {FRAME_WEIGHTS} (weight 1.0)")


# ---------------------------------------------------------------------------------------------------------------
# Special steps named by RULES[...].hooks.
def link_encoder_inputs(view, plan, report, here, encoder_id):
    """Link the image and clip_vision of the CLIP-vision encode node encoder_id to this node (which encodes itself),
    unless this node has them already."""
    encoder = view.graph.inputs_of(encoder_id)
    for name in ("image", "clip_vision"):
        if name in plan.input_map.values():
            continue
        if name in encoder:
            plan.add_links[name] = view.graph.follow(*encoder[name])
        else:
            report.add(LOSSY, here, f"{name} is not connected: the {name} input of node {encoder_id} "
                                    f"{view.graph.type_of(encoder_id)}, which would give it, is not linked")


def hook_faceid(view, plan, report, here):
    """insightface from the unified FaceID loader's new INSIGHTFACE output; Plus v1/v2 and unnorm from the source."""
    src = view.source("ipadapter")
    kind = view.graph.type_of(src[0]) if src else None
    settings = view.graph.widgets_of(src[0]) if src else {}
    if kind == "IPAdapterUnifiedLoaderFaceID":
        preset = str(settings.get("preset", ""))
        plan.widgets["plus_version"] = "v2 (shortcut)" if preset == "FACEID PLUS V2" else "v1"
        if "UNNORM" in preset:
            plan.widgets["embeddings"] = "unnormalized (portrait unnorm)"
    elif kind == "IPAdapterModelLoader":
        name = str(settings.get("ipadapter_file", "")).lower()
        plan.widgets["plus_version"] = "v2 (shortcut)" if "plusv2" in name else "v1"
        if "unnorm" in name:
            plan.widgets["embeddings"] = "unnormalized (portrait unnorm)"
    if "insightface" in view.linked or "insightface" in plan.input_map.values():
        return
    if kind == "IPAdapterUnifiedLoaderFaceID" and src[1] == 1:
        plan.add_links["insightface"] = (src[0], 2)
        report.add(NOTE, here, f"insightface connected to the INSIGHTFACE output of node {src[0]} (the unified "
                               "FaceID loader here returns it separately)")
    else:
        report.add(LOSSY, here, "insightface is not connected and no unified FaceID loader feeds this node: connect "
                                "IPAdapter Kit: Load InsightFace to it")


def hook_faceidv2_from_weight(view, plan, report, here):
    """Their non-FaceID apply nodes give FaceID Plus v2 a shortcut weight of twice the weight."""
    value = plan.widgets["weight"] * 2
    spec = target_spec(plan.target, "weight_faceidv2")
    plan.widgets["weight_faceidv2"], problem = checked(spec, value)
    if problem:
        report.add(LOSSY, here, f"weight_faceidv2 (twice the weight, as IPAdapter_plus uses): {problem}")


def hook_layer_weights(view, plan, report, here):
    text = str(plan.widgets.get("block_weights") or "")
    if text.strip() and plan.widgets.get("weight_type") in ("style transfer precise", "composition precise"):
        report.add(LOSSY, here, f"weight_type {plan.widgets['weight_type']!r} with layer_weights: the layer weights "
                                "are used, without the 'precise' negative-pass trick")


def hook_neg_embed(view, plan, report, here):
    if "neg_embed" not in view.linked:
        return
    plan.input_map["neg_embed"] = None
    src = view.source("neg_embed")
    if src and view.graph.type_of(src[0]) == "IPAdapterEncoder" and src[1] == 1:
        report.add(NOTE, here, "link to neg_embed removed: the embeds carry the encoder's own negative")
    else:
        report.add(LOSSY, here, "neg_embed cannot be carried: the embeds input brings its own negative (give "
                                "IPAdapter Kit: Encode an image_negative instead)")


def hook_sharpening(view, plan, report, here):
    value = plan.widgets.get("sharpening") or 0
    if value > 0:
        report.add(NOTE, here, f"sharpening {value}: an unsharp mask here, contrast-adaptive sharpening in "
                               "IPAdapter_plus (similar, not identical)")


def link_loader_encoder(view, plan):
    """Link clip_vision to the encoder node added for the loader feeding ipadapter, if it named one; whether linked."""
    theirs = next((name for name, ours in plan.input_map.items() if ours == "ipadapter"), None)
    src = view.source(theirs) if theirs else None
    rule = RULES.get(view.graph.type_of(src[0])) if src else None
    extra = rule.adds.get("clip_vision") if rule is not None and src[1] == 0 else None
    if extra is None or not set(extra.widgets.values()) <= set(view.graph.widgets_of(src[0])):
        return False
    plan.add_links["clip_vision"] = (Added(src[0], "clip_vision"), 0)
    return True


def hook_clip_vision_from_loader(view, plan, report, here):
    """The Flux packs' loaders also loaded the image encoder: link the CLIP vision loader added for the loader."""
    if "clip_vision" in plan.input_map.values() or link_loader_encoder(view, plan):
        return
    report.add(LOSSY, here, "clip_vision is not connected and no Flux IP-Adapter loader feeds this node: "
                            "connect a Load CLIP Vision node (IPAdapter Kit: Load CLIP Vision for InstantX's "
                            "SigLIP) to it")


SD3_SIGLIP = "connect a Load CLIP Vision node with SigLIP (sigclip_vision_patch14_384.safetensors) to clip_vision"


def hook_sd3_reference(view, plan, report, here):
    """The SD3 pack's reference: a CLIP Vision Encode output (its image and encoder come here instead), or, in its
    first releases, the image and the loader's SigLIP."""
    if "image_embed" not in view.linked:
        if link_loader_encoder(view, plan):
            report.add(NOTE, here, "their first releases resized the whole reference to 384x384; here it is "
                                   "center-cropped to a square first (the same for square references)")
        else:
            report.add(LOSSY, here, f"no loader of theirs that named SigLIP feeds this node: {SD3_SIGLIP}")
        return
    plan.input_map["image_embed"] = None
    src = view.source("image_embed")
    kind = view.graph.type_of(src[0])
    if kind != "CLIPVisionEncode":
        report.add(LOSSY, here, f"link to image_embed removed: it comes from node {src[0]} ({kind}), not from a CLIP "
                                f"Vision Encode node: connect the reference image to image and {SD3_SIGLIP}")
        return
    link_encoder_inputs(view, plan, report, here, src[0])
    crop = view.graph.widgets_of(src[0]).get("crop", "center")
    if crop != "center":
        report.add(LOSSY, here, f"crop {crop!r} of node {src[0]} CLIPVisionEncode: the reference is center-cropped "
                                "here; make it square first to keep all of it")
    report.add(NOTE, here, f"image_embed came from node {src[0]} CLIPVisionEncode: its image and clip_vision are "
                           f"connected here instead (this node encodes the reference itself); node {src[0]} is left "
                           "as it is (delete it if nothing else uses it)")


def model_shift(view):
    """(flow shift, where from) of the model reaching this node: an upstream ModelSamplingSD3's, else SD3.5's."""
    src, seen = view.source("model"), set()
    while src is not None and src[0] not in seen:
        seen.add(src[0])
        if view.graph.type_of(src[0]) == "ModelSamplingSD3":
            shift = view.graph.widgets_of(src[0]).get("shift")
            if isinstance(shift, (int, float)) and not isinstance(shift, bool) and shift > 0:
                return shift, f"node {src[0]} ModelSamplingSD3's"
            break
        link = view.graph.inputs_of(src[0]).get("model")
        src = view.graph.follow(*link) if link else None
    return mapping.SD35_SHIFT, "SD3.5 Large's"


def hook_sd3_schedule(view, plan, report, here):
    """Their start / end percent count in sigma (1 - sigma); start_at / end_at are fractions of the schedule."""
    theirs = [_number(view, name, default, report, here)
              for name, default in (("start_percent", 0.0), ("end_percent", 1.0))]
    shift, where = model_shift(view)
    for ours, value in zip(("start_at", "end_at"), theirs):
        fraction = mapping.sd3_schedule_fraction(value, shift)
        plan.widgets[ours], problem = checked(target_spec(plan.target, ours), fraction)
        if problem:
            report.add(LOSSY, here, f"{ours}: {problem}")
    if any(0.0 < value < 1.0 for value in theirs):
        report.add(NOTE, here, f"start_percent {theirs[0]} / end_percent {theirs[1]} count in 1 - sigma there; here "
                               f"start_at {plan.widgets['start_at']} / end_at {plan.widgets['end_at']} give the same "
                               f"sigmas with {where} shift {shift}")


def _number(view, name, default, report, here):
    value = view.widgets.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        report.add(LOSSY, here, f"{name} {value!r} is not a number; {default!r} is used")
        return default
    return value


def hook_xlabs_block_strengths(view, plan, report, here):
    """x-flux-comfyui's per-double-block strength schedule as Flux block_weights (weight is 1.0)."""
    begin = _number(view, "begin_strength", 0.0, report, here)
    end = _number(view, "end_strength", 1.0, report, here)
    smoothing = view.widgets.get("smothing_type", mapping.XLABS_SMOOTHING[0])
    if smoothing not in mapping.XLABS_SMOOTHING:
        report.add(LOSSY, here, f"smothing_type {smoothing!r} is not one of {list(mapping.XLABS_SMOOTHING)}; "
                                "'Linear' is used")
        smoothing = "Linear"
    strengths = mapping.xlabs_block_strengths(begin, end, smoothing)
    plan.widgets["block_weights"] = mapping.flux_double_block_weights(strengths)


def hook_instantx_weight_ramp(view, plan, report, here):
    """ComfyUI-IPAdapter-Flux's advanced apply ramps the weight per step; here the weight is one number."""
    start = _number(view, "weight_start", 0.0, report, here)
    end = _number(view, "weight_end", 1.0, report, here)
    steps = int(_number(view, "steps", 10, report, here))
    weight, problem = checked(target_spec(plan.target, "weight"), mapping.instantx_ramp_mean(start, end, steps))
    plan.widgets["weight"] = weight
    if start != end and steps > 1:
        report.add(LOSSY, here, f"the weight ramps from {start} to {end} over their first {steps} steps (then stays "
                                f"at {end}); this pack has no per-step weight: weight {weight} (the ramp's mean) "
                                "is used")
    elif problem:
        report.add(LOSSY, here, f"weight: {problem}")


PULID_FLUX_FUSIONS = {  # ComfyUI-PuLID-Flux-Enhanced's ways of joining the photos' identity tokens; here: 'mean'
    "concat": "concatenates the photos' identity tokens", "max": "takes their largest value",
    "norm_id": "weights the photos by their norm", "max_token": "takes each token from the photo with the largest one",
    "auto_weight": "weights the photos by the rank of their norm", "train_weight": "trains the photos' weights"}


def hook_pulid_flux_fusion(view, plan, report, here):
    """ComfyUI-PuLID-Flux-Enhanced's fusion widgets: here the photos' identity tokens are averaged (their 'mean') and
    EVA-CLIP sees the face in gray (their use_gray on); anything else is reported with what is kept."""
    widgets = view.widgets
    fusion = widgets.get("fusion", "mean")
    if fusion == "train_weight" and widgets.get("train_step", 1000) == 0:
        fusion = "mean"  # they average when there is no training step
    if fusion != "mean":
        how = PULID_FLUX_FUSIONS.get(fusion)
        how = f"it {how} when several photos are given" if how else "it is not one of their fusions"
        extra = {"auto_weight": ("fusion_weight_min", "fusion_weight_max"), "train_weight": ("train_step",)}
        with_it = [f"{name} {widgets[name]!r}" for name in extra.get(fusion, ()) if name in widgets]
        dropped = f" (and {', '.join(with_it)})" if with_it else ""
        report.add(LOSSY, here, f"fusion {fusion!r}{dropped} dropped: {how}; here the photos are averaged into one "
                                "identity (their 'mean'; the same for one photo); weight, start_at and end_at are "
                                "kept")
    if widgets.get("use_gray", True) is not True:
        report.add(LOSSY, here, f"use_gray {widgets['use_gray']!r} dropped: EVA-CLIP sees the face in color there; "
                                "here it sees it in gray, as PuLID was trained (their use_gray on)")


PRECISE_TYPES = ("style transfer precise", "composition precise")


def hook_precise_weight(view, plan, report, here):
    """Their precise weight types on a node with a weight_type widget use `weight` for the composition blocks too
    (composition precise: both; style transfer precise: style_boost is None there); here those blocks take
    weight_composition."""
    if plan.widgets.get("weight_type") in PRECISE_TYPES and "weight_composition" in plan.widgets:
        plan.widgets["weight_composition"] = plan.widgets["weight"]


def hook_insightface_pack(view, plan, report, here):
    """Their loader had no model_name before August 2024: it loaded buffalo_l."""
    if "model_name" not in view.widgets:
        plan.widgets["pack"] = mapping.V1_BUFFALO


def hook_noise_blur(view, plan, report, here):
    """Their noise node's blur: carried once Noise Negative has a blur input, else lossy unless 0."""
    value = view.widgets.get("blur", 0)
    spec = target_spec(plan.target, "blur")
    if spec is not None and spec.get("widget"):
        plan.widgets["blur"], problem = checked(spec, value)
        if problem:
            report.add(LOSSY, here, f"blur: {problem}")
    elif value:
        report.add(LOSSY, here, f"blur {value!r} dropped: blur the noise image with an image blur node instead")


def hook_unfold_batch(view, plan, report, here):
    value = view.widgets.get("unfold_batch", False)
    spec = target_spec(plan.target, "unfold_batch")
    if spec is not None and spec.get("widget"):
        plan.widgets["unfold_batch"], _ = checked(spec, value)
    elif value:
        report.add(LOSSY, here, f"unfold_batch {value!r} dropped: {mapping.NO_UNFOLD}")


def hook_v1_insightface_socket(view, plan, report, here):
    """In December 2023 (69e82da to a09f541) v1's FaceID models took InsightFace through the clip_vision socket."""
    src = view.source("clip_vision")
    if src and view.graph.type_of(src[0]) == "InsightFaceLoader" and "insightface" not in view.linked:
        plan.input_map["clip_vision"] = "insightface"
        report.add(NOTE, here, f"clip_vision brought node {src[0]}'s InsightFace (as IPAdapter_plus did in December "
                               "2023): it goes into insightface here")


def hook_v1_faceid_version(view, plan, report, here):
    """IPAdapter_plus v1 used FaceID Plus v2's shortcut only when faceid_v2 was on (IPAdapterApply never did)."""
    if view.widgets.get("faceid_v2", False):
        plan.widgets["plus_version"] = "v2 (shortcut)"
    else:
        plan.widgets["plus_version"] = "v1"


def hook_v1_noise(view, plan, report, here):
    """v1's noise > 0: a Noise Negative node of the same image feeds image_negative (see mapping.V1_NOISE_NEGATIVE)."""
    noise = view.widgets.get("noise", 0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise <= 0:
        return
    spec = target_spec(plan.target, "image_negative")
    extra = plan.extras.get("noise")
    if spec is None or extra is None or "image" not in extra[3] or "image_negative" in plan.input_map.values():
        report.add(LOSSY, here, f"noise {noise!r} dropped: it made a noisy copy of the reference the negative "
                                "image; connect IPAdapter Kit: Noise Negative (shuffle) of the reference to "
                                "image_negative" + ("" if spec else f" of an apply node that has one ({plan.target} "
                                                                    "has none)"))
        return
    plan.add_links["image_negative"] = (Added(view.id, "noise"), 0)
    report.add(NOTE, here, f"noise {noise}: v1 made the negative image an elastically distorted, flipped, noisy copy "
                           "of the reference; here IPAdapter Kit: Noise Negative 'shuffle' (strength = noise) of the "
                           "same image (similar, not identical)")


def hook_v1_clip_vision_output(view, plan, report, here):
    """Their first IPAdapterApply took a CLIP vision output (IPAdapterCLIPVisionEncode): here it encodes the image
    itself, so that node's image and clip_vision come here."""
    if "clip_vision_output" not in view.linked:
        return
    plan.input_map["clip_vision_output"] = None
    src = view.source("clip_vision_output")
    link_encoder_inputs(view, plan, report, here, src[0])
    report.add(NOTE, here, f"clip_vision_output came from node {src[0]}: its image and clip_vision are connected "
                           "here instead (this node encodes the reference itself)")


def adapter_for_embeds(view):
    """(node id, slot) of the adapter that the apply nodes using this v1 encoder's embeds read, or None."""
    todo, seen = [view.id], set()
    while todo:
        node_id = todo.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        for target, name in view.graph.consumers(node_id):
            inputs = view.graph.inputs_of(target)
            if "ipadapter" in inputs:
                return view.graph.follow(*inputs["ipadapter"])
            if view.graph.type_of(target) == "IPAdapterBatchEmbeds":
                todo.append(target)
    return None


def hook_v1_encoder(view, plan, report, here):
    """v1's encoder: no adapter input (the apply node's is used), weight_1 squared (as v1 scaled the embeds), one
    image per node here."""
    adapter = adapter_for_embeds(view)
    if adapter is None:
        report.add(LOSSY, here, "ipadapter is not connected: no apply node using these embeds names an adapter; "
                                "connect the adapter loader to it")
    else:
        plan.add_links["ipadapter"] = adapter
    weight = view.widgets.get("weight_1", 1.0)
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        plan.widgets["weight"], _ = checked(target_spec(plan.target, "weight"), weight * weight)
    for i in (2, 3, 4):
        if f"image_{i}" in view.linked:
            plan.input_map[f"image_{i}"] = None
            report.add(LOSSY, here, f"image_{i} (weight {view.widgets.get(f'weight_{i}', 1.0)!r}) link removed: "
                                    "one image per Encode here; encode it with its own IPAdapter Kit: Encode "
                                    "(weight = its weight squared) and join both with Combine Embeds 'concat'")


HOOK_INPUTS = {"neg_embed": ("neg_embed",), "sd3_reference": ("image_embed",),  # linked inputs a hook decides
               "v1_clip_vision_output": ("clip_vision_output",), "v1_encoder": ("image_2", "image_3", "image_4")}
HOOK_WIDGETS = {"xlabs_block_strengths": ("begin_strength", "end_strength", "smothing_type"),  # widgets a hook reads
                "instantx_weight_ramp": ("weight_start", "weight_end", "steps"),
                "sd3_schedule": ("start_percent", "end_percent"),
                "pulid_flux_fusion": mapping.PULID_FLUX_FUSION, "v1_noise": ("noise",),
                "unfold_batch": ("unfold_batch",), "noise_blur": ("blur",), "v1_faceid_version": ("faceid_v2",),
                "v1_encoder": ("weight_1", "weight_2", "weight_3", "weight_4")}
HOOKS = {"faceid": hook_faceid, "faceidv2_from_weight": hook_faceidv2_from_weight,
         "layer_weights": hook_layer_weights, "neg_embed": hook_neg_embed, "sharpening": hook_sharpening,
         "clip_vision_from_loader": hook_clip_vision_from_loader,
         "xlabs_block_strengths": hook_xlabs_block_strengths, "instantx_weight_ramp": hook_instantx_weight_ramp,
         "sd3_reference": hook_sd3_reference, "sd3_schedule": hook_sd3_schedule,
         "pulid_flux_fusion": hook_pulid_flux_fusion, "precise_weight": hook_precise_weight,
         "insightface_pack": hook_insightface_pack, "unfold_batch": hook_unfold_batch, "noise_blur": hook_noise_blur,
         "v1_faceid_version": hook_v1_faceid_version, "v1_insightface_socket": hook_v1_insightface_socket,
         "v1_noise": hook_v1_noise,
         "v1_clip_vision_output": hook_v1_clip_vision_output, "v1_encoder": hook_v1_encoder}


# ---------------------------------------------------------------------------------------------------------------
VIRTUAL = ("Reroute", "Note", "MarkdownNote", "PrimitiveNode")


def classify(kind, touches):
    """'rule', 'not_mapped', 'foreign' (unknown node touching a source pack's objects), or None (left alone)."""
    if kind in VIRTUAL:
        return None
    if kind in RULES:
        return "rule"
    if kind in mapping.NOT_MAPPED:
        return "not_mapped"
    if kind.startswith("IPAKit"):
        return None
    if touches or "ipadapter" in kind.lower() or "ipaadapter" in kind.lower():
        return "foreign"
    return None


def _foreign_message(touches):
    packs = sorted(touches - {PLUS}) if touches - {PLUS} else [PLUS]
    names = " / ".join(packs)
    objects = "IPAdapter_plus objects" if packs == [PLUS] else "their IP-Adapter objects"
    return (f"left as it is: not an {names} node this converter knows, and it uses {objects}, which the nodes "
            "here do not produce")


def plan_graph(views, report, label):
    """Plans for every node of one graph; reports what stays as it is."""
    plans, others = {}, []
    for view in views:
        where = f"{label}node {view.id}"
        kind = classify(view.type, view.touches)
        if kind == "rule":
            if view.problem:
                report.add(UNMAPPED, f"{where} {view.type}", f"left as it is: {view.problem}")
            else:
                plans[view.id] = plan_node(view, report, where)
        elif kind == "not_mapped":
            report.add(UNMAPPED, f"{where} {view.type}", f"left as it is: {mapping.NOT_MAPPED[view.type]}")
        elif kind == "foreign":
            report.add(UNMAPPED, f"{where} {view.type}", _foreign_message(view.touches))
        elif not view.type.startswith("IPAKit") and view.type not in VIRTUAL:
            others.append(view.type)
    _report_patch_blind_samplers(views, plans, report, label)
    return plans, others


def _id_order(node_id):
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def _report_patch_blind_samplers(views, plans, report, label):
    """Samplers that bypass ComfyUI's model patches, downstream of a converted node that patches the model."""
    by_id = {view.id: view for view in views}
    for view in views:
        message = mapping.PATCH_BLIND_SAMPLERS.get(view.type)
        if message is None:
            continue
        seen, todo, feeding = set(), [src for src, _ in view.linked.values()], []
        while todo:
            node_id = todo.pop()
            if node_id in seen or node_id not in by_id:
                continue
            seen.add(node_id)
            plan = plans.get(node_id)
            if plan is not None and ("MODEL", "MODEL") in TARGETS[plan.target]["outputs"]:
                feeding.append(node_id)
            todo += [src for src, _ in by_id[node_id].linked.values()]
        if feeding:
            nodes = ", ".join(str(i) for i in sorted(feeding, key=_id_order))
            report.add(LOSSY, f"{label}node {view.id} {view.type}", message.format(nodes=nodes))


def _place_extras(plans, report, label, new_id):
    """The nodes that plans' add_links ask for: {Added: (new id, target, widgets)} (one per Added, shared).

    A link to a node whose owner was not converted is dropped and reported. new_id() gives a fresh node id.
    """
    placed, consumers = {}, {}
    for node_id, plan in plans.items():
        for ours, (origin, slot) in list(plan.add_links.items()):
            if not isinstance(origin, Added):
                continue
            owner = plans.get(origin.owner)
            if owner is None or origin.name not in owner.extras:
                del plan.add_links[ours]
                report.add(LOSSY, f"{label}node {node_id} {plan.source} -> {plan.target}",
                           f"{ours} is not connected: node {origin.owner}, which would give it, was not converted")
                continue
            if origin not in placed:
                target, widgets, _, inputs = owner.extras[origin.name]
                placed[origin] = (new_id(), target, widgets, inputs)
            consumers.setdefault(origin, {}).setdefault(ours, []).append(node_id)
    for origin, (new, target, widgets, _) in placed.items():
        owner = plans[origin.owner]
        shown = ", ".join(f"{name} {value!r}" for name, value in widgets.items())
        to = "; ".join(f"the {ours} input of node(s) {', '.join(str(i) for i in sorted(ids, key=_id_order))}"
                       for ours, ids in consumers[origin].items())
        report.add(NOTE, f"{label}node {origin.owner} {owner.source} -> {owner.target}",
                   f"{owner.extras[origin.name][2]} is a node of its own here: added node {new} {target} ({shown}), "
                   f"linked to {to}")
    return placed


# ---------------------------------------------------------------------------------------------------------------
# UI format
def _link_fields(link):
    if isinstance(link, dict):
        return (link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                link.get("type"))
    return tuple(link[:6])


class UIGraph:
    def __init__(self, graph):
        self.graph = graph
        self.nodes = {node["id"]: node for node in graph.get("nodes") or []}
        self.dict_links = any(isinstance(link, dict) for link in graph.get("links") or [])
        self.links = {}
        for link in graph.get("links") or []:
            fields = _link_fields(link)
            self.links[fields[0]] = list(fields)

    def type_of(self, node_id):
        node = self.nodes.get(node_id)
        return node["type"] if node else None

    def widgets_of(self, node_id):
        node = self.nodes.get(node_id)
        layouts = mapping.widget_layouts(node["type"]) if node else ()
        if not layouts:
            return {}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            return dict(values)
        return dict(zip(mapping.pick_layout(node["type"], values) or layouts[0], values))

    def inputs_of(self, node_id):
        """Linked inputs of any node: name -> (source id, source slot), reroutes not followed."""
        return self._linked(self.nodes.get(node_id) or {})

    def consumers(self, node_id, seen=()):
        """[(node id, input name)] that a node's outputs feed, through reroutes."""
        found = []
        for link in self.links.values():
            target = self.nodes.get(link[3])
            if link[1] != node_id or target is None or target["id"] in seen:
                continue
            if target["type"] == REROUTE:
                found += self.consumers(target["id"], (*seen, node_id))
                continue
            inputs = target.get("inputs") or []
            if isinstance(link[4], int) and 0 <= link[4] < len(inputs):
                found.append((target["id"], inputs[link[4]]["name"]))
        return found

    def _linked(self, node):
        linked = {}
        for inp in node.get("inputs") or []:
            link = self.links.get(inp.get("link"))
            if link is not None:
                linked[inp["name"]] = (link[1], link[2])
        return linked

    def follow(self, node_id, slot, seen=()):
        node = self.nodes.get(node_id)
        if node is None or node["type"] != REROUTE or node_id in seen:
            return node_id, slot
        inputs = node.get("inputs") or []
        link = self.links.get(inputs[0].get("link")) if inputs else None
        return self.follow(link[1], link[2], (*seen, node_id)) if link else (node_id, slot)

    def view(self, node):
        kind = node["type"]
        linked = self._linked(node)
        types = {str(x.get("type")) for x in (node.get("inputs") or []) + (node.get("outputs") or [])}
        widgets, problem = {}, None
        if kind in SOURCES:
            names = SOURCES[kind]["widgets"]
            values = node.get("widgets_values") or []
            layout = mapping.pick_layout(kind, values) if not isinstance(values, dict) else None
            if isinstance(values, dict):
                widgets = {n: values[n] for layout in mapping.widget_layouts(kind) for n in layout if n in values}
            elif layout is None:
                problem = (f"its {len(values)} widget values do not match the {len(names)} widgets "
                           f"({', '.join(names) or 'none'}) of {PACK_OF[kind]}'s current node; saved by another "
                           "version? Rebuild it by hand")
            else:
                widgets = dict(zip(layout, values))
            problem = problem or mapping.retired_layout(kind, [inp.get("name") for inp in node.get("inputs") or []])
        view = NodeView(self, node["id"], kind, widgets, linked, problem)
        view.touches = {mapping.SOURCE_TYPES[t] for t in types
                        if t in mapping.SOURCE_TYPES and t not in mapping.SHARED_SOURCE_TYPES}
        view.touches |= self._shared_touches(node)
        return view

    def _shared_touches(self, node):
        """The source packs whose nodes this node is linked with through a type other packs use too (the pack of
        the node at the other end: several source packs share some type names)."""
        packs = set()
        for inp in node.get("inputs") or []:  # fed by one of their nodes
            link = self.links.get(inp.get("link"))
            if link is not None:
                origin, slot = self.follow(link[1], link[2])
                kind = self.type_of(origin)
                outputs = SOURCES[kind]["outputs"] if kind in SOURCES else []
                if isinstance(slot, int) and 0 <= slot < len(outputs) and \
                        outputs[slot][1] in mapping.SHARED_SOURCE_TYPES:
                    packs.add(PACK_OF[kind])
        for out in node.get("outputs") or []:  # feeding one of their nodes
            for link in (self.links.get(lid) for lid in out.get("links") or []):
                target = self.nodes.get(link[3]) if link else None
                if target is not None and target["type"] in SOURCES:
                    inputs = target.get("inputs") or []
                    slot = link[4]
                    name = inputs[slot].get("name") if isinstance(slot, int) and 0 <= slot < len(inputs) else None
                    if SOURCES[target["type"]]["sockets"].get(name) in mapping.SHARED_SOURCE_TYPES:
                        packs.add(PACK_OF[target["type"]])
        return packs


def convert_ui_graph(graph, report, ids, label=""):
    """Rewrites one UI graph (the workflow or a subgraph definition) in place.

    ids: {"link": next free link id, "node": next free node id}, advanced as links and nodes are added.
    """
    ui = UIGraph(graph)
    views = [ui.view(node) for node in graph.get("nodes") or []]
    plans, others = plan_graph(views, report, label)

    def new_node_id():
        ids["node"] += 1
        return ids["node"] - 1

    placed = _place_extras(plans, report, label, new_node_id)

    # Final links: remap both ends, drop what has no counterpart.
    kept = {}
    for link_id, (lid, origin, oslot, target, tslot, ltype) in ui.links.items():
        target_node = ui.nodes.get(target)
        in_name = None
        if target_node is not None and tslot is not None and tslot < len(target_node.get("inputs") or []):
            in_name = target_node["inputs"][tslot]["name"]
        if target in plans:
            ours = plans[target].input_map.get(in_name)
            if ours is None:
                continue  # reported by the plan
            in_name = ours
        if origin in plans:
            new_slot = plans[origin].output_slot(oslot)
            if new_slot is None:
                why = RULES[plans[origin].rule_key].output_notes.get(oslot, "no counterpart")
                their_name = _output_name(plans[origin].source, oslot)
                to = f"node {target} ({ui.type_of(target)}) {in_name}"
                report.add(LOSSY, f"{label}node {origin} {plans[origin].source} -> {plans[origin].target}",
                           f"link from {their_name} to {to} removed: {why}")
                continue
            oslot = new_slot
            ltype = TARGETS[plans[origin].target]["outputs"][oslot][1]
        elif target in plans:
            spec = target_spec(plans[target].target, in_name)
            ltype = spec["type"] if spec and not spec.get("widget") else ltype
        kept[link_id] = [lid, origin, oslot, target, in_name if target in plans else tslot, ltype]
    gained = {}  # node left as it is -> [(its output slot, link id)] that a plan added
    for target, plan in plans.items():
        for ours, (origin, oslot) in plan.add_links.items():
            link_id = ids["link"]
            if isinstance(origin, Added):
                new_id, kind = placed[origin][:2]
                origin, ltype = new_id, TARGETS[kind]["outputs"][oslot][1]
            elif origin in plans:
                ltype = TARGETS[plans[origin].target]["outputs"][oslot][1]
            else:
                outputs = (ui.nodes.get(origin) or {}).get("outputs") or []
                ltype = outputs[oslot].get("type", "*") if oslot < len(outputs) else "*"
                gained.setdefault(origin, []).append((oslot, link_id))
            kept[link_id] = [link_id, origin, oslot, target, ours, ltype]
            ids["link"] += 1
    for new_id, _, _, inputs in placed.values():  # the added nodes' own inputs, fed as the converted node's were
        for ours, (origin, oslot) in inputs.items():
            if origin in plans:
                oslot = plans[origin].output_slot(oslot)
                if oslot is None:
                    continue
                ltype = TARGETS[plans[origin].target]["outputs"][oslot][1]
            else:
                outputs = (ui.nodes.get(origin) or {}).get("outputs") or []
                ltype = outputs[oslot].get("type", "*") if oslot < len(outputs) else "*"
                gained.setdefault(origin, []).append((oslot, ids["link"]))
            kept[ids["link"]] = [ids["link"], origin, oslot, new_id, ours, ltype]
            ids["link"] += 1
    for origin, (new_id, kind, widgets, _) in placed.items():
        node = _new_ui_node(new_id, kind, widgets, ui.nodes[origin.owner], kept)
        graph["nodes"].append(node)
        ui.nodes[new_id] = node

    # Rebuild converted nodes' sockets; fix the others' link references.
    for node in graph.get("nodes") or []:
        plan = plans.get(node["id"])
        if plan is None:
            if node["type"] == REROUTE and ui.follow(node["id"], 0)[0] in plans:  # it carries the type it passes on
                for slot in (node.get("inputs") or []) + (node.get("outputs") or []):
                    slot["type"] = mapping.SOCKET_TYPES.get(slot.get("type"), slot.get("type"))
            for inp in node.get("inputs") or []:
                if inp.get("link") is not None and inp["link"] not in kept:
                    inp["link"] = None
            for out in node.get("outputs") or []:
                if out.get("links"):
                    out["links"] = [i for i in out["links"] if i in kept]
            for oslot, link_id in gained.get(node["id"], ()):
                if oslot < len(node.get("outputs") or []):
                    out = node["outputs"][oslot]
                    out["links"] = (out.get("links") or []) + [link_id]
            continue
        _rewrite_ui_node(node, plan, kept)
    for link in kept.values():
        if isinstance(link[4], str):  # target input named: turn into the index in the target's inputs
            target = ui.nodes[link[3]]
            link[4] = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == link[4])
    graph["links"] = [_link_out(link, ui.dict_links) for _, link in sorted(kept.items())]
    if others:
        counted = sorted(set(others))
        report.add(NOTE, f"{label}graph", f"{len(others)} other node(s) left as they are: {', '.join(counted)}")


def _xy(value, default):
    if isinstance(value, dict):
        return [value.get("0", default[0]), value.get("1", default[1])]
    return list(value) if isinstance(value, (list, tuple)) and len(value) >= 2 else list(default)


def _widget_values(target, widgets):
    values = []
    for spec in target_widgets(target):
        values.append(widgets[spec["name"]])
        if spec.get("control"):
            values.append(CONTROL_DEFAULT)
    return values


def _new_ui_node(node_id, target, widgets, beside, kept):
    """A UI node of type target added under the node `beside` (same mode), its outputs on the kept links."""
    x, y = _xy(beside.get("pos"), (0, 0))
    height = _xy(beside.get("size"), (315, 100))[1]
    outgoing = {}
    for link in kept.values():
        if link[1] == node_id:
            outgoing.setdefault(link[2], []).append(link[0])
    incoming = {link[4]: link[0] for link in kept.values() if link[3] == node_id}
    inputs = [{"name": spec["name"], "type": spec["type"], "link": incoming.get(spec["name"])}
              for spec in target_sockets(target)]
    return {"id": node_id, "type": target, "pos": [x, y + height + 40], "size": [315, 60], "flags": {},
            "order": beside.get("order", 0), "mode": beside.get("mode", 0), "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "links": sorted(outgoing.get(slot, [])), "slot_index": slot}
                        for slot, (name, kind) in enumerate(TARGETS[target]["outputs"])],
            "properties": {"Node name for S&R": target}, "widgets_values": _widget_values(target, widgets)}


def _output_name(kind, slot):
    outputs = SOURCES[kind]["outputs"]
    return outputs[slot][0] if 0 <= slot < len(outputs) else f"output {slot}"


def _link_out(link, as_dict):
    if as_dict:
        return {"id": link[0], "origin_id": link[1], "origin_slot": link[2], "target_id": link[3],
                "target_slot": link[4], "type": link[5]}
    return list(link)


def _rewrite_ui_node(node, plan, kept):
    target = plan.target
    incoming = {link[4]: link[0] for link in kept.values() if link[3] == node["id"]}
    inputs = [{"name": spec["name"], "type": spec["type"], "link": incoming.get(spec["name"])}
              for spec in target_sockets(target)]
    for spec in target_widgets(target):
        if spec["name"] in incoming:
            inputs.append({"name": spec["name"], "type": spec["type"], "widget": {"name": spec["name"]},
                           "link": incoming[spec["name"]]})
    outgoing = {}
    for link in kept.values():
        if link[1] == node["id"]:
            outgoing.setdefault(link[2], []).append(link[0])
    outputs = [{"name": name, "type": kind, "links": sorted(outgoing.get(slot, [])), "slot_index": slot}
               for slot, (name, kind) in enumerate(TARGETS[target]["outputs"])]
    node["type"] = target
    node["inputs"], node["outputs"] = inputs, outputs
    node["widgets_values"] = _widget_values(target, plan.widgets)
    properties = node.setdefault("properties", {})
    properties["Node name for S&R"] = target
    properties.pop("cnr_id", None)  # the registry id and version of the pack the node came from
    properties.pop("ver", None)
    if node.get("title") in (SOURCES[plan.source]["title"], plan.source):
        del node["title"]


def _int(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _max_ids(workflow):
    """(largest link id, largest node id) over the workflow, its subgraphs and its counters."""
    state = workflow.get("state") if isinstance(workflow.get("state"), dict) else {}
    links = [0, _int(workflow.get("last_link_id")), _int(state.get("lastLinkId"))]
    nodes = [0, _int(workflow.get("last_node_id")), _int(state.get("lastNodeId"))]
    graphs = [workflow] + list((workflow.get("definitions") or {}).get("subgraphs") or [])
    for graph in graphs:
        links += [_int(_link_fields(link)[0]) for link in graph.get("links") or []]
        nodes += [_int(node.get("id")) for node in graph.get("nodes") or []]
    return max(links), max(nodes)


def convert_ui(workflow, report):
    last_link, last_node = _max_ids(workflow)
    ids = {"link": last_link + 1, "node": last_node + 1}
    convert_ui_graph(workflow, report, ids)
    for sub in (workflow.get("definitions") or {}).get("subgraphs") or []:
        label = f"subgraph {sub.get('name') or sub.get('id')}: "
        convert_ui_graph(sub, report, ids, label)
    state = workflow.get("state")
    for key, state_key, kind in (("last_link_id", "lastLinkId", "link"), ("last_node_id", "lastNodeId", "node")):
        if key in workflow:
            workflow[key] = max(_int(workflow[key]), ids[kind] - 1)
        if isinstance(state, dict) and state_key in state:
            state[state_key] = max(_int(state[state_key]), ids[kind] - 1)


# ---------------------------------------------------------------------------------------------------------------
# API format
def _is_link(value):
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


class APIGraph:
    def __init__(self, prompt):
        self.prompt = prompt

    def type_of(self, node_id):
        node = self.prompt.get(str(node_id))
        return node.get("class_type") if node else None

    def widgets_of(self, node_id):
        node = self.prompt.get(str(node_id)) or {}
        return {k: v for k, v in (node.get("inputs") or {}).items() if not _is_link(v)}

    def follow(self, node_id, slot):
        return str(node_id), slot

    def consumers(self, node_id):
        """[(node id, input name)] that a node's outputs feed."""
        return [(str(other), name) for other, node in self.prompt.items()
                for name, value in (node.get("inputs") or {}).items()
                if _is_link(value) and str(value[0]) == str(node_id)]

    def inputs_of(self, node_id):
        node = self.prompt.get(str(node_id)) or {}
        return {k: (str(v[0]), v[1]) for k, v in (node.get("inputs") or {}).items() if _is_link(v)}

    def view(self, node_id, node):
        inputs = node.get("inputs") or {}
        kind = node.get("class_type")
        linked = self.inputs_of(node_id)
        widgets = {k: v for k, v in inputs.items() if not _is_link(v)}
        problem = None
        if kind in SOURCES:
            known = {name for layout in mapping.widget_layouts(kind) for name in layout}
            unknown = sorted(k for k in widgets if k not in known)
            if unknown:
                problem = (f"inputs {', '.join(unknown)} are not inputs of {PACK_OF[kind]}'s current node; saved "
                           "by another version? Rebuild it by hand")
            problem = problem or mapping.retired_layout(kind, inputs)
        view = NodeView(self, node_id, kind, widgets, linked, problem)
        view.touches = self._touches(linked)
        return view

    def _touches(self, linked):
        """The source packs whose objects reach these inputs (by the source node's output type)."""
        packs = set()
        for src, slot in linked.values():
            src_kind = self.type_of(src)
            if src_kind in SOURCES and slot < len(SOURCES[src_kind]["outputs"]) and \
                    SOURCES[src_kind]["outputs"][slot][1] in mapping.SOURCE_TYPES:
                packs.add(PACK_OF[src_kind])
        return packs


def convert_api(prompt, report):
    graph = APIGraph(prompt)
    views = [graph.view(node_id, node) for node_id, node in prompt.items()]
    for node_id, node in prompt.items():  # producers of the source packs' objects for their nodes count too
        for name, value in (node.get("inputs") or {}).items():
            kind = node.get("class_type")
            pack = PACK_OF[kind] if kind in SOURCES and SOURCES[kind]["sockets"].get(name) in mapping.SOURCE_TYPES \
                else None
            if _is_link(value) and pack:
                for view in views:
                    if view.id == str(value[0]):
                        view.touches.add(pack)
    plans, others = plan_graph(views, report, "")
    taken = {int(k) for k in prompt if str(k).isdigit()}

    def new_node_id():
        node_id = max(taken, default=0) + 1
        taken.add(node_id)
        return str(node_id)

    placed = _place_extras(plans, report, "", new_node_id)
    for node_id, node in prompt.items():
        plan = plans.get(node_id)
        inputs = node.get("inputs") or {}
        new_inputs = {} if plan else dict(inputs)
        if plan:
            new_inputs.update(plan.widgets)
        for name, value in inputs.items():
            if not _is_link(value):
                continue
            ours = name
            if plan:
                ours = plan.input_map.get(name)
                if ours is None:
                    continue
            src, slot = str(value[0]), value[1]
            if src in plans:
                slot = plans[src].output_slot(slot)
                if slot is None:
                    why = RULES[plans[src].rule_key].output_notes.get(value[1], "no counterpart")
                    their_name = _output_name(plans[src].source, value[1])
                    report.add(LOSSY, f"node {src} {plans[src].source} -> {plans[src].target}",
                               f"link from {their_name} to node {node_id} ({node.get('class_type')}) {name} "
                               f"removed: {why}")
                    if not plan:
                        new_inputs.pop(name, None)
                    continue
            new_inputs[ours] = [value[0], slot]
        if plan:
            for ours, (src, slot) in plan.add_links.items():
                new_inputs[ours] = [placed[src][0] if isinstance(src, Added) else src, slot]
            node["class_type"] = plan.target
            meta = node.get("_meta")
            if isinstance(meta, dict) and meta.get("title") in (SOURCES[plan.source]["title"], plan.source):
                meta["title"] = TARGETS[plan.target]["title"]
        node["inputs"] = new_inputs
    for new_id, target, widgets, inputs in placed.values():
        links = {}
        for ours, (src, slot) in inputs.items():
            slot = plans[src].output_slot(slot) if src in plans else slot
            if slot is not None:
                links[ours] = [src, slot]
        prompt[new_id] = {"class_type": target, "inputs": {**widgets, **links},
                          "_meta": {"title": TARGETS[target]["title"]}}
    if others:
        report.add(NOTE, "graph", f"{len(others)} other node(s) left as they are: {', '.join(sorted(set(others)))}")


# ---------------------------------------------------------------------------------------------------------------
def is_api(workflow):
    return isinstance(workflow, dict) and "nodes" not in workflow and bool(workflow) and all(
        isinstance(v, dict) and "class_type" in v for v in workflow.values())


def convert(workflow):
    """Conversion of a UI-format workflow or an API-format prompt (the input is not modified)."""
    if not isinstance(workflow, dict) or not (is_api(workflow) or isinstance(workflow.get("nodes"), list)):
        raise ValueError("not a ComfyUI workflow: expected a UI workflow (with 'nodes' and 'links') or an API "
                         "prompt ({id: {class_type, inputs}})")
    workflow = copy.deepcopy(workflow)
    report = Report()
    if is_api(workflow):
        convert_api(workflow, report)
    else:
        convert_ui(workflow, report)
    mapped = sum(1 for line in report.lines if line.startswith("mapped:"))
    unmapped, lossy = report.counts[UNMAPPED], report.counts[LOSSY]
    if not mapped and not unmapped:
        report.lines.append("note: no IPAdapter_plus, Flux IP-Adapter, SD3.5 IP-Adapter, InstantID or PuLID node "
                            "found; nothing to convert")
    else:
        report.lines.append(f"summary: {mapped} node(s) converted, {unmapped} left as they are, "
                            f"{lossy} lossy change(s)")
    return Conversion(workflow=workflow, report=report.lines, unmapped=unmapped, lossy=lossy)


def convert_file(src, dst):
    """Reads src, writes the converted workflow to dst; returns the Conversion."""
    with open(src, encoding="utf-8") as f:
        workflow = json.load(f)
    result = convert(workflow)
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(result.workflow, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return result
