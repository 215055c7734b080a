"""`make demo`: start ComfyUI with this pack on tiny demo models, run the example workflow, print the PNG path.

DEMO_SERVE=1 keeps the server running on http://127.0.0.1:8188 afterwards (Ctrl-C stops it); DEMO_PORT=N picks
another port. A port another program holds stops the demo with a message (it never talks to that program).
"""
import errno
import os
import pathlib
import shutil
import socket
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]

import conftest  # noqa: E402  (puts the host on sys.path)
from comfy_server import ComfyServer  # noqa: E402
from tinymodels import world as world_builder  # noqa: E402

import demo_graph  # noqa: E402


DEFAULT_SERVE_PORT = 8188


def demo_port(environ, serve):
    """The port to serve on: $DEMO_PORT, else 8188 when serving, else None (any free port)."""
    raw = environ.get("DEMO_PORT", "").strip()
    if not raw:
        return DEFAULT_SERVE_PORT if serve else None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise SystemExit(f"DEMO_PORT={raw!r} is not a port number: give an integer from 1 to 65535, e.g. DEMO_PORT=8189")
    return int(raw)


def check_port_free(port, host="127.0.0.1"):
    """Stops with a clear message when another program listens on the port (its server must not be used)."""
    with socket.socket() as probe:
        probe.settimeout(1)
        answered = probe.connect_ex((host, port)) == 0
    if not answered:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as error:
                answered = error.errno == errno.EADDRINUSE
                if not answered:
                    raise
    if answered:
        raise SystemExit(f"port {port} is already in use (another ComfyUI?): stop that program, or choose another "
                         f"port, e.g. `DEMO_PORT={port + 1} DEMO_SERVE=1 make demo`")


def main():
    serve = os.environ.get("DEMO_SERVE") == "1"
    port = demo_port(os.environ, serve)
    if port is not None:
        check_port_free(port)
    world = world_builder.build(conftest.WORLD_DIR)
    work = ROOT / "out" / "demo"
    work.mkdir(parents=True, exist_ok=True)
    server = ComfyServer(conftest.COMFYUI_ROOT, world, work, port=port)
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
