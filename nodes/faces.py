"""FaceID's InsightFace side: find a model pack offline, detect the largest face per reference, embed and crop it.

insightface and onnxruntime are optional: they are imported only when an analyzer is loaded, and a missing pack is
reported with where to put it; insightface is never allowed to download one.
"""
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from comfy_api.latest import io

import folder_paths

from ..ipadapter_core.errors import InvalidInputError
from .types import InsightFace

CATEGORY = "ipadapter_kit/faceid"
PROVIDERS = {"CPU": "CPUExecutionProvider", "CUDA": "CUDAExecutionProvider", "ROCm": "ROCMExecutionProvider",
             "CoreML": "CoreMLExecutionProvider", "DirectML": "DmlExecutionProvider",
             "OpenVINO": "OpenVINOExecutionProvider"}
MODULES = ("detection", "recognition")
# Known packs: detector, recognizer (both required), then the files the full pack also ships.
PACK_FILES = {
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"),
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"),
}
DEFAULT_PACKS = ("buffalo_l", "antelopev2")
DOWNLOAD_HINTS = {
    "buffalo_l": "Download buffalo_l.zip from the model-zoo assets of the insightface GitHub releases "
                 "(github.com/deepinsight/insightface) and unzip it there.",
    "antelopev2": "antelopev2.zip is published with the insightface GitHub releases and mirrored on Hugging Face "
                  "(search for 'antelopev2'); unzip it there. The zip holds its own antelopev2/ folder: the .onnx "
                  "files must end up directly in models/antelopev2/, not one level deeper.",
}
DET_THRESH = 0.5
DET_STEP, DET_MIN, DET_MAX = 32, 160, 1280
RETRY_STEP, RETRY_FLOOR = 64, 256
CROP_SIZE = 224
INSTALL_HINT = ("Install it into ComfyUI's own Python (the portable build: python_embeded\\python.exe -m pip ...): "
                "`python -m pip install insightface onnxruntime`, or `onnxruntime-gpu` instead of `onnxruntime` "
                "for CUDA (never both in one environment), then restart ComfyUI.")

_analyzers = {}
_roles = {}  # (path, mtime, size) -> what insightface's router takes the .onnx file for
_lock = threading.Lock()


@dataclass(frozen=True, eq=False)
class FaceAnalyzer:
    """A prepared insightface FaceAnalysis (detection + recognition only) and the settings it was loaded with."""

    app: object
    pack: str
    folder: str
    provider: str
    det_size: int
    ctx_id: int
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class FaceResult:
    """One face per kept reference: embeddings (normed, raw), aligned 224px RGB crops, batch indices, boxes."""

    normed: torch.Tensor  # (R, 512) float32, face.normed_embedding
    raw: torch.Tensor  # (R, 512) float32, face.embedding ("unnorm" variants)
    crops: torch.Tensor  # (R, 224, 224, 3) float32 0..1 RGB, a ComfyUI IMAGE
    kept: tuple  # index in the input batch of each row
    boxes: torch.Tensor  # (R, 4) float32 x0, y0, x1, y1 in input pixels
    det_sizes: tuple = ()  # detection size each face was found at
    kps: torch.Tensor = None  # (R, 5, 2) float32 x, y of eyes, nose, mouth corners in input pixels


def _insightface_modules():
    """(FaceAnalysis, face_align), or an error saying how to install insightface."""
    try:
        import onnxruntime  # noqa: F401
        import insightface  # noqa: F401
        from insightface.app import FaceAnalysis
        from insightface.utils import face_align
    except Exception as e:  # a broken install fails in many ways (ImportError, cv2/numpy ABI errors, ...)
        raise InvalidInputError(f"FaceID needs the optional insightface and onnxruntime packages, which could not "
                                f"be imported ({type(e).__name__}: {e}). {INSTALL_HINT}") from e
    return FaceAnalysis, face_align


def available_providers():
    """Provider options the installed onnxruntime offers; CPU always, and only CPU without onnxruntime."""
    try:
        import onnxruntime
        offered = set(onnxruntime.get_available_providers())
    except Exception:
        return ["CPU"]
    return ["CPU"] + [name for name, ort in PROVIDERS.items() if name != "CPU" and ort in offered]


