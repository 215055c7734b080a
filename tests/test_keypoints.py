"""InstantID's face keypoints image (ipadapter_core.keypoints): colours, geometry, edges, errors, and agreement with
InstantX's cv2 draw_kps when opencv is installed."""
import math

import numpy as np
import pytest
import torch

from ipadapter_kit.ipadapter_core import keypoints
from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from ipadapter_kit.ipadapter_core.keypoints import draw_keypoints, keypoint_images

H, W = 240, 320
# left eye, right eye, nose, left / right mouth corner; the mouth limbs are horizontal (angle 180 and 0 degrees)
FACE = torch.tensor([[100.0, 60.0], [200.0, 60.0], [150.0, 160.0], [70.0, 160.0], [230.0, 160.0]])
RED, GREEN, BLUE, YELLOW, MAGENTA = ([c / 255 for c in colour] for colour in keypoints.COLOURS)


def pixel(image, x, y):
    return image[y, x].tolist()


def limb(colour):
    return [c * 0.6 for c in colour]


@pytest.fixture(scope="module")
def face():
    return draw_keypoints(FACE, H, W)


def test_shape_dtype_and_range(face):
    assert face.shape == (H, W, 3) and face.dtype == torch.float32
    assert face.min() >= 0 and face.max() <= 1
    batch = keypoint_images(torch.stack([FACE, FACE + 7]), H, W)
    assert batch.shape == (2, H, W, 3) and batch.dtype == torch.float32
    assert torch.equal(batch[0], face) and torch.equal(batch[1], draw_keypoints(FACE + 7, H, W))
    assert torch.equal(keypoint_images([FACE.tolist()], H, W)[0], face)  # lists (and insightface's arrays) work
    assert keypoint_images(torch.zeros(0, 5, 2), H, W).shape == (0, H, W, 3)
    assert torch.equal(draw_keypoints(FACE.double(), H, W), face)
    assert torch.equal(draw_keypoints(FACE, np.int64(H), torch.tensor(W)), face)  # int-like sizes


def test_keypoint_centres_have_their_colour_exactly(face):
    for (x, y), colour in zip(FACE.int().tolist(), (RED, GREEN, BLUE, YELLOW, MAGENTA)):
        assert pixel(face, x, y) == pytest.approx(colour, abs=0), (x, y)


@pytest.mark.parametrize("first, t", [(0, 0.3), (0, 0.5), (0, 0.7), (1, 0.3), (1, 0.5), (1, 0.7), (3, 0.3),
                                      (3, 0.5), (3, 0.7), (4, 0.3), (4, 0.5), (4, 0.7)])
def test_limbs_have_their_first_keypoints_colour_at_60_percent(face, first, t):
    (x0, y0), (x1, y1) = FACE[first].tolist(), FACE[2].tolist()
    x, y = round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t)
    assert min(math.dist((x, y), p) for p in FACE.tolist()) > keypoints.RADIUS + 5  # away from the circles
    colour = limb((RED, GREEN, BLUE, YELLOW, MAGENTA)[first])
    assert pixel(face, x, y) == pytest.approx(colour, abs=1e-6)
    assert [round(c * 255) for c in pixel(face, x, y)] == [int(c * 0.6) for c in keypoints.COLOURS[first]]


def test_black_away_from_the_face(face):
    for x, y in ((0, 0), (W - 1, 0), (0, H - 1), (W - 1, H - 1), (20, 200), (300, 20), (150, 30), (150, 230)):
        assert pixel(face, x, y) == [0.0, 0.0, 0.0], (x, y)
    painted = face.abs().sum(-1) > 0
    assert 0.05 < painted.float().mean() < 0.2


def test_circle_radius_along_the_axes(face):
    x, y = FACE[0].int().tolist()  # the left eye: its limb leaves down and to the right
    for dx, dy in ((-1, 0), (0, -1)):
        assert pixel(face, x + 9 * dx, y + 9 * dy) == RED
        assert pixel(face, x + 10 * dx, y + 10 * dy) == RED  # radius 10 is included, as cv2 draws it
        assert pixel(face, x + 11 * dx, y + 11 * dy) == [0.0, 0.0, 0.0]
    x, y = FACE[2].int().tolist()  # the nose: straight up is clear of the limbs
    assert pixel(face, x, y - 9) == BLUE and pixel(face, x, y - 11) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("first", [3, 4])
def test_limb_width(face, first):
    x = round((FACE[first, 0].item() + FACE[2, 0].item()) / 2)  # the middle of a horizontal mouth limb
    y = int(FACE[2, 1].item())
    colour = limb((RED, GREEN, BLUE, YELLOW, MAGENTA)[first])
    for dy in (-3, 3):
        assert pixel(face, x, y + dy) == pytest.approx(colour, abs=1e-6)
    for dy in (-4, 4):  # the stick's semi-minor axis, 4 px
        assert pixel(face, x, y + dy) == pytest.approx(colour, abs=1e-6)
    for dy in (-6, 6, -5, 5):
        assert pixel(face, x, y + dy) == [0.0, 0.0, 0.0]


