"""CLIP-vision encoding of reference images through ComfyUI's CLIP_VISION object."""
import torch

import comfy.model_management
import comfy.utils

from ..ipadapter_core.errors import InvalidInputError
from . import clip_vision as clip_vision_heads

ENCODE_BATCH = 16


def check_images(image, what="image"):
    """Raise a clear error for an IMAGE that cannot be encoded."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise InvalidInputError(f"{what}: expected an IMAGE batch (B, H, W, C), got "
                                f"{getattr(image, 'shape', type(image).__name__)}.")
    if image.shape[0] == 0:
        raise InvalidInputError(f"{what}: the image batch is empty; connect at least one image.")
    if image.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"{what}: images have {image.shape[-1]} channels; expected RGB (3), RGBA (4) "
                                "or grayscale (1).")
    if not torch.isfinite(image).all():
        raise InvalidInputError(f"{what}: the images contain NaN or infinite values; expected pixel values from 0 "
                                "to 1. Check the node that produced them (an upscaler, a custom image node...).")


def to_rgb(image):
    """(B, H, W, C) with C in 1/3/4 -> RGB (alpha dropped, gray repeated)."""
    if image.shape[-1] == 1:
        return image.repeat(1, 1, 1, 3)
    return image[..., :3]


def _output(clip_vision, batch, output):
    """One CLIP-vision output of an image batch; `pooled` is SigLIP's pooling head over last_hidden_state."""
    encoded = clip_vision.encode_image(batch, crop=True)
    if output == "pooled":
        return clip_vision_heads.pooled(clip_vision, encoded["last_hidden_state"].to(torch.float32))
    return encoded[output].to(torch.float32)


def encode(clip_vision, image, output, what="image", batch_size=None):
    """The chosen CLIP-vision output for each image: image_embeds / pooled (B, E) or hidden states (B, T, W).

    Encodes batch_size images per call (0: all at once; None: ENCODE_BATCH); each image's output is the same."""
    check_images(image, what)
    image = to_rgb(image)
    if batch_size is None:
        batch_size = ENCODE_BATCH
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise InvalidInputError(f"encode_batch_size: got {batch_size!r}; expected a whole number >= 0 "
                                "(0 encodes all images at once).")
    batch_size = batch_size or image.shape[0]
    chunks = []
    bar = comfy.utils.ProgressBar(image.shape[0])
    for start in range(0, image.shape[0], batch_size):
        batch = image[start:start + batch_size]
        chunks.append(_output(clip_vision, batch, output))
        bar.update(batch.shape[0])
    return torch.cat(chunks).to(comfy.model_management.intermediate_device())


def default_negative(clip_vision, output, positive):
    """The adapter's own negative: zero embeds for image_embeds / pooled, a black image's hidden states otherwise."""
    if output in ("image_embeds", "pooled"):
        return torch.zeros_like(positive)
    black = torch.zeros(1, 224, 224, 3)
    return encode(clip_vision, black, output, "negative").expand(positive.shape[0], *positive.shape[1:]).clone()
