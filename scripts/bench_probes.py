"""What `make bench` measures: real-size UNets and adapter files (random weights), the cases applied through the
pack's apply path, the whole-step and single-attn2-call timings, the counters around the pack's code (K/V
projections, host reads) and the patch's own figures (its public cache_bytes / cache_entries accessors).

Nothing runs at import; import it after bench_harness.prepare_host (ComfyUI reads its device flag when
comfy.model_management is first imported). install_probes() puts the counters in place.
"""
import contextlib
import datetime
import gc
import os
import pathlib
import sys
import time

import torch
from safetensors.torch import save_file

import bench_harness as harness
import comfy.clip_vision
import comfy.ldm.modules.attention
import comfy.model_patcher
import comfy.supported_models
import folder_paths
from bench_harness import loadavg, rss_gb, threads, time_model, wall
from ipadapter_kit.ipadapter_core import attention as core_attention
from ipadapter_kit.ipadapter_core import embeds as core_embeds
from ipadapter_kit.nodes import clip_encode, model_cache, patching
from tinymodels import ipadapter_files  # tencent-layout shapes of image_proj
from tinymodels.weights import init_module, random_tensors

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
    """ip_adapter.* shapes of a real-size release for this UNet."""
    return ipadapter_files.ip_adapter_shapes(cross_attn_widths(arch), UNETS[arch]["context_dim"], lora_rank)


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


# ---------------------------------------------------------------------------------------------------- counters

PROBES = None  # the Probes in place (install_probes)


class Probes:
    """Counters around the pack's code: K/V projections (attention.scaled_kv) and host syncs."""

    SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero")

    def __init__(self):
        self.projections = 0
        self.syncs = {}

    def install(self):
        """Count the calls of attention.scaled_kv (the patches look the name up in their module at call time)."""
        real = core_attention.scaled_kv

        def counting_scaled_kv(*a, **kw):
            self.projections += 1
            return real(*a, **kw)

        core_attention.scaled_kv = counting_scaled_kv

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
        """Seconds spent projecting image K/V (attention.scaled_kv: the patches project while they build their
        tables, in the first call of each batch layout) while the block runs; cls is not needed any more."""
        real = core_attention.scaled_kv
        spent = [0.0]

        def timed(*a, **kw):
            cuda = harness.DEVICE.type == "cuda"
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = real(*a, **kw)
            if cuda:
                torch.cuda.synchronize()
            spent[0] += time.perf_counter() - t0
            return out

        core_attention.scaled_kv = timed
        try:
            yield spent
        finally:
            core_attention.scaled_kv = real

    def sync_total(self):
        return sum(self.syncs.values())


def install_probes():
    """Put the counters around the pack's code (once per process) and return them."""
    global PROBES
    if PROBES is None:
        PROBES = Probes()
        PROBES.install()
    return PROBES


# ---------------------------------------------------------------------------------------------------- models

def build_unet(arch):
    cfg = dict(UNETS[arch])
    conf = (comfy.supported_models.SD15 if arch == "sd15" else comfy.supported_models.SDXL)(cfg)
    conf.unet_config = cfg
    if harness.DTYPE != torch.float32:
        conf.set_inference_dtype(harness.DTYPE, None)
    model = conf.get_model({}, device="cpu")
    init_module(model.diffusion_model, seed=0)  # ComfyUI builds its layers uninitialised
    model.eval()
    if harness.DEVICE.type != "cpu":
        model.to(harness.DEVICE)
    return comfy.model_patcher.ModelPatcher(model, load_device=harness.DEVICE, offload_device=torch.device("cpu"))


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


def our_patch(patcher):
    attn2 = patcher.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    return next((p for p in attn2.values() if isinstance(p, core_attention.IPAdapterPatch)), None)


def cache_bytes(patch):
    """What the patch keeps between calls (image K/V tables, resized masks), by its own accessor."""
    return patch.cache_bytes()


def cache_entries(patch):
    return patch.cache_entries()


