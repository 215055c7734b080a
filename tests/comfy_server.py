"""Starts the real ComfyUI server of the test host on a free port and talks to its HTTP API."""
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import host_env

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """`with ComfyServer(comfy_root, world_dir, work_dir) as server:` runs main.py and stops it by PID."""

    # One compute thread: on a small shared machine OpenMP's spinning threads make a tiny prompt take 0.2 s or
    # 10 s depending on the neighbours; with one thread timings are steady.
    THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def __init__(self, comfy_root, world_dir, work_dir, port=None, extra_args=(), env=None):
        self.comfy_root = pathlib.Path(comfy_root)
        self.world = pathlib.Path(world_dir)
        self.work = pathlib.Path(work_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = list(extra_args)
        self.env = {**self.THREAD_ENV, **(env or {})}
        self.process = None
        self.client_id = uuid.uuid4().hex
        self.log_path = self.work / "server.log"

    def _write_paths_config(self):
        models = self.world / "models"
        lines = ["ipadapter_kit_tests:", f"  base_path: {models}"]
        lines += [f"  {name}: {name}/" for name in ("checkpoints", "clip_vision", "insightface", "loras",
                                                    "controlnet", "vae", "instantid", "pulid", "clip",
                                                    "facexlib", "unet", "LLM")]
        # models/ipadapter plus the Flux packs' folders, as a user who kept them would list them
        lines += ["  ipadapter: |", "    ipadapter/", "    ipadapter-flux/", "    xlabs/ipadapters/"]
        path = self.work / "extra_model_paths.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout=120):
        self.work.mkdir(parents=True, exist_ok=True)
        for sub in ("output", "temp", "user"):
            (self.work / sub).mkdir(exist_ok=True)
        cmd = [host_env.host_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--extra-model-paths-config", str(self._write_paths_config()),
               "--input-directory", str(self.world / "input"), "--output-directory", str(self.work / "output"),
               "--temp-directory", str(self.work / "temp"), "--user-directory", str(self.work / "user"),
               "--database-url", "sqlite:///:memory:", *self.extra_args]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=self.comfy_root, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, chars=4000):
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path, payload):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt):
        """Queue an API-format prompt; returns (prompt_id, None) or (None, the validation error body)."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if status != 200:
            return None, body
        return body["prompt_id"], None

    def wait(self, prompt_id, timeout=300):
        """Poll /history until the prompt finished; returns its history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout}s:\n{self.log_tail()}")

    def run(self, prompt, timeout=300):
        """Queue and wait; returns the history entry (raises with the validation error if refused)."""
        prompt_id, error = self.queue(prompt)
        if error is not None:
            raise AssertionError(f"prompt refused: {json.dumps(error, indent=1)[:3000]}")
        return self.wait(prompt_id, timeout)

    def output_images(self, entry):
        """Paths of the images a finished prompt saved."""
        paths = []
        for out in entry.get("outputs", {}).values():
            for img in out.get("images", []):
                if img.get("type") == "output":
                    paths.append(self.work / "output" / img.get("subfolder", "") / img["filename"])
        return paths


def execution_error(entry):
    """The execution_error message of a failed prompt, or None."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data
    return None
