"""Draws the pack's pictures with Pillow: the registry icon, a thumbnail per example workflow, the README's graph.

Run after the workflows change: `.host/venv/bin/python scripts/render_images.py`. The graphs are laid out
left to right by link depth (not by the saved node positions), so every picture reads as a data flow.
"""
import hashlib
import json
import pathlib
import re
import sys

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import templates  # noqa: E402

ROOT = templates.ROOT
IMAGES = ROOT / "docs" / "images"
PREFIX = "IPAdapter Kit: "
BOX = (230, 92, 70, 26)  # node width and height, gaps between columns and rows
# left out of thumbnails so the part that differs between the examples is large enough to read
THUMBNAIL_HIDDEN = {"CLIPTextEncode", "EmptyLatentImage", "EmptySD3LatentImage", "KSampler", "VAEDecode",
                    "SaveImage", "PreviewImage", "FluxGuidance", "SolidMask", "MaskComposite", "MaskToImage",
                    "ImageToMask", "ImageBatch"}
THUMBNAIL_BOX = (200, 92, 40, 22)
SLOT_ROW = 22  # height of a socket's row when sockets are labelled

BACKGROUND = (32, 33, 38)
GRID = (40, 41, 47)
NODE = (53, 53, 58)
NODE_TITLE = (70, 70, 76)
PACK_TITLE = (44, 96, 86)
TEXT = (230, 230, 232)
MUTED = (160, 160, 168)
ACCENT = (94, 214, 180)
# link colours as ComfyUI draws them, by socket type
LINK_COLOURS = {"MODEL": (180, 160, 255), "CLIP": (255, 208, 0), "VAE": (255, 105, 105), "IMAGE": (100, 181, 246),
                "CONDITIONING": (255, 167, 97), "LATENT": (255, 156, 249), "MASK": (129, 200, 132),
                "CLIP_VISION": (168, 218, 220), "CONTROL_NET": (0, 214, 163)}
PACK_LINK = (94, 214, 180)
CORE_NAMES = {"CheckpointLoaderSimple": "Load Checkpoint", "CLIPTextEncode": "CLIP Text Encode (Prompt)",
              "VAEDecode": "VAE Decode", "SaveImage": "Save Image", "PreviewImage": "Preview Image",
              "LoadImage": "Load Image", "EmptyLatentImage": "Empty Latent Image",
              "EmptySD3LatentImage": "EmptySD3LatentImage", "CLIPVisionLoader": "Load CLIP Vision",
              "ControlNetLoader": "Load ControlNet Model", "ControlNetApplyAdvanced": "Apply ControlNet",
              "LoraLoader": "Load LoRA", "LoraLoaderModelOnly": "LoraLoaderModelOnly", "ImageBatch": "Batch Images",
              "SolidMask": "SolidMask", "MaskComposite": "MaskComposite", "MaskToImage": "Convert Mask to Image",
              "ImageToMask": "Convert Image to Mask", "ImageScale": "Upscale Image", "FluxGuidance": "FluxGuidance"}


def font(size, bold=False):
    """DejaVu Sans when the system has it, else Pillow's bundled font."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        return ImageFont.load_default(size=size)


def pack_display_names():
    """node id -> display name, read from the pack's node schemas in nodes/*.py."""
    names = {}
    for path in (ROOT / "nodes").glob("*.py"):
        text = path.read_text()
        for node_id, display in re.findall(r'node_id="(\w+)",\s*display_name="([^"]+)"', text):
            names[node_id] = display
    return names


def display_name(node_type, pack_names):
    """The name the UI shows on a node (the pack's without its common prefix)."""
    if node_type in pack_names:
        return pack_names[node_type].removeprefix(PREFIX)
    return CORE_NAMES.get(node_type, node_type)


def columns_by_depth(workflow):
    """node id -> column: the longest chain of links leading into the node."""
    sources = {}
    for _link_id, src, _slot, dst, _dst_slot, _type in workflow["links"]:
        sources.setdefault(dst, []).append(src)
    depth = {}

    def visit(node_id, seen=()):
        if node_id not in depth:
            parents = [p for p in sources.get(node_id, []) if p not in seen]
            depth[node_id] = 1 + max((visit(p, seen + (node_id,)) for p in parents), default=-1)
        return depth[node_id]

    for node in workflow["nodes"]:
        visit(node["id"])
    return depth


