"""What a weight file is, from its tensor names and shapes alone: an image encoder (CLIP, SigLIP, EVA-CLIP) or an
IP-Adapter. Headers only: safetensors' JSON header, or a memory-mapped weights-only torch load (no tensor data read)."""
import json
import math
import os
import pickle
import re
import struct
import threading
import zipfile
from dataclasses import dataclass
from typing import Optional

import torch

from . import formats
from .errors import CorruptFileError, IPAdapterError, UnsafeFileError
from .loading import PICKLE_SUFFIXES, SAFETENSORS_SUFFIXES, refused_object, split_groups

HEADER_LIMIT = 100 * 1024 * 1024  # a safetensors header larger than this is damage, not metadata
# (layout, width, layers, image size) -> the release users know it as
KNOWN_ENCODERS = {
    ("clip", 1280, 32, 224): "CLIP-ViT-H-14",
    ("clip", 1664, 48, 224): "CLIP-ViT-bigG-14",
    ("clip", 1024, 24, 224): "CLIP-ViT-L-14",
    ("clip", 1024, 24, 336): "CLIP-ViT-L-14-336",
    ("siglip", 1152, 27, 378): "SigLIP so400m-patch14-384",  # 27 patches of 14 px,
    ("siglip", 1152, 27, 512): "SigLIP so400m-patch16-512",
    ("eva", 1024, 24, 336): "EVA02-CLIP-L-14-336",
}
# Image-embeds width (CLIP's visual projection) of the known CLIP releases.
KNOWN_PROJECTIONS = {"CLIP-ViT-H-14": 1024, "CLIP-ViT-bigG-14": 1280, "CLIP-ViT-L-14": 768, "CLIP-ViT-L-14-336": 768}
LAYOUT_WORDS = {"clip": "CLIP vision", "siglip": "SigLIP vision", "eva": "EVA-CLIP"}
_LAYER = re.compile(r"\.(?:layers|resblocks|blocks)\.(\d+)\.")
_cache = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class EncoderInfo:
    """An image encoder as its shapes tell: layout, width, depth, input size and image-embeds width."""

    layout: str  # clip (transformers or open_clip keys; ComfyUI loads it) | siglip | eva (EVA-CLIP .pt)
    width: int  # hidden-state width
    layers: int
    image_size: int
    patch: int
    projection: Optional[int] = None  # image_embeds width (CLIP's visual projection); None without one

    @property
    def name(self):
        """The known release with these shapes, or None (a fine-tune, or a small test model)."""
        return KNOWN_ENCODERS.get((self.layout, self.width, self.layers, self.image_size))

    def output_width(self, output):
        """Width of an encoder output an adapter reads (image_embeds, hidden states, pooled, eva_features)."""
        if output == "image_embeds":
            return self.projection
        if output == "eva_features":
            return self.width if self.layout == "eva" else None
        return self.width

    def describe(self):
        embeds = f", image embeds {self.projection}" if self.projection else ""
        shapes = f"width {self.width}, {self.layers} layers, {self.image_size} px{embeds}"
        return f"{self.name} ({shapes})" if self.name else f"{LAYOUT_WORDS[self.layout]} encoder ({shapes})"


def _safetensors_shapes(path, name):
    """{key: shape} from a .safetensors JSON header."""
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            length = struct.unpack("<Q", f.read(8))[0]
            if length > min(size - 8, HEADER_LIMIT):
                raise ValueError(f"header length {length} for a file of {size} bytes")
            header = json.loads(f.read(length))
        return {key: tuple(entry["shape"]) for key, entry in header.items() if key != "__metadata__"}
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptFileError(f"{name}: cannot read this .safetensors header ({e}). It is probably truncated or "
                               "damaged; download it again.") from e


def _flat_shapes(value, prefix=""):
    """{dotted key: shape} of the tensors in a (nested) dict."""
    if isinstance(value, torch.Tensor):
        return {prefix[:-1]: tuple(value.shape)}
    if isinstance(value, dict):
        shapes = {}
        for key, item in value.items():
            shapes.update(_flat_shapes(item, f"{prefix}{key}."))
        return shapes
    return {}


