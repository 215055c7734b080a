"""`make bench`'s harness: command line, clocks, memory, threads, interleaved repeats and the machine's facts.

Nothing runs at import. bench.py calls parse_args, then prepare_host (ComfyUI and the pack on sys.path, ComfyUI's
CPU flag set before comfy.model_management is imported), then configure (the device, dtype, clock and memory gauge
that bench_probes and bench_report read here as ARGS, DEVICE, DTYPE, CLOCK and MEMORY).
"""
import argparse
import importlib.util
import os
import pathlib
import platform
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
DESCRIPTION = "`make bench`: what image prompts cost, measured against the unpatched model in the same process."
ARCH_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}
DEFAULT_SIZE = {"sd15": 32, "sdxl": 16}  # latent side on CPU; SDXL real size is ~4 s a step at 16x16 on 1 core
PHASES = {"all": ("sd15", "sdxl", "flux", "sd35"), "both": ("sd15", "sdxl"), "sd15": ("sd15",), "sdxl": ("sdxl",),
          "flux": ("flux",), "sd35": ("sd35",)}
SECTION_ORDER = ("sd15", "sdxl", "flux", "sd35")  # <!-- bench:NAME --> sections of the doc, in this order
PHASE_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL", "flux": "Flux", "sd35": "SD3.5", "sdxl_instantid": "SDXL-InstantID",
               "sdxl_pulid": "SDXL-PuLID", "flux_pulid": "Flux-PuLID"}
DIT_PHASES = {"flux", "sd35", "flux_pulid"}  # block-level phases (their own modules; no CLIP encode figure)
# sub-phases: their own process and their own <!-- bench:NAME --> subsection inside the parent phase's section, in
# this order; run when the parent phase runs and their case is in --cases
SUBPHASES = {"sdxl_instantid": ("sdxl", "instantid"), "sdxl_pulid": ("sdxl", "pulid"),
             "flux_pulid": ("flux", "pulid")}
SUB_CASES = {case for _, case in SUBPHASES.values()}
DEFAULT_CASES = "base,plus,four,masked,faceid,instantid,pulid"
CASES = {  # UNet cases: (label, image tokens)
    "base": ("1 base adapter", "4"),
    "plus": ("1 plus adapter", "16"),
    "four": ("4 adapters (4 chained apply nodes, one file)", "4 x 4"),
    "masked": ("4 masked references in one node (separate)", "4 x 4, masks"),
    "faceid": ("FaceID Plus v2", "4"),
}
SETUP_THREADS = os.cpu_count() or 1
MB = 1024 * 1024

