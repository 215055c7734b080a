"""The IPAdapter_plus node replacements ComfyUI's Node Replacement API can express exactly, derived from RULES.

Newer ComfyUI (not 0.3.75) swaps a node type that is not installed for a registered replacement: on the server for
every API prompt posted to /prompt (app/node_replace_manager.py), and in the frontend when the user clicks "Swap
nodes" in the missing-nodes panel. A replacement can only carry an input over under another name, set a widget to a
fixed value and move output slots, so only the rules that need nothing else qualify; the other nodes stay missing
and `python -m migrate` converts them (with its report).

What the host (ComfyUI v0.33.0) does with one, which decides what "exact" means here:
- server, /prompt, before validation: a node whose class_type is not installed and has a replacement becomes the
  first registered one; its inputs are rebuilt from input_mapping alone (an input not listed is dropped; old_id reads
  the old input and raises KeyError, HTTP 500, when it is absent, as an unlinked optional socket is; the node's
  "_meta" is copied and must be there). The node keeps its number, so links to and from it stay; validation then
  checks our output type against the consumer's input, so IPADAPTER_KIT between two replaced nodes (or into our
  nodes) passes, and an IPAdapter_plus consumer without a replacement is reported as a missing node type.
- frontend: "Swap nodes" creates our node under the old id, moves linked inputs and widget values (widgets_values by
  position through old_widget_ids) by name, applies set_value, and moves output links only for output_mapping's
  slots; links are re-pointed without a type check.
Standard library only, like the rest of migrate/.
"""
from .mapping import ANY, NOTED, PACK_OF, PLUS, RULES, SOCKET_TYPES, SOURCES, TARGETS


def plus_replacements():
    """NodeReplace keyword arguments for every IPAdapter_plus rule the API expresses exactly, in RULES order."""
    return [replacement(kind) for kind in RULES if PACK_OF.get(kind) == PLUS and inexact_reason(kind) is None]


def replacement(kind):
    """NodeReplace keyword arguments for the rule of source node type `kind` (check inexact_reason first)."""
    rule, source = RULES[kind], SOURCES[kind]
    mapping = [{"new_id": rule.rename.get(name, name), "old_id": name} for name in _carried(kind)]
    mapping += [{"new_id": name, "set_value": value} for name, value in rule.fixed.items()]
    mapping += [{"new_id": spec["name"], "set_value": spec["default"]}
                for spec in _unfilled_required(kind) if spec.get("widget")]
    return {"new_node_id": rule.target, "old_node_id": kind,
            # the frontend reads widgets_values by position through this list
            "old_widget_ids": list(source["widgets"]) or None,
            "input_mapping": mapping or None,
            # The slots are the same, so no output_mapping (as core's own same-slot replacements): the replaced node
            # keeps its id, so links from it hold. An identity mapping would make the host's /prompt replacement
            # look up each consumer's input by its old name, a KeyError (HTTP 500) when the consumer is a replaced
            # node that renamed or dropped that input (IPAdapterUnifiedLoader's pipeline input).
            "output_mapping": None}


def inexact_reason(kind):
    """Why the rule of source node type `kind` cannot be a node replacement, or None when it can."""
    rule, source = RULES[kind], SOURCES[kind]
    target = TARGETS[rule.target]
    if not rule.target.startswith("IPAKit"):
        return f"its counterpart {rule.target} is a core node, not one of this pack's"
    steps = [what for what, present in (("translates values", rule.values), ("has variants", rule.variants),
                                        ("needs converter hooks", rule.hooks), ("adds nodes", rule.adds),
                                        ("is reported as lossy", rule.lossy), ("comes with notes", rule.notes),
                                        ("moves or drops outputs", rule.outputs or rule.output_notes)) if present]
    if steps:
        return "the rule " + ", ".join(steps)
    if source["older"] or source["retired"]:
        return "the node was saved with other layouts too (earlier releases or forks)"
    for name, (harmless, _) in rule.drop.items():
        if ANY not in harmless or NOTED in harmless:
            return f"it drops {name}, whose value matters"
    problem = _input_problem(kind, target) or _output_problem(source, target)
    if problem:
        return problem
    for spec in _unfilled_required(kind):
        if not spec.get("widget") or spec["default"] is None:
            return f"{rule.target}'s required {spec['name']} has no source"
    return None


def _carried(kind):
    """Their inputs (sockets, then widgets) that go over to our node."""
    source, drop = SOURCES[kind], RULES[kind].drop
    return [name for name in (*source["sockets"], *source["widgets"]) if name not in drop]


def _input_problem(kind, target):
    rule, source = RULES[kind], SOURCES[kind]
    ours = {spec["name"]: spec for spec in target["inputs"]}
    for name in _carried(kind):
        spec = ours.get(rule.rename.get(name, name))
        if spec is None:
            return f"{name} has no counterpart"
        if name in source["sockets"]:
            if spec["optional"]:
                # an unlinked optional socket is absent from the API prompt, and the host's /prompt replacement
                # then fails on the missing old_id (KeyError, HTTP 500)
                return f"{name} goes to an optional input ({spec['name']}): unlinked, it is absent from API prompts"
            if SOCKET_TYPES.get(source["sockets"][name], source["sockets"][name]) != spec["type"]:
                return f"{name}'s socket type differs"
    for name in rule.fixed:
        if name not in ours or not ours[name].get("widget"):
            return f"the fixed {name} is not a widget of {rule.target}"
    return None


def _output_problem(source, target):
    if len(source["outputs"]) > len(target["outputs"]):
        return "it has more outputs"
    for slot, ((_, theirs), (_, ours)) in enumerate(zip(source["outputs"], target["outputs"])):
        if SOCKET_TYPES.get(theirs, theirs) != ours:
            return f"output {slot}'s type differs"
    return None


def _unfilled_required(kind):
    """Our required inputs that neither a carried input nor a fixed value fills."""
    rule = RULES[kind]
    filled = {rule.rename.get(name, name) for name in _carried(kind)} | set(rule.fixed)
    return [spec for spec in TARGETS[rule.target]["inputs"] if not spec["optional"] and spec["name"] not in filled]
