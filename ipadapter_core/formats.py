"""Format detection: the one place that turns tensor shapes into an AdapterSpec. File names are never read."""
import re
from dataclasses import dataclass
from typing import Optional

from . import families
from .families import flux
from .errors import UnknownFormatError
from .pulid import ID_TOKENS
from .pulid_flux import CA_HEAD_DIM, ENCODER_HEAD_DIM, EVA_SCALES, ca_count

HEAD_DIM = 64  # attention head size of every released resampler; not stored in the files
ARCFACE_WIDTH = 512  # InsightFace's ArcFace embedding, what FaceID and InstantID projections read
INSTANTX_KV_RMS_EPS = 1e-5  # InstantX's K/V RMSNorm (no affine, so not in the file)
# Known encoder widths, only for messages: image_embeds size and hidden-state size.
ENCODER_NAMES = {
    ("image_embeds", 1024): "CLIP-ViT-H-14",
    ("image_embeds", 1280): "CLIP-ViT-bigG-14",
    ("image_embeds", 768): "CLIP-ViT-L-14",
    ("hidden", 1280): "CLIP-ViT-H-14",
    ("hidden", 1664): "CLIP-ViT-bigG-14",
    ("hidden", 1024): "CLIP-ViT-L-14 (336px for Kolors)",
    ("pooled", 1152): "SigLIP so400m-patch14-384 (pooled output)",
    ("hidden", 1152): "SigLIP so400m-patch14-384",
}
CLIP_OUTPUTS = {"linear": "image_embeds", "pooled_mlp": "pooled", "pulid": "eva_features",
                "pulid_flux": "eva_features"}  # other CLIP kinds read penultimate hidden states


@dataclass(frozen=True)
class AdapterSpec:
    """What an IP-Adapter file is, as far as its tensors tell."""

    kind: str  # linear | mlp | resampler | faceid | faceid_plus | pooled_mlp | time_resampler | instantid | pulid
    #            | pulid_flux
    arch: str  # the model family (families.FAMILIES): SD1.5 | SDXL | Flux | SD3.5
    cross_dim: int  # width of the image tokens (= the model's text context width)
    layer_widths: tuple  # query width of each adapter layer, in the family's layer order
    tokens: Optional[int]  # image tokens per reference; None: one per encoder token (full-face MLP)
    clip_dim: Optional[int] = None  # width read from the CLIP-vision output (None: no CLIP input)
    id_dim: Optional[int] = None  # InsightFace embedding width (FaceID kinds)
    resampler_dim: Optional[int] = None
    resampler_depth: Optional[int] = None
    resampler_heads: Optional[int] = None
    ff_mult: Optional[int] = None
    lora_rank: int = 0
    timestep_dim: Optional[int] = None  # sinusoidal timestep width of a time-conditioned resampler (SD3.5)
    layout: str = "tencent"  # tencent (image_proj / ip_adapter.N) | xlabs (ip_adapter_proj_model / double_blocks)
    #                          | joint (tencent keys, one SD3.5 joint-block processor per N)
    #                          | pulid_flux (pulid_encoder / pulid_ca.K)
    kv_rms_eps: Optional[float] = None  # image K/V RMS-normalised per head (InstantX Flux)
    injection: str = "attention"  # where a DiT block takes the image term: attention (output) | block_output | joint
    #                               | pulid_ca (PuLID-Flux: a cross-attention added to the image stream after a block)
    head_dim: Optional[int] = None  # the joint processors' head width (their QK-norm size); PuLID-Flux: CA head width
    token_dim: Optional[int] = None  # Kolors FaceID-Plus: width of the projected tokens (ChatGLM's 4096), which the
    #                                  model's encoder_hid_proj maps to cross_dim before the image K/V read them
    hidden_widths: tuple = ()  # PuLID's ID encoder: body hidden widths, then its mappings' hidden widths
    #                            (PuLID-Flux: id_embedding_mapping's, the mappings', then the CA attention width)

    @property
    def num_layers(self):
        return len(self.layer_widths)

    @property
    def step_tokens(self):
        """Whether the image tokens depend on the sampling step (projected by the patch, per model call)."""
        return self.kind == "time_resampler"

    @property
    def clip_output(self):
        """Which CLIP-vision output feeds the projection."""
        if self.clip_dim is None:
            return None
        return CLIP_OUTPUTS.get(self.kind, "penultimate_hidden_states")

    def encoder_name(self):
        """A human name for the CLIP-vision encoder this adapter needs."""
        if self.clip_dim is None:
            return "none (InsightFace only)"
        if self.kind == "time_resampler":  # InstantX SD3.5: the only release of this kind reads SigLIP
            return "SigLIP so400m-patch14-384"
        if self.kind in ("pulid", "pulid_flux"):
            return "EVA02-CLIP-L-14-336 with antelopev2 (ArcFace)"
        output = self.clip_output
        key = ("hidden" if output == "penultimate_hidden_states" else output, self.clip_dim)
        return ENCODER_NAMES.get(key, f"a CLIP-vision encoder with {self.clip_output} of width {self.clip_dim}")

    def describe(self):
        kolors = f" (Kolors FaceID-Plus: {self.token_dim}-wide tokens through the UNet's encoder_hid_proj)" \
            if self.token_dim else ""
        return (f"{self.arch} {self.kind} adapter{kolors}, {self.tokens or 'per-token'} image tokens, "
                f"{self.num_layers} layers, context width {self.cross_dim}, encoder {self.encoder_name()}")


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