# set by configure()
ARGS = None
DEVICE = None
DTYPE = None
CLOCK = None
MEMORY = None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--arch", choices=tuple(PHASES), default="all",
                   help="phases to run: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in PHASES.items()))
    p.add_argument("--size", type=int, default=None,
                   help="latent side (pixels / 8); default 32 for SD1.5 and 16 for SDXL on CPU, 64 on CUDA")
    p.add_argument("--pairs", type=int, default=9, help="timed rounds (each patched case paired with unpatched)")
    p.add_argument("--l1-pairs", type=int, default=15, help="pairs for the single attn2 call (level 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                   help="UNet/compute dtype; default fp32 on CPU (what ComfyUI uses there), fp16 on CUDA")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads while timing (default 1: see the Method section of docs/benchmarks.md)")
    p.add_argument("--cases", default=DEFAULT_CASES,
                   help="comma-separated subset of cases (instantid: SDXL only, its own process with IdentityNet; "
                        "pulid: SDXL and Flux, their own processes, plus one for PuLID's ID encoding). With only "
                        "instantid / pulid, the SD1.5 / SDXL adapter cases are skipped, and with pulid the Flux "
                        "adapters too")
    p.add_argument("--instantid-budget", type=float, default=170,
                   help="seconds of timed InstantID rounds (3 SDXL steps with IdentityNet each; at least 3 rounds, "
                        "at most --pairs)")
    p.add_argument("--pulid-budget", type=float, default=120,
                   help="seconds of timed SDXL PuLID rounds (3 SDXL steps each; at least 3 rounds, at most --pairs)")
    p.add_argument("--no-clip", action="store_true", help="skip the real-size CLIP ViT-H encode timing")
    p.add_argument("--no-id-encode", action="store_true",
                   help="skip the timing of PuLID's one-off ID encoding (EVA02-CLIP, BiSeNet, ID encoders)")
    p.add_argument("--flux-tokens", type=int, default=1024,
                   help="Flux image tokens (1024 = a 512x512 image, the CPU default; 4096 = 1024x1024)")
    p.add_argument("--flux-text", type=int, default=512, help="Flux text tokens (T5, 512 for dev)")
    p.add_argument("--sd3-tokens", type=int, default=4096,
                   help="SD3.5 image tokens (4096 = a 1024x1024 image, the default; 1024 = 512x512)")
    p.add_argument("--sd3-text", type=int, default=154, help="SD3.5 text tokens (77 CLIP-L/G + 77 T5)")
    p.add_argument("--sd3-budget", type=float, default=120,
                   help="seconds of timed SD3.5 block rounds, shared by its attention backends (at least 3 rounds "
                        "each, at most --pairs)")
    p.add_argument("--sd3-attention", default="pytorch",
                   help="comma-separated attention backends for the SD3.5 block: pytorch (torch SDPA, ComfyUI's "
                        "choice on CUDA), sub_quad (ComfyUI's CPU default; noisy here at 4096 tokens, see "
                        "docs/benchmarks.md)")
    p.add_argument("--out", default=str(DOC), help="markdown file to write ('-' for none)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one phase in a fresh process
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def prepare_host(args):
    """ComfyUI's tree, the tests' helpers and this pack (as ipadapter_kit) importable; ComfyUI told the device."""
    sys.path.insert(0, str(ROOT / "tests"))
    import host_env  # noqa: PLC0415

    try:
        comfy_root = host_env.comfy_root()
    except RuntimeError as e:
        sys.exit(str(e))
    for path in (str(comfy_root), str(ROOT / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)
    import comfy.cli_args  # noqa: PLC0415

    comfy.cli_args.args.cpu = args.device == "cpu"  # before comfy.model_management is imported
    load_pack()


def load_pack():
    """This pack as the package ipadapter_kit (as ComfyUI's custom node loader names it here)."""
    if "ipadapter_kit" in sys.modules:
        return sys.modules["ipadapter_kit"]
    spec = importlib.util.spec_from_file_location("ipadapter_kit", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ipadapter_kit"] = module
    spec.loader.exec_module(module)
    return module


def configure(args):
    """The device, dtype, clock and memory gauge of this run, from its command line."""
    global ARGS, DEVICE, DTYPE, CLOCK, MEMORY
    ARGS = args
    DEVICE = torch.device(args.device)
    DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        args.dtype or ("fp32" if args.device == "cpu" else "bf16" if args.worker in DIT_PHASES else "fp16")]
    CLOCK = CudaClock() if DEVICE.type == "cuda" else CpuClock()
    MEMORY = CudaMemory() if DEVICE.type == "cuda" else HostMemory()


def threads(n):
    torch.set_num_threads(max(1, n))


class CpuClock:
    what = "process CPU time (time.process_time)"

    def measure(self, fn):
        t0 = time.process_time()
        fn()
        return time.process_time() - t0


class CudaClock:
    what = "CUDA events around the call (after warm-up)"

    def measure(self, fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


class HostMemory:
    """Peak resident set size of this process: VmHWM, reset through /proc/self/clear_refs."""

    what = "peak RSS (VmHWM, reset via /proc/self/clear_refs before each forward)"

    def __init__(self):
        try:
            self.reset()
            self.ok = self.peak() is not None
        except OSError:
            self.ok = False

    @staticmethod
    def _status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return None

    def reset(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    def peak(self):
        return self._status("VmHWM")

    def current(self):
        return self._status("VmRSS")


class CudaMemory:
    what = "torch.cuda.max_memory_allocated (reset before each forward)"
    ok = True

    def reset(self):
        torch.cuda.reset_peak_memory_stats()

    def peak(self):
        return torch.cuda.max_memory_allocated()

    def current(self):
        return torch.cuda.memory_allocated()


def part_clock():
    """A clock for the parts of one call: process CPU time on the CPU, wall time after a synchronize on CUDA."""
    if DEVICE.type == "cpu":
        return time.process_time
    return lambda: (torch.cuda.synchronize(), time.perf_counter())[1]


def timed_into(spent, name, fn, clock):
    """fn, adding the seconds each call takes to spent[name]."""
    def run(*a, **kw):
        t0 = clock()
        out = fn(*a, **kw)
        spent[name] = spent.get(name, 0.0) + clock() - t0
        return out
    return run


def rss_gb():
    rss = HostMemory._status("VmRSS")
    return "n/a" if rss is None else f"{rss / 1024 ** 3:.1f} GB"


def wall(fn):
    """(result, wall seconds, CPU seconds) of a one-off call."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, time.process_time() - c0


def summary(values):
    return statistics.median(values), min(values), max(values)


def time_model(forward, base, patched, pairs, log):
    """Rounds of: unpatched, every patched case (rotated order); each patched time over the mean of the unpatched
    times that bracket its round. Returns per-case ratios, times and step-peak memory deltas."""
    names = list(patched)
    a_times, a_peaks = [], []
    b_times = {c: [] for c in names}
    b_peaks = {c: [] for c in names}

    def run(patcher, step):
        if MEMORY.ok:
            MEMORY.reset()
        t = CLOCK.measure(lambda: forward(patcher, step))
        return t, (MEMORY.peak() if MEMORY.ok else None)

    t, m = run(base, 0)
    a_times.append(t), a_peaks.append(m)
    for r in range(pairs):
        order = names[r % len(names):] + names[:r % len(names)]
        for c in order:
            t, m = run(patched[c], r + 1)
            b_times[c].append(t), b_peaks[c].append(m)
        t, m = run(base, r + 1)
        a_times.append(t), a_peaks.append(m)
        log(f"  round {r + 1}/{pairs}: unpatched {a_times[-1]:.2f} s, " +
            ", ".join(f"{c} {b_times[c][-1] / ((a_times[-2] + a_times[-1]) / 2):.3f}" for c in names))
    out = {}
    for c in names:
        ratios = [b / ((a_times[r] + a_times[r + 1]) / 2) for r, b in enumerate(b_times[c])]
        peaks = [b - max(a_peaks[r], a_peaks[r + 1]) for r, b in enumerate(b_peaks[c]) if b is not None]
        third = max(1, len(ratios) // 3)
        out[c] = {"ratios": ratios, "patched_s": statistics.median(b_times[c]),
                  "unpatched_s": statistics.median(a_times),
                  "peak_delta": statistics.median(peaks) if peaks else None,
                  "early": statistics.median(ratios[:third]), "late": statistics.median(ratios[-third:])}
    return out


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3
    except (ValueError, OSError):
        ram = float("nan")
    try:
        import comfyui_version  # noqa: PLC0415  (ComfyUI's root is on sys.path once prepare_host ran)
        comfy_version = comfyui_version.__version__
    except ImportError:
        comfy_version = "unknown"
    gpu = torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram, "torch": torch.__version__,
            "comfyui": comfy_version, "python": platform.python_version(), "gpu": gpu,
            "cuda_available": torch.cuda.is_available()}


def log(msg):
    t0 = float(os.environ.get("IPAKIT_BENCH_T0", time.time()))
    print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)
