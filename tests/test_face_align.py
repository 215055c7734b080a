"""FFHQ 5-point face alignment (ipadapter_core.face_align): the similarity fit, the warp's pixel convention, the
border, errors, and agreement with facexlib's cv2.estimateAffinePartial2D(LMEDS) + cv2.warpAffine when opencv is
installed."""
import math

import numpy as np
import pytest
import torch

from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from ipadapter_kit.ipadapter_core.face_align import (FFHQ_BORDER_RGB, FFHQ_TEMPLATE_512, align_face, align_faces,
                                                     ffhq_template, similarity_transform, warp_affine)

TEMPLATE = FFHQ_TEMPLATE_512.numpy()
FACEXLIB_BORDER_BGR = (135, 133, 132)  # facexlib's borderValue, given to cv2 on a BGR picture


def random_similarity(rng, scale=(0.2, 1.5), angle=0.6, shift=(50, 400)):
    """A (2, 3) float64 similarity with a random scale, rotation in [-angle, angle] and translation."""
    s, a = rng.uniform(*scale), rng.uniform(-angle, angle)
    linear = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.concatenate([linear, rng.uniform(*shift, (2, 1))], axis=1)


def apply(matrix, points):
    """points (N, 2) mapped by a (2, 3) affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix):
    """Inverse of a (2, 3) affine matrix."""
    inv = np.linalg.inv(matrix[:, :2])
    return np.concatenate([inv, -inv @ matrix[:, 2:]], axis=1)


def face_kps(rng, noise=0.0):
    """Keypoints of a face somewhere in a picture: the template under a random similarity, plus noise in pixels."""
    to_image = random_similarity(rng, scale=(0.25, 0.6), shift=(120, 250))
    return apply(to_image, TEMPLATE - 256) + rng.normal(0, noise, (5, 2))


def smooth_picture(rng, height=300, width=420):
    """A uint8 RGB picture of smooth random colour blobs (bilinear upsampling of a coarse random grid)."""
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 24, 32)))
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    return fine[0].permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def lstsq_similarity(src, dst):
    """Least-squares similarity by solving the 4-parameter linear system x' = a x - b y + tx, y' = b x + a y + ty."""
    rows = []
    for (x, y) in src:
        rows.append([x, -y, 1, 0])
        rows.append([y, x, 0, 1])
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


# --- the template ---

def test_template_is_facexlibs_ffhq_512_in_insightface_kps_order():
    assert FFHQ_TEMPLATE_512.shape == (5, 2) and FFHQ_TEMPLATE_512.dtype == torch.float64
    assert TEMPLATE.tolist() == [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                                 [201.26117, 371.41043], [313.08905, 371.15118]]
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = TEMPLATE
    assert lex < nx < rex and lmx < nx < rmx  # image-left eye and mouth corner first, as insightface's arcface_dst
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above the nose above the mouth


def test_template_scales_with_the_crop_size_as_facexlib_does():
    assert torch.equal(ffhq_template(512), FFHQ_TEMPLATE_512)
    assert torch.allclose(ffhq_template(256), FFHQ_TEMPLATE_512 / 2, rtol=0, atol=1e-12)
    assert FFHQ_BORDER_RGB == (132 / 255, 133 / 255, 135 / 255)  # facexlib's BGR (135, 133, 132), reversed


# --- the similarity ---

@pytest.mark.parametrize("seed", range(5))
def test_similarity_recovers_a_known_similarity(seed):
    rng = np.random.default_rng(seed)
    known = random_similarity(rng)
    src = rng.uniform(0, 500, (5, 2))
    found = similarity_transform(torch.from_numpy(src), torch.from_numpy(apply(known, src)))
    assert found.dtype == torch.float64 and found.shape == (2, 3)
    assert np.abs(found.numpy() - known).max() < 1e-9


@pytest.mark.parametrize("seed", range(5))
def test_keypoints_land_on_the_template(seed):
    rng = np.random.default_rng(seed)
    kps = face_kps(rng)
    matrix = similarity_transform(torch.from_numpy(kps), FFHQ_TEMPLATE_512).numpy()
    assert np.abs(apply(matrix, kps) - TEMPLATE).max() < 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_similarity_is_the_least_squares_one_for_noisy_points(seed):
    rng = np.random.default_rng(seed)
    kps = face_kps(rng, noise=3.0)
    found = similarity_transform(torch.from_numpy(kps), FFHQ_TEMPLATE_512).numpy()
    assert np.abs(found - lstsq_similarity(kps, TEMPLATE)).max() < 1e-9


def test_mirrored_points_give_a_rotation_not_a_reflection():
    mirrored = TEMPLATE * np.array([-1.0, 1.0])
    found = similarity_transform(torch.from_numpy(mirrored), FFHQ_TEMPLATE_512).numpy()
    (a, minus_b), (b, a2) = found[:, :2]
    assert a == a2 and minus_b == -b and a * a2 - minus_b * b > 0


# --- the warp's pixel convention, without cv2 ---

def test_whole_pixel_shift_copies_pixels():
    image = torch.rand(1, 40, 50, 3, dtype=torch.float64)
    matrix = torch.tensor([[[1.0, 0.0, -7.0], [0.0, 1.0, -3.0]]])  # output (x, y) = input (x + 7, y + 3)
    out = warp_affine(image, matrix, size=30)
    assert torch.allclose(out[0], image[0, 3:33, 7:37], rtol=0, atol=1e-12)


def test_halving_samples_every_other_pixel_centre():
    image = torch.rand(1, 64, 64, 3, dtype=torch.float64)
    matrix = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # pixel centres: output x = input 2x
    out = warp_affine(image, matrix, size=32)
    assert torch.allclose(out[0], image[0, ::2, ::2], rtol=0, atol=1e-12)


def test_half_pixel_shift_averages_neighbours():
    image = torch.rand(1, 10, 10, 3, dtype=torch.float64)
    matrix = torch.tensor([[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]])
    out = warp_affine(image, matrix, size=9)
    assert torch.allclose(out[0, :, :9], (image[0, :9, :9] + image[0, :9, 1:10]) / 2, rtol=0, atol=1e-12)


def test_outside_pixels_are_exactly_the_border_and_edges_blend_into_it():
    image = torch.rand(1, 20, 20, 3)
    matrix = torch.tensor([[[1.0, 0.0, 10.0], [0.0, 1.0, 10.0]]])  # input pixel (0, 0) lands on output (10, 10)
    out = warp_affine(image, matrix, size=40)[0]
    border = torch.tensor(FFHQ_BORDER_RGB)
    assert torch.equal(out[:9, :], border.expand(9, 40, 3)) and torch.equal(out[:, :9], border.expand(40, 9, 3))
    assert torch.equal(out[31:, :], border.expand(9, 40, 3)) and torch.equal(out[:, 31:], border.expand(40, 9, 3))
    assert torch.allclose(out[10:30, 10:30], image[0], rtol=0, atol=1e-6)
    half = torch.tensor([[[1.0, 0.0, 10.5], [0.0, 1.0, 10.0]]])  # output x = 10 reads input x = -0.5
    edge = warp_affine(image, half, size=40)[0, 10:30, 10]
    assert torch.allclose(edge, (image[0, :, 0] + border) / 2, rtol=0, atol=1e-6)


def test_output_keeps_the_input_dtype():
    kps = torch.from_numpy(face_kps(np.random.default_rng(0)))
    for dtype in (torch.float32, torch.float64, torch.float16):
        out = align_face(torch.rand(300, 420, 3).to(dtype), kps, size=64)
        assert out.dtype == dtype and out.shape == (64, 64, 3)


def test_batch_matches_single_faces():
    rng = np.random.default_rng(3)
    images = torch.rand(3, 300, 420, 3)
    kps = torch.from_numpy(np.stack([face_kps(rng, noise=1.0) for _ in range(3)]))
    batch = align_faces(images, kps, size=128)
    assert batch.shape == (3, 128, 128, 3)
    for i in range(3):
        assert torch.allclose(batch[i], align_face(images[i], kps[i], size=128), rtol=0, atol=1e-6)


def test_keypoints_land_on_the_template_in_the_crop():
    """The crop of a picture whose pixels hold their own x, y (a ramp bilinear sampling reproduces exactly), read at
    the template points, gives back the keypoints."""
    height, width = 300, 420
    kps = face_kps(np.random.default_rng(4), noise=0.0)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    ramp = torch.stack([xs / width, ys / height, torch.zeros_like(xs)], dim=-1)
    crop = align_face(ramp, torch.from_numpy(kps), size=512).numpy()
    for (tx, ty), (kx, ky) in zip(TEMPLATE, kps):
        x0, y0 = int(tx), int(ty)
        fx, fy = tx - x0, ty - y0
        cell = crop[y0:y0 + 2, x0:x0 + 2, :2]
        read = ((1 - fy) * ((1 - fx) * cell[0, 0] + fx * cell[0, 1]) + fy * ((1 - fx) * cell[1, 0] + fx * cell[1, 1]))
        assert abs(read[0] * width - kx) < 1e-6 and abs(read[1] * height - ky) < 1e-6


# --- errors ---

@pytest.mark.parametrize("kps", [torch.zeros(4, 2), torch.zeros(5, 3), torch.zeros(10), "eyes"])
def test_wrong_keypoint_shape_is_an_invalid_input(kps):
    with pytest.raises(InvalidInputError, match="face keypoints"):
        align_face(torch.rand(32, 32, 3), kps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_keypoints_are_an_invalid_input(bad):
    kps = FFHQ_TEMPLATE_512.clone() / 16
    kps[2, 1] = bad
    with pytest.raises(InvalidInputError, match="finite"):
        align_face(torch.rand(32, 32, 3), kps)


def test_coinciding_keypoints_are_an_invalid_input():
    with pytest.raises(InvalidInputError, match="at one place"):
        align_face(torch.rand(32, 32, 3), torch.full((5, 2), 12.0))
    with pytest.raises(InvalidInputError, match="at one place"):
        similarity_transform(FFHQ_TEMPLATE_512, torch.full((5, 2), 3.0))


@pytest.mark.parametrize("image", [torch.rand(32, 32), torch.rand(32, 32, 4), torch.zeros(32, 32, 3,
                                   dtype=torch.uint8), torch.rand(0, 32, 3)])
def test_bad_image_is_an_invalid_input(image):
    with pytest.raises(InvalidInputError, match="image"):
        align_face(image, FFHQ_TEMPLATE_512 / 16)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "512"])
def test_bad_size_is_an_invalid_input(size):
    with pytest.raises(InvalidInputError, match="size"):
        align_face(torch.rand(32, 32, 3), FFHQ_TEMPLATE_512 / 16, size=size)


def test_bad_batch_keypoints_and_border_are_invalid_inputs():
    with pytest.raises(InvalidInputError, match="face keypoints"):
        align_faces(torch.rand(2, 32, 32, 3), (FFHQ_TEMPLATE_512 / 16)[None])
    with pytest.raises(InvalidInputError, match="border"):
        align_face(torch.rand(32, 32, 3), FFHQ_TEMPLATE_512 / 16, border=(0.5, 0.5))
    with pytest.raises(InvalidInputError, match="singular"):
        warp_affine(torch.rand(1, 32, 32, 3), torch.zeros(1, 2, 3))


# --- agreement with facexlib's OpenCV calls ---

@pytest.fixture(scope="module")
def cv2():
    module = pytest.importorskip("cv2", reason="opencv (cv2) is not installed in this environment")
    module.setNumThreads(1)
    return module


def facexlib_crop(cv2, rgb, kps, size=512):
    """facexlib's align_warp_face on an RGB uint8 picture: LMEDS fit, then warpAffine of the BGR picture, as RGB."""
    template = TEMPLATE * (size / 512.0)
    matrix = cv2.estimateAffinePartial2D(kps, template, method=cv2.LMEDS)[0]
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    crop = cv2.warpAffine(bgr, matrix, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=FACEXLIB_BORDER_BGR)
    return matrix, crop[..., ::-1] / 255.0


