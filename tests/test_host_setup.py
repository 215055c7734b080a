"""HOST_DIR reaches every tool that finds the test host, and `make demo` refuses a port another program holds."""
import os
import shutil
import socket
import subprocess
import sys

import pytest

import host_env

ROOT = host_env.ROOT
sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402


@pytest.fixture
def no_host_overrides(monkeypatch):
    for key in ("HOST_DIR", "COMFYUI_ROOT", "HOST_PYTHON"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def write_host_env(folder, comfy, python):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "host.env").write_text(f"COMFYUI_ROOT={comfy}\nHOST_PYTHON={python}\n")


def test_host_dir_defaults_to_dot_host(no_host_overrides):
    assert host_env.host_dir() == ROOT / ".host"
    assert host_env.host_env_path() == ROOT / ".host" / "host.env"


def test_relative_host_dir_counts_from_the_repository(no_host_overrides):
    no_host_overrides.setenv("HOST_DIR", "hosts/newest")
    assert host_env.host_dir() == ROOT / "hosts" / "newest"


def test_host_dir_settings_come_from_its_own_host_env(no_host_overrides, tmp_path):
    write_host_env(tmp_path / "host", tmp_path / "ComfyUI", sys.executable)
    no_host_overrides.setenv("HOST_DIR", str(tmp_path / "host"))
    assert host_env.setting("COMFYUI_ROOT") == str(tmp_path / "ComfyUI")
    assert host_env.host_python() == sys.executable


def test_host_dir_without_host_env_is_an_error_not_the_default_host(no_host_overrides, tmp_path):
    no_host_overrides.setenv("HOST_DIR", str(tmp_path / "never-built"))
    with pytest.raises(RuntimeError, match="never-built.*make host"):
        host_env.comfy_root()


def test_another_python_than_the_hosts_is_refused(no_host_overrides, tmp_path):
    write_host_env(tmp_path / "host", tmp_path / "ComfyUI", tmp_path / "other-venv" / "bin" / "python")
    no_host_overrides.setenv("HOST_DIR", str(tmp_path / "host"))
    with pytest.raises(RuntimeError, match="other-venv"):
        host_env.comfy_root()
    host_env.check_interpreter(prefix=tmp_path / "other-venv")  # the host's own venv passes


def test_comfyui_root_variable_still_overrides(no_host_overrides, tmp_path):
    no_host_overrides.setenv("HOST_DIR", str(tmp_path / "never-built"))
    no_host_overrides.setenv("COMFYUI_ROOT", str(tmp_path / "ComfyUI"))
    assert host_env.comfy_root() == tmp_path / "ComfyUI"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("how", ["environment", "argument"])
def test_makefile_runs_the_python_of_host_dir(how, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HOST_DIR"}
    args = ["make", "-n", "test"]
    if how == "environment":
        env["HOST_DIR"] = str(tmp_path)
    else:
        args.append(f"HOST_DIR={tmp_path}")
    plan = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert f"{tmp_path}/venv/bin/python -m pytest" in plan
    assert ".host/venv" not in plan


def test_setup_host_writes_host_env_where_host_env_reads_it():
    script = (ROOT / "scripts" / "setup_host.sh").read_text()
    assert 'HOST_DIR="${HOST_DIR:-.host}"' in script and '*) HOST_DIR="$ROOT/$HOST_DIR"' in script
    assert 'cat > "$HOST_DIR/host.env"' in script


def test_demo_port_default_and_choice():
    assert demo.demo_port({}, serve=True) == 8188
    assert demo.demo_port({}, serve=False) is None
    assert demo.demo_port({"DEMO_PORT": "8190"}, serve=True) == 8190
    assert demo.demo_port({"DEMO_PORT": " 9000 "}, serve=False) == 9000


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-5", "81.5"])
def test_demo_port_that_is_no_port_is_refused(value):
    with pytest.raises(SystemExit, match="DEMO_PORT"):
        demo.demo_port({"DEMO_PORT": value}, serve=True)


def test_busy_port_stops_the_demo_with_a_way_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} is already in use.*DEMO_PORT={port + 1}"):
            demo.check_port_free(port)
    demo.check_port_free(port)  # free again once the other program is gone
