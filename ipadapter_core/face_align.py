"""FFHQ 5-point face alignment, as PuLID gets it from facexlib's FaceRestoreHelper, in torch.

facexlib 0.3.0 `utils/face_restoration_helper.py`: the 5 landmarks are mapped onto the FFHQ 512 template (scaled by
face_size / 512) with `cv2.estimateAffinePartial2D(..., method=cv2.LMEDS)`, a similarity, and the BGR uint8 picture
is warped with `cv2.warpAffine(img, M, (size, size), borderMode=BORDER_CONSTANT, borderValue=(135, 133, 132))` and
the default INTER_LINEAR. The border value is in BGR order, so in RGB it is (132, 133, 135) / 255.

Here the similarity is the least-squares one (Umeyama without reflection). With all five points inliers, which is
the usual case, OpenCV's LMEDS refines to that same fit. The warp follows OpenCV: output pixel (x, y), with pixel
centres at whole coordinates, samples the input bilinearly at M^-1 (x, y, 1), and any input outside reads as border.
"""
import operator

import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .image_ops import check_rgb_images

# Order: left eye, right eye, nose, left mouth corner, right mouth corner ("left" = the image's left), the order
# of insightface's kps and of facexlib's RetinaFace landmarks.
FFHQ_TEMPLATE_512 = torch.tensor([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                                  [201.26117, 371.41043], [313.08905, 371.15118]], dtype=torch.float64)
FFHQ_BORDER_RGB = (132 / 255, 133 / 255, 135 / 255)  # facexlib's borderValue (135, 133, 132) is BGR
FACE_SIZE = 512


def ffhq_template(size=FACE_SIZE):
    """The FFHQ template for a size x size crop: the 512 one times size / 512, as facexlib scales it."""
    return FFHQ_TEMPLATE_512 * (_check_size(size) / 512.0)


def _check_size(size):
    """size as a positive int, or an InvalidInputError."""
    try:
        value = None if isinstance(size, bool) else operator.index(size)
    except TypeError:
        value = None
    if value is None or value < 1:
        raise InvalidInputError(f"face crop size must be a positive whole number of pixels; got {size!r}.")
    return value


def _check_points(points, name, leading=()):
    """points as a float64 CPU tensor of shape leading + (5, 2) with finite values, or an InvalidInputError."""
    try:
        pts = torch.as_tensor(points).detach().to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidInputError(f"{name} must be a (5, 2) tensor of x, y pixels; got {type(points).__name__} "
                                f"({e}).") from e
    want = tuple(leading) + (5, 2)
    if tuple(pts.shape) != want:
        raise InvalidInputError(f"{name} must have shape {want} (x, y of left eye, right eye, nose, left and right "
                                f"mouth corners, as insightface's kps); got {tuple(pts.shape)}.")
    if not torch.isfinite(pts).all():
        raise InvalidInputError(f"{name} must be finite numbers; got {pts.tolist()}.")
    return pts


def _spread(pts, name):
    """Centred points and their mean squared norm, or an InvalidInputError when the points (nearly) coincide."""
    centred = pts - pts.mean(dim=0)
    var = centred.pow(2).sum(dim=1).mean()
    scale = max(1.0, float(pts.abs().max()))
    if not float(var) > (1e-6 * scale) ** 2:
        raise InvalidInputError(f"{name} are all at one place ({pts.tolist()}): a face needs distinct eyes, nose "
                                f"and mouth corners to be aligned.")
    return centred, var


def similarity_transform(src, dst):
    """(2, 3) float64 least-squares similarity M (rotation, uniform scale, translation) with dst ~ M @ (src, 1)."""
    src = _check_points(src, "source points")
    dst = _check_points(dst, "target points")
    s, var = _spread(src, "source points")
    d, _ = _spread(dst, "target points")
    # In 2D the Umeyama fit without reflection is the complex least squares d ~ z s: z = sum(conj(s) d) / sum |s|^2.
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).mean() / var
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).mean() / var
    linear = torch.stack([torch.stack([a, -b]), torch.stack([b, a])])
    shift = dst.mean(dim=0) - linear @ src.mean(dim=0)
    return torch.cat([linear, shift[:, None]], dim=1)


def _invert(matrices):
    """Inverses of (B, 2, 3) affine matrices, as (B, 2, 3) float64."""
    linear, shift = matrices[:, :, :2], matrices[:, :, 2:]
    inv = torch.linalg.inv(linear)
    return torch.cat([inv, -inv @ shift], dim=2)


def _check_border(border):
    """border as a tuple of 3 finite floats, or an InvalidInputError."""
    try:
        values = tuple(float(v) for v in border)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"border must be 3 numbers (R, G, B in 0..1); got {border!r}.") from e
    if len(values) != 3 or not all(abs(v) < float("inf") for v in values):
        raise InvalidInputError(f"border must be 3 finite numbers (R, G, B in 0..1); got {border!r}.")
    return values


def warp_affine(images, matrices, size=FACE_SIZE, border=FFHQ_BORDER_RGB):
    """(B, size, size, 3) warp of (B, H, W, 3) images by (B, 2, 3) matrices, as cv2.warpAffine with INTER_LINEAR."""
    images = check_rgb_images(images, "images")
    size, border = _check_size(size), _check_border(border)
    mats = torch.as_tensor(matrices).detach().to(device="cpu", dtype=torch.float64)
    if tuple(mats.shape) != (images.shape[0], 2, 3) or not torch.isfinite(mats).all():
        raise InvalidInputError(f"warp matrices must be finite, shape {(images.shape[0], 2, 3)}; got "
                                f"{tuple(mats.shape)}.")
    if (torch.linalg.det(mats[:, :, :2]).abs() < 1e-12).any():
        raise InvalidInputError("a warp matrix is singular (zero scale): it maps the face onto a point.")
    height, width = images.shape[1:3]
    inv = _invert(mats)
    coords = torch.arange(size, dtype=torch.float64)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    out_pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # (size, size, 3)
    src = torch.einsum("bij,hwj->bhwi", inv, out_pixels)  # input pixel coordinates, centres at whole numbers
    # align_corners=False: normalised g covers pixel edges, so the pixel centre u is g = (2u + 1) / W - 1.
    grid = torch.stack([(2 * src[..., 0] + 1) / width - 1, (2 * src[..., 1] + 1) / height - 1], dim=-1)
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32
    fill = torch.tensor(border, dtype=dtype, device=images.device)
    shifted = (images.to(dtype) - fill).permute(0, 3, 1, 2)  # zero padding of image - border = border padding
    sampled = F.grid_sample(shifted, grid.to(device=images.device, dtype=dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    return (sampled.permute(0, 2, 3, 1) + fill).to(images.dtype)


def align_faces(images, kps, size=FACE_SIZE, border=FFHQ_BORDER_RGB):
    """(B, size, size, 3) FFHQ crops of (B, H, W, 3) RGB images from their (B, 5, 2) insightface keypoints."""
    images = check_rgb_images(images, "images")
    points = _check_points(kps, "face keypoints", leading=(images.shape[0],))
    template = ffhq_template(size)
    mats = torch.stack([similarity_transform(p, template) for p in points])
    return warp_affine(images, mats, size, border)


def align_face(image, kps, size=FACE_SIZE, border=FFHQ_BORDER_RGB):
    """(size, size, 3) FFHQ crop of one (H, W, 3) RGB image in 0..1 from its (5, 2) insightface keypoints."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InvalidInputError(f"image must be an (H, W, 3) RGB tensor; got {shape}.")
    points = _check_points(kps, "face keypoints")
    return align_faces(image[None], points[None], size, border)[0]