def _pickle_shapes(path, name):
    """{key: shape} of a torch zip file, loaded weights-only and memory-mapped (the data is not read)."""
    if not zipfile.is_zipfile(path):
        raise CorruptFileError(f"{name}: not a PyTorch zip archive (legacy pickle or damaged file). Re-download it "
                               "or convert it to .safetensors.")
    try:
        return _flat_shapes(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(f"{name}: refused, the file holds {refused_object(e)} besides tensors, and loading it "
                              "could run code. Use the .safetensors release of this model.") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CorruptFileError(f"{name}: cannot read this file ({e}). Download it again.") from e


def read_shapes(path):
    """{key: shape} of a weight file's tensors, without their data; cached per path, modification time and size."""
    name = os.path.basename(path)
    stat = os.stat(path)
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _lock:
        hit = _cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        shapes = _safetensors_shapes(path, name)
    elif lower.endswith(PICKLE_SUFFIXES):
        shapes = _pickle_shapes(path, name)
    else:
        raise UnsafeFileError(f"{name}: unsupported file type; expected .safetensors or a PyTorch .bin/.pt/.pth.")
    with _lock:
        _cache[path] = (stamp, shapes)
    return shapes


def _depth(shapes, prefix):
    """1 + the highest block number under prefix."""
    found = (_LAYER.search(key[len(prefix) - 1:]) for key in shapes if key.startswith(prefix))
    numbers = [int(m.group(1)) for m in found if m]
    return 1 + max(numbers) if numbers else 0


def _image_size(positions, patch):
    """Input size of a square patch grid with `positions` patches, or 0 when it is not square."""
    grid = math.isqrt(max(positions, 0))
    return grid * patch if grid * grid == positions and grid else 0


def _transformers_encoder(shapes):
    """CLIP / SigLIP vision tower in transformers' keys (vision_model.*), or None."""
    prefix = "vision_model."  # the only prefix ComfyUI's CLIP-vision loader reads
    patch_key = prefix + "embeddings.patch_embedding.weight"
    if len(shapes.get(patch_key, ())) != 4:
        return None
    positions = shapes.get(prefix + "embeddings.position_embedding.weight", (0,))[0]
    clip = prefix + "embeddings.class_embedding" in shapes
    width, _, patch, _ = shapes[patch_key]
    projection = shapes.get("visual_projection.weight")
    return EncoderInfo(layout="clip" if clip else "siglip", width=width, layers=_depth(shapes, prefix + "encoder."),
                       image_size=_image_size(positions - clip, patch), patch=patch,
                       projection=projection[0] if projection and len(projection) == 2 else None)


def _open_clip_encoder(shapes):
    """open_clip's visual tower (visual.conv1, visual.transformer.resblocks.*), or None."""
    conv = shapes.get("visual.conv1.weight")
    positions = shapes.get("visual.positional_embedding")
    if conv is None or len(conv) != 4 or not positions:
        return None
    projection = shapes.get("visual.proj")
    return EncoderInfo(layout="clip", width=conv[0], layers=_depth(shapes, "visual.transformer."),
                       image_size=_image_size(positions[0] - 1, conv[2]), patch=conv[2],
                       projection=projection[1] if projection and len(projection) == 2 else None)


def _eva_encoder(shapes):
    """EVA-CLIP's visual tower (visual.patch_embed, visual.pos_embed, visual.blocks.*), or None."""
    conv = shapes.get("visual.patch_embed.proj.weight")
    positions = shapes.get("visual.pos_embed")
    if conv is None or len(conv) != 4 or not positions or len(positions) != 3:
        return None
    head = shapes.get("visual.head.weight")
    return EncoderInfo(layout="eva", width=conv[0], layers=_depth(shapes, "visual."),
                       image_size=_image_size(positions[1] - 1, conv[2]), patch=conv[2],
                       projection=head[0] if head and len(head) == 2 else None)


def identify_encoder(shapes):
    """EncoderInfo of an image-encoder state dict's shapes, or None when it is no image encoder this pack knows."""
    for reader in (_transformers_encoder, _open_clip_encoder, _eva_encoder):
        info = reader(shapes)
        if info is not None and info.layers and info.image_size:
            return info
    return None


def adapter_spec(shapes, name="adapter"):
    """The AdapterSpec of an adapter file's shapes (formats.detect on shape-only tensors), or None if it is none."""
    tensors = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    try:
        return formats.detect(split_groups(tensors, name), name)
    except IPAdapterError:
        return None


def known_encoders_for(spec):
    """Names of the known releases whose output the adapter reads has its width (empty: no known release does)."""
    output = spec.clip_output
    if output == "image_embeds":
        return {name for name, width in KNOWN_PROJECTIONS.items() if width == spec.clip_dim}
    if output != "penultimate_hidden_states":
        return set()
    return {name for (_, width, _, _), name in KNOWN_ENCODERS.items()
            if width == spec.clip_dim and not name.startswith("EVA")}


def feeds(info, spec, image_size=None):
    """Whether a CLIP-vision encoder (which ComfyUI loads: clip / siglip layouts) gives what the adapter reads."""
    if info is None or info.layout == "eva" or spec.clip_dim is None:
        return False
    if image_size is not None and info.image_size != image_size:
        return False
    return info.output_width(spec.clip_output) == spec.clip_dim


def describe_shapes(shapes, name="file"):
    """What a file is, in words, from its shapes."""
    info = identify_encoder(shapes)
    if info is not None:
        return info.describe()
    spec = adapter_spec(shapes, name)
    if spec is not None:
        return f"IP-Adapter: {spec.describe()}"
    return f"not an image encoder or IP-Adapter ({len(shapes)} tensors)"