def _pulid_fields(proj, name):
    """PuLID SDXL's IDEncoder: body (ArcFace + EVA feature -> ID tokens) and one mapping pair per EVA hidden state."""
    h1, width = _shape(proj, "body.0.weight", name, 2)
    h2 = _shape(proj, "body.3.weight", name, 2)[0]
    rows = _shape(proj, "body.6.weight", name, 2)[0]
    m1, vision = _shape(proj, "mapping_0.0.weight", name, 2)
    m2 = _shape(proj, "mapping_0.3.weight", name, 2)[0]
    cross = _shape(proj, "mapping_0.6.weight", name, 2)[0]
    layers = len({k.split(".")[0] for k in proj if k.startswith("mapping_") and not k.startswith("mapping_patch_")})
    patches = len({k.split(".")[0] for k in proj if k.startswith("mapping_patch_")})
    if rows % cross or layers != patches or width <= ARCFACE_WIDTH:
        raise UnknownFormatError(f"{name}: PuLID ID encoder with body output {rows} for token width {cross}, {layers} "
                                 f"mapping and {patches} mapping_patch stacks, input {width}; expected whole tokens, "
                                 f"one mapping_patch per mapping and an input of {ARCFACE_WIDTH} (ArcFace) plus the "
                                 "EVA-CLIP feature.")
    return dict(kind="pulid", cross_dim=cross, tokens=rows // cross + layers, clip_dim=vision, id_dim=width,
                hidden_widths=(h1, h2, m1, m2), resampler_depth=layers)


def projection_fields(proj, name):
    """Kind and projection fields (AdapterSpec keyword arguments) from the image_proj keys."""
    if "latents" in proj and "time_embedding.linear_1.weight" in proj:
        queries, dim = _shape(proj, "latents", name, 3)[1:]
        _, depth, heads, ff = _perceiver(proj, "", name)
        step_out, step_in = _shape(proj, "time_embedding.linear_1.weight", name, 2)
        if step_out != dim or step_in % 2:
            raise UnknownFormatError(f"{name}: timestep embedding {step_in} -> {step_out} does not fit a resampler of "
                                     f"width {dim} (expected an even input width and output {dim}).")
        return dict(kind="time_resampler", cross_dim=_shape(proj, "proj_out.weight", name, 2)[0], tokens=queries,
                    clip_dim=_shape(proj, "proj_in.weight", name, 2)[1], resampler_dim=dim, resampler_depth=depth,
                    resampler_heads=heads, ff_mult=ff, timestep_dim=step_in)
    if "latents" in proj:
        queries, dim = _shape(proj, "latents", name, 3)[1:]
        _, depth, heads, ff = _perceiver(proj, "", name)
        cross = _shape(proj, "proj_out.weight", name, 2)[0]
        clip = _shape(proj, "proj_in.weight", name, 2)[1]
        fields = dict(kind="resampler", cross_dim=cross, tokens=queries, clip_dim=clip, resampler_dim=dim,
                      resampler_depth=depth, resampler_heads=heads, ff_mult=ff)
        if clip == ARCFACE_WIDTH:  # no CLIP-vision model has 512-wide hidden states: an ArcFace embedding (InstantID)
            fields.update(kind="instantid", clip_dim=None, id_dim=clip)
        return fields
    if "body.0.weight" in proj and "mapping_0.0.weight" in proj:
        return _pulid_fields(proj, name)
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
_XLABS_KEY = re.compile(r"^(\d+)\.processor\.ip_adapter_double_stream_([kv])_proj\.(weight|bias)$")


