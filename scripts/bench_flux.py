"""The Flux phase of `make bench` (scripts/bench.py --arch flux): one real-width Flux.1 double block and one single
block, ComfyUI's own classes with random weights, called plain and through the pack's installed dit block replace
(XLabs and InstantX adapters, written at real size in the released layouts and loaded by the pack's loader).

Imported by scripts/bench.py, which passes `bench` (its namespace()): the clock, probes, argument values and helpers are
the same as for the SD1.5/SDXL phases.
"""
import gc
import math
import pathlib
import statistics
import time

import torch
from safetensors.torch import save_file

import comfy.ldm.flux.layers as flux_layers
import comfy.ldm.modules.attention
import comfy.model_patcher
import comfy.ops
import folder_paths

HIDDEN, HEADS, MLP_RATIO, AXES, THETA = 3072, 24, 4.0, [16, 56, 56], 10000  # Flux.1 dev/schnell
HEAD_DIM = HIDDEN // HEADS
CONTEXT = 4096  # T5-XXL width: the image tokens' width in both releases
DOUBLE, SINGLE = 19, 38
XLABS_CLIP, INSTANTX_SIGLIP = 768, 1152  # CLIP ViT-L/14 image_embeds; SigLIP so400m pooled output
XLABS_TOKENS, INSTANTX_TOKENS = 4, 128
XLABS_FILE, INSTANTX_FILE = "flux-ip-adapter.safetensors", "ip-adapter.bin"
TARGETS = {"xlabs": 1.10, "instantx": 1.25}  # block level, from the issue
CASE_NAMES = {"xlabs": "XLabs flux-ip-adapter", "instantx": "InstantX FLUX.1-dev IP-Adapter"}
BLOCK_NAMES = {"double": "double block 0", "single": "single block 0"}
BREAKDOWN_CALLS = 3
# one plain double block, 512 text tokens, 1 thread, CPU seconds at 1024 and 4096 image tokens (measured once here,
# 2026-11-30, outside the bench: at 4096 the whole phase would take about three times as long)
MEASURED_4096 = (2.88, 11.50)
TIMED = {"double": ("xlabs", "instantx"), "single": ("instantx",)}  # XLabs has no single-block layers


# ---------------------------------------------------------------------------------------------------- files

POOL = 1 << 24  # random normals drawn once; tensors are filled from it at random offsets (3.1G values: ~2 s, not 20)


def _random(shape, gen, key, pool):
    """Release-like random values in fp16: LayerNorm weights ones, biases small, matrices N(0, 1/fan_in)."""
    if len(shape) == 1 and key.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.float16)
    std = 0.02 if len(shape) == 1 else 1.0 / math.sqrt(shape[1])
    flat = torch.empty(math.prod(shape), dtype=torch.float16)
    for start in range(0, flat.numel(), POOL):
        count = min(POOL, flat.numel() - start)
        offset = int(torch.randint(POOL, (1,), generator=gen))
        flat[start:start + count] = pool[offset:offset + count]
    return flat.mul_(std).view(shape)


def xlabs_shapes():
    shapes = {"ip_adapter_proj_model.proj.weight": (XLABS_TOKENS * CONTEXT, XLABS_CLIP),
              "ip_adapter_proj_model.proj.bias": (XLABS_TOKENS * CONTEXT,),
              "ip_adapter_proj_model.norm.weight": (CONTEXT,), "ip_adapter_proj_model.norm.bias": (CONTEXT,)}
    for i in range(DOUBLE):
        for kv in "kv":
            prefix = f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj"
            shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (HIDDEN, CONTEXT), (HIDDEN,)
    return shapes


