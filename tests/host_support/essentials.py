"""Test host only: stand-ins for the cubiq/ComfyUI_essentials nodes that IPAdapter_plus examples use.

Node ids, inputs, widget layouts and outputs are those of the essentials version the examples were saved with
(August 2024: SimpleMath+ with inputs a and b; MaskFromRGBCMYBW+ with remove_isolated_pixels and fill_holes).
Each does what the original does, written here from its behaviour:
- SimpleMath+: evaluates the expression over a and b (numbers, + - * / // % **, comparisons, min/max/round/abs);
  outputs (rounded INT, FLOAT).
- ImageListToBatch+: a list of images to one batch, resized (bicubic, centre crop) to the first one's size.
- ConditioningCombineMultiple+: the conditionings' entries one after the other (as core's Conditioning Combine).
- MaskFromRGBCMYBW+: masks of the pixels near each of the eight corner colours, with opening / hole filling.
- ImageCASharpening+: contrast adaptive sharpening (AMD FidelityFX CAS) of 3x3 neighbourhoods.
- ImageRandomTransform+: `repeat` copies, each randomly warped, rotated, colour-jittered, flipped and re-cropped by
  torchvision with the seed; not bit-equal to essentials' output (its draws differ), the same kind of variation.
"""
import ast
import operator

import numpy as np
import torch
import torch.nn.functional as F

import comfy.utils

CATEGORY = "essentials (test stand-in)"


class AnyType(str):
    """A socket type that accepts any link (ComfyUI compares types with !=)."""

    def __ne__(self, other):
        return False


ANY = AnyType("*")
BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge}
FUNCTIONS = {"min": min, "max": max, "round": round, "abs": abs}


def evaluate(expression, names):
    """The value of an arithmetic expression over names; anything else is refused."""
    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            return BINARY[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return -value(node.operand) if isinstance(node.op, ast.USub) else value(node.operand)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in COMPARE:
            return COMPARE[type(node.ops[0])](value(node.left), value(node.comparators[0]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
            return FUNCTIONS[node.func.id](*[value(arg) for arg in node.args])
        raise ValueError(f"SimpleMath+: {ast.dump(node)} is not supported in {expression!r}")
    return value(ast.parse(expression.strip() or "0", mode="eval").body)


def as_number(value):
    """A socket value as a number (a tensor's shape is not supported here)."""
    return float(value) if isinstance(value, str) else value


class SimpleMath:
    @classmethod
    def INPUT_TYPES(cls):
        return {"optional": {"a": (ANY, {"default": 0.0}), "b": (ANY, {"default": 0.0})},
                "required": {"value": ("STRING", {"multiline": False, "default": ""})}}

    RETURN_TYPES = ("INT", "FLOAT")
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, value, a=0.0, b=0.0):
        result = evaluate(value, {"a": as_number(a), "b": as_number(b)})
        return (round(result), float(result))


class ImageListToBatch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    INPUT_IS_LIST = True
    CATEGORY = CATEGORY

    def execute(self, image):
        height, width = image[0].shape[1:3]
        resized = [img if img.shape[1:3] == (height, width) else comfy.utils.common_upscale(
            img.movedim(-1, 1), width, height, "bicubic", "center").movedim(1, -1) for img in image]
        return (torch.cat(resized, dim=0),)


class ConditioningCombineMultiple:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)},
                "optional": {f"conditioning_{i}": ("CONDITIONING",) for i in (3, 4, 5)}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, conditioning_1, conditioning_2, conditioning_3=None, conditioning_4=None, conditioning_5=None):
        parts = (conditioning_1, conditioning_2, conditioning_3, conditioning_4, conditioning_5)
        return ([entry for part in parts if part is not None for entry in part],)


COLOURS = ("red", "green", "blue", "cyan", "magenta", "yellow", "black", "white")
CORNERS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "cyan": (0, 1, 1), "magenta": (1, 0, 1),
           "yellow": (1, 1, 0), "black": (0, 0, 0), "white": (1, 1, 1)}


def colour_mask(image, corner, thresholds):
    """Pixels whose every channel lies within its threshold of the corner colour's 0 or 1."""
    mask = torch.ones(image.shape[:-1], dtype=torch.bool)
    for channel, (high, threshold) in enumerate(zip(corner, thresholds)):
        mask &= image[..., channel] >= 1 - threshold if high else image[..., channel] < threshold
    return mask


