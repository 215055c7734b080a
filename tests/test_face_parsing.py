"""BiSeNet face parsing and PuLID's EVA face picture (ipadapter_core/face_parsing.py).

Parity with facexlib 0.3.0's BiSeNet comes from golden data: tests/data/face_parsing/make_golden.py, run in a venv
with facexlib and the host's torch, loads seeded random weights into facexlib's model and records its outputs; here
the same weights are drawn again (same generator code and seed, checksums compared) and loaded into the port."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ipadapter_kit.ipadapter_core import face_parsing as fp
from ipadapter_kit.ipadapter_core.errors import InvalidInputError, UnknownFormatError

DATA = pathlib.Path(__file__).resolve().parent / "data" / "face_parsing"
TINY = fp.ParserConfig(stem=8, widths=(12, 16, 16, 24), blocks=(2, 1, 2, 1), context=8, fuse=16, fuse_squeeze=4,
                       head=12, aux_head16=6, aux_head32=5, classes=19)


def _golden_module():
    """tests/data/face_parsing/make_golden.py, imported (its weight and input generators use torch only)."""
    spec = importlib.util.spec_from_file_location("face_parsing_golden", DATA / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def golden():
    """(golden arrays, seeded facexlib-layout state dict, seeded inputs), or skip when not replayable."""
    data = dict(np.load(DATA / "bisenet_golden.npz", allow_pickle=False))
    made_with = str(data["torch_version"]).split("+")[0]
    here = torch.__version__.split("+")[0]
    if made_with != here:
        pytest.skip(f"golden data made with torch {made_with}, host has {here}: the seeded weights may differ; "
                    "rerun tests/data/face_parsing/make_golden.py with facexlib on this torch")
    gen = _golden_module()
    shapes = {k: tuple(v) for k, v in json.loads(str(data["shapes"])).items()}
    sd = gen.seeded_state_dict(shapes)
    inputs = gen.seeded_inputs()
    # float64 sums (their last bits depend on the reduction order); a different draw would differ everywhere
    same = dict(rtol=1e-10, atol=1e-10)
    assert torch.allclose(gen.checksums([sd[k] for k in sorted(sd)]), torch.from_numpy(data["weight_checksums"]),
                          **same), "same torch version but the seeded weights differ from the golden run"
    assert torch.allclose(gen.checksums(inputs), torch.from_numpy(data["input_checksums"]), **same)
    return data, sd, inputs


@pytest.fixture(scope="module")
def parser(golden):
    """The port loaded from the seeded facexlib-layout weights."""
    return fp.load_parser(golden[1])


def tiny_state_dict(cfg=TINY, seed=0):
    """Seeded weights for a small parser of the given widths, in the port's own layout."""
    shapes = {k: tuple(v.shape) for k, v in fp.BiSeNet(cfg).to("meta").state_dict().items()}
    return _golden_module().seeded_state_dict(shapes, seed)


def test_layout_equals_facexlib(golden):
    data = golden[0]
    ours = {k: tuple(v.shape) for k, v in fp.BiSeNet().to("meta").state_dict().items()}
    theirs = {k: tuple(v) for k, v in json.loads(str(data["shapes"])).items()}
    assert list(ours) == list(data["keys"]) and ours == theirs
    assert len(ours) == 191 and sum(1 for k in ours if k.endswith("num_batches_tracked")) == 31
    assert fp.config_from_state_dict(golden[1]) == fp.ParserConfig()