def instantx_shapes():
    hidden = 2 * INSTANTX_SIGLIP
    return {"image_proj": {"proj.0.weight": (hidden, INSTANTX_SIGLIP), "proj.0.bias": (hidden,),
                           "proj.2.weight": (INSTANTX_TOKENS * CONTEXT, hidden),
                           "proj.2.bias": (INSTANTX_TOKENS * CONTEXT,),
                           "norm.weight": (CONTEXT,), "norm.bias": (CONTEXT,)},
            "ip_adapter": {f"{n}.to_{kv}_ip.weight": (HIDDEN, CONTEXT) for n in range(DOUBLE + SINGLE) for kv in "kv"}}


def write_files(folder):
    """{kind: (file name, bytes)}: XLabs as .safetensors (flat keys), InstantX as a torch .bin of the nested groups,
    both fp16 at the released shapes."""
    gen = torch.Generator().manual_seed(200)
    pool = torch.randn(POOL, generator=gen).half().repeat(2)  # twice, so that any offset has POOL values after it
    path = pathlib.Path(folder) / XLABS_FILE
    save_file({k: _random(s, gen, k, pool) for k, s in xlabs_shapes().items()}, str(path))
    out = {"xlabs": (XLABS_FILE, path.stat().st_size)}
    gc.collect()
    path = pathlib.Path(folder) / INSTANTX_FILE
    nested = {g: {k: _random(s, gen, k, pool) for k, s in shapes.items()} for g, shapes in instantx_shapes().items()}
    torch.save(nested, str(path))
    del nested
    gc.collect()
    out["instantx"] = (INSTANTX_FILE, path.stat().st_size)
    return out


# ---------------------------------------------------------------------------------------------------- model

def build_blocks(bench):
    """ComfyUI's DoubleStreamBlock / SingleStreamBlock at Flux.1 width, random weights, RMSNorm scales ones."""
    ops = comfy.ops.disable_weight_init  # what ComfyUI builds Flux with (uninitialised layers)
    double = flux_layers.DoubleStreamBlock(HIDDEN, HEADS, MLP_RATIO, qkv_bias=True, operations=ops)
    single = flux_layers.SingleStreamBlock(HIDDEN, HEADS, MLP_RATIO, operations=ops)
    for seed, block in ((1, double), (2, single)):
        bench.init_module(block, seed=seed)
        with torch.no_grad():
            for name, p in block.named_parameters():
                if name.endswith("norm.scale"):  # QK RMSNorm (init_module zeroes non-"weight" norm parameters)
                    p.fill_(1.0)
        block.eval().requires_grad_(False).to(bench.DEVICE, bench.DTYPE)
    return double, single


class FluxShell(torch.nn.Module):
    """What the pack sees of a Flux model: 19 double and 38 single blocks (the two real ones, repeated), img_in and
    txt_in. Enough for patching.apply_embeds (family recognition, width checks, install); never run as a whole."""

    def __init__(self, double, single):
        super().__init__()
        self.double_blocks = torch.nn.ModuleList([double] * DOUBLE)
        self.single_blocks = torch.nn.ModuleList([single] * SINGLE)
        self.img_in = torch.nn.Linear(64, HIDDEN, device="meta")
        self.txt_in = torch.nn.Linear(CONTEXT, HIDDEN, device="meta")
        self.patch_size = 2


def shell_patcher(bench, double, single):
    outer = torch.nn.Module()
    outer.diffusion_model = FluxShell(double, single)
    size = bench.param_bytes(double) + bench.param_bytes(single)
    return comfy.model_patcher.ModelPatcher(outer, load_device=bench.DEVICE, offload_device=torch.device("cpu"),
                                            size=size)


def installed_patch(patcher):
    from ipadapter_kit.ipadapter_core.families import flux as core_flux

    dit = patcher.model_options["transformer_options"].get("patches_replace", {}).get("dit", {})
    return next(p for p in dit.values() if isinstance(p, core_flux.FluxBlockPatch))