def clean_mask(mask, opening, fill_holes):
    """Binary opening with an opening x opening square, then hole filling, frame by frame."""
    import scipy.ndimage

    frames = []
    for frame in mask.cpu().numpy():
        if opening > 0:
            frame = scipy.ndimage.binary_opening(frame, structure=np.ones((opening, opening)))
        if fill_holes:
            frame = scipy.ndimage.binary_fill_holes(frame)
        frames.append(torch.from_numpy(np.asarray(frame)))
    return torch.stack(frames)


class MaskFromRGBCMYBW:
    @classmethod
    def INPUT_TYPES(cls):
        threshold = ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1, "step": 0.01})
        return {"required": {"image": ("IMAGE",), "threshold_r": threshold, "threshold_g": threshold,
                             "threshold_b": threshold,
                             "remove_isolated_pixels": ("INT", {"default": 0, "min": 0, "max": 32, "step": 1}),
                             "fill_holes": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("MASK",) * 8
    RETURN_NAMES = COLOURS
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, image, threshold_r, threshold_g, threshold_b, remove_isolated_pixels, fill_holes):
        thresholds = (threshold_r, threshold_g, threshold_b)
        masks = []
        for name in COLOURS:
            mask = colour_mask(image, CORNERS[name], thresholds)
            if name == "black":  # black includes its thresholds (the other colours' low sides do not)
                mask = (image <= torch.tensor(thresholds)).all(dim=-1)
            if remove_isolated_pixels > 0 or fill_holes:
                mask = clean_mask(mask, remove_isolated_pixels, fill_holes)
            masks.append(mask.float())
        return tuple(masks)


def contrast_adaptive_sharpening(image, amount):
    """AMD CAS on (B, H, W, C) in 0..1: each pixel minus an adaptive share of its 4 neighbours."""
    x = F.pad(image.movedim(-1, 1), (1, 1, 1, 1))
    h, w = image.shape[1:3]
    tap = {(dy, dx): x[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    cross = [tap[p] for p in ((-1, 0), (0, -1), (0, 0), (0, 1), (1, 0))]
    corners = [tap[p] for p in ((-1, -1), (-1, 1), (1, -1), (1, 1))]
    low = torch.stack(cross).amin(0) + torch.stack(corners).amin(0)
    high = torch.stack(cross).amax(0) + torch.stack(corners).amax(0)
    strength = torch.sqrt(torch.minimum(low, 2 - high) / (high + 1e-5))
    weight = -strength * (amount * (1 / 5 - 1 / 8) + 1 / 8)
    neighbours = tap[(-1, 0)] + tap[(0, -1)] + tap[(0, 1)] + tap[(1, 0)]
    out = (neighbours * weight + tap[(0, 0)]) / (1 + 4 * weight)
    return out.clamp(0, 1).movedim(1, -1)


class ImageCAS:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "amount": ("FLOAT", {"default": 0.8, "min": 0, "max": 1, "step": 0.05})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, image, amount):
        return (contrast_adaptive_sharpening(image, amount),)


class ImageRandomTransform:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}),
                             "repeat": ("INT", {"default": 1, "min": 1, "max": 256, "step": 1}),
                             "variation": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.05})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"
    CATEGORY = CATEGORY

    def execute(self, image, seed, repeat, variation):
        import torchvision.transforms as T

        h, w = image.shape[1:3]
        v = variation
        modes = T.InterpolationMode
        transform = T.Compose([
            T.RandomPerspective(distortion_scale=0.2 * v, p=0.5),
            T.RandomRotation(degrees=5 * v, interpolation=modes.BILINEAR, expand=True),
            T.ColorJitter(brightness=0.5 * v, contrast=0.5 * v, saturation=0.5 * v, hue=(-0.2 * v, 0.2 * v)),
            T.RandomHorizontalFlip(p=0.5),
            T.RandomResizedCrop((h, w), scale=(1 - 0.5 * v, 1 + 0.5 * v), ratio=(w / h, w / h),
                                interpolation=modes.BICUBIC),
        ])
        torch.manual_seed(seed)
        frames = image.repeat(repeat, 1, 1, 1).movedim(-1, 1)
        out = torch.cat([transform(frame[None]) for frame in frames])
        return (out.movedim(1, -1).clamp(0, 1),)


NODE_CLASS_MAPPINGS = {
    "SimpleMath+": SimpleMath,
    "ImageListToBatch+": ImageListToBatch,
    "ConditioningCombineMultiple+": ConditioningCombineMultiple,
    "MaskFromRGBCMYBW+": MaskFromRGBCMYBW,
    "ImageCASharpening+": ImageCAS,
    "ImageRandomTransform+": ImageRandomTransform,
}
