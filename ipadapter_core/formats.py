"""Format detection: the one place that turns tensor shapes into an AdapterSpec. File names are never read."""
import re
from dataclasses import dataclass
from typing import Optional

from .errors import UnknownFormatError

HEAD_DIM = 64  # attention head size of every released resampler; not stored in the files
ARCH_BY_LAYERS = {16: "SD1.5", 70: "SDXL"}
# Known encoder widths, only for messages: image_embeds size and hidden-state size.
ENCODER_NAMES = {
    ("image_embeds", 1024): "CLIP-ViT-H-14",
    ("image_embeds", 1280): "CLIP-ViT-bigG-14",
    ("image_embeds", 768): "CLIP-ViT-L-14",
    ("hidden", 1280): "CLIP-ViT-H-14",
    ("hidden", 1664): "CLIP-ViT-bigG-14",
    ("hidden", 1024): "CLIP-ViT-L-14 (336px for Kolors)",
}


@dataclass(frozen=True)
class AdapterSpec:
    """What an IP-Adapter file is, as far as its tensors tell."""

    kind: str  # linear | mlp | resampler | faceid | faceid_plus
    arch: str  # SD1.5 | SDXL (named by cross-attention layer count)
    cross_dim: int  # width of the image tokens (= the UNet's context width)
    layer_widths: tuple  # query width of each cross-attention layer, diffusers order
    tokens: Optional[int]  # image tokens per reference; None: one per encoder token (full-face MLP)
    clip_dim: Optional[int] = None  # width read from the CLIP-vision output (None: no CLIP input)
    id_dim: Optional[int] = None  # InsightFace embedding width (FaceID kinds)
    resampler_dim: Optional[int] = None
    resampler_depth: Optional[int] = None
    resampler_heads: Optional[int] = None
    ff_mult: Optional[int] = None
    lora_rank: int = 0

    @property
    def num_layers(self):
        return len(self.layer_widths)

    @property
    def clip_output(self):
        """Which CLIP-vision output feeds the projection."""
        if self.clip_dim is None:
            return None
        return "image_embeds" if self.kind == "linear" else "penultimate_hidden_states"

    def encoder_name(self):
        """A human name for the CLIP-vision encoder this adapter needs."""
        if self.clip_dim is None:
            return "none (InsightFace only)"
        key = ("image_embeds" if self.kind == "linear" else "hidden", self.clip_dim)
        return ENCODER_NAMES.get(key, f"a CLIP-vision encoder with {self.clip_output} of width {self.clip_dim}")

    def describe(self):
        return (f"{self.arch} {self.kind} adapter, {self.tokens or 'per-token'} image tokens, cross-attention width "
                f"{self.cross_dim}, encoder {self.encoder_name()}")


def _shape(group, key, name, ndim):
    t = group.get(key)
    if t is None or t.ndim != ndim or 0 in t.shape:
        found = "missing" if t is None else f"shape {tuple(t.shape)}"
        raise UnknownFormatError(f"{name}: tensor image_proj.{key} is {found}; expected a {ndim}-D tensor with no "
                                 "zero-size dimension. The file is damaged or not an IP-Adapter release.")
    return tuple(t.shape)


def _perceiver(proj, prefix, name):
    """Depth, heads and feed-forward multiplier of a perceiver stack under prefix."""
    depth = len({k[len(prefix):].split(".")[1] for k in proj if k.startswith(prefix + "layers.")})
    if depth == 0:
        raise UnknownFormatError(f"{name}: resampler without layers (no image_proj.{prefix}layers.*).")
    inner = _shape(proj, f"{prefix}layers.0.0.to_q.weight", name, 2)[0]
    dim = _shape(proj, f"{prefix}layers.0.0.to_q.weight", name, 2)[1]
    ff = _shape(proj, f"{prefix}layers.0.1.1.weight", name, 2)[0]
    if inner % HEAD_DIM or ff % dim:
        raise UnknownFormatError(f"{name}: resampler attention width {inner} is not a multiple of the head size "
                                 f"{HEAD_DIM}, or feed-forward width {ff} is not a multiple of {dim}.")
    return dim, depth, inner // HEAD_DIM, ff // dim


