"""Image helpers for references (IMAGE tensors are (B, H, W, C) floats in [0, 1])."""
import torch
import torch.nn.functional as F

from .errors import InvalidInputError

CROP_POSITIONS = ("center", "top", "bottom", "left", "right", "pad")
INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest-exact", "area": "area",
                  "lanczos (antialiased bicubic)": "bicubic"}
NOISE_TYPES = ("fade", "dissolve", "gaussian", "shuffle")


def _square(image, position):
    """Crop (or pad) an IMAGE batch to a square at the given position."""
    _, h, w, _ = image.shape
    side = min(h, w)
    if position == "pad":
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        return F.pad(image.permute(0, 3, 1, 2), (left, side - w - left, top, side - h - top)).permute(0, 2, 3, 1)
    top = {"top": 0, "bottom": h - side}.get(position, (h - side) // 2)
    left = {"left": 0, "right": w - side}.get(position, (w - side) // 2)
    return image[:, top:top + side, left:left + side]


def resize(image, size, interpolation="bicubic"):
    """Resize an IMAGE batch to size x size."""
    mode = INTERPOLATIONS[interpolation]
    antialias = mode in ("bicubic", "bilinear") and "lanczos" in interpolation
    x = image.permute(0, 3, 1, 2)
    kwargs = {"antialias": antialias} if mode in ("bicubic", "bilinear") else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs).clamp(0, 1).permute(0, 2, 3, 1)


def sharpen(image, amount):
    """Unsharp mask: image + amount * (image - blurred)."""
    if amount <= 0:
        return image
    x = image.permute(0, 3, 1, 2)
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype) / 16
    kernel = kernel.view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    return (x + amount * (x - blurred)).clamp(0, 1).permute(0, 2, 3, 1)


def prep_for_clip(image, size=224, interpolation="bicubic", crop_position="center", sharpening=0.0):
    """Square crop/pad at crop_position, resize to the encoder size, optional sharpening."""
    if crop_position not in CROP_POSITIONS:
        raise InvalidInputError(f"crop_position {crop_position!r} is not one of {CROP_POSITIONS}.")
    return sharpen(resize(_square(image, crop_position), size, interpolation), sharpening)


def noise_image(kind, strength, size=224, batch=1, image=None, seed=0):
    """A negative reference made of noise: fade/dissolve/gaussian/shuffle of image (or of mid-gray)."""
    if kind not in NOISE_TYPES:
        raise InvalidInputError(f"noise type {kind!r} is not one of {NOISE_TYPES}.")
    gen = torch.Generator().manual_seed(seed)
    base = torch.full((batch, size, size, 3), 0.5) if image is None else image[..., :3].float()
    noise = torch.rand(base.shape, generator=gen)
    if kind == "fade":
        return (base * (1 - strength) + noise * strength).clamp(0, 1)
    if kind == "dissolve":
        keep = (torch.rand(base.shape[:3] + (1,), generator=gen) >= strength).to(base.dtype)
        return base * keep + noise * (1 - keep)
    if kind == "gaussian":
        return (base + torch.randn(base.shape, generator=gen) * strength).clamp(0, 1)
    flat = base.reshape(base.shape[0], -1, 3)
    count = int(flat.shape[1] * strength)
    perm = torch.randperm(flat.shape[1], generator=gen)[:count]
    shuffled = flat.clone()
    shuffled[:, perm] = flat[:, perm[torch.randperm(count, generator=gen)]]
    return shuffled.reshape(base.shape)

