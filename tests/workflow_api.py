"""UI-format workflows (what the ComfyUI frontend saves) to API-format prompts, checked against /object_info."""

MUTED, BYPASSED = 2, 4
NOTES = {"Note", "MarkdownNote"}
VIRTUAL = NOTES | {"Reroute", "PrimitiveNode"}
# Input types the frontend draws as widgets (scripts/widgets.ts plus core extensions that take a value slot);
# anything else is a socket. Widgets that extensions append to a node (upload buttons) come last and are ignored.
WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "MARKDOWN", "COLOR", "TEXTAREA",
                "IMAGEUPLOAD", "IMAGECOMPARE", "CHART", "GALLERIA", "WEBCAM", "AUDIO_RECORD"}
CONTROL = "control_after_generate"
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize", "increment-wrap"}


class WorkflowError(ValueError):
    """A UI workflow that cannot be converted."""


def ordered_inputs(info):
    """(name, type, options) of a node's required then optional inputs, in the server's input_order."""
    specs = []
    for section in ("required", "optional"):
        given = info.get("input", {}).get(section) or {}
        for name in info.get("input_order", {}).get(section) or list(given):
            if name in given:
                spec = given[name]
                specs.append((name, spec[0], spec[1] if len(spec) > 1 else {}))
    return specs


def widget_slots(info):
    """One (name, type, options) per widgets_values entry; control values get name None and type CONTROL."""
    slots = []
    for name, kind, opts in ordered_inputs(info):
        wtype = opts.get("widgetType") or ("COMBO" if isinstance(kind, list) else kind)
        if wtype not in WIDGET_TYPES or opts.get("forceInput"):
            continue
        slots.append((name, kind, opts))
        if wtype == "INT" and opts.get(CONTROL, name in ("seed", "noise_seed")):
            slots.append((None, CONTROL, {}))
        elif wtype == "COMBO" and opts.get(CONTROL):
            slots += [(None, CONTROL, {}), (None, "control_filter_list", {})]
    return slots


def widget_items(node, info):
    """(name, type, options, value) for each stored widget value of a UI node (list or dict widgets_values)."""
    values = node.get("widgets_values") or []
    slots = widget_slots(info)
    if isinstance(values, dict):
        return [(n, k, o, values[n]) for n, k, o in slots if n is not None and n in values]
    return [(n, k, o, v) for (n, k, o), v in zip(slots, values)]


def _links(workflow):
    """link id -> (from node id, from slot), for list-form ([id, from, slot, to, slot, type]) or dict-form links."""
    table = {}
    for link in workflow.get("links") or []:
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            table[link[0]] = (link[1], link[2])
    return table


def _fits(a, b):
    """Whether slot types a and b may connect (litegraph rules: '*' or '' match anything, ',' lists overlap)."""
    a, b = str(a or "*").upper(), str(b or "*").upper()
    return "*" in (a, b) or bool(set(a.split(",")) & set(b.split(",")))


def _bypass_input(node, slot, want):
    """Index of the input a bypassed node passes to its output slot: same slot if types fit, else same type."""
    inputs = node.get("inputs") or []
    if not inputs:
        return None
    if want in ("*", ""):
        return slot if slot < len(inputs) else 0
    outputs = node.get("outputs") or []
    out_type = outputs[slot]["type"] if slot < len(outputs) else want
    if slot < len(inputs) and _fits(inputs[slot]["type"], out_type) and _fits(inputs[slot]["type"], want):
        return slot
    for i, inp in enumerate(inputs):
        if inp["type"] == want:
            return i
    for i, inp in enumerate(inputs):
        if _fits(inp["type"], out_type) and _fits(inp["type"], want):
            return i
    return None


class _Resolver:
    """Follows links through reroutes, primitives and bypassed nodes to a real source."""

    def __init__(self, workflow):
        self.nodes = {node["id"]: node for node in workflow.get("nodes") or []}
        self.links = _links(workflow)

    def follow(self, node, index, want, seen=()):
        """Source of node's input `index`: ("link", [id, slot]), ("value", v) or None when nothing usable."""
        inputs = node.get("inputs") or []
        link_id = inputs[index].get("link") if index is not None and index < len(inputs) else None
        if link_id is None or link_id not in self.links:
            return None
        src_id, slot = self.links[link_id]
        if (src_id, slot) in seen:
            raise WorkflowError(f"node {src_id}: link cycle through reroutes or bypassed nodes")
        src = self.nodes.get(src_id)
        if src is None:
            return None
        seen = (*seen, (src_id, slot))
        mode, kind = src.get("mode", 0), src["type"]
        if mode == BYPASSED:
            return self.follow(src, _bypass_input(src, slot, want), want, seen)
        if kind == "Reroute":
            return self.follow(src, 0, want, seen)
        if kind == "PrimitiveNode":
            values = src.get("widgets_values") or []
            return ("value", values[0]) if values else None
        if kind in NOTES or mode == MUTED:
            return None
        return ("link", [str(src_id), slot])