def _numbered_widths(group, pattern, cross, name, group_name):
    """{layer number: {"k"/"v": width}} of the K/V projections matched by pattern, shapes checked."""
    widths = {}
    for key, t in group.items():
        m = pattern.match(key)
        if not m or (m.lastindex == 3 and m.group(3) != "weight"):
            continue
        if t.ndim != 2 or t.shape[1] != cross or t.shape[0] == 0:
            raise UnknownFormatError(
                f"{name}: {group_name}.{key} has shape {tuple(t.shape)}; expected (width, {cross}) to match the "
                f"image projection's token width {cross}. The two halves of the file do not belong together.")
        widths.setdefault(int(m.group(1)), {})[m.group(2)] = t.shape[0]
    if not widths:
        raise UnknownFormatError(f"{name}: no image K/V projections under {group_name}.*; not an IP-Adapter file.")
    return widths


def _paired(widths, name, group_name):
    """The K widths in layer order, once every layer has K and V of one width."""
    if any(set(w) != {"k", "v"} or w["k"] != w["v"] for w in widths.values()):
        raise UnknownFormatError(f"{name}: some layers under {group_name}.* lack their K or V projection, or the two "
                                 "differ in width. The file is truncated or was renamed.")
    return tuple(widths[n]["k"] for n in sorted(widths))


def _family_for(hook, count, name, numbering):
    family = families.for_layers(hook, count)
    if family is None:
        known = ", ".join(f"{n} {f.name}" for f in families.FAMILIES.values() if f.hook == hook
                          for n in f.adapter_layer_counts)
        raise UnknownFormatError(
            f"{name}: {count} adapter layers numbered {numbering}; this layout is known for {known}. Other "
            "architectures need their own adapter release.")
    return family.name


def _layers(ip, cross, name):
    """Query widths of the layers and the family: 1, 3, 5, ... numbering = UNet attn2, 0, 1, 2, ... = DiT blocks."""
    widths = _numbered_widths(ip, _LAYER_KEY, cross, name, "ip_adapter")
    count = len(widths)
    if sorted(widths) == list(range(1, 2 * count, 2)):
        hook, numbering = "attn2", "1, 3, 5, ..."
    elif sorted(widths) == list(range(count)):
        hook, numbering = "dit", "0, 1, 2, ..."
    else:
        raise UnknownFormatError(
            f"{name}: cross-attention layers are numbered {sorted(widths)[:6]}... with {count} entries; "
            "expected to_k_ip and to_v_ip pairs at 1, 3, 5, ... (UNet releases) or 0, 1, 2, ... (DiT releases). "
            "The file is truncated or was renamed.")
    return _paired(widths, name, "ip_adapter"), _family_for(hook, count, name, numbering)


