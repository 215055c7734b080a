"""Writes workflows/*.json (UI format) from compact graph descriptions, using a live server's object_info.

Run in the host venv: `.host/venv/bin/python scripts/build_workflows.py`. Widget order and defaults come from
the server, so the files are what the frontend itself would save. Each workflow gets a top-level `models` list (the
files its Missing Models dialog checks on load) and each node the registry id and version of its pack.
"""
import json
import pathlib
import sys
import tempfile
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

import conftest  # noqa: E402
import templates  # noqa: E402
from comfy_server import ComfyServer  # noqa: E402
from tinymodels import world as world_builder  # noqa: E402
from workflow_api import widget_slots  # noqa: E402
from workflow_graphs import WORKFLOWS  # noqa: E402

HF = "https://huggingface.co"
MODEL_URLS = {
    "v1-5-pruned-emaonly.safetensors":
        ("checkpoints", f"{HF}/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly.safetensors"),
    "ip-adapter_sd15.safetensors": ("ipadapter", f"{HF}/h94/IP-Adapter/resolve/main/models/ip-adapter_sd15.safetensors"),
    "ip-adapter-plus_sd15.safetensors":
        ("ipadapter", f"{HF}/h94/IP-Adapter/resolve/main/models/ip-adapter-plus_sd15.safetensors"),
    "ip-adapter-faceid-plusv2_sd15.bin":
        ("ipadapter", f"{HF}/h94/IP-Adapter-FaceID/resolve/main/ip-adapter-faceid-plusv2_sd15.bin"),
    "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors":
        ("clip_vision", f"{HF}/h94/IP-Adapter/resolve/main/models/image_encoder/model.safetensors"),
    "ip-adapter-faceid-plusv2_sd15_lora.safetensors":
        ("loras", f"{HF}/h94/IP-Adapter-FaceID/resolve/main/ip-adapter-faceid-plusv2_sd15_lora.safetensors"),
    "control_v11p_sd15_canny_fp16.safetensors":
        ("controlnet", f"{HF}/comfyanonymous/ControlNet-v1-1_fp16_safetensors/resolve/main/"
                       "control_v11p_sd15_canny_fp16.safetensors"),
    "flux1-dev-fp8.safetensors": ("checkpoints", f"{HF}/Comfy-Org/flux1-dev/resolve/main/flux1-dev-fp8.safetensors"),
    "flux-ip-adapter.safetensors": ("ipadapter", f"{HF}/XLabs-AI/flux-ip-adapter/resolve/main/ip_adapter.safetensors"),
    "ip-adapter.bin": ("ipadapter", f"{HF}/InstantX/FLUX.1-dev-IP-Adapter/resolve/main/ip-adapter.bin"),
    "clip-vit-large-patch14.safetensors":
        ("clip_vision", f"{HF}/openai/clip-vit-large-patch14/resolve/main/model.safetensors"),
    "siglip-so400m-patch14-384.safetensors":
        ("clip_vision", f"{HF}/google/siglip-so400m-patch14-384/resolve/main/model.safetensors"),
    "sd3.5_large_fp8_scaled.safetensors":
        ("checkpoints", f"{HF}/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_large_fp8_scaled.safetensors"),
    "ip-adapter_sd35_large.bin": ("ipadapter", f"{HF}/InstantX/SD3.5-Large-IP-Adapter/resolve/main/ip-adapter.bin"),
    "sd_xl_base_1.0.safetensors":
        ("checkpoints", f"{HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors"),
    "ip-adapter_pulid_sdxl_fp16.safetensors":
        ("pulid", f"{HF}/huchenlei/ipadapter_pulid/resolve/main/ip-adapter_pulid_sdxl_fp16.safetensors"),
    "pulid_flux_v0.9.1.safetensors": ("pulid", f"{HF}/guozinan/PuLID/resolve/main/pulid_flux_v0.9.1.safetensors"),
    # models/clip is ComfyUI's legacy name for text_encoders; the frontend knows only the current folder names
    "EVA02_CLIP_L_336_psz14_s6B.pt":
        ("text_encoders", f"{HF}/QuanSun/EVA-CLIP/resolve/main/EVA02_CLIP_L_336_psz14_s6B.pt"),
    "parsing_bisenet.pth":
        ("facexlib", "https://github.com/xinntao/facexlib/releases/download/v0.2.0/parsing_bisenet.pth"),
    "instantid/diffusion_pytorch_model.safetensors":
        ("controlnet", f"{HF}/InstantX/InstantID/resolve/main/ControlNetModel/diffusion_pytorch_model.safetensors"),
}
# Files whose names other releases share: (node type, file name) -> (folder, url), looked up first.
MODEL_URLS_BY_NODE = {
    ("IPAKitInstantIDLoader", "ip-adapter.bin"): ("instantid", f"{HF}/InstantX/InstantID/resolve/main/ip-adapter.bin"),
}
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACK_PREFIX = "IPAKit"


