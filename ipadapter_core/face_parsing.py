"""BiSeNet face parsing and the face picture PuLID gives EVA-CLIP, in plain torch.

PuLID (`pulid/pipeline.py` `get_id_embedding`; cubiq's `pulid.py` `apply_pulid` alike) parses the aligned 512 crop
with facexlib 0.3.0's `BiSeNet(num_class=19)` (`init_parsing_model('bisenet')`, file `parsing_bisenet.pth`):

    x = normalize(rgb / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))   # RGB, no resize
    labels = argmax(bisenet(x)[0], dim=1)                                              # (B, 512, 512), 19 classes
    face = where(labels in {0, 16, 18, 7, 8, 9, 14, 15}, 1.0, gray(rgb))                # gray = .299R + .587G + .114B
    eva = normalize(resize(face, 336, BICUBIC), OPENAI mean, OPENAI std)               # tensor resize, no clamp

The resize is torchvision's tensor resize (interpolate, align_corners=False). PuLID pins torchvision 0.15.2, whose
tensor default is antialias=None, i.e. off; torchvision >= 0.17 would antialias. cubiq resizes with NEAREST when
not on CUDA (`mode="nearest"` here).

BiSeNet (facexlib `parsing/bisenet.py`, `parsing/resnet.py`): a ResNet18 context path (`cp.resnet`, features at
1/8, 1/16, 1/32), attention refinement on the 1/16 and 1/32 features plus a global-average branch, upsampled by
nearest and joined (`cp.arm16/arm32/conv_head16/conv_head32/conv_avg`), a feature fusion of the 1/8 ResNet feature
with the context (`ffm`), and three heads upsampled bilinearly (align_corners=True) to the input size: `conv_out`
(the one used) and the training-only `conv_out16`, `conv_out32`. Module attributes equal the file's keys:
facexlib loads the `torch.load` result with `load_state_dict(strict=True)`, so the file is a plain state dict with
no wrapper and no `module.` prefix. Its 31 batch-norm `num_batches_tracked` counters are unused at inference and
may be absent (as torch's BatchNorm allows for files saved without version metadata). Widths are read from the
tensors. Imports torch only, never the host.
"""
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidInputError, UnknownFormatError, listing
from .image_ops import check_rgb_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
# CelebAMask-HQ order: 0 bg, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye, 6 eye_g, 7 l_ear, 8 r_ear, 9 ear_r,
# 10 nose, 11 mouth, 12 u_lip, 13 l_lip, 14 neck, 15 neck_l, 16 cloth, 17 hair, 18 hat.
PULID_BACKGROUND = (0, 16, 18, 7, 8, 9, 14, 15)
EVA_SIZE = 336
FILE_HINT = ("Use facexlib's parsing_bisenet.pth (https://github.com/xinntao/facexlib/releases/download/v0.2.0/"
             "parsing_bisenet.pth), the face parser PuLID uses.")
BN_COUNTER = "num_batches_tracked"


@dataclass(frozen=True)
class ParserConfig:
    """Widths of a BiSeNet face parser; the defaults are facexlib's BiSeNet(num_class=19)."""
    stem: int = 64
    widths: tuple = (64, 128, 256, 512)
    blocks: tuple = (2, 2, 2, 2)
    context: int = 128
    fuse: int = 256
    fuse_squeeze: int = 64
    head: int = 256
    aux_head16: int = 64
    aux_head32: int = 64
    classes: int = 19


class ConvBNReLU(nn.Module):
    """conv (no bias), batch norm, ReLU."""

    def __init__(self, cin, cout, kernel=3, padding=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=1, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + branch)


def _stage(cin, cout, count, stride):
    """`count` basic blocks, the first one striding."""
    return nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(count)])


class ResNet18(nn.Module):
    """The context path's backbone: features at 1/8, 1/16 and 1/32 of the input."""

    def __init__(self, cfg):
        super().__init__()
        self.conv1 = nn.Conv2d(3, cfg.stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.stem)
        ins = (cfg.stem, *cfg.widths[:3])
        for i, (cin, cout, count) in enumerate(zip(ins, cfg.widths, cfg.blocks)):
            setattr(self, f"layer{i + 1}", _stage(cin, cout, count, 1 if i == 0 else 2))

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


def _global_pool(x):
    """(B, C, 1, 1) average over the whole map."""
    return F.avg_pool2d(x, x.shape[2:])