def insightface_roots():
    """The registered insightface model folders (models/insightface by default)."""
    if "insightface" in folder_paths.folder_names_and_paths:
        return list(folder_paths.get_folder_paths("insightface"))
    return [os.path.join(folder_paths.models_dir, "insightface")]


def pack_names():
    """Folder names under every insightface folder's models/; the usual packs when there are none yet."""
    names = set()
    for root in insightface_roots():
        models = os.path.join(root, "models")
        if os.path.isdir(models):
            names.update(e.name for e in os.scandir(models) if e.is_dir() and not e.name.startswith("."))
    return sorted(names) or list(DEFAULT_PACKS)


def _onnx_files(folder):
    """Names of the .onnx files directly in folder (empty if it is not a folder)."""
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(".onnx")) if os.path.isdir(folder) else []


def _dims(value_info):
    """The dimensions of an ONNX graph input or output (a symbolic one as its name)."""
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value_info.type.tensor_type.shape.dim]


def _role_of_graph(inputs, outputs):
    """What insightface's model router takes a model for, from its input and output dimensions (or None)."""
    if len(outputs) >= 5:
        return "detection"
    if not inputs or len(inputs[0]) != 4:
        return None
    height, width = inputs[0][2], inputs[0][3]
    if height == width == 192:
        return "landmark"
    if height == width == 96:
        return "genderage"
    if len(inputs) == 2 and height == width == 128:
        return "swapper"
    if isinstance(height, int) and height == width and height >= 112 and height % 16 == 0:
        return "recognition"
    return None


def _role_by_name(name):
    """detection / recognition for a known pack's detector / recognizer file name (without the onnx package)."""
    roles = {files[i]: role for files in PACK_FILES.values() for i, role in enumerate(("detection", "recognition"))}
    return roles.get(name)


def onnx_role(path):
    """detection / recognition / landmark / genderage / swapper / None for an .onnx file, read from its graph's
    inputs and outputs as insightface's router reads them; cached per path, modification time and size."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _roles:
        try:
            import onnx  # insightface depends on it
        except ImportError:
            return _role_by_name(os.path.basename(path))
        try:
            graph = onnx.load(path, load_external_data=False).graph
        except Exception as e:  # not an ONNX model (truncated, renamed): the file is not a usable pack member
            _roles[key] = f"unreadable ({type(e).__name__})"
            return _roles[key]
        weights = {t.name for t in graph.initializer}  # old exports list their weights among the inputs
        inputs = [_dims(i) for i in graph.input if i.name not in weights]
        _roles[key] = _role_of_graph(inputs, list(graph.output))
    return _roles[key]


def pack_roles(folder):
    """{.onnx file name: its role} for the files directly in folder."""
    return {name: onnx_role(os.path.join(folder, name)) for name in _onnx_files(folder)}


def pack_identity(folder):
    """The known pack whose detector and recognizer the folder holds (by role and name), or None."""
    roles = pack_roles(folder)
    for pack, files in PACK_FILES.items():
        if roles.get(files[0]) == "detection" and roles.get(files[1]) == "recognition":
            return pack
    return None


def describe_pack(folder):
    """'folder (buffalo_l: det_10g.onnx detection, ...)' for error messages."""
    roles = pack_roles(folder)
    files = ", ".join(f"{name} {role or 'not a face model'}" for name, role in roles.items()) or "no .onnx files"
    return f"{folder} ({pack_identity(folder) or 'unknown pack'}: {files})"


def pack_problem(folder, pack):
    """Why folder is not a usable pack (no detector / recognizer model, nested zip folder, ...), or None."""
    if not os.path.isdir(folder):
        return "no such folder"
    roles = pack_roles(folder)
    usual = PACK_FILES.get(pack, ("a detector .onnx", "a recognizer .onnx"))
    missing = [name for name, role in zip(usual, ("detection", "recognition")) if role not in roles.values()]
    if not missing:
        return None
    nested = os.path.join(folder, pack)
    if _onnx_files(nested):
        return f"the .onnx files are one level too deep, in {nested}: move them up into {folder}"
    present = ", ".join(f"{name} ({role or 'not a face model'})" for name, role in roles.items())
    return f"missing {', '.join(missing)}; has {present or 'no .onnx files'}"


def expected_files(pack):
    """Words for the files a pack folder should hold."""
    if pack in PACK_FILES:
        detector, recognizer, *rest = PACK_FILES[pack]
        return f"{detector} (detector) and {recognizer} (recognizer), normally with {', '.join(rest)}"
    known = "; ".join(f"{name}: {', '.join(files)}" for name, files in PACK_FILES.items())
    return f"a detector and a recognizer .onnx (known packs: {known})"


def pack_folders():
    """Every folder directly under <insightface folder>/models/, in search order."""
    folders = []
    for root in insightface_roots():
        models = os.path.join(root, "models")
        if os.path.isdir(models):
            folders += sorted(e.path for e in os.scandir(models) if e.is_dir() and not e.name.startswith("."))
    return folders


def _found_elsewhere(pack):
    """A folder of another name holding the known pack's detector and recognizer (a renamed pack folder), or None."""
    if pack not in PACK_FILES:
        return None
    return next((folder for folder in pack_folders() if os.path.basename(folder) != pack
                 and pack_identity(folder) == pack), None)


