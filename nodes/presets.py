"""Unified loader: a preset and a MODEL -> the adapter and CLIP-vision files the user has for it.

Presets and file-name patterns are data; the names are those of the h94 releases that IPAdapter_plus users
already keep in models/ipadapter and models/clip_vision. A name is only the first hint: every pick is checked by its
tensors, and files kept as downloaded (model.safetensors) or renamed are found by them (nodes/discovery.py).
"""
import dataclasses

from comfy_api.latest import io

from ..ipadapter_core.errors import IncompatibleModelError
from . import clip_vision, discovery, model_cache, patching
from .types import IPAdapter

# preset -> arch -> (adapter file patterns, encoder key); first match wins.
PRESETS = {
    "LIGHT - SD1.5 only (low strength)": {
        "SD1.5": ([r"ip-adapter_sd15_light_v11\.", r"ip-adapter_sd15_light\."], "vit-h")},
    "STANDARD (medium strength)": {
        "SD1.5": ([r"ip-adapter_sd15\."], "vit-h"), "SDXL": ([r"ip-adapter_sdxl_vit-h\."], "vit-h")},
    "VIT-G (medium strength)": {
        "SD1.5": ([r"ip-adapter_sd15_vit-g\."], "vit-g"), "SDXL": ([r"ip-adapter_sdxl\."], "vit-g")},
    "PLUS (high strength)": {
        "SD1.5": ([r"ip-adapter-plus_sd15\."], "vit-h"), "SDXL": ([r"ip-adapter-plus_sdxl_vit-h\."], "vit-h")},
    "PLUS FACE (portraits)": {
        "SD1.5": ([r"ip-adapter-plus-face_sd15\."], "vit-h"),
        "SDXL": ([r"ip-adapter-plus-face_sdxl_vit-h\."], "vit-h")},
    "FULL FACE - SD1.5 only (portraits stronger)": {"SD1.5": ([r"ip-adapter-full-face_sd15\."], "vit-h")},
    # IPAdapter_plus's Community loader: ostris' composition adapters and Kwai-Kolors' IP-Adapter-Plus
    "COMPOSITION (SD1.5 / SDXL)": {
        "SD1.5": ([r"ip_plus_composition_sd15\.", r"plus.composition.sd15\."], "vit-h"),
        "SDXL": ([r"ip_plus_composition_sdxl\.", r"plus.composition.sdxl\."], "vit-h")},
    "KOLORS PLUS (Kolors only)": {
        "SDXL": ([r"Kolors-IP-Adapter-Plus\.", r"kolors.ip.adapter.plus\.", r"ip_adapter_plus_general\."],
                 "vit-l-336")},
}
ENCODERS = {
    "vit-h": ([r"vit.?h.?14.*s32b.?b79k", r"clip.?vit.?h", r"ipadapter.*sd15", r"sd1.?5.*model"],
              "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"),
    "vit-g": ([r"vit.?bigg.?14.*39b.?b160k", r"clip.?vit.?bigg", r"ipadapter.*sdxl", r"sdxl.*model"],
              "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"),
    "vit-l-336": ([r"clip.vit.large.patch14.336\."], "clip-vit-large-patch14-336.bin"),
}
# encoder key -> the release's name (as ipadapter_core.encoders knows it) and its input size
ENCODER_RELEASES = {"vit-h": ("CLIP-ViT-H-14", 224), "vit-g": ("CLIP-ViT-bigG-14", 224),
                    "vit-l-336": ("CLIP-ViT-L-14-336", 336)}