class AttentionRefinement(nn.Module):
    """feat = ConvBNReLU(x); feat * sigmoid(bn(conv(avg(feat))))."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(_global_pool(feat))))


class ContextPath(nn.Module):
    """ResNet features refined and joined top-down: (feat8, context at 1/8, context at 1/16)."""

    def __init__(self, cfg):
        super().__init__()
        self.resnet = ResNet18(cfg)
        self.arm16 = AttentionRefinement(cfg.widths[2], cfg.context)
        self.arm32 = AttentionRefinement(cfg.widths[3], cfg.context)
        self.conv_head32 = ConvBNReLU(cfg.context, cfg.context)
        self.conv_head16 = ConvBNReLU(cfg.context, cfg.context)
        self.conv_avg = ConvBNReLU(cfg.widths[3], cfg.context, kernel=1, padding=0)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        avg = F.interpolate(self.conv_avg(_global_pool(feat32)), feat32.shape[2:], mode="nearest")
        up32 = F.interpolate(self.arm32(feat32) + avg, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16), up32


class FeatureFusion(nn.Module):
    """feat = ConvBNReLU(cat(a, b)); feat * sigmoid(conv2(relu(conv1(avg(feat))))) + feat."""

    def __init__(self, cin, cout, squeeze):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1, padding=0)
        self.conv1 = nn.Conv2d(cout, squeeze, 1, bias=False)
        self.conv2 = nn.Conv2d(squeeze, cout, 1, bias=False)

    def forward(self, a, b):
        feat = self.convblk(torch.cat([a, b], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_pool(feat)))))
        return feat * atten + feat


class OutputHead(nn.Module):
    """ConvBNReLU then a 1x1 conv (no bias) to class logits."""

    def __init__(self, cin, mid, classes):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """facexlib's BiSeNet face parser: (B, 3, H, W) normalised RGB -> (B, classes, H, W) logits."""

    def __init__(self, cfg=ParserConfig()):
        super().__init__()
        self.cfg = cfg
        self.cp = ContextPath(cfg)
        self.ffm = FeatureFusion(cfg.widths[1] + cfg.context, cfg.fuse, cfg.fuse_squeeze)
        self.conv_out = OutputHead(cfg.fuse, cfg.head, cfg.classes)
        self.conv_out16 = OutputHead(cfg.context, cfg.aux_head16, cfg.classes)
        self.conv_out32 = OutputHead(cfg.context, cfg.aux_head32, cfg.classes)

    def _upsample(self, logits, size):
        """Bilinear (align_corners=True) to the input size, as facexlib."""
        return F.interpolate(logits, size, mode="bilinear", align_corners=True)

    def forward_all(self, x):
        """(main, aux16, aux32) logits at the input size, as facexlib's forward returns them."""
        feat8, context8, context16 = self.cp(x)
        out = self.conv_out(self.ffm(feat8, context8))
        aux16, aux32 = self.conv_out16(context8), self.conv_out32(context16)
        return tuple(self._upsample(t, x.shape[2:]) for t in (out, aux16, aux32))

    def forward(self, x):
        """Main logits (B, classes, H, W): the only output used at inference."""
        feat8, context8, _ = self.cp(x)
        return self._upsample(self.conv_out(self.ffm(feat8, context8)), x.shape[2:])


def _shape(sd, key, ndim, name):
    """sd[key].shape, or UnknownFormatError naming the key when it is absent or not ndim-D."""
    tensor = sd.get(key)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != ndim:
        found = "missing" if tensor is None else f"shape {tuple(getattr(tensor, 'shape', ()))}"
        raise UnknownFormatError(f"{name}: {key} is {found}, expected a {ndim}-D tensor of a BiSeNet face parser. "
                                 + FILE_HINT)
    return tuple(tensor.shape)


def _block_count(sd, layer):
    """Blocks in cp.resnet.layer{layer}, from the key names."""
    pattern = re.compile(rf"cp\.resnet\.layer{layer}\.(\d+)\.")
    indices = {int(m.group(1)) for m in map(pattern.match, sd) if m}
    return max(indices) + 1 if indices else 0


def config_from_state_dict(sd, name="state dict"):
    """ParserConfig read from the tensor shapes of a BiSeNet state dict."""
    stem = _shape(sd, "cp.resnet.conv1.weight", 4, name)[0]
    widths = tuple(_shape(sd, f"cp.resnet.layer{i}.0.conv1.weight", 4, name)[0] for i in range(1, 5))
    return ParserConfig(
        stem=stem, widths=widths, blocks=tuple(_block_count(sd, i) for i in range(1, 5)),
        context=_shape(sd, "cp.conv_avg.conv.weight", 4, name)[0],
        fuse=_shape(sd, "ffm.convblk.conv.weight", 4, name)[0],
        fuse_squeeze=_shape(sd, "ffm.conv1.weight", 4, name)[0],
        head=_shape(sd, "conv_out.conv.conv.weight", 4, name)[0],
        aux_head16=_shape(sd, "conv_out16.conv.conv.weight", 4, name)[0],
        aux_head32=_shape(sd, "conv_out32.conv.conv.weight", 4, name)[0],
        classes=_shape(sd, "conv_out.conv_out.weight", 4, name)[0])


