"""Finding a model file by what its tensors are: a matching name is the fast first hint, the file's header decides.

When no file of the folder has a release's name, every file is identified by its header (cached per file), so files
kept as downloaded (model.safetensors) or renamed are found; errors list what each file is and what is missing.
"""
import logging
import re

import folder_paths

from ..ipadapter_core import encoders
from ..ipadapter_core.errors import IPAdapterError, InvalidInputError
from . import paths

LISTED = 12  # files named in an error, the rest counted


def matches(name, patterns):
    """Whether a listed file's base name matches one of the name patterns."""
    base = name.rsplit("/", 1)[-1]
    return any(re.search(pattern, base, re.IGNORECASE) for pattern in patterns)


def shapes(folder, name):
    """{key: shape} of a file listed in a model folder (headers only)."""
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise InvalidInputError(f"'{name}' is listed in models/{folder} but could not be found on disk.")
    return encoders.read_shapes(path)


def what_is(folder, name):
    """What a file of a model folder is, in words (or why it cannot be read)."""
    try:
        return encoders.describe_shapes(shapes(folder, name), name)
    except (IPAdapterError, OSError) as e:
        return f"unreadable: {e}"


def adapter_fits(arch, kinds, encoder_name, tokens=None):
    """accepts(folder, name) for adapter files of the model family, projection kinds, token count and encoder."""
    def accepts(folder, name):
        spec = encoders.adapter_spec(shapes(folder, name), name)
        if spec is None or spec.arch != arch or spec.kind not in kinds or spec.token_dim is not None:
            return False
        if tokens is not None and spec.tokens != tokens:
            return False
        known = encoders.known_encoders_for(spec)  # empty for widths no release has (fine-tunes, test models)
        return not known or encoder_name in known
    return accepts


def encoder_feeds(spec, encoder_name, image_size):
    """accepts(folder, name) for CLIP-vision files that give the adapter what it reads at the preset's image size."""
    def accepts(folder, name):
        info = encoders.identify_encoder(shapes(folder, name))
        if info is None or info.layout != "clip" or info.name not in (None, encoder_name):
            return False
        return encoders.feeds(info, spec, image_size)
    return accepts


def _accepted(accepts, folder, name):
    try:
        return accepts(folder, name)
    except (IPAdapterError, OSError):
        return False  # an unreadable file fits nothing; the error lists it with its reason


def find(folder, patterns, accepts, missing, claimed=(), unique=False):
    """The file of a model folder that accepts() takes: first among those whose name matches a pattern (in pattern
    order), else among the files no other release's name claims. unique: several unnamed fits are an error.

    missing: words for the release (its usual name, download source), used when nothing fits."""
    names = paths.weight_files(folder)
    named = [n for pattern in patterns for n in names if matches(n, [pattern])]
    named = list(dict.fromkeys(named))
    for name in named:
        if _accepted(accepts, folder, name):
            return name
    unnamed = [n for n in names if n not in named and not matches(n, claimed)]
    fits = [n for n in unnamed if _accepted(accepts, folder, n)]
    if len(fits) > 1 and unique:
        raise InvalidInputError(
            f"several files in models/{folder} could be {missing.split(' from ')[0]}: {', '.join(fits)} (their "
            "tensors are alike). Rename the one you mean to its release name, or load it with the plain loader.")
    if fits:
        logging.info("IPAdapter Kit: using %s from models/%s (recognised by its tensors) for %s", fits[0], folder,
                      missing)
        return fits[0]
    raise missing_error(folder, names, missing)


def found_listing(folder, names):
    """'a -> what it is; b -> ...' for up to LISTED files, or 'no loadable files'."""
    listed = [f"{name} -> {what_is(folder, name)}" for name in names[:LISTED]]
    more = f"; and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return "; ".join(listed) + more if listed else "no loadable files"


def missing_error(folder, names, missing):
    """The error for a release no file of the folder is: what is missing, where it goes, what was found."""
    searched = ", ".join(folder_paths.get_folder_paths(folder)) if folder in folder_paths.folder_names_and_paths \
        else f"models/{folder}"
    return InvalidInputError(
        f"no file for this preset in models/{folder}: download {missing} and put it in models/{folder}/ (any file "
        f"name: files are recognised by their tensors; searched: {searched}). Found there: "
        f"{found_listing(folder, names)}.")

