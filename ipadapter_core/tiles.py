"""Tiled references as IPAdapter_plus cuts them: the CLIP-vision enhancer's N x N grid and the Tiled node's tiles.

IMAGE tensors are (B, H, W, C) floats in [0, 1]; MASK tensors (B, H, W).
"""
import math

import torch
import torch.nn.functional as F

from .errors import InvalidInputError

MAX_ENHANCE_TILES = 16
TILE_SIZE = 256  # IPAdapter_plus's tile side (the encoder resizes tiles to its own size)
NEAR_SQUARE = (0.75, 1.33)  # aspect (h / w) range whose centre square is cut into 2 x 2 tiles
MAX_TILES_PER_SIDE = 4


# ---------------------------------------------------------------------------------------------------------------
# ClipVision Enhancer: whole image + N x N grid merged back to one embedding per image.
def check_enhance_tiles(count):
    """Raise a clear error for an enhance_tiles outside 1..16."""
    if not isinstance(count, int) or not 1 <= count <= MAX_ENHANCE_TILES:
        raise InvalidInputError(f"enhance_tiles is {count!r}; expected a whole number from 1 to {MAX_ENHANCE_TILES} "
                                "(the grid is enhance_tiles x enhance_tiles).")


def grid_tiles(image, count):
    """Each image cut into a count x count grid of (H // count, W // count) tiles: (B * count^2, h, w, C), row-major
    per image (a remainder of H or W is left out, as IPAdapter_plus does)."""
    _, height, width, _ = image.shape
    h, w = height // count, width // count
    if h == 0 or w == 0:
        raise InvalidInputError(f"the reference is {height}x{width} pixels: too small for a {count}x{count} grid. "
                                "Lower enhance_tiles or use a larger image.")
    tiles = [image[:, i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(count) for j in range(count)]
    return torch.stack(tiles, dim=1).reshape(-1, h, w, image.shape[-1])


def _mosaic_pool(maps, count):
    """(count^2, s, s, E) tile maps laid out as a count x count mosaic, average-pooled back to (s, s, E)."""
    side = maps.shape[1]
    rows = maps.reshape(count, count, side, side, -1)
    mosaic = torch.cat([torch.cat(list(row), dim=1) for row in rows], dim=0)  # (count*s, count*s, E)
    pooled = F.adaptive_avg_pool2d(mosaic.permute(2, 0, 1), (side, side))
    return pooled.permute(1, 2, 0)


def merge_hidden_states(states, count):
    """(B * count^2, T, E) tile hidden states -> (B, T, E): the class token (CLIP's, when T = 1 + s*s) averaged, the
    s x s patch tokens of the tiles placed as in the image and pooled back to one tile's grid (SigLIP's T = s*s
    have no class token)."""
    tokens = states.shape[1]
    leading = 0 if math.isqrt(tokens) ** 2 == tokens else 1
    side = math.isqrt(tokens - leading)
    if side * side != tokens - leading:
        raise InvalidInputError(f"the CLIP vision hidden states have {tokens} tokens, not a square grid of patches "
                                "(with or without a class token): the enhancer cannot place them. Use "
                                "enhance_tiles 1 with this encoder.")
    merged = []
    for group in states.split(count * count):
        patches = _mosaic_pool(group[:, leading:].reshape(-1, side, side, group.shape[-1]), count)
        merged.append(torch.cat([group[:, :leading].mean(dim=0), patches.reshape(side * side, -1)]))
    return torch.stack(merged)


def merge_pooled(embeds, count):
    """(B * count^2, E) tile embeddings -> (B, E). A square width E = s*s is read as an s x s map and merged like the
    patch tokens (IPAdapter_plus's formula); any other width (ViT-bigG's 1280, ViT-L's 768, SigLIP's 1152, where
    IPAdapter_plus fails) takes the tiles' mean."""
    side = math.isqrt(embeds.shape[-1])
    merged = []
    for group in embeds.split(count * count):
        if side * side == embeds.shape[-1]:
            merged.append(_mosaic_pool(group.reshape(-1, side, side, 1), count).reshape(-1))
        else:
            merged.append(group.mean(dim=0))
    return torch.stack(merged)


def merge_tiles(embeds, count):
    """Per-image embedding of its count x count tiles' encoder outputs (hidden states or pooled)."""
    return merge_hidden_states(embeds, count) if embeds.ndim == 3 else merge_pooled(embeds, count)


def enhance(whole, tiles, ratio):
    """Whole-image encodings (B, ...) with their merged tiles (B, ...): one image -> two references (the whole
    scaled by ratio, then the tiles, combined later by combine_embeds); several -> per image ratio * whole +
    (1 - ratio) * tiles."""
    if whole.shape[0] > 1:
        return whole * ratio + tiles * (1 - ratio)
    return torch.cat([whole * ratio, tiles])


# ---------------------------------------------------------------------------------------------------------------
# Tiled: the reference resized to a 256-pixel short side and cut into 256 x 256 tiles, each with its mask.
def _resize(x, size):
    """(B, C, H, W) resized to size=(h, w), antialiased bicubic, clamped to [0, 1]."""
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _center_crop(x, size):
    """(B, C, H, W) centre-cropped to size=(h, w)."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]]


def tiled_frame(height, width):
    """How IPAdapter_plus frames a reference before tiling: (centre crop of the original or None, resized (h, w),
    centre crop of the resized image or None)."""
    aspect = height / width
    if NEAR_SQUARE[0] < aspect < NEAR_SQUARE[1]:
        side = min(height, width)
        return (side, side), (2 * TILE_SIZE, 2 * TILE_SIZE), None
    if height < width:
        size = (TILE_SIZE, int(TILE_SIZE * width / height))
    else:
        size = (int(TILE_SIZE * height / width), TILE_SIZE)
    longest = MAX_TILES_PER_SIDE * TILE_SIZE
    crop = (min(size[0], longest), min(size[1], longest)) if not 1 / 4 <= aspect <= 4 else None
    return None, size, crop


def _starts(length, overlap):
    """Tile starts along one side: the fewest tiles that cover it with at least the minimum overlap, spread evenly."""
    if length <= TILE_SIZE:
        return [0]
    count = math.ceil((length - TILE_SIZE) / (TILE_SIZE * (1 - overlap))) + 1
    step = TILE_SIZE - (count * TILE_SIZE - length) / (count - 1)
    return [int(i * step) for i in range(count)]


def tile_layout(height, width, overlap=0.0):
    """(top, left) of every 256-pixel tile of a framed (height, width) image, row-major; overlap is the minimum
    fraction neighbouring tiles share (0: IPAdapter_plus's layout)."""
    return [(top, left) for top in _starts(height, overlap) for left in _starts(width, overlap)]


def frame_reference(image, mask=None):
    """IMAGE (B, H, W, C) and MASK (M, H', W') or None framed as IPAdapter_plus's Tiled does: (image, mask) at the
    tiling scale, the mask first stretched to the image's size (None: all ones)."""
    _, height, width, _ = image.shape
    first_crop, size, last_crop = tiled_frame(height, width)
    x = image.permute(0, 3, 1, 2)
    m = None if mask is None else _resize(mask.unsqueeze(1).float(), (height, width))
    if first_crop is not None:
        x, m = _center_crop(x, first_crop), None if m is None else _center_crop(m, first_crop)
    x, m = _resize(x, size), None if m is None else _resize(m, size)
    if last_crop is not None:
        x, m = _center_crop(x, last_crop), None if m is None else _center_crop(m, last_crop)
    m = torch.ones(1, 1, *x.shape[-2:]) if m is None else m
    return x.permute(0, 2, 3, 1), m.squeeze(1)


def cut_tiles(image, mask, overlap=0.0):
    """Framed image (B, h, w, C) and mask (M, h, w) -> [(tile (B, 256, 256, C), tile mask (M, h, w))]: each tile's
    mask is the mask inside the tile and zero elsewhere."""
    _, height, width, _ = image.shape
    cut = []
    for top, left in tile_layout(height, width, overlap):
        rows, cols = slice(top, top + TILE_SIZE), slice(left, left + TILE_SIZE)
        tile_mask = torch.zeros_like(mask)
        tile_mask[:, rows, cols] = mask[:, rows, cols]
        cut.append((image[:, rows, cols], tile_mask))
    return cut


def contrast_adaptive_sharpening(image, amount):
    """AMD FidelityFX contrast-adaptive sharpening of an IMAGE (B, H, W, C), amount 0..1 (0: unchanged)."""
    if amount <= 0:
        return image
    x = F.pad(image.permute(0, 3, 1, 2), (1, 1, 1, 1))  # zero border, as IPAdapter_plus pads

    def at(dy, dx):
        return x[..., 1 + dy:x.shape[-2] - 1 + dy, 1 + dx:x.shape[-1] - 1 + dx]

    centre = at(0, 0)
    cross = torch.stack([at(-1, 0), at(0, -1), centre, at(0, 1), at(1, 0)])
    corners = torch.stack([at(-1, -1), at(-1, 1), at(1, -1), at(1, 1)])
    low = cross.min(dim=0).values.clamp(min=0) + corners.min(dim=0).values.clamp(min=0)
    high = cross.max(dim=0).values.clamp(max=1) + corners.max(dim=0).values.clamp(max=1)
    amplitude = torch.sqrt(torch.minimum(low, 2 - high) / high)
    lobe = -amplitude * (amount * (1 / 5 - 1 / 8) + 1 / 8)
    neighbours = at(-1, 0) + at(0, -1) + at(0, 1) + at(1, 0)
    out = (neighbours * lobe + centre) / (1 + 4 * lobe)
    return torch.nan_to_num(out).clamp(0, 1).permute(0, 2, 3, 1)
