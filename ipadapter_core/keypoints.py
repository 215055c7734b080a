"""InstantID's face keypoints image: the five insightface keypoints drawn the way IdentityNet was trained on them.

InstantX's draw_kps (also in cubiq's ComfyUI_InstantID): on a black image of the face picture's size, each eye and
mouth corner is joined to the nose by a filled ellipse (half the distance long, 4 px semi-minor axis) in that
point's colour at 60 %, then every keypoint gets a filled circle of radius 10 in its full colour. Positions, the
limbs' length and angle snap to whole pixels and degrees by truncation, as the reference does before drawing.
"""
import math
import operator

import torch

from .errors import InvalidInputError

# insightface kps order: left eye, right eye, nose, left mouth corner, right mouth corner.
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))  # drawn in this order, coloured by their first keypoint
STICK_WIDTH = 4  # semi-minor axis of a limb, in pixels
LIMB_SCALE = 0.6  # the limbs' brightness
RADIUS = 10  # of the keypoint circles
# cv2 fills the limb's 1-degree polygon together with its outline: here a limb covers the pixels whose centre lies
# within the ellipse grown by half a pixel, which matches it but for a few outline pixels.
OUTLINE = 0.5


def check_keypoints(kps):
    """kps as a (5, 2) float64 tensor of finite x, y pixels, or an InvalidInputError saying what is wrong."""
    try:
        points = torch.as_tensor(kps, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidInputError(f"face keypoints must be a (5, 2) tensor of x, y pixels; got {type(kps).__name__} "
                                f"({e}).") from e
    if tuple(points.shape) != (len(COLOURS), 2):
        raise InvalidInputError(f"face keypoints must be a (5, 2) tensor of x, y pixels (eyes, nose, mouth corners, "
                                f"as insightface's kps); got shape {tuple(points.shape)}.")
    if not torch.isfinite(points).all():
        raise InvalidInputError(f"face keypoints must be finite numbers; got {points.tolist()}.")
    return points


def _check_size(height, width):
    """(height, width) as ints, or an InvalidInputError for a size that is not a positive whole number."""
    sizes = []
    for name, value in (("height", height), ("width", width)):
        try:
            size = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            size = None
        if size is None or size < 1:
            raise InvalidInputError(f"keypoints image {name} must be a positive whole number of pixels; got "
                                    f"{value!r}.")
        sizes.append(size)
    return sizes


def _window(cx, cy, reach, height, width):
    """(rows, columns) ranges of the image within `reach` pixels of (cx, cy), or None when none is inside."""
    x0, x1 = max(int(math.floor(cx - reach)), 0), min(int(math.ceil(cx + reach)) + 1, width)
    y0, y1 = max(int(math.floor(cy - reach)), 0), min(int(math.ceil(cy + reach)) + 1, height)
    return None if x0 >= x1 or y0 >= y1 else (slice(y0, y1), slice(x0, x1))


def _offsets(window, cx, cy):
    """Pixel-centre offsets (dx, dy) from (cx, cy) over a window, each (rows, columns) float64."""
    rows, cols = window
    dy = torch.arange(rows.start, rows.stop, dtype=torch.float64) - cy
    dx = torch.arange(cols.start, cols.stop, dtype=torch.float64) - cx
    return dx.expand(len(dy), -1), dy[:, None].expand(-1, len(dx))


def paint_ellipse(image, centre, axes, angle, colour):
    """Fill the ellipse (semi-axes `axes`, rotated by `angle` degrees) centred at `centre` with `colour`."""
    cx, cy = centre
    long_axis, short_axis = axes[0] + OUTLINE, axes[1] + OUTLINE  # > 0 even for a limb of length 0
    window = _window(cx, cy, max(long_axis, short_axis), image.shape[0], image.shape[1])
    if window is None:
        return
    dx, dy = _offsets(window, cx, cy)
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    along, across = dx * cos + dy * sin, dy * cos - dx * sin
    image[window][(along / long_axis) ** 2 + (across / short_axis) ** 2 <= 1] = colour


def paint_circle(image, centre, radius, colour):
    """Fill the pixels within `radius` of `centre` with `colour`."""
    window = _window(centre[0], centre[1], radius, image.shape[0], image.shape[1])
    if window is None:
        return
    dx, dy = _offsets(window, *centre)
    image[window][dx ** 2 + dy ** 2 <= radius ** 2] = colour


def draw_keypoints(kps, height, width):
    """The keypoints image of one face: (height, width, 3) float32 in 0..1 (a ComfyUI IMAGE row).

    kps: (5, 2) x, y pixels in insightface's order (left eye, right eye, nose, left / right mouth corner); points
    outside the image are drawn as far as they reach into it.
    """
    points = check_keypoints(kps).tolist()
    height, width = _check_size(height, width)
    image = torch.zeros(height, width, 3, dtype=torch.float32)
    colours = torch.tensor(COLOURS, dtype=torch.float32) / 255
    for first, second in LIMBS:
        (x0, y0), (x1, y1) = points[first], points[second]
        centre = (math.trunc((x0 + x1) / 2), math.trunc((y0 + y1) / 2))
        axes = (math.trunc(math.hypot(x0 - x1, y0 - y1) / 2), STICK_WIDTH)
        angle = math.trunc(math.degrees(math.atan2(y0 - y1, x0 - x1)))
        paint_ellipse(image, centre, axes, angle, colours[first] * LIMB_SCALE)
    for (x, y), colour in zip(points, colours):
        paint_circle(image, (math.trunc(x), math.trunc(y)), RADIUS, colour)
    return image


def keypoint_images(kps_batch, height, width):
    """Keypoints images of B faces, (B, height, width, 3) float32: kps_batch is (B, 5, 2) (or a list of (5, 2))."""
    height, width = _check_size(height, width)
    if isinstance(kps_batch, (list, tuple)):
        faces = list(kps_batch)
    else:
        batch = torch.as_tensor(kps_batch)
        if batch.ndim != 3:
            raise InvalidInputError(f"a batch of face keypoints must be (B, 5, 2); got shape {tuple(batch.shape)}.")
        faces = list(batch)
    if not faces:
        return torch.zeros(0, height, width, 3, dtype=torch.float32)
    return torch.stack([draw_keypoints(kps, height, width) for kps in faces])
