"""Prep Image's Lanczos and contrast-adaptive sharpening, Noise Negative's blur and shuffle, against references.

The references are PIL (Lanczos), torchvision (Gaussian blur, elastic transform: what IPAdapter_plus calls) and the
contrast-adaptive sharpening formula written out pixel by pixel.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from ipadapter_kit.ipadapter_core import image_ops
from ipadapter_kit.nodes import image_nodes

tv = pytest.importorskip("torchvision.transforms.functional")
T = pytest.importorskip("torchvision.transforms")


def picture(height, width, seed=0):
    """A smooth picture with edges (IMAGE, 1 x H x W x 3): Lanczos rings and sharpening have something to act on."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    smooth[..., height // 3:height // 2, :] = 1.0  # a hard edge
    return smooth.permute(0, 2, 3, 1).contiguous()


def pil_lanczos(image, size):
    """PIL's LANCZOS on each channel as a 32-bit float image (no 8-bit rounding), clamped like the node."""
    channels = [Image.fromarray(image[0, ..., c].numpy().astype(np.float32), mode="F").resize((size, size),
                                                                                             Image.LANCZOS)
                for c in range(image.shape[-1])]
    return torch.from_numpy(np.stack([np.asarray(c) for c in channels], axis=-1)).unsqueeze(0).clamp(0, 1)


@pytest.mark.parametrize("height, width, size", [(300, 200, 224), (100, 100, 224), (97, 131, 64), (224, 224, 224)])
def test_lanczos_equals_pil(height, width, size):
    image = picture(height, width)
    square = image_ops._square(image, "center")
    ours = image_ops.resize(square, size, "lanczos")
    assert ours.shape == (1, size, size, 3)
    assert torch.allclose(ours, pil_lanczos(square, size), atol=2e-6)


def test_lanczos_matches_pil_on_8_bit_images_to_one_level():
    """What IPAdapter_plus does: the picture as 8-bit RGB through PIL's LANCZOS."""
    image = (picture(300, 300) * 255).round() / 255
    rgb = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).resize((224, 224), Image.LANCZOS)
    ours = (image_ops.resize(image, 224, "lanczos")[0] * 255).round().numpy()
    assert np.abs(ours - np.asarray(rgb).astype(float)).max() <= 1.0


def test_lanczos_differs_from_the_bicubic_approximation():
    image = image_ops._square(picture(300, 200), "center")
    assert not torch.allclose(image_ops.resize(image, 224, "lanczos"),
                              image_ops.resize(image, 224, "lanczos (antialiased bicubic)"), atol=1e-3)


def test_prep_image_node_offers_lanczos():
    out = image_nodes.PrepImage.execute(picture(120, 160), "lanczos", "center", 0.0, 224).result[0]
    square = image_ops._square(picture(120, 160), "center")
    assert torch.allclose(out, pil_lanczos(square, 224), atol=2e-6)


def cas_reference(image, amount):
    """Contrast-adaptive sharpening written out per pixel (zero outside the image), as IPAdapter_plus's formula."""
    x = torch.nn.functional.pad(image.permute(0, 3, 1, 2).double(), (1, 1, 1, 1))
    out = torch.zeros(image.permute(0, 3, 1, 2).shape, dtype=torch.float64)
    for y in range(out.shape[-2]):
        for x0 in range(out.shape[-1]):
            p = x[..., y:y + 3, x0:x0 + 3]  # (B, C, 3, 3)
            cross = torch.stack([p[..., 0, 1], p[..., 1, 0], p[..., 1, 1], p[..., 1, 2], p[..., 2, 1]])
            diag = torch.stack([p[..., 0, 0], p[..., 0, 2], p[..., 2, 0], p[..., 2, 2]])
            mn = cross.min(0).values.clamp(min=0) + diag.min(0).values.clamp(min=0)
            mx = cross.max(0).values.clamp(max=1) + diag.max(0).values.clamp(max=1)
            amp = torch.sqrt(torch.minimum(mn, 2 - mx) / mx)
            w = -amp * (amount * (1 / 5 - 1 / 8) + 1 / 8)
            value = ((p[..., 0, 1] + p[..., 1, 0] + p[..., 1, 2] + p[..., 2, 1]) * w + p[..., 1, 1]) / (1 + 4 * w)
            out[..., y, x0] = torch.nan_to_num(value)
    return out.clamp(0, 1).permute(0, 2, 3, 1).float()


