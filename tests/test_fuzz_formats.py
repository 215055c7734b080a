"""Format detection and strict loading under random key sets and shapes: only the pack's typed errors escape.

Each example starts from a real release layout (tests/tinymodels/ipadapter_files.py) and mutates it: keys dropped,
keys added (real names from other layouts or made-up ones), shapes changed (other sizes, other ndim, zero-size
dims), a whole group missing. Whatever comes out, formats.detect and adapter.from_state_dict either succeed or raise
an IPAdapterError subclass; a KeyError, IndexError, ZeroDivisionError, RuntimeError... is a defect.
"""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipadapter_kit.ipadapter_core import adapter, formats, loading
from ipadapter_kit.ipadapter_core.errors import IPAdapterError
from tinymodels import flux_adapter_files, ipadapter_files

CATALOG = ipadapter_files.catalog()


def _layouts():
    """name -> {group: {key: shape}} for every release layout (tencent's two groups, or XLabs' Flux ones)."""
    out = {}
    for name, (arch, proj, lora) in CATALOG.items():
        out[name] = {"image_proj": dict(proj), "ip_adapter": ipadapter_files.attn_layers(arch, lora)}
    out["instantx-flux.bin"] = flux_adapter_files.instantx_shapes()
    xlabs = flux_adapter_files.xlabs_shapes()
    out["xlabs-flux.safetensors"] = {group: {k[len(group) + 1:]: v for k, v in xlabs.items()
                                             if k.startswith(group + ".")}
                                     for group in ("ip_adapter_proj_model", "double_blocks")}
    return out


LAYOUTS = _layouts()
NAMES = sorted(LAYOUTS)
REAL_KEYS = {}
for _layout in LAYOUTS.values():
    for _group, _keys in _layout.items():
        REAL_KEYS.setdefault(_group, set()).update(_keys)
REAL_KEYS = {group: sorted(keys) for group, keys in REAL_KEYS.items()}
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

dims = st.one_of(st.integers(0, 4), st.sampled_from([16, 32, 64, 80, 128, 512]), st.integers(1, 160))
MAX_NUMEL = 1 << 18