@pytest.mark.parametrize("seed", range(5))
def test_similarity_matches_lmeds_for_exact_points(cv2, seed):
    rng = np.random.default_rng(seed)
    kps = face_kps(rng)
    theirs = cv2.estimateAffinePartial2D(kps, TEMPLATE, method=cv2.LMEDS)[0]
    ours = similarity_transform(torch.from_numpy(kps), FFHQ_TEMPLATE_512).numpy()
    assert np.abs(ours - theirs).max() < 1e-3


def test_similarity_matches_lmeds_when_it_keeps_all_five_points(cv2):
    """With noisy landmarks LMEDS drops a point now and then; when it keeps all five it is the least-squares fit."""
    rng = np.random.default_rng(7)
    kept = 0
    for _ in range(40):
        kps = face_kps(rng, noise=1.0)
        theirs, inliers = cv2.estimateAffinePartial2D(kps, TEMPLATE, method=cv2.LMEDS)
        if inliers.all():
            kept += 1
            ours = similarity_transform(torch.from_numpy(kps), FFHQ_TEMPLATE_512).numpy()
            assert np.abs(ours - theirs).max() < 1e-3
    assert kept >= 20


def test_warp_matches_cv2_warp_affine_for_the_same_matrix(cv2):
    rng = np.random.default_rng(11)
    image = rng.uniform(0, 1, (300, 420, 3)).astype(np.float32)  # per-pixel noise: the hardest case for sampling
    matrix = invert(random_similarity(rng, scale=(0.25, 0.6), shift=(120, 250)) @ np.array(
        [[1, 0, -256], [0, 1, -256], [0, 0, 1]]))
    theirs = cv2.warpAffine(image, matrix, (512, 512), borderMode=cv2.BORDER_CONSTANT, borderValue=FFHQ_BORDER_RGB)
    ours = warp_affine(torch.from_numpy(image)[None], torch.from_numpy(matrix)[None])[0].numpy()
    diff = np.abs(ours - theirs)
    assert diff.mean() < 1 / 255 and np.mean(diff <= 2 / 255) >= 0.99


