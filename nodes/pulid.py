"""PuLID for SDXL: a face's identity from its ArcFace embedding and EVA02-CLIP features of the aligned, background-free
face, as identity tokens in the cross-attention with PuLID's fidelity / style projections."""
import dataclasses
import threading

import torch

import comfy.model_management
import folder_paths
from comfy_api.latest import io

from ..ipadapter_core import encoders as core_encoders
from ..ipadapter_core import eva_clip as core_eva
from ..ipadapter_core import face_align, face_parsing
from ..ipadapter_core import pulid as core_pulid
from ..ipadapter_core.families import flux as core_flux
from ..ipadapter_core.attention import ImagePrompt
from ..ipadapter_core.errors import IncompatibleModelError, InvalidInputError, IPAdapterError
from ..ipadapter_core.loading import read_state_dict
from . import clip_encode, discovery, faces, model_cache, patching, paths
from .types import EVAClip, InsightFace, IPAdapter

CATEGORY = "ipadapter_kit/pulid"
FOLDER = "pulid"
PARSER_FOLDER = "facexlib"
EVA_FOLDERS = ("clip", "clip_vision")
ALIGNED = 512  # facexlib's aligned face size
METHODS = {"fidelity": ("ortho_v2", 8), "style": ("ortho", 16), "neutral": ("none", 0)}  # projection, zero tokens
_lock = threading.Lock()
_cache = {}


@dataclasses.dataclass(frozen=True)
class EVAWithParser:
    """EVA02-CLIP's vision tower and the face parser PuLID removes the background with."""

    name: str
    tower: object
    parser: object


EVA_NAME = r"eva"  # the first hint: EVA files are listed first; the tensors decide when one is loaded


def eva_files():
    """Weight files in models/clip and models/clip_vision, those named like EVA first (so the default is one)."""
    names = set()
    for folder in EVA_FOLDERS:
        try:
            names.update(folder_paths.get_filename_list(folder))
        except KeyError:
            continue
    names = sorted(n for n in names if n.lower().endswith((".pt", ".pth", ".bin", ".safetensors")))
    return sorted(names, key=lambda n: not discovery.matches(n, [EVA_NAME]))


def _resolve_eva(name):
    for folder in EVA_FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    raise InvalidInputError(f"'{name}' was not found in models/clip or models/clip_vision. " + core_eva.FILE_HINT)


def _is_eva(path):
    """Whether a file's header holds an EVA-CLIP vision tower (read once per file version)."""
    try:
        info = core_encoders.identify_encoder(core_encoders.read_shapes(path))
    except (IPAdapterError, OSError):
        return False
    return info is not None and info.layout == "eva"


def check_eva_file(name, path):
    """Unless the name or the header says EVA-CLIP: an error naming what the file is and which files are EVA-CLIP."""
    if discovery.matches(name, [EVA_NAME]) or _is_eva(path):
        return  # a file named like EVA that is not one gets the EVA loader's own error, naming the wrong keys
    folder = next(f for f in EVA_FOLDERS if folder_paths.get_full_path(f, name) == path)
    evas = [n for n in eva_files() if n != name and _is_eva(_resolve_eva(n))]
    found = f"EVA-CLIP files here: {', '.join(evas)}" if evas else "none in models/clip or models/clip_vision"
    raise InvalidInputError(f"{name} is not EVA-CLIP: it is {discovery.what_is(folder, name)}. PuLID needs "
                            f"EVA02-CLIP-L-14-336's vision tower ({found}). " + core_eva.FILE_HINT)


def load_eva(eva_file, parser_file):
    """One EVAWithParser per pair of files."""
    eva_path = _resolve_eva(eva_file)
    check_eva_file(eva_file, eva_path)
    parser_path = model_cache.resolve(PARSER_FOLDER, parser_file)
    key = (eva_path, parser_path)
    with _lock:
        hit = _cache.get(key)
    if hit is None:
        tower = core_eva.load_visual(read_state_dict(eva_path), name=eva_file)
        parser = face_parsing.load_parser(read_state_dict(parser_path), name=parser_file)
        hit = EVAWithParser(eva_file, tower, parser)
        with _lock:
            _cache[key] = hit
    return hit


