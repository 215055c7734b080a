"""The tiny InsightFace packs load and behave under the real insightface FaceAnalysis, offline."""
import importlib

import numpy as np
import pytest

insightface = pytest.importorskip("insightface")
from insightface.app import FaceAnalysis  # noqa: E402
from insightface.model_zoo.scrfd import SCRFD  # noqa: E402
from insightface.utils import face_align  # noqa: E402

from tinymodels.insightface_pack import bright_face_image, dark_image, write_pack  # noqa: E402

BOX = (64, 64, 192, 192)
TASKS = {"detection", "recognition", "landmark_2d_106", "landmark_3d_68", "genderage"}


class DownloadAttempted(AssertionError):
    """Raised by the patched insightface download functions."""


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Makes every insightface download entry point raise."""
    def refuse(*args, **kwargs):
        raise DownloadAttempted(f"download attempted: {args}")
    # insightface.utils.download is shadowed by the function of that name, hence import_module.
    for module, attr in (("insightface.utils.download", "download_file"),
                         ("insightface.utils.storage", "download_file"),
                         ("insightface.model_zoo.model_zoo", "download_onnx")):
        monkeypatch.setattr(importlib.import_module(module), attr, refuse)


def make_app(root, name="buffalo_l", det_size=(640, 640)):
    """Writes the pack under root and returns a prepared CPU FaceAnalysis."""
    write_pack(root, name)
    app = FaceAnalysis(name=name, root=str(root), providers=["CPUExecutionProvider"])
    app.prepare(ctx_id=-1, det_size=det_size)
    return app


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name, files", [
    ("buffalo_l", {"det_10g.onnx", "w600k_r50.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"}),
    ("antelopev2", {"scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"}),
])
def test_pack_has_real_names_small_files_and_same_bytes_each_time(tmp_path, name, files):
    first = write_pack(tmp_path / "a", name)
    second = write_pack(tmp_path / "b", name)
    assert first == tmp_path / "a" / "models" / name
    assert {p.name for p in first.iterdir()} == files
    for filename in files:
        data = (first / filename).read_bytes()
        assert 100 < len(data) < 500_000
        assert data == (second / filename).read_bytes()


def test_buffalo_l_loads_all_five_models_without_download(tmp_path):
    app = make_app(tmp_path)
    assert set(app.models) == TASKS
    assert isinstance(app.det_model, SCRFD)
    assert app.det_model.use_kps and app.det_model.fmc == 3 and app.det_model._num_anchors == 2
    assert app.models["recognition"].input_size == (112, 112)


def test_missing_pack_would_download_and_the_guard_stops_it(tmp_path):
    with pytest.raises(DownloadAttempted):
        FaceAnalysis(name="buffalo_l", root=str(tmp_path), providers=["CPUExecutionProvider"])


def test_bright_region_is_one_face_with_keypoints_and_embedding(tmp_path):
    faces = make_app(tmp_path).get(bright_face_image(box=BOX))
    assert len(faces) == 1
    face = faces[0]
    np.testing.assert_allclose(face.bbox, BOX, atol=2)
    assert face.det_score == pytest.approx(0.95, abs=1e-4)
    assert face.kps.shape == (5, 2)
    assert np.all(face.kps >= np.array(BOX[:2]) - 2) and np.all(face.kps <= np.array(BOX[2:]) + 2)
    assert face.kps[0, 0] < face.kps[1, 0] and face.kps[2, 1] < face.kps[3, 1]  # eyes left/right, nose above mouth
    assert face.embedding.shape == (512,)
    assert np.linalg.norm(face.normed_embedding) == pytest.approx(1.0, abs=1e-5)
    assert face.landmark_2d_106.shape == (106, 2) and face.landmark_3d_68.shape == (68, 3)
    assert (face.sex, face.age) == ("M", 30)


def test_dark_image_has_no_face(tmp_path):
    assert make_app(tmp_path).get(dark_image((256, 256))) == []


def test_embeddings_repeat_for_one_image_and_differ_between_textures(tmp_path):
    app = make_app(tmp_path)
    one, again, other = (app.get(bright_face_image(seed=s))[0].embedding for s in (1, 1, 2))
    assert np.array_equal(one, again)
    assert cosine(one, other) < 0.9


def test_norm_crop_of_detected_keypoints_frames_the_bright_region(tmp_path):
    img = bright_face_image(box=BOX)
    face = make_app(tmp_path).get(img)[0]
    crop = face_align.norm_crop(img, landmark=face.kps, image_size=224)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert crop[4:-4, 4:-4].mean(axis=2).min() > 127.5  # the keypoints map the box onto the whole crop


@pytest.mark.parametrize("det_size", [(320, 320), (160, 160)])
@pytest.mark.parametrize("size, box", [((256, 256), BOX), ((320, 200), (100, 40, 180, 150))])
def test_smaller_det_sizes_and_letterboxing_still_find_the_face(tmp_path, det_size, size, box):
    faces = make_app(tmp_path, det_size=det_size).get(bright_face_image(size=size, box=box))
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].bbox, box, atol=3)


def test_two_bright_regions_side_by_side_are_two_faces(tmp_path):
    left, right = (16, 64, 112, 160), (144, 40, 240, 200)
    img = np.maximum(bright_face_image(box=left, seed=1), bright_face_image(box=right, seed=2))
    faces = sorted(make_app(tmp_path).get(img), key=lambda f: f.bbox[0])
    assert len(faces) == 2
    np.testing.assert_allclose(faces[0].bbox, left, atol=2)
    np.testing.assert_allclose(faces[1].bbox, right, atol=2)
    assert cosine(faces[0].embedding, faces[1].embedding) < 0.9


def test_antelopev2_pack_loads_and_finds_the_face(tmp_path):
    app = make_app(tmp_path, name="antelopev2")
    assert set(app.models) == TASKS
    faces = app.get(bright_face_image(box=BOX))
    assert len(faces) == 1 and faces[0].embedding.shape == (512,)
    np.testing.assert_allclose(faces[0].bbox, BOX, atol=2)
