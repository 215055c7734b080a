"""Where the ComfyUI test host lives (scripts/setup_host.sh writes $HOST_DIR/host.env, default .host/); stdlib only."""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_HOST_DIR = ".host"


def host_dir():
    """The host folder: $HOST_DIR (a relative path counts from the repository, as in setup_host.sh), else .host/."""
    path = pathlib.Path(os.environ.get("HOST_DIR") or DEFAULT_HOST_DIR).expanduser()
    return path if path.is_absolute() else ROOT / path


def host_env_path():
    """The host.env that setup_host.sh wrote for this host folder."""
    return host_dir() / "host.env"


def setting(key):
    """A value from the host's host.env, or None; a HOST_DIR without one is an error, never the default host."""
    path = host_env_path()
    if not path.exists():
        if os.environ.get("HOST_DIR"):
            raise RuntimeError(f"HOST_DIR={os.environ['HOST_DIR']} has no host.env ({path}): build that host with "
                               f"`HOST_DIR={os.environ['HOST_DIR']} make host`, or unset HOST_DIR to use .host/")
        return None
    for line in path.read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    return None


def comfy_root():
    """The ComfyUI tree to test against: $COMFYUI_ROOT, else the host's (run by the host's Python)."""
    if os.environ.get("COMFYUI_ROOT"):
        return pathlib.Path(os.environ["COMFYUI_ROOT"])
    root = setting("COMFYUI_ROOT")
    if root is None:
        raise RuntimeError("no ComfyUI test host: run `make host` (scripts/setup_host.sh) or set COMFYUI_ROOT")
    check_interpreter()
    return pathlib.Path(root)


def check_interpreter(prefix=None):
    """Refuses a Python other than the host's: its packages are not the ones that host was built with."""
    expected = os.environ.get("HOST_PYTHON") or setting("HOST_PYTHON")
    if expected is None:
        return
    expected_venv = pathlib.Path(expected).parent.parent.resolve()
    running = pathlib.Path(prefix or sys.prefix).resolve()
    if running != expected_venv:
        raise RuntimeError(f"this Python ({running}) is not the test host's ({expected_venv}, from "
                           f"{host_env_path()}): run the tests with `make test` or with {expected}")


def host_python():
    """The host venv's python: $HOST_PYTHON, else the host's (or this interpreter)."""
    return os.environ.get("HOST_PYTHON") or setting("HOST_PYTHON") or sys.executable