def find_pack(pack):
    """The first <insightface folder>/models/<pack> holding a detector and a recognizer model, else a folder of
    another name holding that pack's models, else a clear error listing what each folder holds."""
    if not pack or pack in (".", "..") or os.path.basename(pack) != pack or "\\" in pack:
        raise InvalidInputError(f"InsightFace pack {pack!r} is not a folder name; expected one of {pack_names()}.")
    searched = []
    for root in insightface_roots():
        folder = os.path.join(root, "models", pack)
        problem = pack_problem(folder, pack)
        if problem is None:
            return folder
        searched.append(f"{folder} ({problem})")
    renamed = _found_elsewhere(pack)
    if renamed is not None:
        return renamed
    others = [describe_pack(f) for f in pack_folders() if os.path.basename(f) != pack]
    found = f" Other pack folders: {'; '.join(others)}." if others else ""
    hint = DOWNLOAD_HINTS.get(pack, "Get the pack from wherever it is published (insightface's own packs are on "
                                    "its GitHub releases) and unzip it there.")
    raise InvalidInputError(
        f"InsightFace pack '{pack}' was not found. Searched: {'; '.join(searched)}.{found} Expected "
        f"{expected_files(pack)} directly inside <insightface folder>/models/{pack}/ (or any folder there). {hint} "
        "Then refresh (R) the node list. Packs are never downloaded automatically.")


def check_det_size(det_size):
    """det_size as an int, or an error when it is not a multiple of 32 in 160..1280."""
    size = int(det_size)
    if size != det_size or size % DET_STEP or not DET_MIN <= size <= DET_MAX:
        raise InvalidInputError(f"det_size {det_size!r} is not usable: the detector needs a multiple of {DET_STEP} "
                                f"from {DET_MIN} to {DET_MAX} (640 is the usual size).")
    return size


def provider_list(provider):
    """onnxruntime providers for a provider option (with CPU fallback), or an error listing the available ones."""
    offered = available_providers()
    if provider not in offered:
        raise InvalidInputError(f"provider {provider!r} is not offered by the installed onnxruntime; available here: "
                                f"{offered}. For CUDA install onnxruntime-gpu instead of onnxruntime (never both).")
    return [PROVIDERS[provider]] + ([] if provider == "CPU" else [PROVIDERS["CPU"]])


def _build_analyzer(face_analysis, folder, provider, det_size):
    """A prepared FaceAnalysis over folder, with detection and recognition only."""
    ctx_id = -1 if provider == "CPU" else 0
    pack = os.path.basename(folder)
    root = os.path.dirname(os.path.dirname(folder))
    try:
        # An absolute name is used as the pack folder by insightface 2.x (is_dir) and 0.7.3 (path join).
        app = face_analysis(name=folder, root=root, allowed_modules=list(MODULES), providers=provider_list(provider))
    except AssertionError as e:  # FaceAnalysis asserts a detector was found
        raise InvalidInputError(f"{folder}: insightface found no face detector among {_onnx_files(folder)}; "
                                f"expected {expected_files(pack)}.") from e
    if "recognition" not in app.models:
        raise InvalidInputError(f"{folder}: insightface found no recognition model among {_onnx_files(folder)}; "
                                f"expected {expected_files(pack)}.")
    app.prepare(ctx_id=ctx_id, det_thresh=DET_THRESH, det_size=(det_size, det_size))
    return FaceAnalyzer(app=app, pack=pack, folder=folder, provider=provider, det_size=det_size, ctx_id=ctx_id)


