"""The SD3.5 phase of `make bench` (scripts/bench.py --arch sd35): one real-width SD3.5 Large joint block, ComfyUI's
own class with random weights, called plain and through the pack's installed dit block replace for InstantX's
SD3.5-Large IP-Adapter (written at real size in the released layout, loaded by the pack's loader).

Imported by scripts/bench.py, which passes `bench` (its namespace()): the clock, probes, argument values and helpers are
the same as for the other phases.
"""
import contextlib
import gc
import math
import os
import pathlib
import statistics
import time
import types

import torch

import comfy.ldm.modules.attention
import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.ops
import folder_paths
from bench_harness import timed_into  # scripts/, next to this file

HIDDEN, HEADS, MLP_RATIO = 2432, 38, 4.0  # SD3.5 Large: depth 38, hidden 64 x 38, qkv bias, RMS QK-norm
HEAD_DIM = HIDDEN // HEADS
BLOCKS = 38
SIGLIP, SIGLIP_TOKENS = 1152, 729  # SigLIP so400m-patch14-384 penultimate hidden states
DIM, R_HEADS, DEPTH, QUERIES, FF_MULT, TIMESTEP_IN = 1280, 20, 4, 64, 4, 320  # the release's TimeResampler
FILE = "ip-adapter.bin"  # InstantX's name for it
TARGET = 1.15  # block level, from the issue
SHIFT = 3.0  # SD3's flow shift (ComfyUI's ModelSamplingDiscreteFlow for SD3 / SD3.5)
SIGMA = 0.9  # the timed steady state: timesteps 1000 x sigma, as record_step notes them
LAYER = 1  # timed key ("double_block", 1): a block after the first of a call, whose tokens are already made
MIN_ROUNDS = 3
# ComfyUI's CPU default attention (what it picks without --use-pytorch-cross-attention), then torch's SDPA
# (ComfyUI's attention_pytorch: its default on CUDA)
BACKENDS = {"sub_quad": "attention_sub_quad", "pytorch": "attention_pytorch"}
BACKEND_NAMES = {"sub_quad": "`attention_sub_quad` (ComfyUI's CPU default)",
                 "pytorch": "`attention_pytorch` (torch SDPA; ComfyUI's default on CUDA)"}
# Measured once with this script at the other image-token count (`--sd3-tokens`), quoted in the section: 1 thread,
# CPU float32, 154 text tokens, batch 2. {tokens: {backend: (median ratio, min, max, plain s, rounds, plain system s),
# "resampler": its median ratio to a plain block (attention_pytorch), "date"}}
MEASURED = {
    1024: {"date": "2026-11-30", "pytorch": (1.087, 1.078, 1.108, 2.57, 9, 0.00),
           "sub_quad": (1.083, 1.069, 1.090, 2.98, 9, 0.31), "resampler": 0.194},
    4096: {"date": "2026-11-30", "pytorch": (1.250, 1.249, 1.260, 11.72, 3, 0.51),
           "sub_quad": (1.013, 0.951, 1.065, 24.55, 3, 12.09), "resampler": 0.043},
}


# ---------------------------------------------------------------------------------------------------- files

POOL = 1 << 24  # random normals drawn once; tensors are filled from it at random offsets


def image_proj_shapes():
    """The released TimeResampler keys at real size (tests/tinymodels/sd3_adapter_files.py, REAL)."""
    d, inner, ff = DIM, R_HEADS * 64, DIM * FF_MULT
    shapes = {"latents": (1, QUERIES, d), "proj_in.weight": (d, SIGLIP), "proj_in.bias": (d,),
              "proj_out.weight": (HIDDEN, d), "proj_out.bias": (HIDDEN,),
              "norm_out.weight": (HIDDEN,), "norm_out.bias": (HIDDEN,),
              "time_embedding.linear_1.weight": (d, TIMESTEP_IN), "time_embedding.linear_1.bias": (d,),
              "time_embedding.linear_2.weight": (d, d), "time_embedding.linear_2.bias": (d,)}
    from tinymodels.weights import perceiver_layer_shapes
    for i in range(DEPTH):  # each layer's keys, then its timestep-conditioned shift/scale
        shapes.update(perceiver_layer_shapes(1, d, inner, ff, first=i))
        shapes.update({f"layers.{i}.2.1.weight": (4 * d, d), f"layers.{i}.2.1.bias": (4 * d,)})
    return shapes


def ip_adapter_shapes():
    shapes = {}
    for n in range(BLOCKS):
        shapes.update({f"{n}.norm_ip.linear.weight": (2 * HIDDEN, DIM), f"{n}.norm_ip.linear.bias": (2 * HIDDEN,),
                       f"{n}.to_k_ip.weight": (HIDDEN, HIDDEN), f"{n}.to_v_ip.weight": (HIDDEN, HIDDEN)})
        for norm in ("norm_q", "norm_k", "norm_ip_k"):
            shapes[f"{n}.{norm}.weight"] = (HEAD_DIM,)
    return shapes


def _is_norm_scale(key):
    return key.endswith(("norm_q.weight", "norm_k.weight", "norm_ip_k.weight", "norm_out.weight", "norm1.weight",
                         "norm2.weight", ".1.0.weight"))


