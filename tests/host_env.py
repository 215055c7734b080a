"""Where the ComfyUI test host lives (written by scripts/setup_host.sh into .host/host.env); stdlib only."""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
HOST_ENV = ROOT / ".host" / "host.env"


def setting(key):
    """A value from .host/host.env, or None."""
    if HOST_ENV.exists():
        for line in HOST_ENV.read_text().splitlines():
            if line.startswith(key + "="):
                return line.split("=", 1)[1]
    return None


def comfy_root():
    """The ComfyUI tree to test against: $COMFYUI_ROOT, else the host's."""
    root = os.environ.get("COMFYUI_ROOT") or setting("COMFYUI_ROOT")
    if root is None:
        raise RuntimeError("no ComfyUI test host: run `make host` (scripts/setup_host.sh) or set COMFYUI_ROOT")
    return pathlib.Path(root)


def host_python():
    """The host venv's python: $HOST_PYTHON, else the host's (or this interpreter)."""
    return os.environ.get("HOST_PYTHON") or setting("HOST_PYTHON") or sys.executable
