#!/usr/bin/env python
"""`make bench`: what image prompts cost, measured against the unpatched model in the same process.

Builds real-size SD1.5 and SDXL UNets (random weights) through ComfyUI's own classes, real-size adapter files
(random weights, written from the released tensor shapes), patches the model through the pack's own apply path
(nodes.patching.apply_embeds) and times the model forward the sampler runs (batch 2: uncond + cond), unpatched vs
patched, interleaved. The SDXL phase also times InstantID (scripts/bench_instantid.py, in its own process): one
sampler step with a real-size IdentityNet (ComfyUI's ControlNet class) plain and with the identity tokens patched in,
and PuLID (scripts/bench_pulid.py, its own process): one step plain and with PuLID's identity tokens (fidelity, style).
A Flux phase (scripts/bench_flux.py) times one real-width Flux.1 double and single block, plain
vs patched through the pack's dit block replace (XLabs, InstantX), and with PuLID-Flux's cross-attention after them
(scripts/bench_pulid.py); PuLID's one-off ID encoding of a face (EVA02-CLIP, BiSeNet, alignment, ID encoders) is timed
in its own process too. An SD3.5 phase (scripts/bench_sd3.py) one
real-width SD3.5 Large joint block (InstantX SD3.5-Large-IP-Adapter). Writes docs/benchmarks.md (a run of some phases
replaces only their sections). See the Method section of that file for what is measured and how.

    .host/venv/bin/python scripts/bench.py [--arch sd15|sdxl|flux|sd35|both|all] [--size N] [--pairs N]
                                           [--flux-tokens N] [--sd3-tokens N] [--instantid-budget S]
                                           [--pulid-budget S] [--cases a,b,...] [--device cpu|cuda]
"""
import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
ARCH_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}
DEFAULT_SIZE = {"sd15": 32, "sdxl": 16}  # latent side on CPU; SDXL real size is ~4 s a step at 16x16 on 1 core
TARGETS = {"base": 1.03, "plus": 1.05, "four": 1.10, "masked": 1.10}  # issue 6
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


ARGS = parse_args()


sys.path.insert(0, str(ROOT / "tests"))
import host_env  # noqa: E402

try:
    COMFYUI_ROOT = host_env.comfy_root()
except RuntimeError as e:
    sys.exit(str(e))
