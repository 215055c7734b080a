"""The pack inside the real ComfyUI server: registration and a prompt through the HTTP API."""
import numpy as np
from PIL import Image

import graphs

PACK_NODES = {"IPAKitModelLoader"}


def test_object_info_lists_pack_nodes(comfy_server):
    info = comfy_server.get("/object_info")
    assert PACK_NODES <= set(info), f"missing: {PACK_NODES - set(info)}\n{comfy_server.log_tail()}"
    loader = info["IPAKitModelLoader"]
    kind, options = loader["input"]["required"]["ipadapter_file"]
    files = options["options"] if kind == "COMBO" else kind
    assert "ip-adapter_sd15.safetensors" in files and "ip-adapter-faceid_sd15.bin" in files
    assert loader["output"] == ["IPADAPTER_KIT"]


def test_txt2img_prompt_produces_image(comfy_server):
    entry = comfy_server.run(graphs.txt2img(prefix="e2e_plain"))
    assert entry["status"]["status_str"] == "success", entry["status"]
    paths = comfy_server.output_images(entry)
    assert len(paths) == 1 and paths[0].exists()
    img = np.asarray(Image.open(paths[0]))
    assert img.shape == (64, 64, 3)
    assert img.std() > 1.0, "decoded image is flat"