def _default(kind, opts):
    if "default" in opts:
        return opts["default"]
    if isinstance(kind, list):
        return kind[0]
    if kind == "COMBO":
        return opts["options"][0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


def _entry(name):
    folder, url = MODEL_URLS[name]
    return {"name": name, "url": url, "directory": folder}


def _models(widgets, ntype=None):
    """The model files a node needs: its file widgets' values (the only ones newer frontends flag as missing)."""
    own = [(n, MODEL_URLS_BY_NODE[ntype, n]) for n in widgets.values() if (ntype, n) in MODEL_URLS_BY_NODE]
    if own:
        return [{"name": n, "url": url, "directory": folder} for n, (folder, url) in own]
    names = [v for v in widgets.values() if isinstance(v, str) and v in MODEL_URLS]
    return [_entry(n) for n in names]


def _pack_properties(ntype, comfy_version):
    """The registry id and version the frontend stores on a node, so a missing-node dialog names its pack."""
    if ntype.startswith(PACK_PREFIX):
        return {"cnr_id": PROJECT["name"], "ver": PROJECT["version"]}
    return {"cnr_id": "comfy-core", "ver": comfy_version}


def _workflow_models(nodes):
    """Every node's files once, in graph order: the top-level list the frontend checks on load."""
    seen, models = set(), []
    for node in nodes:
        for model in node["properties"].get("models", []):
            key = (model["name"], model["directory"])
            if key not in seen:
                seen.add(key)
                models.append(model)
    return models


def build(spec, object_info, comfy_version):
    """A UI-format workflow from {key: (type, widgets, links, mode)}."""
    ids = {key: i + 1 for i, key in enumerate(spec["nodes"])}
    depth = {}

    def level(key):
        if key not in depth:
            depth[key] = 1 + max((level(src) for src, _ in spec["nodes"][key][2].values()), default=-1)
        return depth[key]

    for key in spec["nodes"]:
        level(key)
    nodes, links, rows = [], [], {}
    for key, (ntype, widgets, node_links, *rest) in spec["nodes"].items():
        info = object_info[ntype]
        values = []
        for name, kind, opts in widget_slots(info):
            values.append("fixed" if name is None else widgets.get(name, _default(kind, opts)))
        inputs = []
        for name, (src, slot) in node_links.items():
            link_id = len(links) + 1
            kind = object_info[spec["nodes"][src][0]]["output"][slot]
            links.append([link_id, ids[src], slot, ids[key], len(inputs), kind])
            inputs.append({"name": name, "type": kind, "link": link_id})
        row = rows.setdefault(depth[key], 0)
        rows[depth[key]] += 1
        node = {"id": ids[key], "type": ntype, "pos": [40 + 360 * depth[key], 40 + 260 * row], "size": [320, 220],
                "flags": {}, "order": len(nodes), "mode": rest[0] if rest else 0, "inputs": inputs,
                "outputs": [{"name": name, "type": kind, "links": []}
                            for name, kind in zip(info["output_name"], info["output"])],
                "properties": {**_pack_properties(ntype, comfy_version), "Node name for S&R": ntype},
                "widgets_values": values}
        if spec.get("titles", {}).get(key):
            node["title"] = spec["titles"][key]
        models = _models(widgets, ntype)
        if models:
            node["properties"]["models"] = models
        nodes.append(node)
    for link in links:
        nodes[link[1] - 1]["outputs"][link[2]]["links"].append(link[0])
    return {"last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"info": spec["description"]}, "models": _workflow_models(nodes), "version": 0.4}


def main():
    assert sorted(WORKFLOWS) == sorted(templates.TITLES), "every graph needs a template title (scripts/templates.py)"
    world = world_builder.build(conftest.WORLD_DIR)
    with tempfile.TemporaryDirectory() as work, ComfyServer(conftest.COMFYUI_ROOT, world, work) as server:
        object_info = server.get("/object_info")
        comfy_version = server.get("/system_stats")["system"]["comfyui_version"]
    templates.WORKFLOWS.mkdir(exist_ok=True)
    for name, spec in WORKFLOWS.items():
        path = templates.workflow_path(name)
        path.write_text(json.dumps(build(spec, object_info, comfy_version), indent=1) + "\n")
        print("wrote", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
