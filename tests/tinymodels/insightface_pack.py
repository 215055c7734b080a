"""Tiny InsightFace model packs (buffalo_l, antelopev2) built with the onnx package alone."""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
FACE_SCORE = 0.95
BRIGHT_THRESHOLD = 0.0  # mean of the normalised RGB blob; 0.0 is pixel value 127.5
BIG = 1e5
# ArcFace's five-point template in its 112x112 crop, as fractions of the crop.
TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                     [41.5493, 92.3655], [70.7299, 92.2041]], np.float32) / 112.0
PACKS = {
    "buffalo_l": {"detector": "det_10g.onnx", "recognizer": "w600k_r50.onnx"},
    "antelopev2": {"detector": "scrfd_10g_bnkps.onnx", "recognizer": "glintr100.onnx"},
}


class _Graph:
    """Accumulates nodes and initializers with generated tensor names."""

    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, value, dtype=np.float32):
        """Adds an initializer and returns its name."""
        name = f"const_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type, *inputs, **attrs):
        """Adds one single-output node and returns its output name."""
        name = f"t{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name

    def serialize(self, inputs, outputs):
        """Names the outputs via Identity and returns the checked model bytes."""
        for (name, _), src in outputs:
            self.nodes.append(helper.make_node("Identity", [src], [name]))
        graph = helper.make_graph(
            self.nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for (n, s), _ in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="ipadapter-kit-tests", ir_version=IR_VERSION)
        onnx.checker.check_model(model)
        return model.SerializeToString()


def _detector():
    """SCRFD-style 9-output detector: up to two bright regions, split by a dark column gap, become faces."""
    g = _Graph()
    x = "input.1"
    bright = g.op("Cast", g.op("Greater", g.op("ReduceMean", x, axes=[1], keepdims=1),
                               g.const(BRIGHT_THRESHOLD)), to=TensorProto.FLOAT)  # [1,1,H,W]
    shape = g.op("Shape", x)
    dims = {axis: g.op("Gather", shape, g.const([axis], np.int64)) for axis in (2, 3)}  # [1] int64 each
    idx = {axis: g.op("Range", g.const(0.0), g.op("Cast", g.op("Gather", shape, g.const(axis, np.int64)),
                                                  to=TensorProto.FLOAT), g.const(1.0)) for axis in (2, 3)}
    one, flat = g.const([1.0]), g.const([-1], np.int64)

    def occupancy(mask, axis):
        """1 where a row (axis 2) or column (axis 3) holds a bright pixel."""
        return g.op("Reshape", g.op("ReduceMax", mask, axes=[5 - axis], keepdims=1), flat)

    def first(occ, positions):
        """Smallest position where occ is 1 (BIG if none), shape [1]."""
        return g.op("ReduceMin", g.op("Add", positions, g.op("Mul", g.op("Sub", one, occ), g.const(BIG))),
                    axes=[0], keepdims=1)

    def end(occ, positions):
        """One past the largest position where occ is 1, shape [1]."""
        return g.op("Add", g.op("ReduceMax", g.op("Mul", positions, occ), axes=[0], keepdims=1), one)

    # Face A: the first run of bright columns; face B: everything right of the dark gap after it.
    cols = occupancy(bright, 3)
    after_start = g.op("Cast", g.op("GreaterOrEqual", idx[3], first(cols, idx[3])), to=TensorProto.FLOAT)
    gap_start = first(g.op("Mul", g.op("Sub", one, cols), after_start), idx[3])
    in_a = g.op("Cast", g.op("Less", idx[3], gap_start), to=TensorProto.FLOAT)
    scores, boxes, kpss = [], [], []
    for col_mask in (in_a, g.op("Sub", one, in_a)):
        region = g.op("Mul", bright, col_mask)
        cols_r, rows_r = occupancy(region, 3), occupancy(region, 2)
        found = g.op("ReduceMax", cols_r, axes=[0], keepdims=1)
        x0, y0, x1, y1 = first(cols_r, idx[3]), first(rows_r, idx[2]), end(cols_r, idx[3]), end(rows_r, idx[2])
        box = g.op("Mul", g.op("Concat", x0, y0, x1, y1, axis=0), found)  # zeros when nothing is bright
        low = g.op("Slice", box, g.const([0], np.int64), g.const([2], np.int64))
        size = g.op("Sub", g.op("Slice", box, g.const([2], np.int64), g.const([4], np.int64)), low)
        kps = g.op("Add", g.op("Mul", g.const(TEMPLATE), size), low)  # [5,2]
        # Distances from the anchor centre (0,0) of stride 32, in stride units.
        scores.append(g.op("Mul", found, g.const([FACE_SCORE])))
        boxes.append(g.op("Mul", box, g.const([-1 / 32, -1 / 32, 1 / 32, 1 / 32])))
        kpss.append(g.op("Mul", g.op("Reshape", kps, flat), g.const([1 / 32])))

    outputs = []
    for kind, width, found in (("score", 1, scores), ("bbox", 4, boxes), ("kps", 10, kpss)):
        for stride in (8, 16, 32):
            cells = g.op("Mul", g.op("Mul", g.op("Div", dims[2], g.const([stride], np.int64)),
                                     g.op("Div", dims[3], g.const([stride], np.int64))), g.const([2], np.int64))
            taken = 2 if stride == 32 else 0  # the two anchors of stride-32 cell (0,0) carry faces A and B
            value = g.op("ConstantOfShape", g.op("Concat", g.op("Sub", cells, g.const([taken], np.int64)),
                                                 g.const([width], np.int64), axis=0),
                         value=numpy_helper.from_array(np.zeros(1, np.float32)))
            if taken:
                head = g.op("Reshape", g.op("Concat", *found, axis=0), g.const([2, width], np.int64))
                value = g.op("Concat", head, value, axis=0)
            outputs.append(((f"{kind}_{stride}", [f"n{stride}", width]), value))
    return g.serialize([(x, [1, 3, "height", "width"])], outputs)


