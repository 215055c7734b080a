"""Image helpers for references (IMAGE tensors are (B, H, W, C) floats in [0, 1])."""
import torch
import torch.nn.functional as F

from .errors import InvalidInputError

CROP_POSITIONS = ("center", "top", "bottom", "left", "right", "pad")
INTERPOLATIONS = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest-exact", "area": "area",
                  "lanczos (antialiased bicubic)": "bicubic", "lanczos": "lanczos"}
LANCZOS_LOBES = 3
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


def lanczos_matrix(in_size, out_size, dtype=torch.float32):
    """(out, in) Lanczos-3 resampling weights, computed as PIL computes its LANCZOS filter.

    Each output pixel centre maps back into the input; when shrinking, the kernel is stretched by the scale so it
    also low-passes (antialiasing); each row is normalised to sum 1.
    """
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = LANCZOS_LOBES * stretch
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        centre = (i + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), in_size)
        x = (torch.arange(first, last, dtype=torch.float64) - centre + 0.5) / stretch
        row = torch.where((x >= -LANCZOS_LOBES) & (x < LANCZOS_LOBES), torch.sinc(x) * torch.sinc(x / LANCZOS_LOBES),
                          torch.zeros_like(x))
        total = row.sum()
        weights[i, first:last] = row / total if total != 0 else row
    return weights.to(dtype)


def lanczos_resize(image, height, width):
    """Lanczos-3 resampling of an IMAGE batch, rows first then columns (as PIL), clamped to [0, 1]."""
    x = image.permute(0, 3, 1, 2)
    rows = lanczos_matrix(x.shape[-1], width, x.dtype).to(x.device)
    columns = lanczos_matrix(x.shape[-2], height, x.dtype).to(x.device)
    x = torch.matmul(columns, torch.matmul(x, rows.T))
    return x.clamp(0, 1).permute(0, 2, 3, 1)


def resize(image, size, interpolation="bicubic"):
    """Resize an IMAGE batch to size x size."""
    if interpolation not in INTERPOLATIONS:
        raise InvalidInputError(f"interpolation {interpolation!r} is not one of {tuple(INTERPOLATIONS)}.")
    mode = INTERPOLATIONS[interpolation]
    if mode == "lanczos":
        return lanczos_resize(image, size, size)
    antialias = mode in ("bicubic", "bilinear") and "lanczos" in interpolation
    x = image.permute(0, 3, 1, 2)
    kwargs = {"antialias": antialias} if mode in ("bicubic", "bilinear") else {}
    return F.interpolate(x, size=(size, size), mode=mode, **kwargs).clamp(0, 1).permute(0, 2, 3, 1)


def _neighbours(x):
    """The 3x3 neighbourhood of every pixel (zero outside the image) as (3, 3, B, C, H, W)."""
    padded = F.pad(x, (1, 1, 1, 1))
    height, width = x.shape[-2:]
    return torch.stack([torch.stack([padded[..., dy:dy + height, dx:dx + width] for dx in range(3)])
                        for dy in range(3)])


def sharpen(image, amount):
    """Contrast-adaptive sharpening (AMD's CAS, as IPAdapter_plus applies it): the sharper the less local contrast.

    Per pixel, the min and max of the cross (centre and its 4 neighbours) plus those of the 4 diagonals give a
    weight w in [-1/8 - amount/40, 0]; the output is (w * (sum of the 4 neighbours) + centre) / (1 + 4 w).
    """
    if amount <= 0:
        return image
    x = image.permute(0, 3, 1, 2)
    n = _neighbours(x)
    cross = torch.stack([n[0, 1], n[1, 0], n[1, 1], n[1, 2], n[2, 1]])
    diagonal = torch.stack([n[0, 0], n[0, 2], n[2, 0], n[2, 2]])
    low = cross.amin(0).clamp(min=0) + diagonal.amin(0).clamp(min=0)
    high = cross.amax(0).clamp(max=1) + diagonal.amax(0).clamp(max=1)
    # 1/high is inf on black patches: the NaN it makes there becomes 0, as in the reference implementation
    weight = -torch.sqrt(torch.reciprocal(high) * torch.minimum(low, 2 - high)) * (amount * (1 / 5 - 1 / 8) + 1 / 8)
    neighbours = n[0, 1] + n[1, 0] + n[1, 2] + n[2, 1]
    out = (neighbours * weight + n[1, 1]) * torch.reciprocal(1 + 4 * weight)
    return torch.nan_to_num(out).clamp(0, 1).permute(0, 2, 3, 1)


def prep_for_clip(image, size=224, interpolation="bicubic", crop_position="center", sharpening=0.0):
    """Square crop/pad at crop_position, resize to the encoder size, optional sharpening."""
    if crop_position not in CROP_POSITIONS:
        raise InvalidInputError(f"crop_position {crop_position!r} is not one of {CROP_POSITIONS}.")
    return sharpen(resize(_square(image, crop_position), size, interpolation), sharpening)