def _random(shape, gen, key, pool):
    """Release-like values in fp16: norm scales 1 + small noise, biases small, matrices N(0, 1/fan_in)."""
    flat = torch.empty(math.prod(shape), dtype=torch.float16)
    for start in range(0, flat.numel(), POOL):
        count = min(POOL, flat.numel() - start)
        offset = int(torch.randint(POOL, (1,), generator=gen))
        flat[start:start + count] = pool[offset:offset + count]
    if len(shape) == 1:
        return flat.mul_(0.1).add_(1.0) if _is_norm_scale(key) else flat.mul_(0.02)
    return flat.mul_(1.0 / math.sqrt(shape[-1])).view(shape)


def write_file(folder):
    """(file name, bytes): torch.save of {"image_proj": ..., "ip_adapter": ...} in fp16 at the released shapes."""
    gen = torch.Generator().manual_seed(300)
    pool = torch.randn(POOL, generator=gen).half().repeat(2)  # twice, so that any offset has POOL values after it
    nested = {"image_proj": {k: _random(s, gen, k, pool) for k, s in image_proj_shapes().items()},
              "ip_adapter": {k: _random(s, gen, k, pool) for k, s in ip_adapter_shapes().items()}}
    path = pathlib.Path(folder) / FILE
    torch.save(nested, str(path))
    del nested
    gc.collect()
    return FILE, path.stat().st_size


# ---------------------------------------------------------------------------------------------------- model

def build_block(bench):
    """ComfyUI's JointBlock as MMDiT builds SD3.5 Large's blocks 0..36 (not the last, pre_only one)."""
    block = mmdit.JointBlock(HIDDEN, HEADS, mlp_ratio=MLP_RATIO, qkv_bias=True, attn_mode="torch", pre_only=False,
                             rmsnorm=False, scale_mod_only=False, swiglu=False, qk_norm="rms",
                             x_block_self_attn=False, operations=comfy.ops.disable_weight_init)
    bench.init_module(block, seed=4)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # the QK-norm scales random, as trained ones are (the patch divides by them)
        for name, p in block.named_parameters():
            if ".ln_" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
    return block.eval().requires_grad_(False).to(bench.DEVICE, bench.DTYPE)


class SD3Shell(torch.nn.Module):
    """What the pack sees of an SD3.5 Large MMDiT: 38 joint blocks (the real one, repeated) and x_embedder. Enough for
    patching.apply_embeds (family recognition, width checks, install); never run as a whole."""

    def __init__(self, block):
        super().__init__()
        self.joint_blocks = torch.nn.ModuleList([block] * BLOCKS)
        self.x_embedder = torch.nn.Linear(64, HIDDEN, device="meta")


def shell_patcher(bench, block):
    outer = torch.nn.Module()
    outer.diffusion_model = SD3Shell(block)
    return comfy.model_patcher.ModelPatcher(outer, load_device=bench.DEVICE, offload_device=torch.device("cpu"),
                                            size=bench.param_bytes(block))


def installed_patch(patcher):
    from ipadapter_kit.ipadapter_core.families import sd3

    dit = patcher.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    return next(h.patch for h in dit.values() if isinstance(h, sd3.JointBlockHook))


