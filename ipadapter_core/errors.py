"""Typed errors: each message says what was found, what was expected and how to fix it."""


class IPAdapterError(Exception):
    """Base class for every error this pack raises on purpose."""


class UnsafeFileError(IPAdapterError):
    """A weights file that cannot be loaded without running code from it."""


class CorruptFileError(IPAdapterError):
    """A truncated or unreadable weights file."""


class UnknownFormatError(IPAdapterError):
    """A file whose tensors are not any known IP-Adapter layout."""


class IncompatibleModelError(IPAdapterError):
    """An adapter used with a model or encoder of another family."""


class InvalidInputError(IPAdapterError):
    """A node input (image, mask, weights string, ...) that cannot be used as given."""


def listing(names, prefix="", limit=6):
    """Up to `limit` names (sorted, prefixed) for a message, and how many more."""
    names = sorted(names)
    shown = ", ".join(prefix + n for n in names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


def counted(count, noun):
    """'1 mask', '2 masks': a count with its noun in the right number."""
    return f"{count} {noun}{'s' * (count != 1)}"