RELEASES = {"pulid": ("SDXL", "IPAdapter Kit: Apply PuLID"), "pulid_flux": ("Flux", "IPAdapter Kit: Apply PuLID (Flux)")}


def check_pulid(adapter, model, kind="pulid"):
    """The model's family, or a typed error for a file / model / node that do not go together."""
    family_name, node = RELEASES[kind]
    if adapter.spec.kind not in RELEASES:
        raise InvalidInputError(f"{adapter.name} is a {adapter.spec.kind} adapter, not PuLID: load PuLID's "
                                "ip-adapter_pulid_sdxl_fp16.safetensors or pulid_flux_v0.9.1.safetensors (models/pulid) "
                                "with IPAdapter Kit: Load PuLID.")
    if adapter.spec.kind != kind:
        other_family, other_node = RELEASES[adapter.spec.kind]
        raise InvalidInputError(f"{adapter.name} is PuLID's {other_family} release: use {other_node}.")
    family, _ = patching.model_family(model)
    if family.name != family_name:
        raise IncompatibleModelError(f"{adapter.name} is PuLID's {family_name} release: it works on {family_name} models "
                                     f"only, and this model is {family.name}. PuLID has an SDXL and a Flux release; "
                                     "use the one that matches your checkpoint.")
    return family


def face_pictures(eva, image, result):
    """The EVA input of each kept reference: aligned to the FFHQ template, background white, gray, resized."""
    kept = image[list(result.kept), ..., :3].float()
    aligned = face_align.align_faces(kept, result.kps, ALIGNED)
    aligned = (aligned * 255).round() / 255  # facexlib hands PuLID a uint8 crop
    labels = face_parsing.parse(eva.parser, aligned)
    size = eva.tower.cfg.image_size
    return face_parsing.eva_input(face_parsing.face_features(aligned, labels), size=size)


def identity(adapter, eva, insightface, image, noise, zero_tokens, encoder=None):
    """(cond, uncond) identity tokens of the references (one person: averaged)."""
    clip_encode.check_images(image, "image")
    result = faces.analyze(insightface, image)
    pixels = face_pictures(eva, image, result)
    comfy.model_management.load_model_gpu(adapter.patcher)  # the encoders are the adapter's: ComfyUI places them
    device = adapter.patcher.load_device
    offload = comfy.model_management.unet_offload_device()
    with torch.no_grad():
        try:  # the EVA tower is used once per apply: on the device for that, then back
            feature, hidden = eva.tower.to(device)(pixels.to(device), core_eva.PULID_LAYERS)
        finally:
            eva.tower.to(offload)
        generator = torch.Generator().manual_seed(0)
        cond, uncond = core_pulid.identity_tokens(encoder or adapter.weights.image_proj, result.raw.to(device),
                                                  feature, hidden, noise, zero_tokens, generator)
    out = comfy.model_management.intermediate_device()
    return cond.to(out), uncond.to(out)


def apply_pulid(model, adapter, eva, insightface, image, weight, projection, zero_tokens, noise, start_at, end_at,
                attn_mask=None):
    """A patched clone of the SDXL model with the identity tokens in every cross-attention."""
    check_pulid(adapter, model)
    _check_eva(eva)
    if projection not in core_pulid.PROJECTIONS:
        raise InvalidInputError(f"projection {projection!r} is not one of {core_pulid.PROJECTIONS}.")
    if not 0 <= zero_tokens <= 64 or not 0.0 <= noise <= 1.0:
        raise InvalidInputError(f"fidelity {zero_tokens} (expected 0..64) or noise {noise} (expected 0..1) is out of "
                                "range.")
    if weight == 0 or end_at <= start_at:
        return model.clone()
    family = patching.check_model(model, adapter)
    cond, uncond = identity(adapter, eva, insightface, image, noise, zero_tokens)
    prompt = ImagePrompt(
        weights=adapter.weights, cond=cond, uncond=uncond,
        layer_weights=family.layer_weights("linear", weight, None, adapter.spec.num_layers),
        masks=patching.prepare_masks(attn_mask, 1, "attn_mask", "Give one mask."),
        sigma_range=patching.sigma_range(model, start_at, end_at), projection=projection)
    return patching.install(model, adapter, prompt, family)