def load_analyzer(pack, provider="CPU", det_size=640):
    """The cached FaceAnalyzer for (pack folder, provider, det_size); never downloads anything."""
    face_analysis, _ = _insightface_modules()
    det_size = check_det_size(det_size)
    provider_list(provider)
    folder = find_pack(pack)
    key = (folder, provider, det_size)
    with _lock:
        if key not in _analyzers:
            _analyzers[key] = _build_analyzer(face_analysis, folder, provider, det_size)
        return _analyzers[key]


def clear_cache():
    """Forgets every loaded analyzer."""
    with _lock:
        _analyzers.clear()


def detection_sizes(det_size):
    """Sizes to try in turn: det_size, then 64 smaller each step down to 256, then 160."""
    sizes = [det_size] + list(range(det_size - RETRY_STEP, RETRY_FLOOR - 1, -RETRY_STEP))
    return sizes + ([DET_MIN] if sizes[-1] > DET_MIN else [])


def to_bgr_frames(images):
    """ComfyUI IMAGE (B,H,W,C float 0..1 RGB) -> list of contiguous BGR uint8 arrays."""
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4) or images.shape[-1] not in (1, 3, 4):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InvalidInputError(f"expected a ComfyUI IMAGE (batch, height, width, 3), got {got}; connect an image "
                                "output (Load Image, ...) to the image input.")
    images = images[None] if images.ndim == 3 else images
    if images.shape[0] == 0:
        raise InvalidInputError("the image batch is empty; connect at least one reference image.")
    rgb = images[..., :3] if images.shape[-1] != 1 else images.expand(*images.shape[:-1], 3)
    pixels = (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return [np.ascontiguousarray(frame[..., ::-1]) for frame in pixels]


def box_area(face):
    """Area of a face's bbox."""
    x0, y0, x1, y1 = (float(v) for v in face.bbox[:4])
    return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def largest_face(faces):
    """The face with the largest bbox area (the first of equals)."""
    return max(faces, key=box_area)


def _set_det_size(analyzer, size):
    """Points the detector at size x size: prepare() for insightface 2.x, input_size for 0.7.3."""
    # ctx_id stays >= 0 here: with -1, prepare() makes every model rebuild its session (set_providers), which is
    # slow for the real packs; the sessions were already created with the chosen providers at load.
    analyzer.app.prepare(ctx_id=max(analyzer.ctx_id, 0), det_thresh=DET_THRESH, det_size=(size, size))
    analyzer.app.det_model.input_size = (size, size)


def detect_largest(analyzer, frame, sizes):
    """(largest face, size found at) trying each detection size in turn, or (None, None); restores det_size."""
    current = analyzer.det_size
    try:
        for size in sizes:
            if size != current:
                _set_det_size(analyzer, size)
                current = size
            faces = analyzer.app.get(frame)
            if faces:
                return largest_face(faces), size
        return None, None
    finally:
        if current != analyzer.det_size:
            _set_det_size(analyzer, analyzer.det_size)


def aligned_crop(face_align, frame, face):
    """The 224px ArcFace-aligned crop of a face from its 5 keypoints, as float 0..1 RGB."""
    crop = face_align.norm_crop(frame, landmark=np.asarray(face.kps, np.float32), image_size=CROP_SIZE)
    return torch.from_numpy(np.ascontiguousarray(crop[..., ::-1])).float() / 255.0


def _size_range(sizes):
    """'640..160' or '160'."""
    return f"{sizes[0]}..{sizes[-1]}" if len(sizes) > 1 else str(sizes[0])


def analyze(analyzer, images, skip_missing=False):
    """One face per reference image: when several are detected, the one with the largest bbox area is used.

    A reference without a face at analyzer.det_size is retried at smaller sizes; if none is found it raises, or
    is dropped with skip_missing (all dropped still raises). Returns a FaceResult.
    """
    _, face_align = _insightface_modules()
    frames = to_bgr_frames(images)
    sizes = detection_sizes(analyzer.det_size)
    rows = []
    with analyzer.lock:
        for index, frame in enumerate(frames):
            face, size = detect_largest(analyzer, frame, sizes)
            if face is not None:
                rows.append((index, face, size, frame))
            elif not skip_missing:
                raise InvalidInputError(
                    f"reference {index + 1} of {len(frames)}: no face found at detection sizes "
                    f"{_size_range(sizes)}; use a clearer, larger face, or enable skip_no_face.")
    if not rows:
        raise InvalidInputError(f"no face found in any of the {len(frames)} reference(s) at detection sizes "
                                f"{_size_range(sizes)}; skip_no_face cannot drop them all: use clearer, larger "
                                "faces.")
    return FaceResult(
        normed=torch.from_numpy(np.stack([np.asarray(f.normed_embedding, np.float32) for _, f, _, _ in rows])),
        raw=torch.from_numpy(np.stack([np.asarray(f.embedding, np.float32) for _, f, _, _ in rows])),
        crops=torch.stack([aligned_crop(face_align, frame, f) for _, f, _, frame in rows]),
        kept=tuple(i for i, _, _, _ in rows),
        boxes=torch.from_numpy(np.stack([np.asarray(f.bbox[:4], np.float32) for _, f, _, _ in rows])),
        det_sizes=tuple(s for _, _, s, _ in rows),
        kps=torch.from_numpy(np.stack([np.asarray(f.kps, np.float32).reshape(5, 2) for _, f, _, _ in rows])),
    )


def describe(result, total):
    """Text report: which references were kept, their face boxes and detection sizes."""
    lines = [f"kept {len(result.kept)} of {total} reference(s)"]
    found = dict(zip(result.kept, zip(result.boxes.tolist(), result.det_sizes or [None] * len(result.kept))))
    for index in range(total):
        if index not in found:
            lines.append(f"reference {index + 1}: no face, skipped")
            continue
        box, size = found[index]
        x0, y0, x1, y1 = (round(v) for v in box)
        at = f", found at det size {size}" if size else ""
        lines.append(f"reference {index + 1}: face box ({x0}, {y0}, {x1}, {y1}), {x1 - x0}x{y1 - y0} px{at}")
    return "\n".join(lines)


class InsightFaceLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitInsightFaceLoader",
            display_name="IPAdapter Kit: Load InsightFace",
            category=CATEGORY,
            description="Loads an InsightFace model pack (face detector + recognizer) for the FaceID adapters, "
                        "from models/insightface/models/<pack>/. Needs the optional insightface and onnxruntime "
                        "packages; nothing is downloaded.",
            inputs=[
                io.Combo.Input("pack", options=pack_names(),
                               tooltip="Folder under models/insightface/models/: buffalo_l for FaceID, antelopev2 "
                                       "for FaceID portrait-unnorm / InstantID-style adapters."),
                io.Combo.Input("provider", options=available_providers(), default="CPU",
                               tooltip="Where onnxruntime runs the face models; only the providers the installed "
                                       "onnxruntime offers are listed (CUDA needs onnxruntime-gpu)."),
                io.Int.Input("det_size", default=640, min=DET_MIN, max=DET_MAX, step=DET_STEP,
                             tooltip="Detection resolution; references without a face are retried at smaller "
                                     "sizes down to 160."),
            ],
            outputs=[InsightFace.Output(display_name="insightface")],
        )

    @classmethod
    def execute(cls, pack, provider, det_size):
        return io.NodeOutput(load_analyzer(pack, provider, det_size))


class FaceCrops(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="IPAKitFaceCrops",
            display_name="IPAdapter Kit: Face Crops",
            category=CATEGORY,
            description="Shows what the FaceID adapter sees: the largest face of each reference, aligned and "
                        "cropped to 224 px, with a report of which references were kept and their face boxes.",
            inputs=[
                InsightFace.Input("insightface", tooltip="From Load InsightFace."),
                io.Image.Input("image", tooltip="Reference image(s) with a face each."),
                io.Boolean.Input("skip_no_face", default=False,
                                 tooltip="Drop references where no face is found instead of stopping with an "
                                         "error (at least one face is still required)."),
            ],
            outputs=[io.Image.Output(display_name="crops"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, insightface, image, skip_no_face=False):
        result = analyze(insightface, image, skip_missing=skip_no_face)
        total = image.shape[0] if image.ndim == 4 else 1
        return io.NodeOutput(result.crops, describe(result, total))