def _xlabs(nested, name):
    """Spec of an XLabs Flux IP-Adapter (ip_adapter_proj_model + double_blocks.N.processor.*)."""
    fields = projection_fields(nested["ip_adapter_proj_model"], name)
    if fields["kind"] != "linear":
        raise UnknownFormatError(f"{name}: XLabs layout with a {fields['kind']} projection; expected "
                                 "ip_adapter_proj_model.proj + .norm (a linear projection of CLIP image embeds).")
    blocks = nested["double_blocks"]
    widths = _numbered_widths(blocks, _XLABS_KEY, fields["cross_dim"], name, "double_blocks")
    if sorted(widths) != list(range(len(widths))):
        raise UnknownFormatError(f"{name}: double_blocks are numbered {sorted(widths)[:6]}...; expected 0, 1, 2, ... "
                                 "The file is truncated or was renamed.")
    missing = [f"double_blocks.{n}.processor.ip_adapter_double_stream_{kv}_proj.bias" for n in widths for kv in "kv"
               if f"{n}.processor.ip_adapter_double_stream_{kv}_proj.bias" not in blocks]
    if missing:
        raise UnknownFormatError(f"{name}: {missing[0]} is missing; the XLabs release has biased K/V projections.")
    layer_widths = _paired(widths, name, "double_blocks")
    arch = _family_for("dit", len(widths), name, "0, 1, 2, ... (double blocks)")
    return AdapterSpec(arch=arch, layer_widths=layer_widths, layout="xlabs",
                       injection="block_output", **fields)


def _joint(nested, fields, widths, arch, name):
    """Spec of InstantX's SD3.5 adapter: a time-conditioned resampler and a joint-block processor per block."""
    if fields["kind"] != "time_resampler" or arch != "SD3.5":
        raise UnknownFormatError(
            f"{name}: a {fields['kind']} projection with {len(widths)} {arch} layers; the known SD3.5 release "
            "(InstantX SD3.5-Large-IP-Adapter) pairs a timestep-conditioned resampler (image_proj.time_embedding.*) "
            "with one processor per joint block (ip_adapter.0 .. ip_adapter.37).")
    ip = nested["ip_adapter"]
    norm = ip.get("0.norm_q.weight")
    if norm is None or norm.ndim != 1 or not norm.shape[0] or any(w % norm.shape[0] for w in widths):
        found = "missing" if norm is None else f"shape {tuple(norm.shape)}"
        raise UnknownFormatError(f"{name}: ip_adapter.0.norm_q.weight is {found}; expected the per-head RMSNorm scale "
                                 f"of the SD3.5 joint processors (its size divides the width {widths[0]}).")
    return AdapterSpec(arch=arch, layer_widths=widths, layout="joint", injection="joint", head_dim=norm.shape[0],
                       **fields)


PULID_GROUPS = ("pulid_encoder", "pulid_ca")
_NUMBER = re.compile(r"[0-9]+")


def _group_shape(group, group_name, key, name, ndim):
    """Shape of group[key] when it is an ndim-D tensor with no zero-size dimension, else UnknownFormatError."""
    t = group.get(key)
    shape = tuple(t.shape) if hasattr(t, "shape") else None
    if shape is None or len(shape) != ndim or 0 in shape:
        found = "missing" if shape is None else f"shape {shape}"
        raise UnknownFormatError(f"{name}: tensor {group_name}.{key} is {found}; expected a {ndim}-D tensor with no "
                                 "zero-size dimension. The file is damaged or not a PuLID-Flux release.")
    return shape


def _numbers(group, group_name, name):
    """How many K.* entries the group has, numbered 0, 1, 2, ... (else UnknownFormatError naming the gaps)."""
    firsts = {key.split(".", 1)[0] for key in group}
    odd = sorted(f for f in firsts if not _NUMBER.fullmatch(f))
    if odd:
        raise UnknownFormatError(f"{name}: unexpected key {group_name}.{odd[0]}.*; expected {group_name}.0.*, "
                                 f"{group_name}.1.*, ... The file was renamed or is not a PuLID-Flux release.")
    numbers = sorted(int(f) for f in firsts)
    gaps = sorted(set(range(numbers[-1] + 1)) - set(numbers)) if numbers else []
    if gaps:
        missing = ", ".join(f"{group_name}.{n}" for n in gaps[:6])
        raise UnknownFormatError(f"{name}: missing {missing} ({len(numbers)} entries numbered up to {numbers[-1]}); "
                                 "the file is truncated or damaged. Download it again.")
    return len(numbers)