@pytest.mark.parametrize("seed,noise,size", [(0, 0.0, 512), (1, 1.0, 512), (2, 1.0, 224)])
def test_align_face_matches_facexlibs_crop(cv2, seed, noise, size):
    rng = np.random.default_rng(seed)
    picture = smooth_picture(rng)
    kps = face_kps(rng, noise)
    while noise and not cv2.estimateAffinePartial2D(kps, TEMPLATE, method=cv2.LMEDS)[1].all():
        kps = face_kps(rng, noise)  # noisy but consistent: LMEDS keeps every point
    matrix, theirs = facexlib_crop(cv2, picture, kps, size)
    ours = align_face(torch.from_numpy(picture / 255.0).float(), torch.from_numpy(kps), size=size).double().numpy()
    diff = np.abs(ours - theirs)
    assert diff.mean() < 1 / 255 and np.mean(diff <= 2 / 255) >= 0.99
    # where the crop reads only outside the picture, both hold the border colour
    ys, xs = np.mgrid[0:size, 0:size]
    src = apply(invert(matrix), np.stack([xs.ravel(), ys.ravel()], 1)).reshape(size, size, 2)
    height, width = picture.shape[:2]
    outside = (src[..., 0] <= -1) | (src[..., 0] >= width) | (src[..., 1] <= -1) | (src[..., 1] >= height)
    assert outside.any()
    assert np.array_equal(ours[outside], np.broadcast_to(np.array(FFHQ_BORDER_RGB, np.float32), ours[outside].shape))
    assert np.allclose(theirs[outside], np.array(FFHQ_BORDER_RGB))