for _p in (str(COMFYUI_ROOT), str(ROOT / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = ARGS.device == "cpu"  # before comfy.model_management is imported

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.clip_vision  # noqa: E402
import comfy.ldm.modules.attention  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402
import folder_paths  # noqa: E402
from tinymodels import ipadapter_files  # noqa: E402  (tencent-layout shapes of image_proj)
from tinymodels.weights import init_module, random_tensors  # noqa: E402


def _load_pack():
    if "ipadapter_kit" in sys.modules:
        return sys.modules["ipadapter_kit"]
    spec = importlib.util.spec_from_file_location("ipadapter_kit", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["ipadapter_kit"] = module
    spec.loader.exec_module(module)
    return module


_load_pack()
from ipadapter_kit.ipadapter_core import attention as core_attention  # noqa: E402
from ipadapter_kit.ipadapter_core import embeds as core_embeds  # noqa: E402
from ipadapter_kit.nodes import clip_encode, model_cache, paths, patching  # noqa: E402

import bench_flux  # noqa: E402  (scripts/, next to this file: the Flux phase)
import bench_instantid  # noqa: E402  (InstantID in the SDXL phase)
import bench_pulid  # noqa: E402  (PuLID in the SDXL and Flux phases)
import bench_sd3  # noqa: E402  (the SD3.5 phase)

DEVICE = torch.device(ARGS.device)
DTYPE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
    ARGS.dtype or ("fp32" if ARGS.device == "cpu" else "bf16" if ARGS.worker in DIT_PHASES else "fp16")]
SETUP_THREADS = os.cpu_count() or 1

# ---------------------------------------------------------------------------------------------------- shapes

UNETS = {
    "sd15": {  # what ComfyUI's model detection gives for an SD1.5 checkpoint
        "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
        "channel_mult": [1, 2, 4, 4], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "transformer_depth_middle": 1,
        "context_dim": 768, "use_linear_in_transformer": False, "adm_in_channels": None,
        "use_temporal_attention": False, "use_temporal_resblock": False, "image_size": 32,
        "use_spatial_transformer": True, "legacy": False, "num_heads": 8, "num_head_channels": -1,
    },
    "sdxl": {  # ... and for SDXL base
        "in_channels": 4, "out_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10,
        "context_dim": 2048, "use_linear_in_transformer": True, "adm_in_channels": 2816,
        "num_classes": "sequential", "use_temporal_attention": False, "use_temporal_resblock": False,
        "image_size": 32, "use_spatial_transformer": True, "legacy": False, "num_heads": -1,
        "num_head_channels": 64,
    },
}
CLIP_EMBED, CLIP_HIDDEN, CLIP_TOKENS = 1024, 1280, 257  # CLIP ViT-H/14 image_embeds, hidden width, tokens
ID_DIM = 512
FACEID_LORA_RANK = 128  # the released FaceID files carry a rank-128 LoRA for every attention processor
FIRST_KEY = {"sd15": (("input", 1), 0), "sdxl": (("input", 4), 0)}  # adapter layer 0 of each arch


def cross_attn_widths(arch):
    """Query width of each cross-attention layer in diffusers' processor order (= adapter layer order)."""
    c = UNETS[arch]["model_channels"]
    if arch == "sd15":
        return [c, c, 2 * c, 2 * c, 4 * c, 4 * c] + [4 * c] * 3 + [2 * c] * 3 + [c] * 3 + [4 * c]
    return [2 * c] * 4 + [4 * c] * 20 + [4 * c] * 30 + [2 * c] * 6 + [4 * c] * 10


def ip_layer_shapes(arch, lora_rank=0):
    ctx = UNETS[arch]["context_dim"]
    out = {}
    for i, width in enumerate(cross_attn_widths(arch)):
        n = 2 * i + 1
        out[f"{n}.to_k_ip.weight"] = (width, ctx)
        out[f"{n}.to_v_ip.weight"] = (width, ctx)
        if lora_rank:
            for idx, kv_in in ((n - 1, width), (n, ctx)):
                for name, fan_in in (("to_q", width), ("to_k", kv_in), ("to_v", kv_in), ("to_out", width)):
                    out[f"{idx}.{name}_lora.down.weight"] = (lora_rank, fan_in)
                    out[f"{idx}.{name}_lora.up.weight"] = (width, lora_rank)
    return out


def adapter_files(arch):
    """{kind: (release name, image_proj shapes, ip_adapter shapes)} at real size."""
    ctx = UNETS[arch]["context_dim"]
    dim = 768 if arch == "sd15" else 1280  # resampler width of ip-adapter-plus_sd15 / plus_sdxl_vit-h
    suffix = "sd15" if arch == "sd15" else "sdxl_vit-h"
    return {
        "base": (f"ip-adapter_{suffix}.safetensors", ipadapter_files.linear_proj(CLIP_EMBED, ctx, tokens=4),
                 ip_layer_shapes(arch)),
        "plus": (f"ip-adapter-plus_{suffix}.safetensors",
                 ipadapter_files.resampler_proj(CLIP_HIDDEN, ctx, dim=dim, depth=4, queries=16),
                 ip_layer_shapes(arch)),
        "faceid": (f"ip-adapter-faceid-plusv2_{'sd15' if arch == 'sd15' else 'sdxl'}.safetensors",
                   ipadapter_files.faceid_plus_proj(CLIP_HIDDEN, ctx, tokens=4, depth=4),
                   ip_layer_shapes(arch, FACEID_LORA_RANK)),
    }


# ---------------------------------------------------------------------------------------------------- clocks

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


CLOCK = CudaClock() if DEVICE.type == "cuda" else CpuClock()
MEMORY = CudaMemory() if DEVICE.type == "cuda" else HostMemory()
MB = 1024 * 1024


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


# ---------------------------------------------------------------------------------------------------- probes

class Probes:
    """Counters around the pack's code: K/V projections (attention.scaled_kv) and host syncs."""

    SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")

    def __init__(self):
        self.projections = 0
        self.syncs = {}
        real = core_attention.scaled_kv

        def counting_scaled_kv(*a, **kw):
            self.projections += 1
            return real(*a, **kw)

        core_attention.scaled_kv = counting_scaled_kv  # the patch looks the name up in its module at call time

    @contextlib.contextmanager
    def count_syncs(self):
        """Count calls of tensor methods that read values on the host while the block runs."""
        self.syncs = {}
        saved = {}
        for name in self.SYNC_METHODS:
            real = getattr(torch.Tensor, name)
            saved[name] = real

            def hook(*a, _real=real, _name=name, **kw):
                self.syncs[_name] = self.syncs.get(_name, 0) + 1
                return _real(*a, **kw)

            setattr(torch.Tensor, name, hook)
        try:
            yield self
        finally:
            for name, real in saved.items():
                setattr(torch.Tensor, name, real)

    @contextlib.contextmanager
    def time_kv(self, cls=None):
        """Seconds spent projecting image K/V (_layer_kv cache misses of cls, IPAdapterPatch by default) while the
        block runs. _layer_kv(i, prompt, layer, device, dtype, *rest) caches under (i, layer, device, dtype, *rest)."""
        cls = cls or core_attention.IPAdapterPatch
        real = cls._layer_kv
        spent = [0.0]

        def timed(patch, i, prompt, layer, device, dtype, *rest):
            if (i, layer, device, dtype, *rest) in getattr(patch, "_kv", {}):
                return real(patch, i, prompt, layer, device, dtype, *rest)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = real(patch, i, prompt, layer, device, dtype, *rest)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent[0] += time.perf_counter() - t0
            return out

        cls._layer_kv = timed
        try:
            yield spent
        finally:
            cls._layer_kv = real

    def sync_total(self):
        return sum(self.syncs.values())


PROBES = Probes()


# ---------------------------------------------------------------------------------------------------- models

def build_unet(arch):
    cfg = dict(UNETS[arch])
    conf = (comfy.supported_models.SD15 if arch == "sd15" else comfy.supported_models.SDXL)(cfg)
    conf.unet_config = cfg
    if DTYPE != torch.float32:
        conf.set_inference_dtype(DTYPE, None)
    model = conf.get_model({}, device="cpu")
    init_module(model.diffusion_model, seed=0)  # ComfyUI builds its layers uninitialised
    model.eval()
    if DEVICE.type != "cpu":
        model.to(DEVICE)
    return comfy.model_patcher.ModelPatcher(model, load_device=DEVICE, offload_device=torch.device("cpu"))


def write_adapter(folder, name, proj_shapes, ip_shapes, seed):
    """A tencent-layout .safetensors file in fp16 (as released) with random weights; returns its size."""
    flat = {}
    for group, shapes, s in (("image_proj", proj_shapes, seed), ("ip_adapter", ip_shapes, seed + 1)):
        flat.update({f"{group}.{k}": v.half().contiguous() for k, v in random_tensors(shapes, seed=s).items()})
    path = pathlib.Path(folder) / name
    save_file(flat, str(path))
    del flat
    return path.stat().st_size


def clip_vision_h():
    """A real-size CLIP ViT-H/14 (632M parameters) in ComfyUI's own class, random weights."""
    clip = comfy.clip_vision.ClipVisionModel(os.path.join(os.path.dirname(comfy.clip_vision.__file__),
                                                          "clip_vision_config_h.json"))
    init_module(clip.model, seed=3)
    return clip


def param_bytes(module):
    return sum(p.numel() * p.element_size() for p in module.parameters())


def cache_bytes(patch):
    total = 0
    for cache in (getattr(patch, "_kv", {}), getattr(patch, "_masks", {}), getattr(patch, "_index", {})):
        for value in cache.values():
            for t in (value if isinstance(value, (tuple, list)) else (value,)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
    return total


def our_patch(patcher):
    attn2 = patcher.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    return next((p for p in attn2.values() if isinstance(p, core_attention.IPAdapterPatch)), None)


def cache_entries(patch):
    return sum(len(getattr(patch, name, {})) for name in ("_kv", "_masks", "_index"))


# ---------------------------------------------------------------------------------------------------- cases

CASES = {
    "base": ("1 base adapter", "4"),
    "plus": ("1 plus adapter", "16"),
    "four": ("4 adapters (4 chained apply nodes, one file)", "4 x 4"),
    "masked": ("4 masked references in one node (separate)", "4 x 4, masks"),
    "faceid": ("FaceID Plus v2", "4"),
}


def faceid_projector(weights, ids, hidden, method):
    # what the Apply FaceID node passes for Plus v2 (shortcut on, weight_faceidv2 1.0)
    return core_embeds.project_faceid(weights, ids, hidden, method, shortcut=True, scale=1.0)


def make_cases(model, adapters, size, wanted):
    """{case: (patched ModelPatcher, one-off seconds of the apply calls)} through patching.apply_embeds."""
    g = torch.Generator().manual_seed(11)

    def embeds(n):
        return torch.randn(n, CLIP_EMBED, generator=g)

    def hidden(n):
        return torch.randn(n, CLIP_TOKENS, CLIP_HIDDEN, generator=g)

    out = {}
    for case in wanted:
        if case == "base":
            fn = lambda: patching.apply_embeds(model, adapters["base"], embeds(1), torch.zeros(1, CLIP_EMBED))
        elif case == "plus":
            fn = lambda: patching.apply_embeds(model, adapters["plus"], hidden(1), hidden(1))
        elif case == "four":
            def fn():
                m = model
                for _ in range(4):
                    m = patching.apply_embeds(m, adapters["base"], embeds(1), torch.zeros(1, CLIP_EMBED))
                return m
        elif case == "masked":
            side = 8 * size
            masks = torch.zeros(4, side, side)
            half = side // 2
            for i, (ys, xs) in enumerate(((slice(0, half), slice(0, half)), (slice(0, half), slice(half, None)),
                                          (slice(half, None), slice(0, half)), (slice(half, None), slice(half, None)))):
                masks[i, ys, xs] = 1.0
            fn = lambda: patching.apply_embeds(model, adapters["base"], embeds(4), torch.zeros(4, CLIP_EMBED),
                                               combine="separate", attn_mask=masks)
        elif case == "faceid":
            ids = torch.nn.functional.normalize(torch.randn(1, ID_DIM, generator=g), dim=-1)
            fn = lambda: patching.apply_embeds(model, adapters["faceid"], (ids, hidden(1)),
                                               (torch.zeros_like(ids), hidden(1)), projector=faceid_projector)
        else:
            raise SystemExit(f"unknown case {case!r}; choose from {', '.join(CASES)}")
        patched, seconds, _ = wall(fn)
        out[case] = (patched, seconds)
    return out


# ---------------------------------------------------------------------------------------------------- timing

class Forward:
    """The sampler's model call for one conditioning batch: uncond + cond stacked (batch 2)."""

    def __init__(self, base, arch, size):
        self.model = base.model
        g = torch.Generator().manual_seed(5)
        ctx = UNETS[arch]["context_dim"]
        self.x = torch.randn(2, 4, size, size, generator=g).to(DEVICE, DTYPE)
        self.context = torch.randn(2, 77, ctx, generator=g).to(DEVICE, DTYPE)
        self.extra = {"y": torch.randn(2, 2816, generator=g).to(DEVICE, DTYPE)} if arch == "sdxl" else {}
        sampling = base.get_model_object("model_sampling")
        hi, lo = float(sampling.sigma_max), float(sampling.sigma_min)
        self.sigmas = [hi * (lo / hi) ** (i / 20) for i in range(21)]  # a 20-step schedule, log-spaced

    def __call__(self, patcher, step=0):
        sigma = torch.full((2,), self.sigmas[step % len(self.sigmas)], device=DEVICE)
        options = dict(patcher.model_options["transformer_options"])  # what calc_cond_batch passes, shallow copy
        options["cond_or_uncond"] = [1, 0]
        options["sigmas"] = sigma
        with torch.no_grad():
            return self.model.apply_model(self.x, sigma, c_crossattn=self.context, transformer_options=options,
                                          **self.extra)


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


def attn2_level1(arch, size, patched, base_options):
    """One attn2 call: the installed patch vs ComfyUI's optimized_attention on the same q/k/v."""
    (block, index) = FIRST_KEY[arch]
    width = cross_attn_widths(arch)[0]
    heads = width // 64 if UNETS[arch]["num_heads"] == -1 else UNETS[arch]["num_heads"]
    tokens = (size // (1 if arch == "sd15" else 2)) ** 2
    g = torch.Generator().manual_seed(9)
    q = torch.randn(2, tokens, width, generator=g).to(DEVICE, DTYPE)
    k = torch.randn(2, 77, width, generator=g).to(DEVICE, DTYPE)
    v = torch.randn(2, 77, width, generator=g).to(DEVICE, DTYPE)
    attention = comfy.ldm.modules.attention.optimized_attention

    def options(patcher):
        extra = dict(patcher.model_options["transformer_options"])
        extra.pop("patches_replace", None)
        extra.update({"block": block, "block_index": index, "n_heads": heads, "dim_head": width // heads,
                      "attn_precision": None, "original_shape": [2, 4, size, size], "cond_or_uncond": [1, 0],
                      "transformer_index": 0, "sigmas": torch.full((2,), 1.0, device=DEVICE),
                      "activations_shape": [2, width, size, size]})
        return extra

    plain_options = options(base_options)

    def plain():
        return attention(q, k, v, heads, attn_precision=None, transformer_options=plain_options)

    with torch.no_grad():
        plain()
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < 0.05:
            plain()
            n += 1
        calls = max(3, int(n * 0.25 / max(time.perf_counter() - t0, 1e-6)))  # about 0.25 s a sample

        def repeat(fn):
            def run():
                for _ in range(calls):
                    fn()
            return run

        out = {}
        with PROBES.count_syncs():
            for _ in range(3):
                plain()
        plain_syncs = PROBES.sync_total()
        for case, patcher in patched.items():
            patch = our_patch(patcher)
            extra = options(patcher)
            call = lambda p=patch, e=extra: p(q, k, v, e)
            call()
            with PROBES.count_syncs():
                for _ in range(3):
                    call()
            syncs = PROBES.sync_total() - plain_syncs
            ratios = []
            for i in range(ARGS.l1_pairs):
                if i % 2 == 0:
                    a = CLOCK.measure(repeat(plain))
                    b = CLOCK.measure(repeat(call))
                else:
                    b = CLOCK.measure(repeat(call))
                    a = CLOCK.measure(repeat(plain))
                ratios.append(b / a)
            out[case] = {"ratios": ratios, "syncs": syncs, "plain_ms": a / calls * 1e3,
                         "patched_ms": b / calls * 1e3, "calls": calls, "profile": added_ops(call, plain)}
    shape = f"q ({2}, {tokens}, {width}), {heads} heads, text k/v (2, 77, {width})"
    return out, shape, f"{block[0]} {block[1]}, transformer {index}"


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's backend prints start/stop lines on fd 2; keep them out of the bench output."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def op_times(fn, calls):
    """{op: self time} over calls of fn, by torch.profiler (device time on CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    with quiet_stderr(), profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    attr = "self_device_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"
    return {e.key: getattr(e, attr, 0) for e in prof.key_averages()}


def added_ops(patched, plain, calls=30, top=4):
    """[(op, share)] of what the patched call adds over the plain one, per op (profiles of both, subtracted)."""
    with_patch, without = op_times(patched, calls), op_times(plain, calls)
    added = {op: t - without.get(op, 0) for op, t in with_patch.items()}
    total = sum(t for t in added.values() if t > 0) or 1
    ranked = sorted(((op, t / total) for op, t in added.items() if t > 0), key=lambda x: -x[1])
    return ranked[:top]


def image_time_in_step(forward, patcher, step):
    """Seconds one forward spends in the patch beyond ComfyUI's own attention (timers around the calls)."""
    patch = our_patch(patcher)
    cls = type(patch)
    real_call, real_attention = cls.__call__, patch.attention
    if DEVICE.type == "cpu":
        clock = time.process_time
    else:  # synchronising inside the step slows it; this forward is only for this figure
        def clock():
            torch.cuda.synchronize()
            return time.perf_counter()
    spent = {"patch": 0.0, "attention": 0.0, "calls": 0}

    def attention(*a, **kw):
        t0 = clock()
        out = real_attention(*a, **kw)
        spent["attention"] += clock() - t0
        return out

    def call(self, *a, **kw):
        t0 = clock()
        out = real_call(self, *a, **kw)
        spent["patch"] += clock() - t0
        spent["calls"] += 1
        return out

    cls.__call__, patch.attention = call, attention
    try:
        step_s = CLOCK.measure(lambda: forward(patcher, step))
    finally:
        cls.__call__, patch.attention = real_call, real_attention
    return {"image_s": spent["patch"] - spent["attention"], "step_s": step_s, "calls": spent["calls"]}


# ---------------------------------------------------------------------------------------------------- run

def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def run_arch(arch, size, tmp, log):
    name = ARCH_NAMES[arch]
    result = {"arch": arch, "size": size, "pairs": ARGS.pairs, "date": datetime.date.today().isoformat()}
    wanted = [c.strip() for c in ARGS.cases.split(",") if c.strip() and c.strip() not in SUB_CASES]
    need = {"base"} if {"base", "four", "masked"} & set(wanted) else set()
    need |= {c for c in ("plus", "faceid") if c in wanted}

    threads(SETUP_THREADS)
    log(f"[{name}] building the real-size UNet (random weights) ...")
    base, seconds, _ = wall(lambda: build_unet(arch))
    unet = base.model.diffusion_model
    result["unet_params"] = sum(p.numel() for p in unet.parameters())
    result["attn2_layers"] = sum(1 for n, _ in unet.named_modules() if n.endswith(".attn2"))
    log(f"[{name}] UNet: {result['unet_params'] / 1e6:.0f}M parameters, {result['attn2_layers']} attn2 layers "
        f"({seconds:.0f} s to build); RSS {rss_gb()}")

    folder = pathlib.Path(tmp) / arch
    folder.mkdir()
    folder_paths.add_model_folder_path("ipadapter", str(folder), is_default=True)
    adapters, loads = {}, {}
    for i, (kind, (fname, proj, ip)) in enumerate(adapter_files(arch).items()):
        if kind not in need:
            continue
        threads(SETUP_THREADS)
        size_bytes = write_adapter(folder, fname, proj, ip, seed=100 + 10 * i)
        gc.collect()
        threads(ARGS.threads)
        adapter, seconds, cpu = wall(lambda: model_cache.load_adapter(fname))  # file in the page cache
        adapters[kind] = adapter
        loads[kind] = {"file": fname, "file_bytes": size_bytes, "seconds": seconds, "cpu": cpu,
                       "weights_bytes": param_bytes(adapter.weights),
                       "dtype": str(next(adapter.weights.parameters()).dtype).replace("torch.", ""),
                       "spec": adapter.spec.describe()}
        if kind == "base":
            result["cached_loader"] = model_cache.load_adapter(fname) is adapter
        (folder / fname).unlink()  # its page cache counts against this machine's memory; SDXL needs it all
        gc.collect()
        log(f"[{name}] loaded {fname}: file {size_bytes / MB:.0f} MB, weights in memory "
            f"{loads[kind]['weights_bytes'] / MB:.0f} MB ({loads[kind]['dtype']}), {seconds:.2f} s; "
            f"RSS {rss_gb()}")
    result["loads"] = loads

    threads(ARGS.threads)
    log(f"[{name}] applying the cases through patching.apply_embeds ...")
    patched_and_cost = make_cases(base, adapters, size, wanted)
    patched = {c: p for c, (p, _) in patched_and_cost.items()}
    result["apply_s"] = {c: s for c, (_, s) in patched_and_cost.items()}

    # one copy of each adapter's weights, however many apply nodes use it
    if "four" in patched:
        patch = our_patch(patched["four"])
        ptrs = {p.weights.ip_adapter["1"].to_k_ip.weight.data_ptr() for p in patch.prompts}
        result["one_copy"] = {"prompts": len(patch.prompts), "distinct_weight_ptrs": len(ptrs),
                              "models": len(patch.models()),
                              "same_as_loaded": ptrs == {adapters["base"].weights.ip_adapter["1"].to_k_ip
                                                         .weight.data_ptr()}}

    forward = Forward(base, arch, size)
    # cold forwards: fill the caches; count projections, host syncs, first-call cost
    log(f"[{name}] first forwards (caches filled, projections and host reads counted) ...")
    with PROBES.count_syncs():
        forward(base, 0)
    unpatched_syncs = dict(PROBES.syncs)
    cold = {}
    for c, p in patched.items():
        PROBES.projections = 0
        with PROBES.count_syncs(), PROBES.time_kv() as kv_time:
            _, seconds, cpu = wall(lambda: forward(p, 0))
        patch = our_patch(p)
        cold[c] = {"projections": PROBES.projections, "syncs": PROBES.sync_total() - sum(unpatched_syncs.values()),
                   "sync_detail": dict(PROBES.syncs), "first_s": cpu if DEVICE.type == "cpu" else seconds,
                   "kv_s": kv_time[0],
                   "cache_bytes": cache_bytes(patch), "cache_entries": cache_entries(patch),
                   "layers": len(patch.keys()), "prompts": len(patch.prompts)}
    result["cold"] = cold
    result["unpatched_syncs"] = unpatched_syncs

    log(f"[{name}] timing {ARGS.pairs} rounds at latent {size}x{size}, batch 2 ...")
    PROBES.projections = 0
    load = [loadavg()]
    timed = time_model(forward, base, patched, ARGS.pairs, log)
    result["load"] = load + [loadavg()]
    result["timed"] = timed
    log(f"[{name}] one instrumented forward per case (time inside the patch beyond ComfyUI's attention) ...")
    result["inside"] = {c: image_time_in_step(forward, p, ARGS.pairs + 1) for c, p in patched.items()}
    result["steady_projections"] = PROBES.projections
    result["cache_after"] = {c: cache_entries(our_patch(p)) for c, p in patched.items()}

    log(f"[{name}] level 1: one attn2 call ...")
    result["l1"], result["l1_shape"], result["l1_key"] = attn2_level1(arch, size, patched, base)

    return result


def encode_cost(log):
    """One reference through a real-size CLIP ViT-H (the pack's clip_encode.encode), once."""
    threads(SETUP_THREADS)
    log("[CLIP] building a real-size CLIP ViT-H/14 (random weights) ...")
    clip = clip_vision_h()
    params = sum(p.numel() for p in clip.model.parameters())
    threads(ARGS.threads)
    image = torch.rand(1, 512, 512, 3, generator=torch.Generator().manual_seed(1))
    _, seconds, cpu = wall(lambda: clip_encode.encode(clip, image, "penultimate_hidden_states"))
    dtype = str(next(clip.model.parameters()).dtype).replace("torch.", "")
    log(f"[CLIP] encode of one reference: {seconds:.2f} s wall, {cpu:.2f} s CPU ({params / 1e6:.0f}M parameters, "
        f"{dtype})")
    return {"seconds": seconds, "cpu": cpu, "params": params, "dtype": dtype}


# ---------------------------------------------------------------------------------------------------- report

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
        sys.path.insert(0, str(COMFYUI_ROOT))
        import comfyui_version
        comfy_version = comfyui_version.__version__
    except ImportError:
        comfy_version = "unknown"
    gpu = torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram, "torch": torch.__version__,
            "comfyui": comfy_version, "python": platform.python_version(), "gpu": gpu,
            "cuda_available": torch.cuda.is_available()}


def fmt_ratio(values):
    med, lo, hi = summary(values)
    return f"**{med:.3f}×**", f"{lo:.3f}–{hi:.3f}"


def fmt_mb(value):
    return "n/a" if value is None else "≤ 0 MB" if value <= 0 else f"{value / MB:.0f} MB"


SDXL_NOTE = (" SDXL runs a 16×16 latent by default to keep `make bench` short on 2 cores: one "
             "real-size SDXL step takes about 4 s at 16×16 and 7.5 s at 32×32 on one core here (`--size 32` for the "
             "larger one).")


def arch_section(r):
    name = ARCH_NAMES[r["arch"]]
    size = r["size"]
    lines = [f"<!-- bench:{r['arch']} -->",
             f"## {name} ({r['unet_params'] / 1e6:.0f}M-parameter UNet, {r['attn2_layers']} attn2 layers), "
             f"latent {size}×{size} ({8 * size}×{8 * size} px), batch 2, {r['device']} {r['dtype']}",
             "",
             f"Run {r['date']}, {r['pairs']} timed rounds. Load average {r['load'][0]:.1f} before and "
             f"{r['load'][1]:.1f} after them ({os.cpu_count()} cores; much above 1 means other work shared the "
             "machine)." + (SDXL_NOTE if r["arch"] == "sdxl" and size == 16 else ""),
             "",
             "### Whole model step (level 2: the sampler's forward, uncond + cond)",
             "",
             "| case | image tokens | patched / unpatched (median) | min–max | target | patched step "
             "| unpatched step | time in the image attention | step peak Δ | K/V cache |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c, t in r["timed"].items():
        label, toks = CASES[c]
        med, spread = fmt_ratio(t["ratios"])
        target = TARGETS.get(c)
        verdict = "—" if target is None else f"≤ {target:.2f}× " + (
            "✅" if summary(t["ratios"])[0] <= target else "❌")
        inside = r["inside"][c]
        lines.append(f"| {label} | {toks} | {med} | {spread} | {verdict} | {t['patched_s']:.2f} s | "
                     f"{t['unpatched_s']:.2f} s | {inside['image_s'] * 1e3:.0f} ms "
                     f"({100 * inside['image_s'] / inside['step_s']:.1f}%) | {fmt_mb(t['peak_delta'])} | "
                     f"{r['cold'][c]['cache_bytes'] / MB:.2f} MB |")
    lines += ["", f"Step times are medians of {r['clock']}. *Time in the image attention*: one more patched "
              "forward with timers around the patch's calls, minus the time in ComfyUI's attention inside them "
              "(what the patch adds, measured below the noise of whole-step ratios). *Step peak Δ*: peak memory of "
              "a patched forward minus "
              "that of the unpatched forwards bracketing it (median over rounds; the adapter weights are already "
              "loaded in both). *K/V cache*: image K/V (and resized masks) the patch keeps after the first step.", "",
              "### One attn2 call (level 1)", "",
              f"`{r['l1_key']}`: {r['l1_shape']}; the installed patch vs ComfyUI's `optimized_attention` "
              f"(`{comfy.ldm.modules.attention.optimized_attention.__name__}` here) on the same q/k/v, "
              f"{ARGS.l1_pairs} interleaved pairs of {next(iter(r['l1'].values()))['calls']} calls each.", "",
              "| case | patched / plain (median) | min–max | plain call | patched call | host reads per call "
              "| what the patch adds, by op (torch.profiler, patched minus plain) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for c, t in r["l1"].items():
        med, spread = fmt_ratio(t["ratios"])
        ops = ", ".join(f"{name.replace('aten::', '')} {share:.0%}" for name, share in t["profile"])
        lines.append(f"| {CASES[c][0]} | {med} | {spread} | {t['plain_ms']:.2f} ms | {t['patched_ms']:.2f} ms "
                     f"| {t['syncs'] / 3:g} | {ops} |")
    lines += ["", "### One-off costs", "",
              "| adapter file (fp16, random weights) | file | weights in memory | load (`model_cache.load_adapter`) |",
              "| --- | --- | --- | --- |"]
    for kind, ld in r["loads"].items():
        lines.append(f"| `{ld['file']}` ({ld['spec']}) | {ld['file_bytes'] / MB:.0f} MB | "
                     f"{ld['weights_bytes'] / MB:.0f} MB {ld['dtype']} | {ld['seconds']:.2f} s wall, "
                     f"{ld['cpu']:.2f} s CPU |")
    lines += ["", "| case | apply (image projection + install, `apply_embeds`) | K/V projection (first step only) "
              "| K/V projections in the first step |", "| --- | --- | --- | --- |"]
    for c, cold in r["cold"].items():
        lines.append(f"| {CASES[c][0]} | {r['apply_s'][c]:.3f} s | {cold['kv_s'] * 1e3:.0f} ms | "
                     f"{cold['projections']} ({cold['prompts']} prompt(s) × {cold['layers']} layers × cond/uncond) |")
    enc = r.get("encode")
    if enc:
        lines += ["", f"Encoding one reference (512×512 image, cropped to 224) through a real-size CLIP ViT-H/14 "
                  f"({enc['params'] / 1e6:.0f}M parameters, random weights, {enc.get('dtype', '?')} as ComfyUI "
                  f"builds it here) with the pack's `clip_encode.encode`: "
                  f"{enc['seconds']:.2f} s wall, {enc['cpu']:.2f} s CPU. FaceID's InsightFace detection is not "
                  "measured (no real-size ONNX models offline)."]
    lines += ["", "### Checks", ""]
    proj_ok = r["steady_projections"] == 0 and all(v == r["cold"][c]["cache_entries"]
                                                    for c, v in r["cache_after"].items())
    growth = ", ".join(f"{CASES[c][0]} {t['early']:.3f}× → {t['late']:.3f}×" for c, t in r["timed"].items())
    lines.append(f"- **Step time does not grow with the number of steps** {'✅' if proj_ok else '❌'}: image K/V are "
                 f"projected in the first step only ({r['steady_projections']} calls of `attention.scaled_kv` in "
                 f"the {r['pairs']} × {len(r['timed'])} timed steps, which run at 20-step-schedule sigmas; cache "
                 f"entries unchanged after them). Median ratio, first third → last third of the rounds: {growth}.")
    syncs_ok = all(cold["syncs"] <= 0 for cold in r["cold"].values()) and all(
        t["syncs"] <= 0 for t in r["l1"].values())
    unpatched = sum(r["unpatched_syncs"].values())
    lines.append(f"- **No host sync per attention call** {'✅' if syncs_ok else '❌'}: `torch.Tensor` methods "
                 f"that read values on the host ({', '.join(Probes.SYNC_METHODS)}) were replaced by counters during "
                 f"each case's first (cache-filling) forward and 3 warm attn2 calls: "
                 + ", ".join(f"{CASES[c][0]} {cold['syncs']:+d}" for c, cold in r["cold"].items())
                 + f" calls beyond the unpatched forward's own {unpatched}"
                 + (f" ({', '.join(f'{k} ×{v}' for k, v in r['unpatched_syncs'].items())}, ComfyUI's)"
                    if unpatched else "") + "; 0 extra in the warm attn2 calls"
                 + ("." if all(t["syncs"] <= 0 for t in r["l1"].values()) else " — FAILED in the warm calls."))
    one = r.get("one_copy")
    if one:
        ok = one["distinct_weight_ptrs"] == 1 and one["same_as_loaded"] and one["models"] == 1 and \
            r.get("cached_loader", False)
        lines.append(f"- **One copy of each adapter's weights** {'✅' if ok else '❌'}: the 4 chained apply nodes' "
                     f"{one['prompts']} prompts point at {one['distinct_weight_ptrs']} weight storage (`data_ptr` "
                     f"of `to_k_ip`, the loaded module's own: {one['same_as_loaded']}), the patch registers "
                     f"{one['models']} adapter ModelPatcher, and loading the file again returns the cached object "
                     f"({r.get('cached_loader')}).")
    uses = {"base": ["base"], "plus": ["plus"], "four": ["base"], "masked": ["base"], "faceid": ["faceid"]}
    parts, ok = [], True
    for c, t in r["timed"].items():
        weights = sum(r["loads"][k]["weights_bytes"] for k in uses[c])
        extra = r["cold"][c]["cache_bytes"] + max(0, t["peak_delta"] or 0)
        ok = ok and extra <= 0.1 * weights
        parts.append(f"{CASES[c][0]} {weights / MB:.0f} MB + {extra / MB:.1f} MB")
    dtypes = {ld["dtype"] for ld in r["loads"].values()}
    lines.append(f"- **Memory: weights + at most 10%** {'✅' if ok else '❌'}: adapter weights as loaded + "
                 f"(K/V cache + step peak Δ): {'; '.join(parts)}. The loader (`ipadapter_core/adapter.py`) keeps "
                 f"the weights in {', '.join(sorted(dtypes))} whatever the file holds, so an fp16 release takes "
                 "twice its file size in memory (see the one-off table).")
    lines.append(f"<!-- /bench:{r['arch']} -->")
    return "\n".join(lines)


def extract(section, sub):
    """The <!-- bench:sub --> subsection of a section (markers included), or None."""
    start, end = f"<!-- bench:{sub} -->", f"<!-- /bench:{sub} -->"
    if start in section and end in section:
        return section[section.index(start):section.index(end) + len(end)]
    return None


def splice(section, sub, text):
    """section with its <!-- bench:sub --> subsection replaced by text, or text added before the first later
    subsection of SUBPHASES order (else before the section's end marker)."""
    start, end = f"<!-- bench:{sub} -->", f"<!-- /bench:{sub} -->"
    if start in section and end in section:
        return section[:section.index(start)] + text + section[section.index(end) + len(end):]
    parent = SUBPHASES[sub][0]
    later = list(SUBPHASES)[list(SUBPHASES).index(sub) + 1:]
    for other in later:
        mark = f"<!-- bench:{other} -->"
        if SUBPHASES[other][0] == parent and mark in section:
            i = section.index(mark)
            return section[:i] + text + "\n\n" + section[i:]
    parent_end = f"<!-- /bench:{parent} -->"
    if parent_end in section:
        i = section.index(parent_end)
        return section[:i].rstrip("\n") + "\n\n" + text + "\n" + section[i:]
    return section.rstrip("\n") + "\n\n" + text


def section_for(r):
    bench = sys.modules[__name__]
    if r["arch"] == "sdxl_instantid":
        return bench_instantid.section(bench, r)
    if r["arch"] in ("sdxl_pulid", "flux_pulid"):
        return bench_pulid.section(bench, r)
    if r["arch"] == "flux":
        section = bench_flux.section(bench, r)
    elif r["arch"] == "sd35":
        section = bench_sd3.section(bench, r)
    else:
        section = arch_section(r)
    for sub in SUBPHASES:  # sub-phases that ran with this phase
        if sub in r.get("subs", {}):
            section = splice(section, sub, section_for(r["subs"][sub]))
    return section


def write_doc(path, results, info, elapsed, partial=False):
    """Write the doc: sections of the phases that ran replace theirs, the others are kept as they were. After a run
    of some phases only, the head keeps the date and duration of the last full run."""
    old = path.read_text() if path.exists() else ""
    sections = {}
    for arch in SECTION_ORDER:
        start, end = f"<!-- bench:{arch} -->", f"<!-- /bench:{arch} -->"
        if start in old and end in old:
            sections[arch] = old[old.index(start):old.index(end) + len(end)]
    for r in results:
        if r["arch"] in SUBPHASES:  # a sub-phase alone (--cases instantid / pulid): its part of its parent's section
            parent = SUBPHASES[r["arch"]][0]
            sections[parent] = splice(sections.get(parent, f"<!-- bench:{parent} -->\n## {PHASE_NAMES[parent]}\n\n"
                                                           f"<!-- /bench:{parent} -->"), r["arch"], section_for(r))
            continue
        new = section_for(r)
        for sub, (parent, _) in SUBPHASES.items():
            kept = extract(sections.get(r["arch"], ""), sub) if parent == r["arch"] else None
            if kept and not extract(new, sub):  # a run without the sub-phase's case keeps its last figures
                new = splice(new, sub, kept)
        sections[r["arch"]] = new
    last = re.search(r"Last (?:full )?run (.+?), took\s+([\d.]+) minutes", old)
    if partial and last:
        ran = ", ".join(PHASE_NAMES[r["arch"]] for r in results)
        names = {PHASE_NAMES[a] for r in results for a in (r["arch"], *r.get("subs", {}))}
        end = old.find("\n\n", last.start())
        earlier = "".join(  # partial runs of other phases since the last full run keep their note
            f"; {m.group(1)} updated {m.group(2)} by `{m.group(3)}` ({m.group(4)} minutes)"
            for m in re.finditer(r"((?:[\w.-]+, )*[\w.-]+) updated (\d{4}-\d\d-\d\d \d\d:\d\d) by\s+"
                                 r"`(--arch \w+(?:\s+--cases [\w,]+)?)`\s+\(([\d.]+) minutes\)",
                                 old[last.start():end if end >= 0 else None])
            if not names & set(m.group(1).split(", ")))
        command = f"--arch {ARGS.arch}" + (f" --cases {ARGS.cases}" if ARGS.cases != DEFAULT_CASES else "")
        run_line = (f"Last full run {last.group(1)}, took\n{last.group(2)} minutes{earlier}; {ran} updated "
                    f"{info['date']} by `{command}` ({elapsed / 60:.1f} minutes).")
    else:
        run_line = f"Last run {info['date']}, took\n{elapsed / 60:.1f} minutes."
    gpu_line = (f"GPU: {info['gpu']}." if info["gpu"] else
                "GPU: none. This task had no GPU machine lent, so there are no CUDA rows (fp16, 64×64 and 128×128 "
                "latents); `scripts/bench.py --device cuda --size 64` (then `--size 128`) adds them on a GPU "
                "machine — that path is written but has not been run.")
    head = f"""# Benchmarks: what image prompts cost

Written by `make bench` (`scripts/bench.py`); figures elsewhere quote this file. {run_line}

Machine: {info['cpu']}, {info['cores']} cores, {info['ram_gb']:.0f} GB RAM, shared and noisy. {gpu_line}
Software: torch {info['torch']}, ComfyUI {info['comfyui']}, Python {info['python']}; timing threads:
{ARGS.threads} (`torch.set_num_threads`).

## Method

- Real-size UNets with random weights, built by ComfyUI's own classes (`supported_models.SD15(cfg)` / `SDXL(cfg)`,
  `get_model`, `ModelPatcher`) with the released block layouts, widths, heads and context sizes; fp32 on CPU, as
  ComfyUI runs there. Denormal flushing is on (random weights must not hit slow denormal paths).
- Real-size adapter files with random weights, written as fp16 `.safetensors` from the released tensor shapes
  (tencent layout): `ip-adapter_*` (linear projection of 1024-d CLIP ViT-H image embeds, 4 tokens),
  `ip-adapter-plus_*` (Perceiver resampler: 16 tokens, width 768/1280, depth 4, heads width/64, CLIP hidden 1280),
  `ip-adapter-faceid-plusv2_*` (512-d InsightFace id + 1280-d CLIP hidden, 4 tokens, with the rank-128 LoRA the
  released files carry; the LoRA is not applied to the UNet here, as a merged weight patch it costs nothing per step).
  Loaded by the pack's loader (`nodes/model_cache.load_adapter`) and applied by its apply path
  (`nodes/patching.apply_embeds`, the code under every apply node), with random embeds of the encoder's shapes.
- Timed call: `model.apply_model(x, sigma, c_crossattn=..., transformer_options=..., y=... for SDXL)` with batch 2
  and `cond_or_uncond` [1, 0], i.e. one sampler step's forward for cond + uncond, as `calc_cond_batch` issues it.
- Clock: {CLOCK.what}, not wall time.
- Interleaving: each round runs the unpatched model, then every patched case (order rotated each round), then
  the unpatched model again (it also opens the next round); each patched step is divided by the mean of the two
  unpatched steps around its round. Ratios are reported as the median over the
  rounds with min and max. The first forward of every model is run before the rounds (caches filled) and
  reported as a one-off cost.
- Threads: timing runs with {ARGS.threads} torch thread(s) (`--threads`). When this script was written
  (2026-11-22), two threads on this 2-vCPU shared VM made one SD1.5 step go from 4.1 s to 5–12.5 s of CPU time
  whenever the second vCPU was contended (OpenMP threads spin at barriers while their partner is descheduled), so
  CPU and wall time swung by ±50%; with one thread, back-to-back steps agreed within ±2%. Setup (random weights)
  uses all cores.
- Each phase (CLIP encode, SD1.5, SDXL, Flux blocks, SD3.5 block) runs in its own process, so each starts with the
  memory free. `--arch sd15|sdxl|flux|sd35|both` runs some of them and replaces only their sections here.
- Flux (its section has the details): one real-width Flux.1 double block and one single block (ComfyUI's classes,
  random weights), plain vs the pack's installed `dit` block replace for real-size XLabs and InstantX adapter
  files, same clock, threads and interleaving; a whole Flux model (12B parameters, 48 GB in float32) does not fit
  this machine.
- SD3.5 (its section has the details): one real-width SD3.5 Large joint block (ComfyUI's `mmdit.JointBlock`, random
  weights, batch 2), plain vs the pack's installed `dit` replace for a real-size InstantX SD3.5-Large-IP-Adapter
  file, with torch's SDPA as the block's attention (`attention_pytorch`, ComfyUI's choice on CUDA; its CPU default
  `attention_sub_quad` with `--sd3-attention pytorch,sub_quad`), same clock, threads and interleaving; the number
  of rounds follows the first call's time (`--sd3-budget`).
- InstantID (in the SDXL section, its own subsection and process): one sampler step of the real-size SDXL UNet with a
  real-size IdentityNet (ComfyUI's `cldm.ControlNet` with the SDXL config, random weights) through ControlNet's
  `get_control` and `apply_model`, plain and with a real-size InstantID adapter applied as the pack's nodes do;
  same clock and threads, the number of rounds follows the first step's time (`--instantid-budget`).
- PuLID (subsections of the SDXL and Flux sections, their own processes): a real-size PuLID SDXL file (fidelity and
  style, the SDXL step as above, rounds following the first step's time, `--pulid-budget`) and a real-size
  PuLID-Flux file (the Flux blocks above, each followed by its cross-attention through the pack's block patch), random
  weights in the released layouts, loaded and installed as the pack's Apply PuLID nodes do; and, in a third process,
  the one-off ID encoding of one face (alignment, BiSeNet, EVA02-CLIP-L-14-336 and the ID encoders at real size).
- Memory: {MEMORY.what}.
  tracemalloc does not see torch's allocations, and torch keeps no CPU allocator statistics.
- Level 1 is one attn2 call in isolation (real shapes of adapter layer 0) against ComfyUI's
  `optimized_attention`; level 2 is the whole model step, the figure users feel.
- Targets (issue 6): 1 base adapter ≤ 1.03×, 1 plus adapter ≤ 1.05×, 4 adapters or 4 masked references ≤ 1.10×
  the unpatched step.
- Reading the whole-step ratios: their min–max spread (a few percent) is this machine's noise, larger than what
  the patch costs. The *time in the image attention* column measures that cost directly inside a step.
"""
    bounds = """## What bounds the patch

The patch adds to ComfyUI's attention over 77 text keys an attention over a few image keys (4 or 16 per reference).
`ipadapter_core/attention.py` does it like this: per layer, the image K/V of every prompt and reference with the
same token count are fused into one table laid out per head, with the layer, reference and frame weights and the
1/√d scale folded in, built on the first step and cached per batch layout. A call is then, for each batch row: one
`bmm` of q (viewed per head, not copied) against all image keys, one softmax per reference (four elementwise passes
on CPU for rows shorter than 16, where torch's softmax kernel is slow), masks multiplied into the probabilities,
and one `baddbmm` accumulating into the text attention's output through a strided per-head view. The number of
adapters and references changes the width of those two matmuls, not the number of passes over q and the output.

What is left is bounded by memory traffic, not arithmetic: the matmuls have inner sizes of 4–16 image tokens and a
head size of 40–160, so each call streams q once and the output twice (batch × tokens × width floats each) for
very little compute; the profile columns above show the added time split between the two matmuls (`bmm`, and
`addmm_`, which the accumulating `baddbmm_` becomes on the strided output), the softmax passes (`amax`, `sum`,
`exp_`, `div_`; `mul` with masks) and, at small latents, the per-row view ops (`select`). Going lower would need a
kernel that fuses the image term into the text attention itself (one read of q, one write of the output), which
ComfyUI's pluggable attention functions do not let a patch do.

## History

Before the fused path (the attention code of commit 8a7025b, run 2026-11-23 on this machine with this script):
one attn2 call cost 1.90× the plain call for 1 base adapter, 1.55× for 1 plus adapter, 3.93× for 4 adapters,
2.85× for 4 masked references and 1.70× for FaceID Plus v2 (SD1.5, q (2, 1024, 320)); SDXL 1.63×, 1.62×, 3.29×,
2.50×, 1.65× (q (2, 64, 640)). Inside a whole SD1.5 step the image attention took 26, 21, 89, 58 and 27 ms
(0.7%, 0.5%, 2.2%, 1.5%, 0.7% of the step); whole-step ratios were 1.021×, 1.012×, 1.016×, 1.012×, 1.015× (SD1.5)
and 1.002×, 1.018×, 1.007×, 1.025×, 1.012× (SDXL), all within the targets already. The old code ran each prompt
separately: it copied q into a per-head layout, ran torch's softmax on rows of 4 tokens, and transposed and added
the output, once per prompt.

SD3.5 (InstantX SD3.5-Large-IP-Adapter), first measured 2026-11-30 08:28 by `--arch sd35` with the pack's first
SD3.5 patch (`ipadapter_core/families/sd3.py`, uncommitted on 7b62605): one real-width joint block at 1024×1024 px
(4096 image tokens) cost 1.248× the plain block with torch SDPA as its attention, against the 1.215× multiply-add
floor of the release's second attention over the image tokens; 1.087× at 512×512 px (floor 1.068×). The image
attention was 2.73 s of the 2.82 s each block added; the resampler 0.48 s once per model call.

InstantID (SDXL), first measured 2026-11-30 09:04 by `--arch sdxl` with the pack's first InstantID nodes
(`nodes/instantid.py` of f73c9cc, on 3730d03): one step at a 16×16 latent with a real-size IdentityNet, the identity
tokens' attention made it 1.005× (0.995–1.025) the plain UNet's step with the same IdentityNet (target ≤ 1.05×; the
patch's own work 23 ms of a 5.0 s step), and InstantID as a whole cost 0.959× the plain UNet with a plain ControlNet
on the text (IdentityNet projects 16 identity tokens instead of 77 text tokens).

PuLID (SDXL and Flux), first measured 2026-11-30 by `--arch sdxl --cases pulid` (09:40, while a test suite shared the
machine: load average 3) and `--arch flux --cases pulid` (09:48, load average 1.0) with the pack's first PuLID code
(`ipadapter_core` of 6e38490, unchanged at 71f8024): on SDXL at a 16×16 latent a step with the identity tokens cost
1.021× (fidelity: ortho_v2, 10 + 8 sink tokens) and 1.019× (style: ortho, 10 + 16) the plain step (target ≤ 1.05×),
the patch's own work 68 and 43 ms of a 3.6 s step; one attn2 call cost 2.21× and 1.80× the plain call (1.35–1.41× for
the IP-Adapter rows): the PuLID term is computed apart from the fused image attention and projected against the text
output, and fidelity adds a second float32 softmax over the identity tokens for its identity mass. On Flux, PuLID's
cross-attention after a real-width block took 189 ms at 1024 image tokens (13.3 G multiply-adds): 1.073× a double
block and 1.069× a single block by the interleaved ratios, 1.067× and 1.066× by the instrumented time (target ≤
1.15×); for a whole Flux step (20 cross-attentions over 57 blocks) about 1.023×. The one-off ID encoding of one face
took 3.6 s (SDXL) and 4.2 s (Flux) of CPU on one thread after InsightFace, 2.9 s of it the EVA02-CLIP-L-14-336 tower.
"""
    body = [head]
    for arch in SECTION_ORDER:
        if arch in sections:
            body.append(sections[arch])
    body += [bounds]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(body) + "\n")


def log(msg):
    t0 = float(os.environ.get("IPAKIT_BENCH_T0", time.time()))
    print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)


def worker():
    """One phase (the CLIP encode, or one arch) in its own process, so that each starts with the memory free."""
    torch.set_flush_denormal(True)
    paths.register_model_folders()
    tmp = tempfile.mkdtemp(prefix="ipakit-bench-")
    try:
        if ARGS.worker == "clip":
            result = encode_cost(log)
        elif ARGS.worker == "flux":
            result = bench_flux.run_flux(sys.modules[__name__], tmp, log)
        elif ARGS.worker == "sd35":
            result = bench_sd3.run_sd3(sys.modules[__name__], tmp, log)
        elif ARGS.worker == "sdxl_instantid":
            result = bench_instantid.run_instantid(sys.modules[__name__], tmp, log,
                                                   ARGS.size or (64 if DEVICE.type == "cuda" else DEFAULT_SIZE["sdxl"]))
        elif ARGS.worker == "sdxl_pulid":
            result = bench_pulid.run_sdxl(sys.modules[__name__], tmp, log,
                                          ARGS.size or (64 if DEVICE.type == "cuda" else DEFAULT_SIZE["sdxl"]))
        elif ARGS.worker == "flux_pulid":
            result = bench_pulid.run_flux(sys.modules[__name__], tmp, log)
        elif ARGS.worker == "pulid_encode":
            result = bench_pulid.run_encode(sys.modules[__name__], tmp, log)
        else:
            size = ARGS.size or (64 if DEVICE.type == "cuda" else DEFAULT_SIZE[ARGS.worker])
            result = run_arch(ARGS.worker, size, tmp, log)
            result.update(device=ARGS.device.upper(), dtype=str(DTYPE).replace("torch.", ""), clock=CLOCK.what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(ARGS.result, "w") as f:
        json.dump(result, f)


def main():
    if ARGS.worker:
        return worker()
    started = time.time()
    os.environ["IPAKIT_BENCH_T0"] = str(started)
    info = machine()
    info["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    log(f"{info['cpu']}, {info['cores']} cores; torch {info['torch']}, ComfyUI {info['comfyui']}; device "
        f"{ARGS.device} {str(DTYPE).replace('torch.', '')}; attention: "
        f"{comfy.ldm.modules.attention.optimized_attention.__name__}")
    wanted = list(PHASES[ARGS.arch])
    partial = set(wanted) != set(PHASES["all"])
    cases = {c.strip() for c in ARGS.cases.split(",") if c.strip()}
    for sub, (parent, case) in SUBPHASES.items():  # sub-phases: their own processes after their parent phase
        if parent in wanted and case in cases:
            at = wanted.index(parent) + 1
            while at < len(wanted) and wanted[at] in SUBPHASES:
                at += 1
            wanted.insert(at, sub)
    if not cases - SUB_CASES:  # --cases instantid / pulid: no adapter cases to run in the UNet (and Flux) phases
        skip = {"sd15", "sdxl"} | ({"flux"} if "pulid" in cases else set())
        wanted = [p for p in wanted if p not in skip]
        partial = True
    unet = any(p in ("sd15", "sdxl") for p in wanted)  # the CLIP encode figure is quoted in their sections
    pulid = any(p in ("sdxl_pulid", "flux_pulid") for p in wanted)  # PuLID's ID encoding, quoted in theirs
    phases = ([] if ARGS.no_clip or not unet else ["clip"]) + \
        ([] if ARGS.no_id_encode or not pulid else ["pulid_encode"]) + wanted
    results, clip, id_encode, failed = [], None, None, []
    with tempfile.TemporaryDirectory(prefix="ipakit-bench-") as tmp:
        for phase in phases:
            path = os.path.join(tmp, f"{phase}.json")
            done = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--worker", phase,
                                   "--result", path])
            if done.returncode != 0 or not os.path.exists(path):
                log(f"phase {phase} failed (exit status {done.returncode})")
                failed.append(phase)
                continue
            with open(path) as f:
                result = json.load(f)
            if phase == "clip":
                clip = result
            elif phase == "pulid_encode":
                id_encode = result
            else:
                results.append(result)
    for r in results:
        if clip and r["arch"] in ("sd15", "sdxl"):
            r["encode"] = clip
        if id_encode and r["arch"] in ("sdxl_pulid", "flux_pulid"):
            r["id_encode"] = id_encode
    for sub, (parent, _) in SUBPHASES.items():  # a sub-phase goes into its parent's section
        p = next((r for r in results if r["arch"] == parent), None)
        s = next((r for r in results if r["arch"] == sub), None)
        if p and s:
            p.setdefault("subs", {})[sub] = s
            results.remove(s)
    elapsed = time.time() - started
    sections = "\n\n".join(section_for(r) for r in results)
    print("\n" + sections.replace("<!-- ", "").replace(" -->", ""))
    if ARGS.out != "-" and results:
        write_doc(pathlib.Path(ARGS.out), results, info, elapsed, partial=partial)
        log(f"wrote {ARGS.out}")
    log(f"done in {elapsed / 60:.1f} minutes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