class Inputs:
    """One joint block's inputs as MMDiT's forward passes them: batch 2 (cond, uncond), text then image tokens."""

    def __init__(self, bench, text, image_tokens):
        side = max(1, round(math.sqrt(image_tokens)))
        self.grid = (side, image_tokens // side)
        self.text, self.image = text, self.grid[0] * self.grid[1]
        self.latent = (2 * self.grid[0], 2 * self.grid[1])  # patch size 2
        g = torch.Generator().manual_seed(7)
        dev, dt = bench.DEVICE, bench.DTYPE
        self.txt = torch.randn(2, text, HIDDEN, generator=g).to(dev, dt)
        self.img = torch.randn(2, self.image, HIDDEN, generator=g).to(dev, dt)
        self.vec = torch.randn(2, HIDDEN, generator=g).to(dev, dt)  # c_mod
        self.sigmas = torch.full((2,), SIGMA, device=dev)
        self.embeds = torch.randn(1, SIGLIP_TOKENS, SIGLIP, generator=g)  # one reference's SigLIP hidden states

    def options(self, step):
        from ipadapter_kit.ipadapter_core.families import sd3

        return {sd3.STEP_KEY: step, "cond_or_uncond": [1, 0], "sigmas": self.sigmas}

    def fresh_step(self):
        """The StepState record_step writes at the start of a model call (no tokens yet)."""
        from ipadapter_kit.ipadapter_core.families import sd3

        return sd3.StepState(self.sigmas.float() * 1000, self.latent)


def block_calls(inputs, block):
    """(plain(), patched(patch, step, layer), original): the block as MMDiT runs it without a replace, and through one."""

    def original(args):  # MMDiT.forward_core_with_concat's block_wrap (JointBlock's default use_checkpoint=True)
        out = {}
        out["txt"], out["img"] = block(args["txt"], args["img"], c=args["vec"],
                                       transformer_options=args["transformer_options"])
        return out

    def plain():
        with torch.no_grad():  # as MMDiT calls a block without a replace (its use_checkpoint is False)
            return block(inputs.txt, inputs.img, c=inputs.vec, use_checkpoint=False,
                         transformer_options={"cond_or_uncond": [1, 0], "sigmas": inputs.sigmas})

    def patched(patch, step, layer=LAYER, orig=original):
        with torch.no_grad():
            return patch.replace_for(("double_block", layer))(
                {"img": inputs.img, "txt": inputs.txt, "vec": inputs.vec,
                 "transformer_options": inputs.options(step)}, {"original_block": orig})

    return plain, patched, original


def sub_quad_chunk(free, batch_heads, k_tokens, bytes_per=4):
    """The query chunk attention_sub_quad picks for this much free memory (its own loop; 512 when none fits)."""
    for x in (4096, 2048, 1024, 512, 256):
        if free / (batch_heads * bytes_per * x * 4.0) >= k_tokens:
            return x
    return 512


@contextlib.contextmanager
def backend(name, device):
    """MMDiT's attention function for the block (mmdit looks `optimized_attention` up at call time). For
    attention_sub_quad, the free memory it reads to size its query chunks is pinned to the value at entry (yielded),
    so that plain and patched calls chunk alike: on this machine the free memory moves around its thresholds, and a
    4096-query chunk (one 5 GB score buffer at 4096 image tokens) costs seconds of page faults more than 2048."""
    saved, saved_free = mmdit.optimized_attention, comfy.model_management.get_free_memory
    mmdit.optimized_attention = getattr(comfy.ldm.modules.attention, BACKENDS[name])
    free = None
    if name == "sub_quad":
        free = saved_free(device, True)[0]
        comfy.model_management.get_free_memory = (
            lambda dev=None, torch_free_too=False: (free, free) if torch_free_too else free)
    try:
        yield free
    finally:
        mmdit.optimized_attention, comfy.model_management.get_free_memory = saved, saved_free


# ---------------------------------------------------------------------------------------------------- probes

@contextlib.contextmanager
def count_resampler():
    """Calls of the TimeResampler's forward while the block runs."""
    from ipadapter_kit.ipadapter_core import projections

    calls = [0]
    real = projections.TimeResampler.forward

    def counting(self, *a, **kw):
        calls[0] += 1
        return real(self, *a, **kw)

    projections.TimeResampler.forward = counting
    try:
        yield calls
    finally:
        projections.TimeResampler.forward = real


@contextlib.contextmanager
def parts_timer(patch, clock):
    """Timers around the patch's steps: yields (spent, timed); spent {step: seconds} fills while the patch runs,
    timed(name, fn) wraps more. A few clock reads per block call (microseconds against seconds)."""
    from ipadapter_kit.ipadapter_core.families import sd3

    spent = {}
    real_image, real_override = patch.add_image_terms, patch.attention_override
    real_kv, real_sdpa = sd3.JointBlockAdapter.image_kv, sd3.joint_image_attention

    def timed(name, fn):
        return timed_into(spent, name, fn, clock)

    def override(*a, **kw):
        options = real_override(*a, **kw)
        inner = options["optimized_attention_override"]

        def outer(func, *fa, **fkw):
            t0 = clock()
            out = inner(timed("attention", func), *fa, **fkw)
            spent["override"] = spent.get("override", 0.0) + clock() - t0
            return out

        return dict(options, optimized_attention_override=outer)

    patch.add_image_terms, patch.attention_override = timed("image", real_image), override
    sd3.JointBlockAdapter.image_kv = timed("kv", real_kv)
    sd3.joint_image_attention = timed("sdpa", real_sdpa)
    try:
        yield spent, timed
    finally:
        del patch.add_image_terms, patch.attention_override  # back to the class's methods
        sd3.JointBlockAdapter.image_kv, sd3.joint_image_attention = real_kv, real_sdpa


def record_step_reads(bench, inputs):
    """Host reads of the APPLY_MODEL wrapper (record_step) around a stub model call, and whether it noted the step."""
    from ipadapter_kit.ipadapter_core.families import sd3

    sampling = comfy.model_sampling.ModelSamplingDiscreteFlow()
    sampling.set_parameters(shift=SHIFT)
    seen = {}

    class Executor:  # what ComfyUI's WrapperExecutor offers a wrapper: class_obj (the BaseModel) and the call
        class_obj = types.SimpleNamespace(model_sampling=sampling)

        def __call__(self, x, sigma, *a, **kw):
            seen["step"] = kw["transformer_options"].get(sd3.STEP_KEY)

    x = torch.zeros(2, 16, *inputs.latent, device=bench.DEVICE)
    with bench.PROBES.count_syncs():
        sd3.record_step(Executor(), x, inputs.sigmas, transformer_options={})
    reads = bench.PROBES.sync_total()
    step = seen.get("step")
    ok = isinstance(step, sd3.StepState) and tuple(step.latent) == tuple(inputs.latent) and torch.allclose(
        step.timesteps.cpu(), inputs.sigmas.cpu() * 1000)
    return reads, bool(ok)


# ---------------------------------------------------------------------------------------------------- timing

def backends_of(args):
    names = [b.strip() for b in args.sd3_attention.split(",") if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown or not names:
        raise SystemExit(f"--sd3-attention: {', '.join(unknown) or 'none given'}; choose from {', '.join(BACKENDS)}")
    return names


def rounds_for(args, round_s):
    """Timed rounds that fit the time budget (--sd3-budget, shared by the attention backends), at least MIN_ROUNDS,
    at most --pairs."""
    share = args.sd3_budget / len(backends_of(args))
    return max(MIN_ROUNDS, min(args.pairs, int(share / max(round_s, 1e-6))))


def interleaved(bench, plain, cases, rounds_of, log):
    """Rounds of: plain, every case (order rotated), plain; each case over the mean of the plain calls around it.
    The first plain call decides the number of rounds (rounds_of(seconds))."""
    system = {}

    def clock(name, fn):  # the bench's clock; and the kernel's share of it (page faults), from os.times
        t0 = os.times().system
        t = bench.CLOCK.measure(fn)
        system.setdefault(name, []).append(os.times().system - t0)
        return t

    names = list(cases)
    a = [clock("plain", plain)]
    rounds = rounds_of(a[0])
    log(f"  first plain call {a[0]:.2f} s: {rounds} rounds")
    b = {c: [] for c in names}
    for r in range(rounds):
        for c in names[r % len(names):] + names[:r % len(names)]:
            b[c].append(clock(c, cases[c]))
        a.append(clock("plain", plain))
        log(f"  round {r + 1}/{rounds}: plain {a[-1]:.2f} s (system {system['plain'][-1]:.2f} s), " +
            ", ".join(f"{c} {b[c][-1] / ((a[-2] + a[-1]) / 2):.3f}" for c in names))
    out = {}
    for c in names:
        ratios = [t / ((a[r] + a[r + 1]) / 2) for r, t in enumerate(b[c])]
        out[c] = {"ratios": ratios, "patched_s": statistics.median(b[c]), "unpatched_s": statistics.median(a),
                  "rounds": rounds, "patched_system_s": statistics.median(system[c]),
                  "unpatched_system_s": statistics.median(system["plain"]), "first_plain_s": a[0]}
    return out


# ---------------------------------------------------------------------------------------------------- run

def run_sd3(bench, tmp, log):
    """The SD3.5 phase: returns the result dict the doc writer (section) reads."""
    from ipadapter_kit.nodes import model_cache, patching

    args = bench.ARGS
    started = time.time()
    text = args.sd3_text
    result = {"arch": "sd35", "pairs": args.pairs, "date": bench.datetime.date.today().isoformat(), "text": text,
              "device": args.device.upper(), "dtype": str(bench.DTYPE).replace("torch.", ""),
              "clock": bench.CLOCK.what, "budget": args.sd3_budget,
              "default_attention": comfy.ldm.modules.attention.optimized_attention.__name__}

    bench.threads(bench.SETUP_THREADS)
    folder = pathlib.Path(tmp) / "sd35"
    folder.mkdir()
    folder_paths.add_model_folder_path("ipadapter", str(folder), is_default=True)
    log("[SD3.5] writing a real-size InstantX SD3.5-Large-IP-Adapter file (fp16, random weights) ...")
    (name, size_bytes), seconds, _ = bench.wall(lambda: write_file(folder))
    log(f"[SD3.5] file: {name} {size_bytes / bench.MB:.0f} MB ({seconds:.0f} s); RSS {bench.rss_gb()}")
    bench.threads(args.threads)
    adapter, seconds, cpu = bench.wall(lambda: model_cache.load_adapter(name))
    weights = adapter.weights
    result["load"] = {"file": name, "file_bytes": size_bytes, "seconds": seconds, "cpu": cpu,
                      "weights_bytes": bench.param_bytes(weights),
                      "proj_bytes": bench.param_bytes(weights.image_proj),
                      "dtype": str(next(weights.parameters()).dtype).replace("torch.", ""),
                      "spec": adapter.spec.describe(), "params": sum(p.numel() for p in weights.parameters()),
                      "proj_params": sum(p.numel() for p in weights.image_proj.parameters())}
    (folder / name).unlink()
    gc.collect()
    log(f"[SD3.5] loaded {name}: {result['load']['weights_bytes'] / bench.MB:.0f} MB in memory "
        f"({result['load']['dtype']}), {seconds:.1f} s; {adapter.spec.describe()}; RSS {bench.rss_gb()}")

    bench.threads(bench.SETUP_THREADS)
    log(f"[SD3.5] building one joint block (hidden {HIDDEN}, {HEADS} heads x {HEAD_DIM}, RMS QK-norm) ...")
    block, seconds, _ = bench.wall(lambda: build_block(bench))
    result["block_params"] = sum(p.numel() for p in block.parameters())
    log(f"[SD3.5] block: {result['block_params'] / 1e6:.0f}M parameters ({seconds:.0f} s); RSS {bench.rss_gb()}")

    bench.threads(args.threads)
    inputs = Inputs(bench, text, args.sd3_tokens)
    result["image_tokens"], result["grid"] = inputs.image, inputs.grid
    base = shell_patcher(bench, block)
    clone, seconds, _ = bench.wall(lambda: patching.apply_embeds(base, adapter, inputs.embeds,
                                                                 torch.zeros_like(inputs.embeds)))
    patch = installed_patch(clone)
    result["apply"] = {"seconds": seconds, "keys": len(patch.keys())}
    log(f"[SD3.5] apply_embeds: {seconds:.2f} s (install; the tokens are made per model call), "
        f"{len(patch.keys())} block keys")
    plain, patched, original = block_calls(inputs, block)
    probes = bench.PROBES

    # the first calls: resampler made once per model call, host reads counted (with the cheaper backend)
    blocks_started = time.time()
    log(f"[SD3.5] first calls ({text} text + {inputs.image} image tokens, batch 2, attention_pytorch): host reads "
        "and resampler calls counted ...")
    checks = {}
    with backend("pytorch", bench.DEVICE):
        with probes.count_syncs():
            plain()
        checks["plain_syncs"] = dict(probes.syncs)
        plain_reads = probes.sync_total()
        step = inputs.fresh_step()
        with probes.count_syncs(), count_resampler() as made:
            _, seconds, cpu = bench.wall(lambda: patched(patch, step, layer=0))
        checks["cold"] = {"syncs": probes.sync_total() - plain_reads, "detail": dict(probes.syncs),
                          "resampler": made[0], "first_s": cpu}
        log(f"[SD3.5]   block 0, fresh step: {cpu:.2f} s CPU, resampler calls {made[0]}, host reads "
            f"{checks['cold']['syncs']:+d}")
        with probes.count_syncs(), count_resampler() as made:
            _, seconds, cpu = bench.wall(lambda: patched(patch, step, layer=LAYER))
        checks["warm"] = {"syncs": probes.sync_total() - plain_reads, "detail": dict(probes.syncs),
                          "resampler": made[0], "s": cpu}
        log(f"[SD3.5]   block {LAYER}, same step: {cpu:.2f} s CPU, resampler calls {made[0]}, host reads "
            f"{checks['warm']['syncs']:+d}")
    reads, noted = record_step_reads(bench, inputs)
    checks["record_step"] = {"syncs": reads, "noted": noted}
    result["checks"] = checks

    # the timed rounds: steady-state block (tokens made), the resampler of one model call
    def resampler():
        with torch.no_grad():
            return patch.step_units(0, inputs.fresh_step(), (1, 0), 2, inputs.image)

    timed, load, parts, chunks = {}, {}, {}, {}
    clock = bench.part_clock()
    for name in backends_of(args):
        history = []
        with backend(name, bench.DEVICE) as free, parts_timer(patch, clock) as (spent, timer):
            if free is not None:
                chunks[name] = {"free_gb": free / 1024 ** 3,
                                "chunk": sub_quad_chunk(free, 2 * HEADS, text + inputs.image)}
                log(f"[SD3.5] attention_sub_quad sees {free / 1024 ** 3:.1f} GB free (pinned): query chunks of "
                    f"{chunks[name]['chunk']}")
            timed_original = timer("block", original)

            def patched_call():
                spent.clear()
                t0 = clock()
                out = patched(patch, step, orig=timed_original)
                spent["total"] = clock() - t0
                history.append(dict(spent))
                return out

            before = bench.loadavg()
            log(f"[SD3.5] timing the block with {BACKENDS[name]}: plain, patched, resampler (budget "
                f"{args.sd3_budget / len(backends_of(args)):.0f} s of rounds) ...")
            timed[name] = interleaved(bench, plain, {"patched": patched_call, "resampler": resampler},
                                      lambda s: rounds_for(args, 2.3 * s), lambda m: log(f"[SD3.5] {name}" + m))
            load[name] = (before, bench.loadavg())
        parts[name] = {k: statistics.median(h.get(k, 0.0) for h in history) for k in history[0]}
    result["timed"], result["loadavg"], result["parts"], result["chunks"] = timed, load, parts, chunks
    result["phase_s"] = time.time() - started
    result["blocks_s"] = time.time() - blocks_started
    return result


# ---------------------------------------------------------------------------------------------------- report

def block_cost(text, image):
    """Multiply-adds of one joint block per sequence: linear layers per token (qkv 3H², proj H², mlp 8H² on each
    stream), attention per token pair (QK and PV over the joint sequence), adaLN per sequence."""
    tokens = text + image
    return 12 * HIDDEN * HIDDEN * tokens + 2 * tokens * tokens * HIDDEN + 2 * 6 * HIDDEN * HIDDEN


def image_cost(image):
    """Multiply-adds the adapter adds to one block per sequence: the image queries over N image + 64 adapter keys
    (QK and PV), the 64 tokens' K/V projections and their timestep-modulated norm."""
    return 2 * image * (image + QUERIES) * HIDDEN + QUERIES * 2 * HIDDEN * HIDDEN + DIM * 2 * HIDDEN


def resampler_cost():
    """Multiply-adds of the TimeResampler per reference row (one SigLIP sequence)."""
    inner, kv_tokens = R_HEADS * 64, SIGLIP_TOKENS + QUERIES
    per_layer = (QUERIES * DIM * inner + kv_tokens * DIM * 2 * inner + 2 * QUERIES * kv_tokens * inner
                 + QUERIES * inner * DIM + 2 * QUERIES * DIM * FF_MULT * DIM + DIM * 4 * DIM)
    return SIGLIP_TOKENS * SIGLIP * DIM + DEPTH * per_layer + QUERIES * DIM * HIDDEN + TIMESTEP_IN * DIM + DIM * DIM


def flop_ratio(text, image):
    return 1 + image_cost(image) / block_cost(text, image)


def _ms(seconds):
    return f"{seconds * 1e3:.0f} ms"


def _s(seconds):
    return f"{seconds:.2f} s"


def figures(r):
    """{backend: (median, min, max, plain s, rounds, plain system s, where from)} at this run's token count: the run's
    own, then MEASURED for the backends it did not run."""
    n = r["image_tokens"]
    out = {}
    for name, tm in r["timed"].items():
        p = tm["patched"]
        out[name] = (*bench_summary(p["ratios"]), p["unpatched_s"], p["rounds"], p["unpatched_system_s"], "run")
    for name, m in MEASURED.get(n, {}).items():
        if name in BACKENDS and name not in out:
            out[name] = (*m, f"measured {MEASURED[n]['date']} with `--sd3-attention pytorch,sub_quad`")
    return out


def bench_summary(values):
    return statistics.median(values), min(values), max(values)


def _px(tokens):
    side = 16 * round(math.sqrt(tokens))
    return f"{side}×{side}"


def section(bench, r):
    """The '## SD3.5 Large joint block' section of docs/benchmarks.md, between <!-- bench:sd35 --> markers."""
    n, t = r["image_tokens"], r["text"]
    px = f"{16 * r['grid'][0]}×{16 * r['grid'][1]}"
    ld, checks = r["load"], r["checks"]
    ratio_flops = flop_ratio(t, n)
    att_share = 2 * (t + n) ** 2 * HIDDEN / block_cost(t, n)
    other = {k: v for k, v in MEASURED.items() if k != n}
    fewest = min((tm["patched"] for tm in r["timed"].values()), key=lambda p: p["rounds"])
    fig = figures(r)
    ran = ", ".join(f"`{BACKENDS[k]}`" for k in r["timed"])
    lines = [
        "<!-- bench:sd35 -->",
        f"## SD3.5 Large joint block (one of its 38, at real width), {t} text + {n} image tokens ({px} px), batch 2, "
        f"{r['device']} {r['dtype']}",
        "",
        f"Run {r['date']}; this phase took {r['phase_s'] / 60:.1f} minutes. Load average " +
        "; ".join(f"{BACKENDS[k]} {a:.1f} before and {b:.1f} after its rounds" for k, (a, b) in r["loadavg"].items()) +
        f" ({bench.os.cpu_count()} cores; much above 1 means other work shared the machine). Image tokens: {n} "
        "(`--sd3-tokens`, default 4096 = 1024×1024 px). The block's attention: " + ran + " (`--sd3-attention`). "
        "The first plain call sets the number of timed rounds "
        f"(`--sd3-budget`, {r['budget']:.0f} s; at least {MIN_ROUNDS}, at most `--pairs`)"
        + (f": one plain block call took {fewest['unpatched_s']:.0f} s of CPU here, hence {fewest['rounds']} rounds "
           "instead of the other phases' 9." if fewest["rounds"] < 9 else "."),
        "",
        "Method: ComfyUI's `mmdit.JointBlock` as MMDiT builds SD3.5 Large's blocks (hidden "
        f"{HIDDEN}, {HEADS} heads × {HEAD_DIM}, mlp ratio {MLP_RATIO:g}, qkv bias, RMS QK-norm, not pre_only; "
        f"{r['block_params'] / 1e6:.0f}M parameters), random weights (QK-norm scales 1 ± 0.1), {r['dtype']}. The "
        "adapter is a real-size file with random weights in the released layout (below), loaded by the pack's loader "
        "(`model_cache.load_adapter`) and applied with `patching.apply_embeds` (random SigLIP hidden states "
        f"(1, {SIGLIP_TOKENS}, {SIGLIP}), zeros as the negative) on a shell MMDiT whose 38 joint blocks are this "
        "block. *Patched* is the installed `dit` replace at (\"double_block\", 1) called as MMDiT's "
        "`forward_core_with_concat` calls it (`{img, txt, vec, transformer_options}`, `original_block` = its "
        "`block_wrap`), with a `StepState` whose tokens the first call already made (timesteps 1000 × "
        f"{SIGMA}, `cond_or_uncond` [1, 0]): the steady state of blocks 2–38 of a model call. *Plain* is the block "
        "called as MMDiT calls it without a replace. The attention backend is swapped into `mmdit` for both; the "
        "image term itself always runs torch's `scaled_dot_product_attention` (the pack's code). Clock: "
        f"{r['clock']}, {bench.ARGS.threads} torch thread(s); each round runs plain, patched and the resampler "
        "(order rotated), plain again; each over the mean of the plain calls around it; median with min–max over "
        "the rounds. *System time* is the kernel's share of that CPU time (os.times): page faults of freshly "
        "allocated buffers, mostly.",
        "",
        "| attention backend (the block's own) | patched / plain (median) | min–max | rounds | target | plain call "
        "(of it system time) | patched call (of it system time) | multiply-add ratio (floor) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    met = {}
    for name, tm in r["timed"].items():
        p = tm["patched"]
        med, spread = bench.fmt_ratio(p["ratios"])
        ok = bench.summary(p["ratios"])[0] <= TARGET
        met[name] = ok
        lines.append(f"| {BACKEND_NAMES[name]} | {med} | {spread} | {p['rounds']} | ≤ {TARGET:.2f}× "
                     f"{'✅' if ok else '❌'} | {_s(p['unpatched_s'])} ({_s(p['unpatched_system_s'])}) | "
                     f"{_s(p['patched_s'])} ({_s(p['patched_system_s'])}) | {ratio_flops:.3f}× |")
    for name, c in r.get("chunks", {}).items():
        lines += ["", f"`{BACKENDS[name]}` sizes its query chunks from the free memory it reads at each call; the "
                  f"bench pins that reading to the value at the start of its rounds ({c['free_gb']:.1f} GB: query "
                  f"chunks of {c['chunk']}, score buffers of {2 * HEADS} × {c['chunk']} × {t + n} floats = "
                  f"{2 * HEADS * c['chunk'] * (t + n) * 4 / 1024 ** 3:.1f} GB), so that plain and patched calls chunk "
                  "alike."]
    for name, f in fig.items():
        if f[-1] != "run":
            lines += ["", f"Not run this time, `{BACKENDS[name]}` ({BACKEND_NAMES[name].split(' (')[1][:-1]}; "
                      f"{f[-1]}, same method and size): **{f[0]:.3f}×** ({f[1]:.3f}–{f[2]:.3f}, {f[4]} rounds), plain "
                      f"call {f[3]:.1f} s of which {f[5]:.1f} s system time."
                      + (" Its score buffers are page-faulted in on every call, and that kernel time moved by "
                         "seconds from call to call, more than the image term costs: its ratio is noise here, "
                         "which is why it is not run by default." if f[5] > 0.2 * f[3] else "")]
    for k, m in other.items():
        lines += ["", f"At {k} image tokens ({_px(k)} px; measured {m['date']} with `--sd3-tokens {k} "
                  "--sd3-attention pytorch,sub_quad`, same method): "
                  + "; ".join(f"`{BACKENDS[b]}` **{m[b][0]:.3f}×** ({m[b][1]:.3f}–{m[b][2]:.3f}, {m[b][4]} rounds, "
                              f"plain {m[b][3]:.1f} s, {m[b][5]:.1f} s of it system time)"
                              for b in BACKENDS if b in m)
                  + f"; multiply-add ratio {flop_ratio(t, k):.3f}×; the resampler {m['resampler']:.3f}× a plain "
                  "block (`attention_pytorch`)."]

    bound = ("", f"Multiply-adds per sequence ({t} text + {n} image tokens): the block {block_cost(t, n) / 1e9:.1f} G "
             f"({100 * att_share:.0f}% of it in its joint attention over {t + n} keys); the image term "
             f"{image_cost(n) / 1e9:.1f} G: the image queries attending over {n} image keys + {QUERIES} adapter keys "
             f"(2 × {n} × {n + QUERIES} × {HIDDEN} = {2 * n * (n + QUERIES) * HIDDEN / 1e9:.1f} G) and the adapter's "
             f"K/V projections of its {QUERIES} tokens ({QUERIES * 2 * HIDDEN * HIDDEN / 1e9:.2f} G). So the "
             f"release's maths costs **{ratio_flops:.3f}×** the block in arithmetic: a second attention over the "
             "image tokens in its own softmax, with keys the block's own attention cannot share (the adapter re-norms "
             f"q and k with its own RMS scales). At 4096 tokens (1024×1024 px) that floor is "
             f"{flop_ratio(t, 4096):.3f}×, above the issue's ≤ {TARGET:.2f}× (at 1024 tokens, 512×512 px: "
             f"{flop_ratio(t, 1024):.3f}×): no implementation of the release's processor meets that target at "
             "1024×1024 px unless its image attention runs faster per multiply-add than the block's own work.")
    text = [bound[1]]
    rate = None
    if "pytorch" in r["timed"] and r["parts"]["pytorch"].get("sdpa"):  # multiply-adds per second, batch 2
        rate = {"sdpa": 2 * 2 * n * (n + QUERIES) * HIDDEN / r["parts"]["pytorch"]["sdpa"] / 1e9,
                "block": 2 * block_cost(t, n) / r["timed"]["pytorch"]["patched"]["unpatched_s"] / 1e9}
    if "pytorch" in fig:
        f = fig["pytorch"]
        text.append(f"With `attention_pytorch` both attentions are torch's SDPA, and the measured {f[0]:.3f}× is "
                    + ("at or above" if f[0] >= ratio_flops - 0.005 else "below") + f" that floor ({ratio_flops:.3f}×)"
                    + ("; what lies above it is the image attention running slower per multiply-add than the "
                       "block as a whole" + (f" ({rate['sdpa']:.0f} G/s against {rate['block']:.0f} G/s here)"
                                             if rate else "")
                       + ", plus the pack's own passes over the image term (next table)."
                       if f[0] >= ratio_flops - 0.005 else "."))
    if "sub_quad" in fig and "pytorch" in fig:
        f, g = fig["sub_quad"], fig["pytorch"]
        text.append(f"With ComfyUI's CPU default `attention_sub_quad` the plain block takes {f[3]:.1f} s instead of "
                    f"{g[3]:.1f} s (the same joint attention, {f[5]:.1f} s of it in the kernel), so about the same "
                    f"added seconds are a smaller share of a slower block: {f[0]:.3f}× there says the baseline is "
                    "slow, not that the image term is cheap.")
    text.append("On a GPU (SDPA or flash attention for both) expect the floor or a little above.")
    lines += ["", "### What bounds it", "", " ".join(text)]

    lines += ["", "### Where the patched call's time goes", "",
              "Timers around the patch's steps inside the timed patched calls themselves (median over the rounds, "
              "a few clock reads per call): the image term (`add_image_terms`: the adapter's timestep-modulated norm "
              "and K/V projection of its 64 tokens (`image_kv`), the image attention (`joint_image_attention`, "
              "torch SDPA over N + 64 keys), the rest — rescaling q by the adapter's / block's norm scales and the "
              "adapter's keys by the inverse key ratio, weighting and adding in place into the joint attention's "
              "output), the attention override's own overhead around it, ComfyUI's block itself (including its "
              "attention) and the rest (the hook's Python, dict copies).", "",
              "| attention backend | added over plain (median) | image K/V (`image_kv`) | image attention (SDPA) | "
              "rescale + weight + add | override overhead | ComfyUI's block (in this call) | rest |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, tm in r["timed"].items():
        p, q = tm["patched"], r["parts"][name]
        added = p["patched_s"] - p["unpatched_s"]
        in_override = q.get("override", 0.0) - q.get("attention", 0.0)  # the image term and adding it
        inject = max(0.0, in_override - q.get("image", 0.0))
        block_only = q.get("block", 0.0) - in_override
        rest_image = q.get("image", 0.0) - q.get("kv", 0.0) - q.get("sdpa", 0.0)
        lines.append(f"| {BACKENDS[name]} | {_ms(added)} ({100 * added / p['unpatched_s']:.1f}%) | "
                     f"{_ms(q.get('kv', 0.0))} | {_ms(q.get('sdpa', 0.0))} | {_ms(rest_image)} | {_ms(inject)} | "
                     f"{_ms(block_only)} (plain {_ms(p['unpatched_s'])}) | "
                     f"{_ms(q['total'] - q.get('block', 0.0))} |")

    res = {k: tm["resampler"] for k, tm in r["timed"].items()}
    lines += ["", "### The resampler, once per model call", "",
              f"The first block of each model call makes the step's tokens: `TimeResampler` over the SigLIP hidden "
              f"states of cond and uncond ((2, {SIGLIP_TOKENS}, {SIGLIP}) and 2 timesteps; "
              f"{2 * resampler_cost() / 1e9:.0f} G multiply-adds), timed as the patch runs it (`step_units` with a fresh "
              "`StepState`), interleaved with the rounds above.", "",
              "| attention backend (of the plain block) | resampler call (median) | / one plain block | / a 38-block "
              "step (estimate: 38 plain blocks) | whole-step patched / plain (estimate) |",
              "| --- | --- | --- | --- | --- |"]
    for name, rs in res.items():
        p = r["timed"][name]["patched"]
        med = statistics.median(rs["ratios"])
        step_ratio = statistics.median(p["ratios"]) + med / BLOCKS
        lines.append(f"| {BACKENDS[name]} | {_ms(rs['patched_s'])} | {med:.3f}× | {med / BLOCKS * 100:.2f}% | "
                     f"{step_ratio:.3f}× |")
    lines += ["", "The whole-step estimate is the block's median ratio plus the resampler's share of 38 plain blocks "
              "(38 × patched block + resampler over 38 × plain block): the embedders, "
              "the final layer and the last block being pre_only (its context stream has no output projection "
              "or MLP) are left out on both sides."]

    lines += ["", "### One-off costs", "",
              "| adapter file (fp16, random weights, released shapes) | file | weights in memory | load "
              "(`model_cache.load_adapter`) | apply (`apply_embeds`: install only) | first block of a model call "
              "(block 0, fresh `StepState`, `attention_pytorch`) |",
              "| --- | --- | --- | --- | --- | --- |",
              f"| `{ld['file']}` ({ld['spec']}; {ld['params'] / 1e6:.0f}M parameters, of which the resampler "
              f"{ld['proj_params'] / 1e6:.0f}M) | {ld['file_bytes'] / bench.MB:.0f} MB | "
              f"{ld['weights_bytes'] / bench.MB:.0f} MB {ld['dtype']} | {ld['seconds']:.1f} s wall, "
              f"{ld['cpu']:.1f} s CPU | {r['apply']['seconds']:.2f} s | {checks['cold']['first_s']:.2f} s (block "
              f"{LAYER} in the same call: {checks['warm']['s']:.2f} s) |"]

    lines += ["", "### Checks", ""]
    cold, warm, rec = checks["cold"], checks["warm"], checks["record_step"]
    reads_ok = cold["syncs"] <= 0 and warm["syncs"] <= 0 and rec["syncs"] == 0
    lines.append(f"- **No host reads in the block hook** {'✅' if reads_ok else '❌'}: `torch.Tensor` methods that "
                 f"read values on the host ({', '.join(bench.Probes.SYNC_METHODS)}) were replaced by counters; beyond "
                 f"the plain block's own calls, block 0 with a fresh `StepState` (resampler included) made "
                 f"{cold['syncs']:+d} and block {LAYER} of the same call {warm['syncs']:+d}; the APPLY_MODEL wrapper "
                 f"`record_step` (ComfyUI's `ModelSamplingDiscreteFlow`, shift {SHIFT:g}) made {rec['syncs']}.")
    once = cold["resampler"] == 1 and warm["resampler"] == 0 and rec["noted"]
    lines.append(f"- **Resampler once per model call** {'✅' if once else '❌'}: `TimeResampler.forward` ran "
                 f"{cold['resampler']} time(s) in block 0 and {warm['resampler']} in block {LAYER} of the same "
                 f"call; `record_step` noted the call's timesteps and latent size ({rec['noted']}).")
    lines.append(f"- **Block-level target** {'✅' if all(met.values()) else '❌'}: ≤ {TARGET:.2f}× the plain block: "
                 + ", ".join(f"{BACKENDS[k]} {'met' if ok else 'missed'}" for k, ok in met.items())
                 + f" (the release's arithmetic alone is {ratio_flops:.3f}× at this size; see above).")
    lines.append("<!-- /bench:sd35 -->")
    return "\n".join(lines)
