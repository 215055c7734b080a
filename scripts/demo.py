"""`make demo`: start ComfyUI with this pack on tiny demo models, run the example workflow, print the PNG path.

DEMO_SERVE=1 keeps the server running on http://127.0.0.1:8188 afterwards (Ctrl-C stops it).
"""
import os
import pathlib
import shutil
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

import conftest  # noqa: E402  (puts the host on sys.path)
from comfy_server import ComfyServer  # noqa: E402
from tinymodels import world as world_builder  # noqa: E402

import demo_graph  # noqa: E402


def main():
    serve = os.environ.get("DEMO_SERVE") == "1"
    world = world_builder.build(conftest.WORLD_DIR)
    work = ROOT / "out" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    server = ComfyServer(conftest.COMFYUI_ROOT, world, work, port=8188 if serve else None)
    print(f"starting ComfyUI {conftest.COMFYUI_ROOT} on {server.url} ...", flush=True)
    server.start()
    try:
        name, prompt = demo_graph.prompt(server)
        print(f"running {name} on the tiny demo models ...", flush=True)
        entry = server.run(prompt)
        if entry["status"]["status_str"] != "success":
            raise SystemExit(f"the demo workflow failed: {entry['status']}")
        png = server.output_images(entry)[0]
        target = ROOT / "out" / "demo.png"
        shutil.copyfile(png, target)
        print(f"demo image: {target}")
        if serve:
            print(f"ComfyUI is serving on {server.url} (Ctrl-C to stop)")
            while server.process.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