def _wrap(value):
    """Lists are links in the API format, so list widget values go in {"__value__": ...} as the frontend does."""
    return {"__value__": value} if isinstance(value, list) else value


def _active(node):
    """Whether a UI node becomes an API node (not virtual, muted or bypassed)."""
    return node["type"] not in VIRTUAL and node.get("mode", 0) not in (MUTED, BYPASSED)


def _missing(node, workflow):
    """The error for a node whose type the server does not know."""
    subgraphs = {sg.get("id") for sg in (workflow.get("definitions") or {}).get("subgraphs") or []}
    hint = " (a subgraph; subgraphs are not supported)" if node["type"] in subgraphs else ""
    return WorkflowError(f"node {node['id']} has type {node['type']!r}, which is not in object_info{hint}")


def to_api(workflow, object_info):
    """The API-format prompt ({"<id>": {"class_type", "inputs", "_meta"}}) for a UI-format workflow."""
    resolver = _Resolver(workflow)
    prompt = {}
    for node in workflow.get("nodes") or []:
        if not _active(node):
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise _missing(node, workflow)
        inputs = {name: _wrap(value) for name, _, _, value in widget_items(node, info) if name is not None}
        for index, inp in enumerate(node.get("inputs") or []):
            source = resolver.follow(node, index, inp.get("type", "*"))
            if source is not None:
                kind, value = source
                inputs[inp["name"]] = value if kind == "link" else _wrap(value)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


def set_widget(workflow, node_type_or_id, input_name, value, object_info):
    """Set widget `input_name` on every node with that id or type, in place; returns how many were set."""
    count = 0
    for node in workflow.get("nodes") or []:
        if str(node["id"]) != str(node_type_or_id) and node["type"] != node_type_or_id:
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise _missing(node, workflow)
        values = node.setdefault("widgets_values", [])
        names = [name for name, _, _ in widget_slots(info)]
        if input_name not in names:
            raise WorkflowError(f"node {node['id']} ({node['type']}) has no widget {input_name!r}")
        if isinstance(values, dict):
            values[input_name] = value
        else:
            index = names.index(input_name)
            values.extend([None] * (index + 1 - len(values)))
            values[index] = value
        count += 1
    if not count:
        raise WorkflowError(f"no node with id or type {node_type_or_id!r}")
    return count


def _problem(kind, opts, value):
    """Why a widget value is not acceptable for its input spec, or None."""
    if kind == CONTROL:
        return None if value in CONTROL_VALUES or isinstance(value, bool) else "is not a control_after_generate mode"
    if kind == "control_filter_list":
        return None if isinstance(value, str) else "is not a string"
    if isinstance(kind, list) or kind == "COMBO":
        options = kind if isinstance(kind, list) else opts.get("options")
        if options is None:  # remote or upload-only combos list their values elsewhere
            return None
        multi = opts.get("multiselect") or opts.get("multi_select")
        chosen = value if isinstance(value, list) and multi else [value]
        bad = [v for v in chosen if v not in options]
        return f"is not one of {options[:8]}{'...' if len(options) > 8 else ''}" if bad else None
    if kind in ("INT", "FLOAT"):
        number = (int,) if kind == "INT" else (int, float)
        if isinstance(value, bool) or not isinstance(value, number):
            return f"is not {'an INT' if kind == 'INT' else 'a FLOAT'}"
        if "min" in opts and value < opts["min"]:
            return f"is below min {opts['min']}"
        if "max" in opts and value > opts["max"]:
            return f"is above max {opts['max']}"
        return None
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return "is not a BOOLEAN"
    if kind == "STRING" and not isinstance(value, str):
        return "is not a STRING"
    return None


def validate_widgets(workflow, object_info):
    """Problems with the nodes that would be sent: unknown types, values off a COMBO, out of range or of wrong type."""
    problems = []
    for node in workflow.get("nodes") or []:
        if not _active(node):
            continue
        where = f"node {node['id']} ({node['type']})"
        info = object_info.get(node["type"])
        if info is None:
            problems.append(f"{where}: unknown node type")
            continue
        linked = {inp["widget"]["name"] for inp in node.get("inputs") or []
                  if inp.get("widget") and inp.get("link") is not None}
        last = None
        for name, kind, opts, value in widget_items(node, info):
            last = name or last
            if name in linked or (name is None and last in linked):
                continue
            why = _problem(kind, opts, value)
            if why:
                label = name or f"{last} {kind}"
                problems.append(f"{where} {label}: {value!r} {why}")
    return problems