def _projection(proj, name):
    """Kind and projection fields from the image_proj keys."""
    if "latents" in proj:
        queries, dim = _shape(proj, "latents", name, 3)[1:]
        _, depth, heads, ff = _perceiver(proj, "", name)
        cross = _shape(proj, "proj_out.weight", name, 2)[0]
        clip = _shape(proj, "proj_in.weight", name, 2)[1]
        return dict(kind="resampler", cross_dim=cross, tokens=queries, clip_dim=clip, resampler_dim=dim,
                    resampler_depth=depth, resampler_heads=heads, ff_mult=ff)
    if "proj.0.weight" in proj and "proj.2.weight" in proj:
        if "proj.3.weight" in proj:
            cross = _shape(proj, "proj.2.weight", name, 2)[0]
            return dict(kind="mlp", cross_dim=cross, tokens=None, clip_dim=_shape(proj, "proj.0.weight", name, 2)[1])
        cross = _shape(proj, "norm.weight", name, 1)[0]
        rows, id_dim = _shape(proj, "proj.2.weight", name, 2)[0], _shape(proj, "proj.0.weight", name, 2)[1]
        fields = dict(kind="faceid", cross_dim=cross, tokens=rows // cross, id_dim=id_dim)
        if "perceiver_resampler.proj_in.weight" in proj:
            _, depth, heads, ff = _perceiver(proj, "perceiver_resampler.", name)
            fields.update(kind="faceid_plus", clip_dim=_shape(proj, "perceiver_resampler.proj_in.weight", name, 2)[1],
                          resampler_dim=cross, resampler_depth=depth, resampler_heads=heads, ff_mult=ff)
        if rows % cross:
            raise UnknownFormatError(f"{name}: FaceID projection rows {rows} are not a multiple of the token width "
                                     f"{cross}.")
        return fields
    if "proj.weight" in proj and "norm.weight" in proj:
        cross = _shape(proj, "norm.weight", name, 1)[0]
        rows, clip = _shape(proj, "proj.weight", name, 2)
        if rows % cross:
            raise UnknownFormatError(f"{name}: projection rows {rows} are not a multiple of the token width {cross}.")
        return dict(kind="linear", cross_dim=cross, tokens=rows // cross, clip_dim=clip)
    found = ", ".join(sorted(proj)[:8])
    raise UnknownFormatError(
        f"{name}: unknown image projection (keys: {found}). Expected one of the released layouts: linear "
        "(proj, norm), MLP (proj.0/2/3), Perceiver resampler (latents, proj_in, layers.*), FaceID (proj.0/2, norm).")


_LAYER_KEY = re.compile(r"^(\d+)\.to_([kv])_ip\.weight$")


def _layers(ip, cross, name):
    """Query widths of the cross-attention layers, checked for the 1, 3, 5, ... numbering."""
    widths = {}
    for key, t in ip.items():
        m = _LAYER_KEY.match(key)
        if not m:
            continue
        if t.ndim != 2 or t.shape[1] != cross or t.shape[0] == 0:
            raise UnknownFormatError(
                f"{name}: ip_adapter.{key} has shape {tuple(t.shape)}; expected (width, {cross}) to match the "
                f"image projection's token width {cross}. The two halves of the file do not belong together.")
        widths.setdefault(int(m.group(1)), {})[m.group(2)] = t.shape[0]
    if not widths:
        raise UnknownFormatError(f"{name}: no ip_adapter.N.to_k_ip.weight tensors; not an IP-Adapter file.")
    expected = list(range(1, 2 * len(widths), 2))
    if sorted(widths) != expected or any(set(w) != {"k", "v"} or w["k"] != w["v"] for w in widths.values()):
        raise UnknownFormatError(
            f"{name}: cross-attention layers are numbered {sorted(widths)[:6]}... with {len(widths)} entries; "
            "expected to_k_ip and to_v_ip pairs at 1, 3, 5, ... The file is truncated or was renamed.")
    count = len(widths)
    if count not in ARCH_BY_LAYERS:
        raise UnknownFormatError(
            f"{name}: {count} cross-attention layers; expected 16 (SD1.5) or 70 (SDXL). Other architectures need "
            "their own adapter release.")
    return tuple(widths[n]["k"] for n in expected), ARCH_BY_LAYERS[count]


def _lora_rank(ip):
    ranks = {t.shape[0] for k, t in ip.items() if k.endswith("_lora.down.weight") and t.ndim == 2}
    return max(ranks) if ranks else 0


def detect(nested, name="adapter"):
    """Read an AdapterSpec from a nested {"image_proj", "ip_adapter"} state dict; raise UnknownFormatError."""
    missing = [group for group in ("image_proj", "ip_adapter") if not isinstance(nested.get(group), dict)]
    if missing:
        raise UnknownFormatError(f"{name}: no '{missing[0]}' tensors; expected the IP-Adapter layout with "
                                 "'image_proj.*' and 'ip_adapter.*' weights.")
    fields = _projection(nested["image_proj"], name)
    widths, arch = _layers(nested["ip_adapter"], fields["cross_dim"], name)
    return AdapterSpec(arch=arch, layer_widths=widths, lora_rank=_lora_rank(nested["ip_adapter"]), **fields)