def kv_once_bytes(patch, dtype):
    """One copy of the patch's image K/V: K and V of cond and uncond, for every prompt on every layer it acts on."""
    size = torch.empty((), dtype=dtype).element_size()
    return sum(2 * 2 * prompt.references * prompt.cond.shape[1] * prompt.weights.kv_projection(layer).k_weight.shape[0]
               * size for prompt in patch.prompts for layer in prompt.active_layers())



# ---------------------------------------------------------------------------------------------------- cases

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
            raise SystemExit(f"unknown case {case!r}; choose from {', '.join(harness.CASES)}")
        patched, seconds, _ = wall(fn)
        out[case] = (patched, seconds)
    return out


class Forward:
    """The sampler's model call for one conditioning batch: uncond + cond stacked (batch 2)."""

    def __init__(self, base, arch, size):
        self.model = base.model
        g = torch.Generator().manual_seed(5)
        ctx = UNETS[arch]["context_dim"]
        self.x = torch.randn(2, 4, size, size, generator=g).to(harness.DEVICE, harness.DTYPE)
        self.context = torch.randn(2, 77, ctx, generator=g).to(harness.DEVICE, harness.DTYPE)
        self.extra = {"y": torch.randn(2, 2816, generator=g).to(harness.DEVICE, harness.DTYPE)} if arch == "sdxl" else {}
        sampling = base.get_model_object("model_sampling")
        hi, lo = float(sampling.sigma_max), float(sampling.sigma_min)
        self.sigmas = [hi * (lo / hi) ** (i / 20) for i in range(21)]  # a 20-step schedule, log-spaced

    def __call__(self, patcher, step=0):
        sigma = torch.full((2,), self.sigmas[step % len(self.sigmas)], device=harness.DEVICE)
        options = dict(patcher.model_options["transformer_options"])  # what calc_cond_batch passes, shallow copy
        options["cond_or_uncond"] = [1, 0]
        options["sigmas"] = sigma
        with torch.inference_mode():  # as ComfyUI's executor runs a prompt
            return self.model.apply_model(self.x, sigma, c_crossattn=self.context, transformer_options=options,
                                          **self.extra)


def attn2_level1(arch, size, patched, base_options):
    """One attn2 call: the installed patch vs ComfyUI's optimized_attention on the same q/k/v."""
    (block, index) = FIRST_KEY[arch]
    width = cross_attn_widths(arch)[0]
    heads = width // 64 if UNETS[arch]["num_heads"] == -1 else UNETS[arch]["num_heads"]
    tokens = (size // (1 if arch == "sd15" else 2)) ** 2
    g = torch.Generator().manual_seed(9)
    q = torch.randn(2, tokens, width, generator=g).to(harness.DEVICE, harness.DTYPE)
    k = torch.randn(2, 77, width, generator=g).to(harness.DEVICE, harness.DTYPE)
    v = torch.randn(2, 77, width, generator=g).to(harness.DEVICE, harness.DTYPE)
    attention = comfy.ldm.modules.attention.optimized_attention

    def options(patcher):
        extra = dict(patcher.model_options["transformer_options"])
        extra.pop("patches_replace", None)
        extra.update({"block": block, "block_index": index, "n_heads": heads, "dim_head": width // heads,
                      "attn_precision": None, "original_shape": [2, 4, size, size], "cond_or_uncond": [1, 0],
                      "transformer_index": 0, "sigmas": torch.full((2,), 1.0, device=harness.DEVICE),
                      "activations_shape": [2, width, size, size]})
        return extra

    plain_options = options(base_options)

    def plain():
        return attention(q, k, v, heads, attn_precision=None, transformer_options=plain_options)

    with torch.inference_mode():  # as ComfyUI's executor runs a prompt
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
            for i in range(harness.ARGS.l1_pairs):
                if i % 2 == 0:
                    a = harness.CLOCK.measure(repeat(plain))
                    b = harness.CLOCK.measure(repeat(call))
                else:
                    b = harness.CLOCK.measure(repeat(call))
                    a = harness.CLOCK.measure(repeat(plain))
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

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if harness.DEVICE.type == "cuda" else [])
    with quiet_stderr(), profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        if harness.DEVICE.type == "cuda":
            torch.cuda.synchronize()
    attr = "self_device_time_total" if harness.DEVICE.type == "cuda" else "self_cpu_time_total"
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
    if harness.DEVICE.type == "cpu":
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
        step_s = harness.CLOCK.measure(lambda: forward(patcher, step))
    finally:
        cls.__call__, patch.attention = real_call, real_attention
    return {"image_s": spent["patch"] - spent["attention"], "step_s": step_s, "calls": spent["calls"]}