def _check_eva(eva):
    if not isinstance(eva, EVAWithParser):
        raise InvalidInputError("eva_clip: connect IPAdapter Kit: Load EVA-CLIP (PuLID).")


def apply_pulid_flux(model, adapter, eva, insightface, image, weight, start_at, end_at, attn_mask=None):
    """A patched clone of the Flux model with PuLID's cross-attentions after every 2nd double / 4th single block."""
    check_pulid(adapter, model, "pulid_flux")
    _check_eva(eva)
    if weight == 0 or end_at <= start_at:
        return model.clone()
    cond, uncond = identity(adapter, eva, insightface, image, 0.0, 0, adapter.weights.pulid_encoder)
    prompt = core_flux.IdentityPrompt(
        weights=adapter.weights, cond=cond, uncond=uncond, weight=float(weight),
        masks=patching.prepare_masks(attn_mask, 1, "attn_mask", "Give one mask."),
        sigma_range=patching.sigma_range(model, start_at, end_at))
    return patching.install_identity(model, adapter, prompt)


def _range_inputs():
    return [io.Float.Input("start_at", default=0.0, min=0.0, max=1.0, step=0.001,
                           tooltip="Fraction of the schedule where the identity starts."),
            io.Float.Input("end_at", default=1.0, min=0.0, max=1.0, step=0.001,
                           tooltip="Fraction of the schedule where it stops.")]


def _sockets():
    return [io.Model.Input("model", tooltip="An SDXL model (a patched copy is returned)."),
            IPAdapter.Input("pulid", tooltip="From IPAdapter Kit: Load PuLID."),
            EVAClip.Input("eva_clip", tooltip="From IPAdapter Kit: Load EVA-CLIP (PuLID)."),
            InsightFace.Input("insightface", tooltip="From IPAdapter Kit: Load InsightFace (pack antelopev2)."),
            io.Image.Input("image", tooltip="Photo(s) of one person; several are averaged into one identity.")]


class PuLIDLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitPuLIDLoader",
            display_name="IPAdapter Kit: Load PuLID",
            category=CATEGORY,
            description="Loads a PuLID file from models/pulid: the SDXL release (ip-adapter_pulid_sdxl_fp16) or "
                        "PuLID-Flux (pulid_flux_v0.9.x), recognised by its tensors.",
            inputs=[io.Combo.Input("pulid_file", options=paths.weight_files(FOLDER),
                                   tooltip="A PuLID release (SDXL or Flux) in models/pulid.")],
            outputs=[IPAdapter.Output(display_name="PULID")],
        )

    @classmethod
    def execute(cls, pulid_file):
        adapter = model_cache.load_adapter(pulid_file, FOLDER)
        if adapter.spec.kind not in RELEASES:
            raise InvalidInputError(f"{pulid_file} is a {adapter.spec.kind} adapter, not a PuLID release (SDXL or "
                                    "Flux).")
        return io.NodeOutput(adapter)


class EVACLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitEVACLIPLoader",
            display_name="IPAdapter Kit: Load EVA-CLIP (PuLID)",
            category=CATEGORY,
            description="Loads EVA02-CLIP-L-14-336's vision tower (models/clip or models/clip_vision) and the BiSeNet "
                        "face parser (models/facexlib) that PuLID reads the face with; nothing is downloaded.",
            inputs=[io.Combo.Input("eva_file", options=eva_files(),
                                   tooltip="EVA02_CLIP_L_336_psz14_s6B.pt (QuanSun/EVA-CLIP)."),
                    io.Combo.Input("parser_file", options=paths.weight_files(PARSER_FOLDER),
                                   tooltip="facexlib's parsing_bisenet.pth.")],
            outputs=[EVAClip.Output(display_name="EVA_CLIP")],
        )

    @classmethod
    def execute(cls, eva_file, parser_file):
        return io.NodeOutput(load_eva(eva_file, parser_file))


