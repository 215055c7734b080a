"""CLIP-vision loading that keeps SigLIP's attention-pooling head (InstantX Flux reads SigLIP's pooled output)."""
import os
import weakref

import comfy.clip_vision
from comfy_api.latest import io

from ..ipadapter_core import siglip_head
from ..ipadapter_core.errors import IncompatibleModelError, InvalidInputError, IPAdapterError
from . import model_cache, paths

CATEGORY = "ipadapter_kit"
ENCODER = "SigLIP so400m-patch14-384 (its pooled output)"
_heads = weakref.WeakKeyDictionary()  # CLIP_VISION object -> SiglipPoolingHead read from the same file


def _attention_heads(clip_vision):
    """num_attention_heads of a ComfyUI CLIP-vision model (not stored in the file, so read from the built model)."""
    return clip_vision.model.vision_model.encoder.layers[0].self_attn.heads


def load(path):
    """ComfyUI's own CLIP-vision load, plus the pooling head when the file is SigLIP with one."""
    clip_vision = comfy.clip_vision.load(path)
    if clip_vision is None:
        raise InvalidInputError(f"{os.path.basename(path)} is not a CLIP vision model ComfyUI recognises.")
    try:
        tensors = siglip_head.read_head_tensors(path)
    except IPAdapterError:
        return clip_vision  # not SigLIP, or SigLIP without its head: adapters that need it say so when used
    _heads[clip_vision] = siglip_head.build_head(tensors, heads=_attention_heads(clip_vision), name=path)
    return clip_vision


def pooled(clip_vision, last_hidden_state):
    """SigLIP's pooled output (B, D) for ComfyUI's last_hidden_state, or an error saying how to get the head."""
    head = _heads.get(clip_vision)
    if head is None and not getattr(clip_vision.model.vision_model, "output_layernorm", False):
        raise IncompatibleModelError(
            f"this adapter needs {ENCODER} but the CLIP vision model given is not SigLIP ({last_hidden_state.shape[1]} "
            f"tokens of width {last_hidden_state.shape[-1]}). Load siglip-so400m-patch14-384's model.safetensors with "
            "'IPAdapter Kit: Load CLIP Vision'.")
    if head is None:
        raise IncompatibleModelError(
            "this adapter reads SigLIP's pooled output (its attention-pooling head), which ComfyUI's Load CLIP "
            "Vision drops. Load google/siglip-so400m-patch14-384's model.safetensors with 'IPAdapter Kit: Load "
            "CLIP Vision' instead (it keeps the head). " + siglip_head.FULL_FILE_HINT)
    return head.to(last_hidden_state.device)(last_hidden_state)


class CLIPVisionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitCLIPVisionLoader",
            display_name="IPAdapter Kit: Load CLIP Vision",
            category=CATEGORY,
            description="Loads a CLIP vision file with ComfyUI's own loader and also keeps SigLIP's attention-"
                        "pooling head when the file has it, which the InstantX Flux IP-Adapter needs. Works for "
                        "every CLIP vision file.",
            inputs=[io.Combo.Input("clip_name", options=paths.weight_files("clip_vision"),
                                   tooltip="A file in models/clip_vision (for InstantX Flux: the full "
                                           "siglip-so400m-patch14-384 model.safetensors).")],
            outputs=[io.ClipVision.Output()],
        )

    @classmethod
    def execute(cls, clip_name):
        return io.NodeOutput(load(model_cache.resolve("clip_vision", clip_name)))