def gaussian_kernel(size, sigma, dtype=torch.float32):
    """Normalised 1-D Gaussian of an odd size."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(x, size, sigma=None):
    """Separable Gaussian blur of (B, C, H, W) with reflected borders; sigma defaults to the one OpenCV / torchvision
    derive from the kernel size."""
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    kernel = gaussian_kernel(size, sigma, x.dtype).to(x.device)
    channels, half = x.shape[1], size // 2
    mode = "reflect" if half < min(x.shape[-2:]) else "replicate"
    x = F.pad(x, (half, half, half, half), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def elastic_displacement(height, width, alpha, sigma, generator):
    """Random smooth displacement (1, H, W, 2) in grid_sample units (x, y): uniform [-1, 1] per pixel, blurred by a
    Gaussian of sigma (kernel 8 sigma + 1, made odd), x scaled by alpha / width and y by alpha / height (as
    torchvision's ElasticTransform)."""
    fields = []
    for size in (width, height):
        field = torch.rand(1, 1, height, width, generator=generator) * 2 - 1
        if sigma > 0:
            kernel = int(8 * sigma + 1)
            field = gaussian_blur(field, kernel + (kernel % 2 == 0), sigma)
        fields.append(field * alpha / size)
    return torch.cat(fields, dim=1).permute(0, 2, 3, 1)


def elastic_warp(x, displacement):
    """(B, C, H, W) sampled bilinearly at the pixel centres moved by displacement, faded to black where the samples
    leave the image (torchvision's elastic_transform with fill 0: zero padding, times the in-image fraction)."""
    height, width = x.shape[-2:]
    ys, xs = (torch.linspace((1 - n) / n, (n - 1) / n, n, dtype=x.dtype) for n in (height, width))
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).unsqueeze(0)
    grid = (grid + displacement.to(x.dtype)).expand(x.shape[0], -1, -1, -1).to(x.device)
    with_inside = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
    sampled = F.grid_sample(with_inside, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[:, :-1] * sampled[:, -1:]


def shuffle_noise(base, strength, generator):
    """IPAdapter_plus's 'shuffle': an elastic warp (alpha 75, smoother the weaker), a flip of both axes, then
    multiplicative Gaussian noise n of deviation 0.75 strength: image (1 - n) + n."""
    x = base.permute(0, 3, 1, 2)
    displacement = elastic_displacement(x.shape[-2], x.shape[-1], 75.0, (1 - strength) * 3.5, generator)
    x = elastic_warp(x, displacement).flip(-1, -2).permute(0, 2, 3, 1)
    noise = torch.randn(x.shape, generator=generator) * (strength * 0.75)
    return x * (1 - noise) + noise


def noise_image(kind, strength, size=224, batch=1, image=None, seed=0, blur=0):
    """A negative reference made of noise: fade/dissolve/gaussian/shuffle of image (or of mid-gray), then an
    optional Gaussian blur of kernel size blur (made odd)."""
    if kind not in NOISE_TYPES:
        raise InvalidInputError(f"noise type {kind!r} is not one of {NOISE_TYPES}.")
    if blur < 0:
        raise InvalidInputError(f"blur: got {blur}; expected 0 (none) or a kernel size in pixels.")
    gen = torch.Generator().manual_seed(seed)
    base = torch.full((batch, size, size, 3), 0.5) if image is None else image[..., :3].float()
    if kind == "shuffle":
        noisy = shuffle_noise(base, strength, gen)
    else:
        noise = torch.rand(base.shape, generator=gen)
        if kind == "fade":
            noisy = base * (1 - strength) + noise * strength
        elif kind == "dissolve":
            keep = (torch.rand(base.shape[:3] + (1,), generator=gen) >= strength).to(base.dtype)
            noisy = base * keep + noise * (1 - keep)
        else:
            noisy = base + torch.randn(base.shape, generator=gen) * strength
    noisy = noisy.clamp(0, 1)
    if blur > 0:
        noisy = gaussian_blur(noisy.permute(0, 3, 1, 2), blur + (blur % 2 == 0)).permute(0, 2, 3, 1)
    return noisy


def check_rgb_images(images, name):
    """images as a (B, H, W, 3) floating tensor (ComfyUI's IMAGE), or an InvalidInputError naming the input."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidInputError(f"{name} must be a (B, H, W, 3) RGB tensor; got {shape}.")
    if not images.is_floating_point():
        raise InvalidInputError(f"{name} must hold floats in 0..1; got dtype {images.dtype}.")
    if min(images.shape[:3]) < 1:
        raise InvalidInputError(f"{name} must not be empty; got shape {tuple(images.shape)}.")
    return images