def _recognizer(seed=1234):
    """112x112 -> 512 embedding: 8x8 average pool, standardise, seeded projection, tanh."""
    rng = np.random.default_rng(seed)
    g = _Graph()
    pooled = g.op("Flatten", g.op("AveragePool", "input.1", kernel_shape=[14, 14], strides=[14, 14]), axis=1)
    centred = g.op("Sub", pooled, g.op("ReduceMean", pooled, axes=[1], keepdims=1))
    spread = g.op("Sqrt", g.op("Add", g.op("ReduceMean", g.op("Mul", centred, centred), axes=[1], keepdims=1),
                               g.const([1e-3])))
    proj = g.op("MatMul", g.op("Div", centred, spread), g.const(rng.standard_normal((192, 512)) / np.sqrt(192)))
    emb = g.op("Add", g.op("Tanh", proj), g.const(0.05 * rng.standard_normal(512)))
    return g.serialize([("input.1", ["batch", 3, 112, 112])], [(("fc1", ["batch", 512]), emb)])


def _constant_model(size, values):
    """Input size x size, output = values (1-D) for every batch item, still wired to the input."""
    g = _Graph()
    anchor = g.op("Flatten", g.op("ReduceMean", "data", axes=[1, 2, 3], keepdims=1), axis=1)  # [N,1]
    out = g.op("Add", g.op("Mul", anchor, g.const([[0.0]])), g.const(np.asarray(values)[None]))
    return g.serialize([("data", ["batch", 3, size, size])], [(("fc1", ["batch", len(values)]), out)])


def _ring(points, dims):
    """Points on an ellipse in [-1,1] (with a gentle z wave for 3D), flattened."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    cols = [0.6 * np.cos(t), 0.7 * np.sin(t), 0.2 * np.sin(3 * t)][:dims]
    return np.stack(cols, axis=1).reshape(-1)


def write_pack(root, name="buffalo_l"):
    """Writes root/models/<name>/ with tiny models under the real file names; returns that folder."""
    if name not in PACKS:
        raise ValueError(f"unknown pack {name!r}; known: {sorted(PACKS)}")
    folder = pathlib.Path(root) / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        PACKS[name]["detector"]: _detector(),
        PACKS[name]["recognizer"]: _recognizer(),
        "2d106det.onnx": _constant_model(192, _ring(106, 2)),
        "1k3d68.onnx": _constant_model(192, _ring(1103, 3)),
        "genderage.onnx": _constant_model(96, [0.2, 0.8, 0.3]),  # male, age 30
    }
    for filename, data in files.items():
        (folder / filename).write_bytes(data)
    return folder


def bright_face_image(size=(256, 256), box=(64, 64, 192, 192), seed=0):
    """BGR uint8 image of size (width, height): dark noise with a bright seeded 16px-block texture in box."""
    rng = np.random.default_rng(seed)
    img = dark_image(size, seed)
    x0, y0, x1, y1 = box
    blocks = rng.integers(150, 256, ((y1 - y0 + 15) // 16, (x1 - x0 + 15) // 16, 3), dtype=np.uint8)
    img[y0:y1, x0:x1] = blocks.repeat(16, axis=0).repeat(16, axis=1)[: y1 - y0, : x1 - x0]
    return img


def dark_image(size=(256, 256), seed=0):
    """BGR uint8 image of size (width, height) with dark noise only (pixel values below 40)."""
    width, height = size
    return np.random.default_rng(seed + 10_000).integers(0, 40, (height, width, 3), dtype=np.uint8)
