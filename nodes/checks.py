"""Checks every node of the pack runs before its execute: FLOAT inputs must be finite numbers.

ComfyUI's own validation compares widget values with min / max, which NaN passes (every comparison with NaN is
False), and it never looks at values that arrive through links. So each node's execute is wrapped here once, and
the wrapper sees the values the node really receives, widget or link alike.
"""
import functools
import inspect
import math
import numbers

from comfy_api.latest import io

from ..ipadapter_core.errors import InvalidInputError

GUARD_MARK = "_ipakit_float_guard"


def float_inputs(node_class):
    """{input id: io.Float.Input} of a node's schema."""
    schema = node_class.define_schema()
    return {item.id: item for item in schema.inputs if isinstance(item, io.Float.Input)}


def allowed_range(spec):
    """'min to max' of a FLOAT input, for messages."""
    low = "-inf" if spec.min is None else f"{spec.min:g}"
    high = "inf" if spec.max is None else f"{spec.max:g}"
    return f"{low} to {high}"


def _numbers(value):
    """The numbers in an input value: itself, or the items of a list (list inputs)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_floats(node_class, specs, values):
    """InvalidInputError for a NaN / infinite value of a FLOAT input (None: an optional input left out)."""
    for name, spec in specs.items():
        for number in _numbers(values.get(name)):
            if isinstance(number, numbers.Real) and not math.isfinite(float(number)):
                schema = node_class.define_schema()
                raise InvalidInputError(
                    f"{schema.display_name or schema.node_id} ({schema.node_id}): input '{name}' received "
                    f"{number!r}; expected a finite number from {allowed_range(spec)}. Set the widget to a number, "
                    "or fix the node linked to it (a math or primitive node that produced NaN or infinity).")


def guarded(node_class):
    """The node class with its execute checking the FLOAT inputs first (idempotent; nothing runs at import)."""
    func = node_class.execute.__func__
    func = getattr(func, "__wrapped__", func) if getattr(func, GUARD_MARK, False) else func
    signature = inspect.signature(func)
    specs = []  # the FLOAT inputs, read at the first call: schemas list model folders, registered after import

    def check(cls, args, kwargs):
        arguments = dict(signature.bind_partial(cls, *args, **kwargs).arguments)
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(arguments.pop(name, {}))
        if not specs:
            specs.append(float_inputs(cls))
        check_floats(cls, specs[0], arguments)

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def execute(cls, *args, **kwargs):
            check(cls, args, kwargs)
            return await func(cls, *args, **kwargs)
    else:
        @functools.wraps(func)
        def execute(cls, *args, **kwargs):
            check(cls, args, kwargs)
            return func(cls, *args, **kwargs)
    setattr(execute, GUARD_MARK, True)
    node_class.execute = classmethod(execute)
    return node_class


def guard_all(node_classes):
    """Every node class of the list guarded (the list keeps its order)."""
    return [guarded(node_class) for node_class in node_classes]
