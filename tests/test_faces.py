"""InsightFace side of FaceID on the tiny packs: offline loading, largest-face detection with retries, crops."""
import importlib
import importlib.util
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import folder_paths
from ipadapter_kit.ipadapter_core.errors import InvalidInputError
from ipadapter_kit.nodes import faces
from tinymodels.insightface_pack import TEMPLATE, bright_face_image, dark_image

# Tests marked needs_insightface run the real package; the rest also run (and matter most) without it.
needs_insightface = pytest.mark.skipif(importlib.util.find_spec("insightface") is None,
                                       reason="insightface is not installed")
BOX = (64, 64, 192, 192)


class DownloadAttempted(AssertionError):
    """Raised by the patched insightface download functions."""


def image(*frames_bgr):
    """ComfyUI IMAGE (B,H,W,3 float RGB) from BGR uint8 frames of one size."""
    return torch.from_numpy(np.stack([f[..., ::-1] for f in frames_bgr]).copy()).float() / 255.0


def cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.fixture
def downloads(monkeypatch):
    """Every insightface download entry point raises; returns the list of attempted calls."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise DownloadAttempted(f"download attempted: {args}")
    # insightface.utils.download is shadowed by storage.download in the package namespace, hence import_module.
    for module, attr in (("insightface.utils.download", "download_file"), ("insightface.utils.storage", "download"),
                         ("insightface.utils.storage", "download_file"),
                         ("insightface.utils.storage", "download_onnx"),
                         ("insightface.model_zoo.model_zoo", "download_onnx")):
        monkeypatch.setattr(importlib.import_module(module), attr, refuse)
    return calls


@pytest.fixture
def insightface_dirs(monkeypatch):
    """Replaces the registered insightface folders for one test: call it with the folders to use."""
    def use(*roots):
        monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(r) for r in roots], set()))
    return use


@pytest.fixture
def buffalo(world_paths, downloads):
    return faces.load_analyzer("buffalo_l", "CPU", 640)


@pytest.mark.parametrize("pack, detector", [("buffalo_l", "det_10g.onnx"), ("antelopev2", "scrfd_10g_bnkps.onnx")])
@needs_insightface
def test_loads_each_pack_with_detection_and_recognition_only(world_paths, downloads, pack, detector):
    analyzer = faces.load_analyzer(pack, "CPU", 640)
    assert analyzer.folder == str(world_paths / "models" / "insightface" / "models" / pack)
    assert set(analyzer.app.models) == {"detection", "recognition"}
    assert analyzer.app.det_model.model_file.endswith(detector)
    assert (analyzer.pack, analyzer.provider, analyzer.det_size, analyzer.ctx_id) == (pack, "CPU", 640, -1)
    assert downloads == []


@needs_insightface
def test_analyzer_is_cached_per_folder_provider_and_size(world_paths):
    first = faces.load_analyzer("buffalo_l", "CPU", 640)
    assert faces.load_analyzer("buffalo_l", "CPU", 640) is first
    other = faces.load_analyzer("buffalo_l", "CPU", 320)
    assert other is not first and other.det_size == 320
    assert faces.load_analyzer("antelopev2", "CPU", 640) is not first


@needs_insightface
def test_one_face_with_its_box_bright_crop_and_unit_normed_embedding(buffalo):
    result = faces.analyze(buffalo, image(bright_face_image(box=BOX, seed=1)))
    assert result.kept == (0,) and result.det_sizes == (640,)
    np.testing.assert_allclose(result.boxes.numpy(), [BOX], atol=2)
    assert result.crops.shape == (1, 224, 224, 3) and result.crops.dtype == torch.float32
    assert result.crops[0, 8:-8, 8:-8].mean(dim=-1).min() > 0.5  # the kps map the bright box onto the crop
    assert result.normed.shape == result.raw.shape == (1, 512) and result.normed.dtype == torch.float32
    assert result.normed[0].norm() == pytest.approx(1.0, abs=1e-5)
    assert abs(float(result.raw[0].norm()) - 1.0) > 0.1  # raw keeps its length ...
    assert cosine(result.raw[0], result.normed[0]) == pytest.approx(1.0, abs=1e-5)  # ... and the same direction


@needs_insightface
def test_different_faces_give_different_embeddings(buffalo):
    result = faces.analyze(buffalo, image(bright_face_image(seed=1), bright_face_image(seed=2)))
    assert result.kept == (0, 1)
    assert cosine(result.normed[0], result.normed[1]) < 0.9


@needs_insightface
def test_no_face_error_names_the_reference_and_sizes(buffalo):
    with pytest.raises(InvalidInputError, match=r"reference 2 of 3: no face found at detection sizes 640\.\.160.*"
                                                r"skip_no_face"):
        faces.analyze(buffalo, image(bright_face_image(seed=1), dark_image(), bright_face_image(seed=3)))
    assert buffalo.app.det_model.input_size == (640, 640) and buffalo.app.det_size == (640, 640)


@needs_insightface
def test_real_detector_runs_at_each_retry_size_then_is_restored(buffalo, monkeypatch):
    det = buffalo.app.det_model
    seen, detect = [], det.detect

    def recording(img, *args, **kwargs):
        seen.append([tuple(s) for s in det.input_sizes])  # what insightface 2.x detect() reads
        return detect(img, *args, **kwargs)
    monkeypatch.setattr(det, "detect", recording)
    with pytest.raises(InvalidInputError):
        faces.analyze(buffalo, image(dark_image()))
    assert seen == [[(s, s)] for s in faces.detection_sizes(640)]
    assert [tuple(s) for s in det.input_sizes] == [(640, 640)] and det.input_size == (640, 640)


@needs_insightface
def test_skip_missing_drops_faceless_references_but_not_all(buffalo):
    assert faces.analyze(buffalo, image(bright_face_image(seed=1), dark_image()), skip_missing=True).kept == (0,)
    result = faces.analyze(buffalo, image(dark_image(), bright_face_image(seed=2)), skip_missing=True)
    assert result.kept == (1,) and result.normed.shape == (1, 512) and result.crops.shape[0] == 1
    with pytest.raises(InvalidInputError, match="any of the 2 reference"):
        faces.analyze(buffalo, image(dark_image(seed=1), dark_image(seed=2)), skip_missing=True)


@needs_insightface
def test_largest_of_two_real_detections_is_used(buffalo):
    small, large = (16, 64, 112, 160), (144, 40, 240, 200)
    frame = np.maximum(bright_face_image(box=small, seed=1), bright_face_image(box=large, seed=2))
    result = faces.analyze(buffalo, image(frame))
    np.testing.assert_allclose(result.boxes.numpy(), [large], atol=2)


class StubApp:
    """FaceAnalysis stand-in: finds the given faces only at detection sizes <= max_size; records sizes."""

    def __init__(self, found, max_size, det_size=640):
        self.found, self.max_size = found, max_size
        self.det_size = (det_size, det_size)
        self.det_model = SimpleNamespace(input_size=(det_size, det_size))
        self.prepared, self.tried = [], []

    def prepare(self, ctx_id=0, det_thresh=0.5, det_size=None):
        self.prepared.append((ctx_id, det_size))
        self.det_size = det_size

    def get(self, img):
        assert self.det_model.input_size == self.det_size  # both ways of setting the size were used
        self.tried.append(self.det_size[0])
        return list(self.found) if self.det_size[0] <= self.max_size else []


def stub_face(box, seed):
    """A face record as insightface returns it, with template keypoints inside box."""
    x0, y0, x1, y1 = box
    emb = np.random.default_rng(seed).standard_normal(512).astype(np.float32) * 3
    kps = TEMPLATE * np.array([x1 - x0, y1 - y0], np.float32) + np.array([x0, y0], np.float32)
    return SimpleNamespace(bbox=np.array([*box, 0.9], np.float32), kps=kps, embedding=emb,
                           normed_embedding=emb / np.linalg.norm(emb))


def stub_analyzer(app, det_size=640):
    return faces.FaceAnalyzer(app=app, pack="stub", folder="/nowhere", provider="CPU", det_size=det_size, ctx_id=-1)


@needs_insightface
def test_retries_smaller_sizes_and_restores_the_original():
    app = StubApp([stub_face(BOX, 1)], max_size=384)
    analyzer = stub_analyzer(app)
    result = faces.analyze(analyzer, image(bright_face_image(box=BOX)))
    assert app.tried == [640, 576, 512, 448, 384]
    assert result.det_sizes == (384,) and result.kept == (0,)
    assert app.det_size == app.det_model.input_size == (640, 640)
    assert app.prepared[-1] == (0, (640, 640))  # restored, without asking the CPU sessions to be rebuilt


@needs_insightface
def test_retry_gives_up_after_160_and_still_restores():
    app = StubApp([stub_face(BOX, 1)], max_size=128)
    with pytest.raises(InvalidInputError, match=r"reference 1 of 1: .*640\.\.160"):
        faces.analyze(stub_analyzer(app), image(dark_image()))
    assert app.tried == [640, 576, 512, 448, 384, 320, 256, 160]
    assert app.det_size == app.det_model.input_size == (640, 640)


@needs_insightface
def test_largest_box_wins_among_stub_faces():
    small, large = stub_face((10, 10, 60, 60), 1), stub_face((100, 80, 220, 230), 2)
    result = faces.analyze(stub_analyzer(StubApp([small, large], max_size=640)), image(bright_face_image()))
    np.testing.assert_allclose(result.boxes.numpy(), [large.bbox[:4]])
    np.testing.assert_allclose(result.raw.numpy(), [large.embedding])
    assert result.det_sizes == (640,)


@pytest.mark.parametrize("det_size, sizes", [(640, [640, 576, 512, 448, 384, 320, 256, 160]),
                                             (288, [288, 160]), (192, [192, 160]), (160, [160])])
def test_detection_sizes(det_size, sizes):
    assert faces.detection_sizes(det_size) == sizes


@needs_insightface
def test_concurrent_analyses_share_one_analyzer_safely(buffalo):
    batch = image(dark_image(), bright_face_image(seed=5))
    results, errors = [], []

    def work():
        try:
            results.append(faces.analyze(buffalo, batch, skip_missing=True))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 4
    assert all(r.kept == (1,) and torch.equal(r.normed, results[0].normed) for r in results)
    assert buffalo.app.det_model.input_size == (640, 640)


@needs_insightface
def test_missing_pack_names_folders_and_files_and_never_downloads(world_paths, downloads, insightface_dirs,
                                                                   tmp_path):
    insightface_dirs(tmp_path / "a", tmp_path / "b")
    with pytest.raises(InvalidInputError) as info:
        faces.load_analyzer("buffalo_l", "CPU", 640)
    message = str(info.value)
    for part in (str(tmp_path / "a" / "models" / "buffalo_l"), str(tmp_path / "b" / "models" / "buffalo_l"),
                 "det_10g.onnx", "w600k_r50.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx",
                 "insightface GitHub releases"):
        assert part in message
    assert downloads == []
    # The guard is real: insightface itself would have tried to download this pack.
    from insightface.app import FaceAnalysis
    with pytest.raises(DownloadAttempted):
        FaceAnalysis(name="buffalo_l", root=str(tmp_path / "a"), providers=["CPUExecutionProvider"])


@needs_insightface
def test_incomplete_and_nested_packs_are_explained(world_paths, downloads, insightface_dirs, tmp_path):
    source = world_paths / "models" / "insightface" / "models"
    incomplete = tmp_path / "models" / "buffalo_l"
    incomplete.mkdir(parents=True)
    (incomplete / "det_10g.onnx").write_bytes((source / "buffalo_l" / "det_10g.onnx").read_bytes())
    nested = tmp_path / "models" / "antelopev2" / "antelopev2"
    nested.mkdir(parents=True)
    for f in (source / "antelopev2").iterdir():
        (nested / f.name).write_bytes(f.read_bytes())
    insightface_dirs(tmp_path)
    with pytest.raises(InvalidInputError, match=r"missing w600k_r50\.onnx; has det_10g\.onnx"):
        faces.load_analyzer("buffalo_l", "CPU", 640)
    with pytest.raises(InvalidInputError, match="one level too deep"):
        faces.load_analyzer("antelopev2", "CPU", 640)
    with pytest.raises(InvalidInputError, match="a detector and a recognizer"):
        faces.load_analyzer("buffalo_s", "CPU", 640)
    with pytest.raises(InvalidInputError, match="not a folder name"):
        faces.load_analyzer("../buffalo_l", "CPU", 640)
    assert downloads == []


@needs_insightface
def test_later_folder_is_searched_when_the_first_lacks_the_pack(world_paths, insightface_dirs, tmp_path):
    insightface_dirs(tmp_path, world_paths / "models" / "insightface")
    assert faces.load_analyzer("buffalo_l").folder.startswith(str(world_paths))


def test_insightface_not_installed_says_how_to_install(world_paths, monkeypatch):
    monkeypatch.setitem(sys.modules, "insightface", None)
    with pytest.raises(InvalidInputError, match=r"pip install insightface onnxruntime.*onnxruntime-gpu.*never both"):
        faces.load_analyzer("buffalo_l", "CPU", 640)


def test_onnxruntime_missing_leaves_cpu_only_and_the_install_error(world_paths, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert faces.available_providers() == ["CPU"]
    with pytest.raises(InvalidInputError, match="pip install insightface onnxruntime"):
        faces.load_analyzer("buffalo_l", "CPU", 640)


def onnxruntime_offers():
    """The provider names the installed onnxruntime lists (empty without onnxruntime)."""
    try:
        import onnxruntime
    except Exception:
        return []
    return onnxruntime.get_available_providers()


def test_providers_offered_are_those_onnxruntime_lists(monkeypatch):
    onnxruntime = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "OpenVINOExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider"])
    assert faces.available_providers() == ["CPU", "DirectML", "OpenVINO"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider",
                                                                         "ROCMExecutionProvider"])
    assert faces.available_providers() == ["CPU", "CUDA", "ROCm"]
    assert faces.provider_list("ROCm") == ["ROCMExecutionProvider", "CPUExecutionProvider"]


@needs_insightface
def test_providers_on_this_machine_and_bad_settings(world_paths):
    offered = faces.available_providers()
    assert offered[0] == "CPU" and {faces.PROVIDERS[name] for name in offered[1:]} <= set(onnxruntime_offers())
    assert all(name in offered for name, ort in faces.PROVIDERS.items() if ort in onnxruntime_offers())
    missing = [name for name in faces.PROVIDERS if name not in offered]
    if missing:
        with pytest.raises(InvalidInputError, match=rf"'{missing[0]}' is not offered.*\['CPU'"):
            faces.load_analyzer("buffalo_l", missing[0], 640)
    with pytest.raises(InvalidInputError, match="multiple of 32"):
        faces.load_analyzer("buffalo_l", "CPU", 650)


def test_loader_schema_lists_found_packs_or_the_usual_ones(world_paths, insightface_dirs, tmp_path):
    schema = faces.InsightFaceLoader.define_schema()
    assert schema.node_id == "IPAKitInsightFaceLoader" and schema.category == "ipadapter_kit/faceid"
    options = {item.id: item for item in schema.inputs}
    assert {"buffalo_l", "antelopev2"} <= set(options["pack"].options)
    assert options["provider"].options == faces.available_providers() and options["provider"].default == "CPU"
    assert (options["det_size"].default, options["det_size"].min, options["det_size"].max) == (640, 160, 1280)
    insightface_dirs(tmp_path)
    assert faces.pack_names() == ["buffalo_l", "antelopev2"]
    for node in (faces.InsightFaceLoader, faces.FaceCrops):
        schema = node.define_schema()
        assert schema.description and all(item.tooltip for item in schema.inputs), schema.node_id


@needs_insightface
def test_nodes_execute_on_the_tiny_pack(world_paths, downloads):
    analyzer = faces.InsightFaceLoader.execute("buffalo_l", "CPU", 640).result[0]
    assert isinstance(analyzer, faces.FaceAnalyzer)
    crops, report = faces.FaceCrops.execute(analyzer, image(dark_image(), bright_face_image(box=BOX)),
                                            skip_no_face=True).result
    assert crops.shape == (1, 224, 224, 3)
    assert report.splitlines() == ["kept 1 of 2 reference(s)", "reference 1: no face, skipped",
                                   "reference 2: face box (64, 64, 192, 192), 128x128 px, found at det size 640"]
    with pytest.raises(InvalidInputError, match="reference 1 of 2"):
        faces.FaceCrops.execute(analyzer, image(dark_image(), bright_face_image()), skip_no_face=False)


def test_module_imports_neither_insightface_nor_onnxruntime_at_load():
    import ast

    tree = ast.parse(open(faces.__file__).read())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert not {n.split(".")[0] for n in names} & {"insightface", "onnxruntime", "cv2"}