def _capped(shape):
    """The shape with its largest dims shrunk until the tensor stays small (the fuzzer is about shapes, not RAM)."""
    shape = list(shape)
    while shape and torch.Size(shape).numel() > MAX_NUMEL:
        i = shape.index(max(shape))
        shape[i] = max(1, shape[i] // 4)
    return tuple(shape)


shapes = st.lists(dims, min_size=0, max_size=4).map(_capped)
made_up_keys = st.one_of(
    st.text("abcdefghijklmnopqrstuvwxyz_.0123456789", min_size=1, max_size=24),
    st.builds(lambda n, kv: f"{n}.to_{kv}_ip.weight", st.integers(0, 150), st.sampled_from("kvq")),
    st.builds(lambda n, kv, p: f"{n}.processor.ip_adapter_double_stream_{kv}_proj.{p}", st.integers(0, 40),
              st.sampled_from("kvq"), st.sampled_from(["weight", "bias"])),
    st.builds(lambda n, p: f"{n}.{p}_lora.down.weight", st.integers(0, 150), st.sampled_from(["to_q", "to_k"])),
    st.builds(lambda p, n: f"{p}layers.{n}.0.to_q.weight", st.sampled_from(["", "perceiver_resampler."]),
              st.integers(0, 5)),
)


def _scaled(shape, factor):
    return tuple(max(0, d * factor // 2) for d in shape)


@st.composite
def mutated_layout(draw):
    """A nested {group: {key: shape}} near one real layout."""
    base = LAYOUTS[draw(st.sampled_from(NAMES))]
    nested = {group: dict(keys) for group, keys in base.items()}
    for _ in range(draw(st.integers(0, 6))):
        group = draw(st.sampled_from(sorted(nested)))
        keys = nested[group]
        op = draw(st.sampled_from(["drop", "add_real", "add_made_up", "reshape", "ndim", "zero", "scale",
                                   "drop_many"]))
        if op == "drop" and keys:
            keys.pop(draw(st.sampled_from(sorted(keys))))
        elif op == "drop_many" and keys:
            doomed = draw(st.lists(st.sampled_from(sorted(keys)), max_size=len(keys)))
            for key in doomed:
                keys.pop(key, None)
        elif op == "add_real":
            keys[draw(st.sampled_from(REAL_KEYS[group]))] = draw(shapes)
        elif op == "add_made_up":
            keys[draw(made_up_keys)] = draw(shapes)
        elif op == "reshape" and keys:
            keys[draw(st.sampled_from(sorted(keys)))] = draw(shapes)
        elif op == "ndim" and keys:
            key = draw(st.sampled_from(sorted(keys)))
            shape = keys[key]
            keys[key] = shape[:-1] if draw(st.booleans()) and shape else shape + (draw(st.integers(0, 3)),)
        elif op == "zero" and keys:
            key = draw(st.sampled_from(sorted(keys)))
            shape = list(keys[key])
            if shape:
                shape[draw(st.integers(0, len(shape) - 1))] = 0
            keys[key] = tuple(shape)
        elif op == "scale" and keys:  # same key set, consistent-looking but other widths
            factor = draw(st.sampled_from([0, 1, 3, 4]))
            for key in draw(st.lists(st.sampled_from(sorted(keys)), min_size=1, max_size=8)):
                keys[key] = _scaled(keys[key], factor)
    if draw(st.integers(0, 19)) == 0:
        nested.pop(draw(st.sampled_from(sorted(nested))))
    return nested


def tensors(nested, device="cpu"):
    """Zero tensors of the given shapes (meta tensors where only shapes are read)."""
    return {group: {key: torch.zeros(shape, device=device) for key, shape in keys.items()}
            for group, keys in nested.items()}


def flat(nested):
    return {f"{group}.{key}": t for group, keys in nested.items() for key, t in keys.items()}


def _only_typed_errors(call):
    try:
        return call()
    except IPAdapterError as e:
        assert str(e), "a typed error without a message"
        return None


@FUZZ
@given(mutated_layout())
def test_detect_raises_only_typed_errors(layout):
    _only_typed_errors(lambda: formats.detect(tensors(layout, "meta"), "fuzzed.safetensors"))


@FUZZ
@given(mutated_layout())
def test_from_state_dict_raises_only_typed_errors(layout):
    model = _only_typed_errors(lambda: adapter.from_state_dict(tensors(layout), "fuzzed.safetensors"))
    if model is not None:  # what loads is exactly the file's tensors, nothing invented or dropped
        assert set(model.state_dict()) == set(flat(layout))


@settings(FUZZ, max_examples=100)
@given(mutated_layout())
def test_flat_files_through_split_groups_raise_only_typed_errors(layout):
    """The path a file takes: flat prefixed keys -> split_groups -> detect + strict load."""
    _only_typed_errors(lambda: adapter.from_state_dict(loading.split_groups(flat(tensors(layout)), "f.safetensors"),
                                                       "f.safetensors"))


@pytest.mark.parametrize("name", NAMES)
def test_unmutated_layouts_still_load(name):
    """The fuzz base is sound: every real layout loads (so the fuzzer explores near valid files)."""
    model = adapter.from_state_dict(tensors(LAYOUTS[name]), name)
    assert model.spec.num_layers in (16, 70, 19, 57)


@pytest.mark.parametrize("group, key, shape", [
    ("image_proj", "norm.weight", (0,)),  # zero token width: rows % 0
    ("image_proj", "proj.weight", (0, 0)),
])
def test_zero_width_linear_projection_is_a_typed_error(group, key, shape):
    layout = {g: dict(k) for g, k in LAYOUTS["ip-adapter_sd15.safetensors"].items()}
    layout[group][key] = shape
    with pytest.raises(IPAdapterError):
        adapter.from_state_dict(tensors(layout), "zero.safetensors")


def test_zero_width_resampler_and_scalar_lora_are_typed_errors():
    plus = {g: dict(k) for g, k in LAYOUTS["ip-adapter-plus_sd15.safetensors"].items()}
    plus["image_proj"]["layers.0.0.to_q.weight"] = (64, 0)  # resampler width 0: ff % 0
    with pytest.raises(IPAdapterError):
        formats.detect(tensors(plus), "plus.safetensors")
    faceid = {g: dict(k) for g, k in LAYOUTS["ip-adapter-faceid_sd15.bin"].items()}
    faceid["ip_adapter"]["0.to_q_lora.down.weight"] = ()  # a 0-D LoRA tensor: shape[0]
    with pytest.raises(IPAdapterError, match="do not fit"):
        adapter.from_state_dict(tensors(faceid), "faceid.bin")
    with pytest.raises(IPAdapterError):
        formats.detect({"image_proj": tensors(faceid)["image_proj"]}, "faceid.bin")  # a group missing