def _pulid_encoder_fields(enc, name):
    """IDFormer sizes (AdapterSpec keyword arguments) from the pulid_encoder.* shapes."""
    shape = (lambda key, ndim: _group_shape(enc, "pulid_encoder", key, name, ndim))
    queries, dim = shape("latents", 3)[1:]
    proj_rows, out = shape("proj_out", 2)
    depth = _numbers({k[len("layers."):]: v for k, v in enc.items() if k.startswith("layers.")},
                     "pulid_encoder.layers", name)
    if depth == 0 or depth % EVA_SCALES:
        raise UnknownFormatError(f"{name}: PuLID-Flux IDFormer with {depth} layers (pulid_encoder.layers.*); "
                                 f"expected a positive multiple of {EVA_SCALES}, the same number of layers per EVA "
                                 "hidden state.")
    inner, q_in = shape("layers.0.0.to_q.weight", 2)
    ff = shape("layers.0.1.1.weight", 2)[0]
    if proj_rows != dim or q_in != dim or inner % ENCODER_HEAD_DIM or ff % dim:
        raise UnknownFormatError(f"{name}: PuLID-Flux IDFormer of width {dim} (latents) with proj_out rows "
                                 f"{proj_rows}, attention {q_in} -> {inner} and feed-forward width {ff}; expected "
                                 f"proj_out and to_q to read width {dim}, an attention width that is a multiple of the "
                                 f"head width {ENCODER_HEAD_DIM} and a feed-forward width that is a multiple of {dim}.")
    mappings = sorted({k.split(".", 1)[0] for k in enc if k.startswith("mapping_")})
    if mappings != [f"mapping_{i}" for i in range(EVA_SCALES)]:
        raise UnknownFormatError(f"{name}: PuLID-Flux IDFormer with {', '.join(mappings) or 'no mappings'}; expected "
                                 f"pulid_encoder.mapping_0 .. mapping_{EVA_SCALES - 1}, one per EVA hidden state.")
    m1, vision = shape("mapping_0.0.weight", 2)
    m2 = shape("mapping_0.3.weight", 2)[0]
    i1, id_dim = shape("id_embedding_mapping.0.weight", 2)
    i2 = shape("id_embedding_mapping.3.weight", 2)[0]
    rows = shape("id_embedding_mapping.6.weight", 2)[0]
    if rows != ID_TOKENS * dim or id_dim <= ARCFACE_WIDTH:
        raise UnknownFormatError(f"{name}: PuLID-Flux id_embedding_mapping {id_dim} -> {rows}; expected an input of "
                                 f"{ARCFACE_WIDTH} (ArcFace) plus the EVA-CLIP feature and {ID_TOKENS} ID tokens of "
                                 f"width {dim} ({ID_TOKENS * dim} rows).")
    return dict(kind="pulid_flux", cross_dim=out, tokens=queries, id_dim=id_dim, clip_dim=vision, resampler_dim=dim,
                resampler_depth=depth, resampler_heads=inner // ENCODER_HEAD_DIM, ff_mult=ff // dim,
                hidden_widths=(i1, i2, m1, m2))


def _pulid_flux(nested, name):
    """Spec of PuLID-Flux (pulid_flux_v0.9.x): IDFormer (pulid_encoder) + one PerceiverCA per pulid_ca.K."""
    missing = [g for g in PULID_GROUPS if not isinstance(nested.get(g), dict) or not nested[g]]
    if missing:
        raise UnknownFormatError(f"{name}: no '{missing[0]}' tensors; PuLID-Flux files hold the IDFormer "
                                 "(pulid_encoder.*) and its cross-attentions (pulid_ca.0.* .. pulid_ca.19.*).")
    fields = _pulid_encoder_fields(nested["pulid_encoder"], name)
    ca = nested["pulid_ca"]
    count, expected = _numbers(ca, "pulid_ca", name), ca_count(flux.DOUBLE_BLOCKS, flux.SINGLE_BLOCKS)
    if count != expected:
        raise UnknownFormatError(
            f"{name}: {count} PuLID cross-attentions (pulid_ca.*); expected {expected}: Flux.1 has "
            f"{flux.DOUBLE_BLOCKS} double + {flux.SINGLE_BLOCKS} single blocks, and PuLID-Flux puts one "
            "cross-attention after every 2nd double and every 4th single block. The file is truncated or for "
            "another model.")
    inner, width = _group_shape(ca, "pulid_ca", "0.to_q.weight", name, 2)
    kv_rows, kv_in = _group_shape(ca, "pulid_ca", "0.to_kv.weight", name, 2)
    if kv_in != fields["cross_dim"]:
        raise UnknownFormatError(f"{name}: pulid_ca.0.to_kv.weight reads width {kv_in} but the IDFormer makes tokens "
                                 f"of width {fields['cross_dim']} (pulid_encoder.proj_out). The two halves of the "
                                 "file do not belong together.")
    if inner % CA_HEAD_DIM or kv_rows != 2 * inner:
        raise UnknownFormatError(f"{name}: PuLID cross-attention widths to_q {inner}, to_kv {kv_rows}; expected a "
                                 f"multiple of the head width {CA_HEAD_DIM} and to_kv twice to_q.")
    fields["hidden_widths"] += (inner,)
    return AdapterSpec(arch=flux.FLUX.name, layer_widths=(width,) * count, layout="pulid_flux", injection="pulid_ca",
                       head_dim=CA_HEAD_DIM, **fields)