class ApplyPuLID(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyPuLID",
            display_name="IPAdapter Kit: Apply PuLID",
            category=CATEGORY,
            description="Keeps a person's identity on SDXL with PuLID: fidelity (closest to the face), style (keeps "
                        "the prompt's style) or neutral. Stacks with the other adapters.",
            inputs=[*_sockets(),
                    io.Combo.Input("method", options=list(METHODS), default="fidelity",
                                   tooltip="fidelity: ortho_v2 + 8 sink tokens; style: ortho + 16; neutral: plain."),
                    io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05,
                                   tooltip="Strength of the identity (0 = the model unchanged)."),
                    *_range_inputs(),
                    io.Mask.Input("attn_mask", optional=True, tooltip="Where the identity acts.")],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, pulid, eva_clip, insightface, image, method, weight, start_at, end_at, attn_mask=None):
        projection, zero_tokens = METHODS[method]
        return io.NodeOutput(apply_pulid(model, pulid, eva_clip, insightface, image, weight, projection, zero_tokens,
                                         0.0, start_at, end_at, attn_mask))


class ApplyPuLIDAdvanced(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyPuLIDAdvanced",
            display_name="IPAdapter Kit: Apply PuLID (advanced)",
            category=CATEGORY,
            description="Apply PuLID with the projection, the number of sink tokens and the negative's noise apart.",
            inputs=[*_sockets(),
                    io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05,
                                   tooltip="Strength of the identity (0 = the model unchanged)."),
                    io.Combo.Input("projection", options=["ortho_v2", "ortho", "none"], default="ortho_v2",
                                   tooltip="ortho_v2 (fidelity), ortho (style) or none (neutral)."),
                    io.Int.Input("fidelity", default=8, min=0, max=32,
                                 tooltip="Zero tokens after the identity tokens: more dilutes the identity."),
                    io.Float.Input("noise", default=0.0, min=0.0, max=1.0, step=0.05,
                                   tooltip="The negative's identity and the sinks: 0 = zeros, more = noise."),
                    *_range_inputs(),
                    io.Mask.Input("attn_mask", optional=True, tooltip="Where the identity acts.")],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, pulid, eva_clip, insightface, image, weight, projection, fidelity, noise, start_at,
                end_at, attn_mask=None):
        return io.NodeOutput(apply_pulid(model, pulid, eva_clip, insightface, image, weight, projection, fidelity,
                                         noise, start_at, end_at, attn_mask))


class ApplyPuLIDFlux(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitApplyPuLIDFlux",
            display_name="IPAdapter Kit: Apply PuLID (Flux)",
            category=CATEGORY,
            description="Keeps a person's identity on Flux.1 with PuLID-Flux: its cross-attentions add the identity to "
                        "the image tokens after every 2nd double and every 4th single block. Stacks with the Flux "
                        "IP-Adapters.",
            inputs=[io.Model.Input("model", tooltip="A Flux.1 model (a patched copy is returned)."),
                    IPAdapter.Input("pulid", tooltip="pulid_flux_v0.9.1 from IPAdapter Kit: Load PuLID."),
                    EVAClip.Input("eva_clip", tooltip="From IPAdapter Kit: Load EVA-CLIP (PuLID)."),
                    InsightFace.Input("insightface", tooltip="From IPAdapter Kit: Load InsightFace (pack antelopev2)."),
                    io.Image.Input("image", tooltip="Photo(s) of one person; several are averaged into one identity."),
                    io.Float.Input("weight", default=1.0, min=-1.0, max=5.0, step=0.05,
                                   tooltip="Strength of the identity (0 = the model unchanged)."),
                    *_range_inputs(),
                    io.Mask.Input("attn_mask", optional=True, tooltip="Where the identity acts (image tokens).")],
            outputs=[io.Model.Output(display_name="MODEL")],
        )

    @classmethod
    def execute(cls, model, pulid, eva_clip, insightface, image, weight, start_at, end_at, attn_mask=None):
        return io.NodeOutput(apply_pulid_flux(model, pulid, eva_clip, insightface, image, weight, start_at, end_at,
                                              attn_mask))


NODES = [PuLIDLoader, EVACLIPLoader, ApplyPuLID, ApplyPuLIDAdvanced, ApplyPuLIDFlux]