def test_main_output_equals_facexlib(golden, parser):
    data, _, (x64, _, _) = golden
    with torch.no_grad():
        out = parser(x64)
    ref = torch.from_numpy(data["out64"])
    assert out.shape == ref.shape == (1, 19, 64, 64)
    assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_aux_heads_equal_facexlib(golden, parser):
    data, _, (_, x32, _) = golden
    with torch.no_grad():
        main, aux16, aux32 = parser.forward_all(x32)
        assert torch.equal(main, parser(x32))
    for ours, key in ((aux16, "aux16_32"), (aux32, "aux32_32")):
        ref = torch.from_numpy(data[key])
        assert ours.shape == ref.shape == (1, 19, 32, 32)
        assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_parse_512_equals_pulid_path(golden, parser):
    """parse() on the RGB crop in 0..1 gives the labels of PuLID's BGR uint8 -> RGB /255 -> normalize path."""
    data, _, (_, _, face) = golden
    faces = face[None].float() / 255.0
    labels = fp.parse(parser, faces)
    ref = torch.from_numpy(data["labels512"]).long()
    assert labels.shape == (1, 512, 512) and labels.dtype == torch.long
    differ = labels[0] != ref
    if differ.any():  # only near-ties may flip (another CPU's kernels): top-2 logit gap within float noise
        mean = torch.tensor(fp.IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(fp.IMAGENET_STD).view(1, 3, 1, 1)
        with torch.no_grad():
            logits = parser((faces.permute(0, 3, 1, 2) - mean) / std)[0]
        top = logits.topk(2, dim=0).values
        gap = (top[0] - top[1])[differ]
        assert differ.sum() <= 50 and gap.max() <= 1e-5 * logits.abs().max(), \
            f"{differ.sum().item()} of {ref.numel()} labels differ, largest top-2 gap {gap.max().item()}"
    assert len(ref.unique()) >= 3  # the golden labels are not one flat class


def test_load_without_batch_counters_gives_the_same_parser(golden, parser):
    sd = {k: v for k, v in golden[1].items() if not k.endswith("num_batches_tracked")}
    again = fp.load_parser(sd)
    x = golden[2][1]
    with torch.no_grad():
        assert torch.equal(again(x), parser(x))
    assert not again.training and not any(p.requires_grad for p in again.parameters())


@pytest.mark.parametrize("cfg", [TINY, fp.ParserConfig(stem=8, widths=(8, 8, 16, 16), blocks=(2, 2, 2, 2),
                                                       context=8, fuse=8, fuse_squeeze=2, head=8, aux_head16=4,
                                                       aux_head32=4, classes=5)])
def test_widths_read_from_the_tensors(cfg):
    sd = tiny_state_dict(cfg)
    parser = fp.load_parser(sd)
    assert parser.cfg == cfg == fp.config_from_state_dict(sd)
    assert ("cp.resnet.layer1.0.downsample.0.weight" in sd) == (cfg.stem != cfg.widths[0])
    x = torch.rand((2, 48, 40, 3), generator=torch.Generator().manual_seed(1))
    labels = fp.parse(parser, x)
    assert labels.shape == (2, 48, 40) and int(labels.max()) < cfg.classes
    with torch.no_grad():  # batch rows are independent in eval mode
        assert torch.equal(labels[1:], fp.parse(parser, x[1:]))


def test_missing_key_names_it():
    sd = tiny_state_dict()
    del sd["conv_out32.conv.bn.running_var"]
    with pytest.raises(UnknownFormatError, match=r"missing conv_out32\.conv\.bn\.running_var; unexpected nothing"):
        fp.load_parser(sd, name="parsing_bisenet.pth")


def test_extra_key_names_it():
    sd = tiny_state_dict()
    sd["conv_out.conv_out.bias"] = torch.zeros(19)
    with pytest.raises(UnknownFormatError, match=r"missing nothing; unexpected conv_out\.conv_out\.bias"):
        fp.load_parser(sd)


def test_prefixed_or_wrapped_file_is_refused():
    sd = tiny_state_dict()
    with pytest.raises(UnknownFormatError, match=r"cp\.resnet\.conv1\.weight is missing"):
        fp.load_parser({"module." + k: v for k, v in sd.items()})
    with pytest.raises(UnknownFormatError, match="parsing_bisenet.pth"):
        fp.load_parser({"state_dict": sd})
    with pytest.raises(UnknownFormatError, match="expected a dict"):
        fp.load_parser([1, 2])


def test_misshaped_key_names_it():
    sd = tiny_state_dict()
    sd["ffm.conv2.weight"] = torch.zeros(16, 5, 1, 1)
    with pytest.raises(UnknownFormatError, match=r"ffm\.conv2\.weight has shape \(16, 5, 1, 1\), expected"):
        fp.load_parser(sd)


def test_to_gray_formula():
    x = torch.rand((2, 5, 7, 3), generator=torch.Generator().manual_seed(2))
    gray = fp.to_gray(x)
    expected = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    assert gray.shape == x.shape
    for c in range(3):
        assert torch.equal(gray[..., c], expected)


def test_background_to_white_formula():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((2, 6, 6, 3), generator=gen)
    labels = torch.randint(0, 19, (2, 6, 6), generator=gen)
    out = fp.background_to_white(x, labels)
    removed = torch.zeros_like(labels, dtype=torch.bool)
    for label in (0, 16, 18, 7, 8, 9, 14, 15):
        removed |= labels == label
    assert removed.any() and (~removed).any()
    assert torch.equal(out[removed], torch.ones_like(out[removed]))
    assert torch.equal(out[~removed], x[~removed])
    kept_only_hair = fp.background_to_white(x, labels, labels_to_remove=[17])
    assert torch.equal(kept_only_hair[labels != 17], x[labels != 17])


def test_face_features_is_white_after_gray():
    """PuLID's where(bg, 1.0, to_gray(x)): background exactly 1.0, faces gray."""
    x = torch.rand((1, 4, 4, 3), generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([[[0, 1, 17, 16], [1, 1, 1, 1], [7, 10, 11, 12], [13, 14, 15, 18]]])
    out = fp.face_features(x, labels)
    bg = torch.isin(labels, torch.tensor(fp.PULID_BACKGROUND))[0]
    assert torch.all(out[0][bg] == 1.0)
    assert torch.equal(out[0][~bg], fp.to_gray(x)[0][~bg])


def test_eva_input_normalises_with_openai_stats():
    x = torch.rand((2, 336, 336, 3), generator=torch.Generator().manual_seed(5))
    out = fp.eva_input(x)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert out.shape == (2, 3, 336, 336) and out.dtype == torch.float32
    assert torch.allclose(out, (x.permute(0, 3, 1, 2) - mean) / std, atol=1e-6, rtol=0)


def test_eva_input_resizes_as_torchvision_015():
    """bicubic without antialias and without clamping (torchvision 0.15's tensor default); NEAREST for cubiq."""
    tv = pytest.importorskip("torchvision.transforms.functional")
    from torchvision.transforms import InterpolationMode
    x = torch.rand((1, 512, 512, 3), generator=torch.Generator().manual_seed(6))
    chw = x.permute(0, 3, 1, 2)
    out = fp.eva_input(x, mean=(0, 0, 0), std=(1, 1, 1))
    ref = tv.resize(chw, 336, InterpolationMode.BICUBIC, antialias=False)
    assert out.shape == (1, 3, 336, 336) and torch.allclose(out, ref, atol=1e-6, rtol=0)
    assert out.min() < 0 or out.max() > 1  # bicubic overshoot is kept
    smoothed = tv.resize(chw, 336, InterpolationMode.BICUBIC, antialias=True)
    assert (out - smoothed).abs().max() > 0.05
    nearest = fp.eva_input(x, mode="nearest", mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.equal(nearest, tv.resize(chw, 336, InterpolationMode.NEAREST))
    assert torch.allclose(fp.eva_input(x, size=224), (F.interpolate(chw, size=(224, 224), mode="bicubic",
                                                                     align_corners=False) - torch.tensor(
        fp.OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(fp.OPENAI_STD).view(1, 3, 1, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [torch.rand(512, 512, 3), torch.rand(1, 3, 64, 64),
                                 torch.zeros((1, 8, 8, 3), dtype=torch.uint8), "face"])
def test_bad_faces_raise(bad):
    parser = fp.load_parser(tiny_state_dict())
    for call in (lambda: fp.parse(parser, bad), lambda: fp.to_gray(bad), lambda: fp.eva_input(bad)):
        with pytest.raises(InvalidInputError):
            call()


def test_bad_labels_raise():
    x = torch.rand(1, 4, 4, 3)
    with pytest.raises(InvalidInputError, match="must be a"):
        fp.background_to_white(x, torch.zeros((1, 4, 5), dtype=torch.long))
    with pytest.raises(InvalidInputError, match="integer"):
        fp.background_to_white(x, torch.zeros((1, 4, 4)))
    with pytest.raises(InvalidInputError, match="mode"):
        fp.eva_input(x, mode="lanczos")
