"""Combining several references' encoder outputs, and projecting them to image tokens."""
import torch

from .errors import IncompatibleModelError, InvalidInputError

COMBINE_EMBEDS = ("concat", "add", "subtract", "average", "norm average", "separate", "max", "min")


def combine(embeds, method):
    """Combine R encoder outputs (R, ...) into the references the attention sees.

    concat keeps every reference in one softmax (joined later, after projection); separate keeps one
    attention per reference (own weight and mask); the others reduce to a single reference.
    """
    if method not in COMBINE_EMBEDS:
        raise InvalidInputError(f"combine_embeds {method!r} is not one of {COMBINE_EMBEDS}.")
    if method in ("concat", "separate") or embeds.shape[0] == 1:
        return embeds
    if method == "add":
        return embeds.sum(dim=0, keepdim=True)
    if method == "subtract":
        return embeds[:1] - embeds[1:].mean(dim=0, keepdim=True)
    if method == "average":
        return embeds.mean(dim=0, keepdim=True)
    if method == "max":  # element-wise over the references, as IPAdapter_plus's Combine Embeds
        return embeds.amax(dim=0, keepdim=True)
    if method == "min":
        return embeds.amin(dim=0, keepdim=True)
    # "norm average" normalises each element across the references, as IPAdapter_plus does
    return (embeds / embeds.norm(dim=0, keepdim=True)).mean(dim=0, keepdim=True)


ENCODER_HINT = ("Load the matching CLIP vision file (ViT-H for SD1.5 and *_vit-h adapters, ViT-bigG for "
                "ip-adapter_sdxl and ip-adapter_sd15_vit-G, CLIP ViT-L/14 for XLabs Flux adapters, SigLIP "
                "so400m-patch14-384 for the InstantX Flux and SD3.5 adapters).")


def check_encoder(spec, embeds, adapter_name):
    """Raise IncompatibleModelError when the encoder output width is not what the adapter was trained on."""
    width = embeds.shape[-1]
    expected_ndim = 2 if spec.clip_output in ("image_embeds", "pooled") else 3
    if spec.clip_dim is not None and embeds.ndim != expected_ndim:
        raise IncompatibleModelError(
            f"{adapter_name} takes {spec.clip_output} ({expected_ndim}-D) of {spec.encoder_name()}, but the embeds "
            f"are {embeds.ndim}-D {tuple(embeds.shape)}: they come from another CLIP vision model or were encoded "
            f"for another kind of adapter. {ENCODER_HINT}")
    if spec.clip_dim is not None and width != spec.clip_dim:
        raise IncompatibleModelError(
            f"{adapter_name} needs {spec.encoder_name()} ({spec.clip_output} of width {spec.clip_dim}), but the "
            f"CLIP vision model gave width {width}. {ENCODER_HINT}")


def join(tokens, method):
    """concat makes one reference of all references' tokens (one softmax over them all)."""
    if method == "concat" and tokens.shape[0] > 1:
        return tokens.reshape(1, -1, tokens.shape[-1])
    return tokens


def project(weights, embeds, method):
    """Image tokens (R', T, cross) from encoder outputs."""
    with torch.no_grad():
        return join(weights.image_proj(embeds), method)


def project_faceid(weights, id_embeds, clip_hidden, method, shortcut=False, scale=1.0):
    """Image tokens from InsightFace embeddings (R, 512), refined by CLIP hidden states for FaceID Plus."""
    with torch.no_grad():
        if weights.spec.kind == "faceid_plus":
            return join(weights.image_proj(id_embeds, clip_hidden, shortcut=shortcut, scale=scale), method)
        return join(weights.image_proj(id_embeds), method)