def run_arch(arch, size, tmp, log):
    name = harness.ARCH_NAMES[arch]
    result = {"arch": arch, "size": size, "pairs": harness.ARGS.pairs, "date": datetime.date.today().isoformat()}
    wanted = [c.strip() for c in harness.ARGS.cases.split(",") if c.strip() and c.strip() not in harness.SUB_CASES]
    need = {"base"} if {"base", "four", "masked"} & set(wanted) else set()
    need |= {c for c in ("plus", "faceid") if c in wanted}

    threads(harness.SETUP_THREADS)
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
        threads(harness.SETUP_THREADS)
        size_bytes = write_adapter(folder, fname, proj, ip, seed=100 + 10 * i)
        gc.collect()
        threads(harness.ARGS.threads)
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
        log(f"[{name}] loaded {fname}: file {size_bytes / harness.MB:.0f} MB, weights in memory "
            f"{loads[kind]['weights_bytes'] / harness.MB:.0f} MB ({loads[kind]['dtype']}), {seconds:.2f} s; "
            f"RSS {rss_gb()}")
    result["loads"] = loads

    threads(harness.ARGS.threads)
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
                   "sync_detail": dict(PROBES.syncs), "first_s": cpu if harness.DEVICE.type == "cpu" else seconds,
                   "kv_s": kv_time[0],
                   "cache_bytes": cache_bytes(patch), "cache_entries": cache_entries(patch),
                   "kv_once_bytes": kv_once_bytes(patch, harness.DTYPE),
                   "layers": len(patch.keys()), "prompts": len(patch.prompts)}
    result["cold"] = cold
    result["unpatched_syncs"] = unpatched_syncs

    log(f"[{name}] timing {harness.ARGS.pairs} rounds at latent {size}x{size}, batch 2 ...")
    PROBES.projections = 0
    load = [loadavg()]
    timed = time_model(forward, base, patched, harness.ARGS.pairs, log)
    result["load"] = load + [loadavg()]
    result["timed"] = timed
    log(f"[{name}] one instrumented forward per case (time inside the patch beyond ComfyUI's attention) ...")
    result["inside"] = {c: image_time_in_step(forward, p, harness.ARGS.pairs + 1) for c, p in patched.items()}
    result["steady_projections"] = PROBES.projections
    result["cache_after"] = {c: cache_entries(our_patch(p)) for c, p in patched.items()}

    result["attention"] = comfy.ldm.modules.attention.optimized_attention.__name__
    result["l1_pairs"] = harness.ARGS.l1_pairs
    result["sync_methods"] = list(Probes.SYNC_METHODS)
    log(f"[{name}] level 1: one attn2 call ...")
    result["l1"], result["l1_shape"], result["l1_key"] = attn2_level1(arch, size, patched, base)

    return result


def encode_cost(log):
    """One reference through a real-size CLIP ViT-H (the pack's clip_encode.encode), once."""
    threads(harness.SETUP_THREADS)
    log("[CLIP] building a real-size CLIP ViT-H/14 (random weights) ...")
    clip = clip_vision_h()
    params = sum(p.numel() for p in clip.model.parameters())
    threads(harness.ARGS.threads)
    image = torch.rand(1, 512, 512, 3, generator=torch.Generator().manual_seed(1))
    _, seconds, cpu = wall(lambda: clip_encode.encode(clip, image, "penultimate_hidden_states"))
    dtype = str(next(clip.model.parameters()).dtype).replace("torch.", "")
    log(f"[CLIP] encode of one reference: {seconds:.2f} s wall, {cpu:.2f} s CPU ({params / 1e6:.0f}M parameters, "
        f"{dtype})")
    return {"seconds": seconds, "cpu": cpu, "params": params, "dtype": dtype}