def _lora_rank(ip):
    ranks = {t.shape[0] for k, t in ip.items() if k.endswith("_lora.down.weight") and t.ndim == 2}
    return max(ranks) if ranks else 0


def _kv_input_width(ip):
    """The width the first image K projection reads, or None (the layer checks report a missing one)."""
    for key, t in ip.items():
        if _LAYER_KEY.match(key) and t.ndim == 2:
            return t.shape[1]
    return None


def _with_context_projection(fields, ip):
    """Kolors FaceID-Plus: FaceID Plus tokens wider than what the image K/V read (ChatGLM 4096 vs the UNet's 2048).

    The model's own encoder_hid_proj maps them first, so cross_dim becomes the K/V input and token_dim keeps the
    projection's width. Every other layout must have K/V reading the token width (checked by _layers).
    """
    kv_in = _kv_input_width(ip)
    if fields["kind"] != "faceid_plus" or kv_in is None or kv_in >= fields["cross_dim"]:
        return fields
    return dict(fields, cross_dim=kv_in, token_dim=fields["cross_dim"])


def detect(nested, name="adapter"):
    """Read an AdapterSpec from a nested state dict of a known layout (loading.LAYOUTS); raise UnknownFormatError."""
    if any(isinstance(nested.get(g), dict) for g in PULID_GROUPS):
        return _pulid_flux(nested, name)
    if isinstance(nested.get("ip_adapter_proj_model"), dict) and isinstance(nested.get("double_blocks"), dict):
        return _xlabs(nested, name)
    missing = [group for group in ("image_proj", "ip_adapter") if not isinstance(nested.get(group), dict)]
    if missing:
        raise UnknownFormatError(f"{name}: no '{missing[0]}' tensors; expected the IP-Adapter layout with "
                                 "'image_proj.*' and 'ip_adapter.*' weights.")
    fields = _with_context_projection(projection_fields(nested["image_proj"], name), nested["ip_adapter"])
    widths, arch = _layers(nested["ip_adapter"], fields["cross_dim"], name)
    extra = {}
    if fields["kind"] == "time_resampler" or arch == "SD3.5":
        return _joint(nested, fields, widths, arch, name)
    if families.get(arch).hook == "dit":
        if fields["kind"] != "faceid" or "perceiver_resampler.proj_in.weight" in nested["image_proj"]:
            raise UnknownFormatError(f"{name}: a {arch} adapter with a {fields['kind']} projection; the known {arch} "
                                     "release of this layout (InstantX) has an MLP projection (proj.0, proj.2, norm).")
        fields = dict(kind="pooled_mlp", cross_dim=fields["cross_dim"], tokens=fields["tokens"],
                      clip_dim=fields["id_dim"])
        extra = dict(kv_rms_eps=INSTANTX_KV_RMS_EPS)
    return AdapterSpec(arch=arch, layer_widths=widths, lora_rank=_lora_rank(nested["ip_adapter"]), **fields, **extra)