def widget_hint(node):
    """The first text widget (a file name or a preset), as a reminder of what the node holds."""
    for value in node.get("widgets_values") or []:
        if isinstance(value, str) and value and "\n" not in value and len(value) < 60:
            return value
    return None


def layout(workflow, box_w, box_h, gap_x, gap_y):
    """node id -> (x, y) of its box, columns by depth, rows in saved top-to-bottom order."""
    depth = columns_by_depth(workflow)
    columns = {}
    for node in sorted(workflow["nodes"], key=lambda n: (n["pos"][1], n["pos"][0])):
        columns.setdefault(depth[node["id"]], []).append(node["id"])
    tallest = max(len(ids) for ids in columns.values())
    places = {}
    for col, ids in columns.items():
        offset = (tallest - len(ids)) * (box_h + gap_y) / 2
        for row, node_id in enumerate(ids):
            places[node_id] = (col * (box_w + gap_x), offset + row * (box_h + gap_y))
    width = (max(columns) + 1) * (box_w + gap_x) - gap_x
    height = tallest * (box_h + gap_y) - gap_y
    return places, width, height


def bezier(p0, p3, steps=24):
    """Points of a ComfyUI-style spline from an output socket to an input socket."""
    (x0, y0), (x3, y3) = p0, p3
    bend = max(30.0, abs(x3 - x0) * 0.5)
    p1, p2 = (x0 + bend, y0), (x3 - bend, y3)
    points = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
        points.append((a * x0 + b * p1[0] + c * p2[0] + d * x3, a * y0 + b * p1[1] + c * p2[1] + d * y3))
    return points


def shorten(draw, word, face, width):
    """word, cut with an ellipsis to fit width."""
    while len(word) > 1 and draw.textlength(word, font=face) > width:
        word = word[:-2] + "…"
    return word


def wrap(draw, text, face, width):
    """Words of text in lines no wider than width (a longer word is shortened)."""
    lines, line = [], ""
    for word in (shorten(draw, w, face, width) for w in text.split()):
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate, font=face) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + ([line] if line else [])


def without(workflow, hidden_types):
    """The workflow without the nodes of hidden_types; a link through them joins the nodes on either side."""
    hidden = {n["id"] for n in workflow["nodes"] if n["type"] in hidden_types}
    outgoing = {}
    for link in workflow["links"]:
        outgoing.setdefault(link[1], []).append(link)
    joined = {}

    def follow(link, first):
        if link[3] not in hidden:
            joined[(first[1], first[2], link[3], link[4])] = first[5]
            return
        for onward in outgoing.get(link[3], []):
            follow(onward, first)

    for link in workflow["links"]:
        if link[1] not in hidden:
            follow(link, link)
    links = [[i, src, slot, dst, dst_slot, kind] for i, ((src, slot, dst, dst_slot), kind) in enumerate(joined.items())]
    return {**workflow, "nodes": [n for n in workflow["nodes"] if n["id"] not in hidden], "links": links}


def slot_rows(workflow):
    """The most inputs or outputs any node of the workflow has."""
    return max(max(len(n.get("inputs") or []), len(n.get("outputs") or [])) for n in workflow["nodes"])