# The projection kind each preset's adapter has (told apart from the others by its tensors).
PRESET_KINDS = {
    "LIGHT - SD1.5 only (low strength)": "linear", "STANDARD (medium strength)": "linear",
    "VIT-G (medium strength)": "linear", "PLUS (high strength)": "resampler", "PLUS FACE (portraits)": "resampler",
    "FULL FACE - SD1.5 only (portraits stronger)": "mlp", "COMPOSITION (SD1.5 / SDXL)": "resampler",
    "KOLORS PLUS (Kolors only)": "resampler",
}
# Where each release is downloaded (first matching name prefix).
DOWNLOADS = (
    ("ip-adapter-faceid", "https://huggingface.co/h94/IP-Adapter-FaceID"),
    ("ip-adapter_sdxl", "https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models"),
    ("ip-adapter-plus_sdxl", "https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models"),
    ("ip-adapter-plus-face_sdxl", "https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models"),
    ("ip-adapter", "https://huggingface.co/h94/IP-Adapter/tree/main/models"),
    ("ip_plus_composition", "https://huggingface.co/ostris/ip-composition-adapter"),
    ("Kolors-IP-Adapter-Plus",
     "https://huggingface.co/Kwai-Kolors/Kolors-IP-Adapter-Plus (ip_adapter_plus_general.bin)"),
    ("CLIP-ViT-H-14", "https://huggingface.co/h94/IP-Adapter/tree/main/models/image_encoder (model.safetensors)"),
    ("CLIP-ViT-bigG-14", "https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models/image_encoder "
                         "(model.safetensors)"),
    ("clip-vit-large-patch14-336", "https://huggingface.co/openai/clip-vit-large-patch14-336 (pytorch_model.bin)"),
)
# named in errors as published; the others ship as .safetensors
RELEASE_EXTENSION = {"LIGHT - SD1.5 only (low strength)": ".bin", "KOLORS PLUS (Kolors only)": ".bin"}
_clip_vision_cache = {}


def release_name(pattern, extension):
    """The file name a release pattern stands for (the escaped dot becomes the extension)."""
    return pattern.replace("\\.", extension).replace("\\", "")


def download_source(wanted):
    """' from <url>' for a release file name, or '' when its source is not known here."""
    return next((f" from {url}" for prefix, url in DOWNLOADS if wanted.startswith(prefix)), "")


def release_patterns(presets):
    """Every adapter name pattern of a preset table (files with these names belong to their own preset)."""
    return [p for arches in presets.values() for patterns, _ in arches.values() for p in patterns]


def find_adapter(preset, arch):
    """The adapter file for a preset and model family: by name and tensors, else by tensors among unnamed files."""
    patterns, encoder = PRESETS[preset][arch]
    wanted = release_name(patterns[0], RELEASE_EXTENSION.get(preset, ".safetensors"))
    accepts = discovery.adapter_fits(arch, (PRESET_KINDS[preset],), ENCODER_RELEASES[encoder][0])
    return discovery.find("ipadapter", patterns, accepts, f"{wanted}{download_source(wanted)}",
                          claimed=release_patterns(PRESETS), unique=True)


def find_encoder(encoder, spec):
    """The CLIP-vision file of the encoder key that gives the adapter (spec) what it reads."""
    patterns, wanted = ENCODERS[encoder]
    name, image_size = ENCODER_RELEASES[encoder]
    accepts = discovery.encoder_feeds(spec, name, image_size)
    return discovery.find("clip_vision", patterns, accepts, f"{name} as {wanted}{download_source(wanted)}")


def load_clip_vision(name):
    """ComfyUI's CLIP vision loader, one copy per file."""
    path = model_cache.resolve("clip_vision", name)
    if path not in _clip_vision_cache:
        _clip_vision_cache[path] = clip_vision.load(path)
    return _clip_vision_cache[path]


class UnifiedLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitUnifiedLoader",
            display_name="IPAdapter Kit: Unified Loader",
            category="ipadapter_kit",
            description="Picks the IP-Adapter and CLIP-vision files for a preset and the connected model's "
                        "family (SD1.5 or SDXL) among your files: by IPAdapter_plus's file names, else by the "
                        "files' tensors (files kept as downloaded, or renamed).",
            inputs=[
                io.Model.Input("model", tooltip="Decides SD1.5 or SDXL; passed through unchanged."),
                io.Combo.Input("preset", options=list(PRESETS), default="STANDARD (medium strength)",
                               tooltip="Which adapter release to use."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), IPAdapter.Output(display_name="IPADAPTER"),
                     io.ClipVision.Output(display_name="CLIP_VISION")],
        )

    @classmethod
    def execute(cls, model, preset):
        arch, _ = patching.model_arch(model)
        choices = PRESETS[preset]
        if arch not in choices:
            raise IncompatibleModelError(f"preset '{preset}' has no {arch} release; pick another preset.")
        adapter = model_cache.load_adapter(find_adapter(preset, arch))
        clip_vision = load_clip_vision(find_encoder(choices[arch][1], adapter.spec))
        adapter = dataclasses.replace(adapter, clip_vision=clip_vision)
        return io.NodeOutput(model, adapter, clip_vision)