class Inputs:
    """One block's inputs as Flux's forward passes them: batch 1, text then image tokens, RoPE pe over ids."""

    def __init__(self, bench, text, image_tokens):
        from ipadapter_kit.ipadapter_core.families import flux as core_flux

        side = max(1, round(math.sqrt(image_tokens)))
        grid = (side, image_tokens // side)
        self.text, self.image, self.grid = text, grid[0] * grid[1], grid
        g = torch.Generator().manual_seed(7)
        dev, dt = bench.DEVICE, bench.DTYPE
        self.img = torch.randn(1, self.image, HIDDEN, generator=g).to(dev, dt)
        self.txt = torch.randn(1, text, HIDDEN, generator=g).to(dev, dt)
        self.x = torch.cat((self.txt, self.img), 1)
        self.vec = torch.randn(1, HIDDEN, generator=g).to(dev, dt)
        ids = torch.zeros(1, text + self.image, 3)
        rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        ids[:, text:, 1], ids[:, text:, 2] = rows.flatten(), cols.flatten()
        self.pe = flux_layers.EmbedND(HEAD_DIM, THETA, AXES)(ids).to(dev)
        latent = ((2 * grid[0], 2 * grid[1]), ())  # what the pack's diffusion-model wrapper records
        self.options = {kind: {"block_type": kind, "block_index": 0, "total_blocks": DOUBLE if kind == "double"
                               else SINGLE, "cond_or_uncond": [0], "sigmas": torch.full((1,), 1.0, device=dev),
                               core_flux.LATENT_KEY: latent} for kind in ("double", "single")}


def block_calls(inputs, double, single):
    """{kind: (plain(), patched(patch))}: the block as Flux's forward runs it without a replace, and with one."""

    def double_original(a):  # Flux.forward's block_wrap for double blocks
        out = {}
        out["img"], out["txt"] = double(img=a["img"], txt=a["txt"], vec=a["vec"], pe=a["pe"],
                                        attn_mask=a.get("attn_mask"), transformer_options=a.get("transformer_options"))
        return out

    def single_original(a):
        return {"img": single(a["img"], vec=a["vec"], pe=a["pe"], attn_mask=a.get("attn_mask"),
                              transformer_options=a.get("transformer_options"))}

    def plain_double():
        with torch.no_grad():  # the blocks add into img/txt in place: fresh copies each call, in both versions
            return double(img=inputs.img.clone(), txt=inputs.txt.clone(), vec=inputs.vec, pe=inputs.pe,
                          attn_mask=None, transformer_options=dict(inputs.options["double"]))

    def patched_double(patch, original=double_original):
        with torch.no_grad():
            return patch({"img": inputs.img.clone(), "txt": inputs.txt.clone(), "vec": inputs.vec, "pe": inputs.pe,
                          "attn_mask": None, "transformer_options": dict(inputs.options["double"])},
                         {"original_block": original})

    def plain_single():
        with torch.no_grad():
            return single(inputs.x.clone(), vec=inputs.vec, pe=inputs.pe, attn_mask=None,
                          transformer_options=dict(inputs.options["single"]))

    def patched_single(patch, original=single_original):
        with torch.no_grad():
            return patch({"img": inputs.x.clone(), "vec": inputs.vec, "pe": inputs.pe, "attn_mask": None,
                          "transformer_options": dict(inputs.options["single"])}, {"original_block": original})

    return {"double": (plain_double, patched_double, double_original),
            "single": (plain_single, patched_single, single_original)}


# ---------------------------------------------------------------------------------------------------- breakdown

def breakdown(bench, patch, patched, original, repeats=BREAKDOWN_CALLS):
    """Median seconds of one patched call and of its parts, timed around the patch's own steps."""
    clock = bench.part_clock()
    rows = []
    real_query, real_image, real_override = patch.query, patch.add_image_attention, patch.attention_override
    real_rows = patch.linear_rows  # an instance attribute (the host's Linear-slice function)
    for _ in range(repeats):
        spent = dict.fromkeys(("query", "rows", "image", "block", "override", "attention", "total"), 0.0)

        def timed(name, fn):
            return bench.timed_into(spent, name, fn, clock)

        def override(*a, **kw):
            options = real_override(*a, **kw)
            inner = options["optimized_attention_override"]

            def outer(func, *fa, **fkw):
                t0 = clock()
                out = inner(timed("attention", func), *fa, **fkw)
                spent["override"] += clock() - t0
                return out

            return dict(options, optimized_attention_override=outer)

        patch.query, patch.add_image_attention = timed("query", real_query), timed("image", real_image)
        patch.attention_override, patch.linear_rows = override, timed("rows", real_rows)
        try:
            t0 = clock()
            patched(patch, timed("block", original))
            spent["total"] = clock() - t0
        finally:
            del patch.query, patch.add_image_attention, patch.attention_override  # back to the class's methods
            patch.linear_rows = real_rows
        rows.append(spent)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    injection = max(0.0, med["override"] - med["attention"]) if med["override"] else 0.0
    med["injection"] = injection  # adding the image term inside ComfyUI's attention (InstantX)
    med["block_only"] = med["block"] - injection
    med["other"] = med["total"] - med["query"] - med["image"] - med["block"]
    med["query_rest"] = med["query"] - med["rows"]  # modulation (all its chunks), pre-norm, shift/scale, RMSNorm
    return med


# ---------------------------------------------------------------------------------------------------- run

def run_flux(bench, tmp, log):
    """The Flux phase: returns the result dict the doc writer (section) reads."""
    from ipadapter_kit.ipadapter_core.families import flux as core_flux
    from ipadapter_kit.nodes import model_cache, patching

    args = bench.ARGS
    started = time.time()
    text, image_tokens = args.flux_text, args.flux_tokens
    result = {"arch": "flux", "pairs": args.pairs, "date": bench.datetime.date.today().isoformat(), "text": text,
              "device": args.device.upper(), "dtype": str(bench.DTYPE).replace("torch.", ""),
              "clock": bench.CLOCK.what,
              "attention": comfy.ldm.modules.attention.optimized_attention.__name__}

    bench.threads(bench.SETUP_THREADS)
    folder = pathlib.Path(tmp) / "flux"
    folder.mkdir()
    folder_paths.add_model_folder_path("ipadapter", str(folder), is_default=True)
    log("[Flux] writing real-size XLabs and InstantX adapter files (fp16, random weights) ...")
    files, seconds, _ = bench.wall(lambda: write_files(folder))
    log("[Flux] files: " + ", ".join(f"{n} {b / bench.MB:.0f} MB" for n, b in files.values()) +
        f" ({seconds:.0f} s); RSS {bench.rss_gb()}")

    adapters, loads = {}, {}
    for kind in ("instantx", "xlabs"):  # the large one first, while the most memory is free
        name, size_bytes = files[kind]
        bench.threads(args.threads)
        adapter, seconds, cpu = bench.wall(lambda: model_cache.load_adapter(name))
        adapters[kind] = adapter
        loads[kind] = {"file": name, "file_bytes": size_bytes, "seconds": seconds, "cpu": cpu,
                       "weights_bytes": bench.param_bytes(adapter.weights),
                       "dtype": str(next(adapter.weights.parameters()).dtype).replace("torch.", ""),
                       "spec": adapter.spec.describe()}
        (folder / name).unlink()
        gc.collect()
        log(f"[Flux] loaded {name}: {loads[kind]['weights_bytes'] / bench.MB:.0f} MB in memory "
            f"({loads[kind]['dtype']}), {seconds:.1f} s; {adapter.spec.describe()}; RSS {bench.rss_gb()}")
    result["loads"] = loads

    bench.threads(bench.SETUP_THREADS)
    log(f"[Flux] building one double and one single block (hidden {HIDDEN}, {HEADS} heads x {HEAD_DIM}) ...")
    (double, single), seconds, _ = bench.wall(lambda: build_blocks(bench))
    result["block_params"] = {"double": sum(p.numel() for p in double.parameters()),
                              "single": sum(p.numel() for p in single.parameters())}
    log(f"[Flux] blocks: double {result['block_params']['double'] / 1e6:.0f}M, single "
        f"{result['block_params']['single'] / 1e6:.0f}M parameters ({seconds:.0f} s); RSS {bench.rss_gb()}")

    bench.threads(args.threads)
    base = shell_patcher(bench, double, single)
    g = torch.Generator().manual_seed(11)
    embeds = {"xlabs": torch.randn(1, XLABS_CLIP, generator=g),  # CLIP ViT-L image_embeds
              "instantx": torch.randn(1, INSTANTX_SIGLIP, generator=g)}  # SigLIP pooled output
    patches, applied = {}, {}
    for kind, adapter in adapters.items():
        e = embeds[kind]
        clone, seconds, cpu = bench.wall(lambda: patching.apply_embeds(base, adapter, e, torch.zeros_like(e)))
        patches[kind] = installed_patch(clone)
        applied[kind] = {"seconds": seconds, "cpu": cpu, "keys": len(patches[kind].keys()),
                         "tokens": tuple(patches[kind].prompts[0].cond.shape)}
        log(f"[Flux] apply_embeds {kind}: {seconds:.2f} s (image projection + install), {applied[kind]['keys']} "
            f"block keys, image tokens {applied[kind]['tokens']}")
    result["apply"] = applied

    inputs = Inputs(bench, text, image_tokens)
    result["image_tokens"], result["grid"] = inputs.image, inputs.grid
    calls = block_calls(inputs, double, single)
    probes = bench.PROBES
    attention_cls = core_flux.FluxBlockPatch

    blocks_started = time.time()
    log(f"[Flux] first calls ({text} text + {inputs.image} image tokens; caches filled, projections and host "
        "reads counted) ...")
    cold, warm = {}, {}
    for kind, (plain, patched, original) in calls.items():
        with probes.count_syncs():  # the plain block's own host reads (ComfyUI's), subtracted below
            plain()
        plain_syncs = plain_warm = probes.sync_total()
        for case in TIMED[kind]:
            patch = patches[case]
            probes.projections = 0
            with probes.count_syncs(), probes.time_kv(attention_cls) as kv_time:
                _, seconds, cpu = bench.wall(lambda: patched(patch))
            cold[f"{kind}/{case}"] = {"projections": probes.projections, "kv_s": kv_time[0],
                                      "syncs": probes.sync_total() - plain_syncs, "first_s": cpu,
                                      "sync_detail": dict(probes.syncs)}
            probes.projections = 0
            with probes.count_syncs():
                patched(patch)
            warm[f"{kind}/{case}"] = {"syncs": probes.sync_total() - plain_warm, "projections": probes.projections,
                                      "sync_detail": dict(probes.syncs)}
            log(f"[Flux]   {kind} {case}: first call {cpu:.2f} s CPU, K/V projection {kv_time[0] * 1e3:.0f} ms "
                f"({cold[f'{kind}/{case}']['projections']} scaled_kv calls); warm call: "
                f"{warm[f'{kind}/{case}']['syncs']:+d} host reads, {probes.projections} scaled_kv calls")
    result["cold"], result["warm"] = cold, warm

    probes.projections = 0
    timed, load = {}, {}
    for kind, (plain, patched, _) in calls.items():
        cases = {case: (lambda p=patches[case]: patched(p)) for case in TIMED[kind]}
        log(f"[Flux] timing {args.pairs} rounds of the {kind} block: plain, " + ", ".join(cases) + " ...")
        before = bench.loadavg()
        timed[kind] = bench.time_model(lambda fn, step: fn(), plain, cases, args.pairs,
                                       lambda msg: log(f"[Flux] {kind}" + msg))
        load[kind] = (before, bench.loadavg())
    result["timed"], result["load"] = timed, load
    result["steady_projections"] = probes.projections

    log(f"[Flux] where the patched call's time goes ({BREAKDOWN_CALLS} instrumented calls per case) ...")
    result["parts"] = {f"{kind}/{case}": breakdown(bench, patches[case], patched, original)
                       for kind, (plain, patched, original) in calls.items() for case in TIMED[kind]}
    result["after_timing_projections"] = probes.projections
    result["phase_s"] = time.time() - started
    result["blocks_s"] = time.time() - blocks_started  # the part of the phase that grows with the tokens
    return result


# ---------------------------------------------------------------------------------------------------- report

def block_cost(text, image):
    """Multiply-adds of one Flux block per sequence (linear layers per token, attention per token pair)."""
    tokens = text + image
    per_token = HIDDEN * (3 * HIDDEN + HIDDEN + 2 * int(MLP_RATIO * HIDDEN))
    return tokens * per_token + 2 * tokens * tokens * HIDDEN


def _ms(seconds):
    return f"{seconds * 1e3:.0f} ms"


def section(bench, r):
    """The '## Flux blocks' section of docs/benchmarks.md, between <!-- bench:flux --> markers."""
    n, t = r["image_tokens"], r["text"]
    px = f"{16 * r['grid'][0]}×{16 * r['grid'][1]}"
    loads = r["loads"]
    factor = block_cost(t, 4096) / block_cost(t, n)
    factor_time = factor * (MEASURED_4096[1] / MEASURED_4096[0]) / (block_cost(512, 4096) / block_cost(512, 1024))
    lines = [
        "<!-- bench:flux -->",
        f"## Flux blocks (one double and one single Flux.1 block at real width), {t} text + {n} image tokens "
        f"({px} px), batch 1, {r['device']} {r['dtype']}",
        "",
        f"Run {r['date']}, {r['pairs']} timed rounds per block; this phase took {r['phase_s'] / 60:.1f} minutes. "
        "Load average " + "; ".join(f"{k} block {a:.1f} before and {b:.1f} after its rounds"
                                    for k, (a, b) in r["load"].items()) +
        f" ({bench.os.cpu_count()} cores; much above 1 means other work shared the machine)."
        + (f" Image tokens: {n} (`--flux-tokens`; 1024, a 512×512 image, is the CPU default so that `make bench` "
           f"stays within its time): at 4096 (1024×1024) a block call costs {factor:.1f}× as many multiply-adds "
           "(linear layers grow with the tokens, attention with their square) and took "
           f"{MEASURED_4096[1] / MEASURED_4096[0]:.1f}× as long here (a plain double block, {MEASURED_4096[0]:.1f} s "
           f"→ {MEASURED_4096[1]:.1f} s of CPU, measured once), which would make this phase about "
           f"{(r['phase_s'] + r['blocks_s'] * (factor_time - 1)) / 60:.0f} minutes instead of "
           f"{r['phase_s'] / 60:.0f}; `--flux-tokens 4096` measures that size." if n < 4096 else ""),
        "",
        f"Method: ComfyUI's `DoubleStreamBlock` and `SingleStreamBlock` (hidden {HIDDEN}, {HEADS} heads × "
        f"{HEAD_DIM}, mlp ratio {MLP_RATIO:g}, qkv bias; "
        f"{r['block_params']['double'] / 1e6:.0f}M and {r['block_params']['single'] / 1e6:.0f}M parameters), "
        f"random weights, {r['dtype']}; RoPE `pe` from ComfyUI's `EmbedND({HEAD_DIM}, {THETA}, {AXES})` over Flux's "
        f"ids (text at 0, image tokens on their {r['grid'][0]}×{r['grid'][1]} grid); attention "
        f"`{r['attention']}`. The adapters are real-size files with random weights in the released layouts "
        "(below), loaded by the pack's loader (`model_cache.load_adapter`) and applied with `patching.apply_embeds` "
        "(random encoder outputs, zeros as the negative) on a Flux shell model whose 19 double / 38 single blocks "
        "are these two blocks; the installed `FluxBlockPatch` is called as Flux's forward calls a `dit` block "
        "replace (`patch(args, {\"original_block\": ...})`, double block 0 and single block 0, `sigmas` 1.0, "
        "`cond_or_uncond` [0], the latent size the pack's wrapper records). *Plain* is the block called directly, as "
        "Flux's forward does without a replace. Both copy their input streams (the blocks add into them in place). "
        f"Clock: {r['clock']}, {bench.ARGS.threads} torch thread(s); each round runs plain, every patched case "
        "(order rotated), plain again; each patched call over the mean of the plain calls around it; median with "
        "min–max over the rounds.",
        "",
        "| block | case | image tokens (adapter) | patched / plain (median) | min–max | target | plain call "
        "| patched call | host reads per patched call | K/V projections after the first call |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    met = {}
    for kind, cases in r["timed"].items():
        for case, tm in cases.items():
            key = f"{kind}/{case}"
            med, spread = bench.fmt_ratio(tm["ratios"])
            target = TARGETS[case]
            ok = bench.summary(tm["ratios"])[0] <= target
            met[key] = ok
            tokens = r["apply"][case]["tokens"][1]
            lines.append(f"| {BLOCK_NAMES[kind]} | {CASE_NAMES[case]} | {tokens} | {med} | {spread} | "
                         f"≤ {target:.2f}× {'✅' if ok else '❌'} | {_ms(tm['unpatched_s'])} | "
                         f"{_ms(tm['patched_s'])} | "
                         f"{r['warm'][key]['syncs']:g} | {r['warm'][key]['projections']} |")
    lines += ["", "XLabs has K/V layers on the 19 double blocks only (no single-block row); InstantX on all 57 "
              "blocks. *K/V projections after the first call*: calls of `attention.scaled_kv` in the warm call "
              "after the first one; over all "
              f"{r['pairs']} timed rounds and the instrumented calls below there were "
              f"{r['after_timing_projections']}.", "",
              "### Where the patched call's time goes", "",
              f"One patched call with timers around the patch's steps (median of {BREAKDOWN_CALLS} calls, process CPU "
              "time): the "
              "query, recomputed before the block runs from the block's own modules for the image tokens "
              "(InstantX's single blocks: text and image tokens) — the query rows of its qkv projection "
              "(`linear_rows`, a third of the double block's `img_attn.qkv`, a seventh of the single block's "
              "`linear1`) and the rest (the modulation Linear, all of its outputs, pre-norm, shift/scale, query "
              "RMSNorm) —, the image "
              "attention (`add_image_attention`, K/V from the cache), adding the image term to the attention output "
              "(InstantX, inside ComfyUI's attention through the override), ComfyUI's block itself, and the rest "
              "(the zero buffer, XLabs' add after the block, Python).", "",
              "| block | case | added over plain (median) | query: qkv rows | query: modulation, norms | image "
              "attention | adding into the attention output | ComfyUI's block (in this call) | rest |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for kind, cases in r["timed"].items():
        for case, tm in cases.items():
            p = r["parts"][f"{kind}/{case}"]
            added = tm["patched_s"] - tm["unpatched_s"]
            lines.append(f"| {BLOCK_NAMES[kind]} | {CASE_NAMES[case]} | {_ms(added)} "
                         f"({100 * added / tm['unpatched_s']:.1f}%) | {_ms(p['rows'])} | {_ms(p['query_rest'])} | "
                         f"{_ms(p['image'])} | "
                         f"{_ms(p['injection']) if case == 'instantx' else '—'} | {_ms(p['block_only'])} "
                         f"(plain {_ms(tm['unpatched_s'])}) | {_ms(p['other'])} |")
    lines += ["", "### One-off costs", "",
              "| adapter file (fp16, random weights, released shapes) | file | weights in memory | load "
              "(`model_cache.load_adapter`) | apply (image projection + install, `apply_embeds`) |",
              "| --- | --- | --- | --- | --- |"]
    for case in ("xlabs", "instantx"):
        ld, ap = loads[case], r["apply"][case]
        lines.append(f"| `{ld['file']}` ({ld['spec']}) | {ld['file_bytes'] / bench.MB:.0f} MB | "
                     f"{ld['weights_bytes'] / bench.MB:.0f} MB {ld['dtype']} | {ld['seconds']:.1f} s wall, "
                     f"{ld['cpu']:.1f} s CPU | {ap['seconds']:.2f} s |")
    lines += ["", "| block | case | first call | K/V projection in it (`_layer_kv` misses) | `scaled_kv` calls "
              "in it | × the adapter's blocks of this kind |", "| --- | --- | --- | --- | --- | --- |"]
    totals = {}
    for kind, cases in r["timed"].items():
        for case in cases:
            c = r["cold"][f"{kind}/{case}"]
            count = DOUBLE if kind == "double" else SINGLE
            totals[case] = totals.get(case, 0.0) + c["kv_s"] * count
            lines.append(f"| {BLOCK_NAMES[kind]} | {CASE_NAMES[case]} | {c['first_s']:.2f} s | {_ms(c['kv_s'])} | "
                         f"{c['projections']} (cond, uncond) | ≈ {c['kv_s'] * count:.1f} s over {count} {kind} "
                         "blocks |")
    lines += ["", "So the image K/V of a whole Flux model cost about "
              + " and ".join(f"{totals[c]:.1f} s for {CASE_NAMES[c]}" for c in ("xlabs", "instantx") if c in totals)
              + f" ({bench.ARGS.threads} thread(s)), once, in the first step (one block's measured projection × the "
              "blocks of that kind that the adapter has); later steps reuse them."]
    lines += ["", "### Checks", ""]
    syncs_ok = all(w["syncs"] <= 0 for w in r["warm"].values()) and all(c["syncs"] <= 0 for c in r["cold"].values())
    lines.append(f"- **No host reads in the block hook** {'✅' if syncs_ok else '❌'}: `torch.Tensor` methods that "
                 "read "
                 f"values on the host ({', '.join(bench.Probes.SYNC_METHODS)}) were replaced by counters; beyond "
                 "the plain block's own calls, the first (cache-filling) patched call made "
                 + ", ".join(f"{k.replace('/', ' ')} {c['syncs']:+d}" for k, c in r["cold"].items())
                 + " and the warm one " + ", ".join(f"{k.replace('/', ' ')} {w['syncs']:+d}"
                                                   for k, w in r["warm"].items()) + ".")
    once = all(c["projections"] == 2 for c in r["cold"].values()) and all(
        w["projections"] == 0 for w in r["warm"].values()) and r["after_timing_projections"] == 0
    lines.append(f"- **Image K/V projected once** {'✅' if once else '❌'}: the first call of each block projects "
                 "cond and uncond K/V (" + ", ".join(f"{k.replace('/', ' ')} {c['projections']}"
                                                     for k, c in r["cold"].items())
                 + " calls of `attention.scaled_kv`), later calls none ("
                 f"{r['after_timing_projections']} in the warm, timed and instrumented calls).")
    lines.append(f"- **Block-level targets** {'✅' if all(met.values()) else '❌'}: XLabs ≤ "
                 f"{TARGETS['xlabs']:.2f}×, "
                 f"InstantX ≤ {TARGETS['instantx']:.2f}× the plain block: "
                 + ", ".join(f"{k.replace('/', ' ')} {'met' if ok else 'missed'}" for k, ok in met.items()) + ".")
    lines.append("<!-- /bench:flux -->")
    return "\n".join(lines)