def draw_graph(workflow, size, scale=1.0, box=BOX, labels=False):
    """A picture of the workflow's nodes and links, fitted into size; labels names every socket."""
    box_w, box_h, gap_x, gap_y = box
    if labels:  # one row per socket, then the widget hint
        box_h = 44 + SLOT_ROW * slot_rows(workflow) + 28
    places, width, height = layout(workflow, box_w, box_h, gap_x, gap_y)
    ss = 2  # drawn at twice the size and shrunk, for smooth curves
    margin = 16
    fit = min((size[0] - 2 * margin) / width, (size[1] - 2 * margin) / height, scale) * ss
    canvas = Image.new("RGB", (size[0] * ss, size[1] * ss), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    left = (size[0] * ss - width * fit) / 2
    top = (size[1] * ss - height * fit) / 2
    pack_names = pack_display_names()
    nodes = {n["id"]: n for n in workflow["nodes"]}

    def at(x, y):
        return left + x * fit, top + y * fit

    def socket(node_id, slot, output):
        x, y = places[node_id]
        if labels:
            return at(x + (box_w if output else 0), y + 44 + SLOT_ROW * (slot + 0.5))
        count = len(nodes[node_id]["outputs" if output else "inputs"] or []) or 1
        return at(x + (box_w if output else 0), y + 34 + (box_h - 40) * (slot + 0.5) / count)

    for _link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        colour = LINK_COLOURS.get(kind, PACK_LINK)
        draw.line(bezier(socket(src, src_slot, True), socket(dst, dst_slot, False)), fill=colour,
                  width=max(2, int(3 * fit)), joint="curve")
    title_face, hint_face = font(max(9, int(17 * fit)), bold=True), font(max(8, int(14 * fit)))
    for node_id, (x, y) in places.items():
        node = nodes[node_id]
        ours = node["type"] in pack_names
        x0, y0 = at(x, y)
        x1, y1 = at(x + box_w, y + box_h)
        radius = int(10 * fit)
        draw.rounded_rectangle((x0, y0, x1, y1), radius, fill=NODE, outline=ACCENT if ours else NODE_TITLE,
                               width=max(1, int(2 * fit)))
        draw.rounded_rectangle((x0, y0, x1, y0 + 30 * fit), radius, fill=PACK_TITLE if ours else NODE_TITLE)
        name = display_name(node["type"], pack_names)
        title = wrap(draw, name, title_face, (box_w - 16) * fit)[0]
        draw.text((x0 + 8 * fit, y0 + 15 * fit), title, font=title_face, fill=TEXT, anchor="lm")
        hint = widget_hint(node)
        if hint and labels:
            line = shorten(draw, hint, hint_face, (box_w - 16) * fit)
            draw.text((x0 + 8 * fit, y1 - 16 * fit), line, font=hint_face, fill=MUTED, anchor="lm")
        elif hint:
            for i, line in enumerate(wrap(draw, hint, hint_face, (box_w - 16) * fit)[:2]):
                draw.text((x0 + 8 * fit, y0 + (48 + 20 * i) * fit), line, font=hint_face, fill=MUTED, anchor="lm")
        for output, sockets in ((False, node.get("inputs") or []), (True, node.get("outputs") or [])):
            for slot, entry in enumerate(sockets):
                cx, cy = socket(node_id, slot, output)
                draw.ellipse((cx - 4 * fit, cy - 4 * fit, cx + 4 * fit, cy + 4 * fit), fill=MUTED)
                if labels:
                    dx, anchor = (-10 * fit, "rm") if output else (10 * fit, "lm")
                    draw.text((cx + dx, cy), entry.get("label") or entry["name"], font=hint_face, fill=TEXT,
                              anchor=anchor)
    return canvas.resize(size, Image.LANCZOS)


def thumbnail(workflow, title, description, size=(512, 512)):
    """A template card: the graph's heart (no prompt, latent and output nodes) above its title and description."""
    band = 124
    picture = Image.new("RGB", size, BACKGROUND)
    picture.paste(draw_graph(without(workflow, THUMBNAIL_HIDDEN), (size[0], size[1] - band), box=THUMBNAIL_BOX), (0, 0))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, size[1] - band, size[0], size[1]), fill=(24, 25, 29))
    draw.rectangle((0, size[1] - band, size[0], size[1] - band + 3), fill=ACCENT)
    title_face, text_face = font(25, bold=True), font(17)
    y = size[1] - band + 16
    for line in wrap(draw, title, title_face, size[0] - 32)[:2]:
        draw.text((16, y), line, font=title_face, fill=TEXT)
        y += 31
    for line in wrap(draw, description, text_face, size[0] - 32)[:3]:
        if y > size[1] - 22:
            break
        draw.text((16, y), line, font=text_face, fill=MUTED)
        y += 21
    return picture