@pytest.mark.parametrize("amount", [0.3, 1.0])
def test_sharpening_is_contrast_adaptive_as_the_formula(amount):
    image = picture(12, 10)
    image[0, :2, :2] = 0.0  # a black corner: 1 / max is infinite there
    assert torch.allclose(image_ops.sharpen(image, amount), cas_reference(image, amount), atol=1e-6)


def test_sharpening_keeps_flat_areas_and_zero_amount():
    image = picture(32, 32)
    assert torch.equal(image_ops.sharpen(image, 0.0), image)
    flat = torch.full((1, 16, 16, 3), 0.4)
    assert torch.allclose(image_ops.sharpen(flat, 1.0)[:, 1:-1, 1:-1], flat[:, 1:-1, 1:-1], atol=1e-6)
    sharp = image_ops.sharpen(image, 1.0)
    edges = (sharp[:, 1:] - sharp[:, :-1]).abs().sum()
    assert edges > (image[:, 1:] - image[:, :-1]).abs().sum()


@pytest.mark.parametrize("blur, kernel", [(5, 5), (4, 5), (1, 1), (32, 33)])
def test_noise_blur_is_torchvisions_gaussian_blur(blur, kernel):
    plain = image_nodes.NoiseImage.execute("fade", 0.7, 3).result[0]
    blurred = image_nodes.NoiseImage.execute("fade", 0.7, 3, blur=blur).result[0]
    expected = tv.gaussian_blur(plain.permute(0, 3, 1, 2), [kernel, kernel]).permute(0, 2, 3, 1)
    assert torch.allclose(blurred, expected, atol=1e-6)
    if blur > 1:
        assert blurred.std() < plain.std()


@pytest.mark.parametrize("sigma", [0.0, 1.75, 3.5])
def test_elastic_displacement_is_torchvisions(sigma):
    torch.manual_seed(9)
    expected = T.ElasticTransform.get_params([75.0, 75.0], [sigma, sigma], [40, 56])
    ours = image_ops.elastic_displacement(40, 56, 75.0, sigma, torch.Generator().manual_seed(9))
    assert torch.allclose(ours, expected, atol=1e-6)


def test_elastic_warp_is_torchvisions_elastic_transform():
    x = picture(40, 56).permute(0, 3, 1, 2)
    displacement = image_ops.elastic_displacement(40, 56, 75.0, 1.0, torch.Generator().manual_seed(2))
    expected = tv.elastic_transform(x, displacement, fill=[0.0])
    assert torch.allclose(image_ops.elastic_warp(x, displacement), expected, atol=1e-6)


@pytest.mark.parametrize("strength", [0.0, 0.4, 1.0])
def test_shuffle_is_ipadapter_plus_shuffle(strength):
    """Elastic transform (alpha 75, sigma (1 - strength) 3.5), both flips, then image (1 - n) + n with
    n ~ N(0, 0.75 strength), clamped."""
    image = picture(48, 48)
    gen = torch.Generator().manual_seed(4)
    displacement = image_ops.elastic_displacement(48, 48, 75.0, (1 - strength) * 3.5, gen)
    warped = tv.elastic_transform(image.permute(0, 3, 1, 2), displacement, fill=[0.0])
    warped = tv.hflip(tv.vflip(warped)).permute(0, 2, 3, 1)
    noise = torch.randn(warped.shape, generator=gen) * (strength * 0.75)
    expected = (warped * (1 - noise) + noise).clamp(0, 1)
    ours = image_nodes.NoiseImage.execute("shuffle", strength, 4, image=image).result[0]
    assert torch.allclose(ours, expected, atol=1e-6)