def check_state_dict(sd, parser, name="state dict"):
    """UnknownFormatError naming the missing, unexpected or misshaped keys against the parser's own."""
    expected = {k: tuple(v.shape) for k, v in parser.state_dict().items()}
    missing = {k for k in set(expected) - set(sd) if not k.endswith(BN_COUNTER)}
    extra = set(sd) - set(expected)
    if missing or extra:
        raise UnknownFormatError(
            f"{name}: not facexlib's BiSeNet layout: missing {listing(missing) or 'nothing'}; unexpected "
            f"{listing(extra) or 'nothing'}. " + FILE_HINT)
    wrong = {k: tuple(getattr(v, "shape", ())) for k, v in sd.items()}
    wrong = {k: shape for k, shape in wrong.items() if shape != expected[k]}
    if wrong:
        key, got = sorted(wrong.items())[0]
        raise UnknownFormatError(
            f"{name}: {key} has shape {got}, expected {expected[key]} for the parser read from the file's shapes "
            f"({len(wrong)} tensors differ). The file is damaged or not a BiSeNet face parser. " + FILE_HINT)


def load_parser(state_dict, dtype=torch.float32, device="cpu", name="state dict"):
    """BiSeNet in eval mode loaded strictly from a parsing_bisenet.pth state dict (BN counters may be absent)."""
    if not isinstance(state_dict, dict):
        raise UnknownFormatError(f"{name}: expected a dict of tensors, got {type(state_dict).__name__}. " + FILE_HINT)
    parser = BiSeNet(config_from_state_dict(state_dict, name)).to(device="meta")
    check_state_dict(state_dict, parser, name)
    full = dict(parser.state_dict())
    sd = {k: state_dict.get(k, torch.zeros((), dtype=torch.long)) for k in full}
    parser = parser.to_empty(device=device)
    parser.load_state_dict(sd, strict=True)
    return parser.to(dtype=dtype).eval().requires_grad_(False)


def _normalize(x, mean, std):
    """(x - mean) / std per channel of (B, 3, H, W), as torchvision's normalize."""
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def parse(parser, faces):
    """(B, H, W) int64 class labels of aligned RGB faces (B, H, W, 3) in 0..1 (PuLID: 512 x 512)."""
    faces = check_rgb_images(faces, "faces")
    param = next(parser.parameters())
    x = _normalize(faces.float().permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)
    logits = parser(x.to(device=param.device, dtype=param.dtype))
    return logits.argmax(dim=1).to(faces.device)


def to_gray(images):
    """(B, H, W, 3) gray 0.299 R + 0.587 G + 0.114 B repeated over the 3 channels, as PuLID's to_gray."""
    images = check_rgb_images(images, "images")
    r, g, b = GRAY_WEIGHTS
    gray = r * images[..., 0:1] + g * images[..., 1:2] + b * images[..., 2:3]
    return gray.expand(*gray.shape[:3], 3).contiguous()


def _check_labels(labels, faces):
    """labels as a (B, H, W) integer tensor matching faces, or an InvalidInputError."""
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(faces.shape[:3]):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise InvalidInputError(f"labels must be a {tuple(faces.shape[:3])} tensor matching the faces; got {shape}.")
    if labels.is_floating_point() or labels.is_complex():
        raise InvalidInputError(f"labels must be integer class indices; got dtype {labels.dtype}.")
    return labels


def background_to_white(faces, labels, labels_to_remove=PULID_BACKGROUND):
    """faces (B, H, W, 3) with every pixel whose label is in labels_to_remove set to 1.0 (white)."""
    faces = check_rgb_images(faces, "faces")
    labels = _check_labels(labels, faces).to(faces.device)
    remove = torch.as_tensor(tuple(labels_to_remove), dtype=labels.dtype, device=labels.device)
    background = torch.isin(labels, remove)[..., None]
    return torch.where(background, torch.ones_like(faces), faces)


def face_features(faces, labels, labels_to_remove=PULID_BACKGROUND):
    """PuLID's face picture: the gray face with the background (and ears, neck, cloth, hat) white."""
    return background_to_white(to_gray(faces), labels, labels_to_remove)


def eva_input(faces, size=EVA_SIZE, mean=OPENAI_MEAN, std=OPENAI_STD, mode="bicubic", antialias=False):
    """(B, 3, size, size) float32 EVA input: tensor resize as torchvision 0.15 (no clamp), then (x - mean) / std."""
    faces = check_rgb_images(faces, "faces")
    if mode not in ("bicubic", "bilinear", "nearest"):
        raise InvalidInputError(f"mode must be bicubic, bilinear or nearest; got {mode!r}.")
    x = faces.float().permute(0, 3, 1, 2)
    if tuple(x.shape[2:]) != (size, size):
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": antialias}
        x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return _normalize(x, mean, std)