def signature(workflow, title, description):
    """A digest of what a thumbnail shows and of this script, stored in the JPEG to tell a stale one."""
    drawn = [[(n["id"], n["type"], n["pos"], [i.get("label") or i["name"] for i in n.get("inputs") or []],
               [o.get("label") or o["name"] for o in n.get("outputs") or []], n.get("widgets_values"))
              for n in workflow["nodes"]], workflow["links"], title, description]
    digest = hashlib.sha256(json.dumps(drawn, sort_keys=True).encode())
    digest.update(pathlib.Path(__file__).read_bytes())
    return digest.hexdigest()


def save_thumbnail(workflow, title, description, path):
    """The thumbnail as JPEG (what ComfyUI serves), its signature in the file's comment."""
    thumbnail(workflow, title, description).save(path, quality=88, comment=signature(workflow, title, description))


def icon(size=400):
    """The registry icon: a reference picture flowing into a model, on the pack's colours."""
    ss = 4
    s = size * ss
    picture = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    draw = ImageDraw.Draw(picture)
    draw.rounded_rectangle((0, 0, s - 1, s - 1), int(s * 0.18), fill=(30, 34, 40))
    # the reference image: a framed landscape
    frame = (int(s * 0.12), int(s * 0.22), int(s * 0.46), int(s * 0.56))
    draw.rounded_rectangle(frame, int(s * 0.03), fill=(100, 181, 246))
    draw.polygon([(frame[0], frame[3]), (int(s * 0.24), int(s * 0.38)), (int(s * 0.33), int(s * 0.47)),
                  (int(s * 0.38), int(s * 0.42)), (frame[2], frame[3])], fill=(44, 96, 86))
    draw.ellipse((int(s * 0.35), int(s * 0.27), int(s * 0.41), int(s * 0.33)), fill=(255, 208, 0))
    # the link into the model node
    node = (int(s * 0.54), int(s * 0.44), int(s * 0.88), int(s * 0.80))
    draw.line(bezier((frame[2], (frame[1] + frame[3]) / 2), (node[0], int(s * 0.62)), 40),
              fill=ACCENT, width=int(s * 0.035), joint="curve")
    node = (int(s * 0.54), int(s * 0.44), int(s * 0.88), int(s * 0.80))
    draw.rounded_rectangle(node, int(s * 0.04), fill=(53, 53, 58), outline=ACCENT, width=int(s * 0.015))
    draw.rounded_rectangle((node[0], node[1], node[2], node[1] + int(s * 0.09)), int(s * 0.04), fill=(44, 96, 86))
    for i in range(3):
        y = node[1] + int(s * (0.15 + 0.06 * i))
        draw.rounded_rectangle((node[0] + int(s * 0.04), y, node[2] - int(s * (0.04 + 0.05 * i)), y + int(s * 0.025)),
                               int(s * 0.012), fill=(160, 160, 168))
    face = font(int(s * 0.11), bold=True)
    draw.text((s / 2, s * 0.11), "IPA Kit", font=face, fill=(230, 230, 232), anchor="mm")
    return picture.resize((size, size), Image.LANCZOS)


def main():
    IMAGES.mkdir(parents=True, exist_ok=True)
    icon().save(IMAGES / "icon.png")
    for key, title, description in templates.TEMPLATES:
        workflow = json.loads(templates.workflow_path(key).read_text())
        save_thumbnail(workflow, title, description, templates.thumbnail_path(title))
    basic = json.loads(templates.workflow_path("ipadapter_basic").read_text())
    readme_box = (250, 44 + SLOT_ROW * slot_rows(basic) + 28, 60, 24)
    _places, width, height = layout(basic, *readme_box)
    draw_graph(basic, (1400, int(1400 * height / width) + 40), box=readme_box, labels=True).save(IMAGES / "basic_graph.png", optimize=True)
    print(f"wrote {IMAGES / 'icon.png'}, {len(templates.TEMPLATES)} thumbnails, {IMAGES / 'basic_graph.png'}")


if __name__ == "__main__":
    main()