def test_keypoints_partly_or_wholly_outside_the_image():
    outside = FACE - torch.tensor([140.0, 100.0])  # the eyes above the top-left corner, the mouth inside it
    image = draw_keypoints(outside, H, W)
    assert image.shape == (H, W, 3) and (image.sum(-1) > 0).any()
    assert pixel(image, 10, 60) == BLUE  # the nose at (10, 60)
    far = draw_keypoints(FACE + torch.tensor([5000.0, -5000.0]), H, W)
    assert not far.any()
    huge = draw_keypoints(torch.tensor([[-1e9, 0.0], [1e9, 0.0], [0.0, 0.0], [0.0, 1e9], [5.0, 5.0]]), 32, 32)
    assert huge.shape == (32, 32, 3)
    tiny = draw_keypoints(torch.full((5, 2), 0.5), 1, 1)  # all points on one pixel: the last circle's colour
    assert pixel(tiny, 0, 0) == MAGENTA


@pytest.mark.parametrize("kps, match", [
    (torch.zeros(4, 2), r"\(5, 2\).*got shape \(4, 2\)"),
    (torch.zeros(5, 3), r"got shape \(5, 3\)"),
    (torch.zeros(10), r"got shape \(10,\)"),
    (torch.zeros(1, 5, 2), r"got shape \(1, 5, 2\)"),
    (torch.tensor([[0.0, 0.0]] * 4 + [[float("nan"), 1.0]]), "finite"),
    (torch.tensor([[0.0, 0.0]] * 4 + [[float("inf"), 1.0]]), "finite"),
    ("eyes", r"\(5, 2\) tensor"),
    ([[1, 2], [3]], r"\(5, 2\) tensor"),
])
def test_bad_keypoints_are_refused_clearly(kps, match):
    with pytest.raises(InvalidInputError, match=match):
        draw_keypoints(kps, H, W)


def test_bad_sizes_and_batches_are_refused_clearly():
    for height, width in ((0, 10), (10, -1), (10.5, 10), (True, 10)):
        with pytest.raises(InvalidInputError, match="positive whole number"):
            draw_keypoints(FACE, height, width)
    with pytest.raises(InvalidInputError, match=r"\(B, 5, 2\); got shape \(5, 2\)"):
        keypoint_images(FACE, H, W)
    with pytest.raises(InvalidInputError, match="finite"):
        keypoint_images(torch.stack([FACE, FACE * float("nan")]), H, W)


# ---------------------------------------------------------------------------------------------------------------
# The reference: InstantX's draw_kps (pipeline_stable_diffusion_xl_instantid.py; the same in cubiq's
# ComfyUI_InstantID), as written there, on a black image of the given size.
def reference_draw_kps(cv2, kps, height, width):
    color_list = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    stickwidth = 4
    limb_seq = np.array([[0, 2], [1, 2], [3, 2], [4, 2]])
    kps = np.array(kps)
    out_img = np.zeros([height, width, 3])
    for index in limb_seq:
        color = color_list[index[0]]
        x, y = kps[index][:, 0], kps[index][:, 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), stickwidth), int(angle),
                                   0, 360, 1)
        out_img = cv2.fillConvexPoly(out_img.copy(), polygon, color)
    out_img = (out_img * 0.6).astype(np.uint8)
    for idx_kp, kp in enumerate(kps):
        out_img = cv2.circle(out_img.copy(), (int(kp[0]), int(kp[1])), 10, color_list[idx_kp], -1)
    return out_img


def faces(count, seed=0):
    """(kps, height, width) of plausible faces: various sizes, turns, places (some reaching out of the image)."""
    rng = np.random.default_rng(seed)
    base = np.array([[-0.35, -0.3], [0.35, -0.3], [0.0, 0.05], [-0.28, 0.4], [0.28, 0.4]])
    for _ in range(count):
        height, width = rng.integers(160, 720, 2)
        turn = rng.uniform(-0.8, 0.8)
        rotation = np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
        size = rng.uniform(40, 320)
        centre = rng.uniform([-40, -40], [width + 40, height + 40])
        yield base @ rotation.T * size + centre + rng.uniform(-4, 4, (5, 2)), int(height), int(width)


def test_agrees_with_the_reference_draw_kps():
    cv2 = pytest.importorskip("cv2", reason="opencv (cv2) is not installed in this environment")
    worst_image, worst_painted = 1.0, 1.0
    for kps, height, width in faces(40):
        theirs = reference_draw_kps(cv2, kps, height, width)
        ours = (draw_keypoints(torch.from_numpy(kps), height, width) * 255).round().to(torch.uint8).numpy()
        same = (theirs == ours).all(-1)
        painted = theirs.any(-1) | ours.any(-1)
        worst_image = min(worst_image, same.mean())
        if painted.sum() > 100:
            worst_painted = min(worst_painted, same[painted].mean())
        assert set(np.unique(ours)) <= {0, 153, 255}  # full colours and limbs at 60 %, nothing in between
    assert worst_image >= 0.99, worst_image
    assert worst_painted >= 0.9, worst_painted  # the few pixels of difference lie on the limbs' outlines
