"""PuLID in `make bench` (scripts/bench.py): three parts, each in its own process.

- `sdxl_pulid` (SDXL phase, `--cases pulid`): the real-size SDXL UNet with a real-size PuLID SDXL file (random weights,
  released layout) loaded by the pack's loader; identity tokens made by the file's IDEncoder as `nodes.pulid.identity`
  makes them (random ArcFace / EVA inputs), the prompt built as `nodes.pulid.apply_pulid` builds it (fidelity:
  ortho_v2 + 8 sink tokens, style: ortho + 16) and installed with `patching.install`; one sampler step plain vs
  patched, interleaved like the other SDXL rows. Its figures go into the SDXL section between
  <!-- bench:sdxl_pulid --> markers.
- `flux_pulid` (Flux phase): one real-width Flux.1 double block and one single block (bench_flux's), each followed by
  PuLID's cross-attention through the pack's installed FluxBlockPatch with an IdentityPrompt (as
  `nodes.pulid.apply_pulid_flux` installs it), real-size PuLID-Flux file; plain vs patched, timed as bench_flux times
  its adapters. Between <!-- bench:flux_pulid --> markers in the Flux section.
- `pulid_encode`: the one-off ID encoding of one 512x512 face (what an Apply PuLID node runs after InsightFace):
  FFHQ alignment, the real BiSeNet face parser, the face picture, the real-size EVA02-CLIP-L-14-336 tower, and the
  real-size ID encoders (SDXL IDEncoder, Flux IDFormer); each step timed, and the node's own `identity` function
  end to end. Quoted in both subsections.

Imported by scripts/bench.py, which passes `bench` (namespace()): the clock, memory probe, probes, argument values and
helpers are the same as for the other phases.
"""
import contextlib
import gc
import pathlib
import statistics
import time

import torch
from safetensors.torch import save_file

import comfy.ldm.modules.attention
import folder_paths

import bench_flux

FOLDER = "pulid"  # models/pulid/
TARGETS = {"sdxl": 1.05, "flux": 1.15}  # the issue: PuLID step ratio on SDXL; one Flux block with its CA
SDXL_CASES = ("fidelity", "style")  # nodes.pulid.METHODS: (projection, sink tokens)
ARCFACE, EVA_FEATURE, EVA_WIDTH, EVA_TOKENS = 512, 768, 1024, 577  # antelopev2 embedding, EVA02-CLIP-L-14-336
ARCFACE_NORM = 22.0  # a raw (not normed) antelopev2 embedding's scale
ENCODE_RUNS = 3  # warm runs per encoding step (median), after one cold run
FACE_SIDE = 512  # the reference image


def markers(name):
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


# ---------------------------------------------------------------------------------------------------- inputs

def face_condition(seed=23):
    """What the EVA tower and InsightFace hand the ID encoders for one photo: a raw ArcFace embedding (1, 512), the
    L2-normalised EVA feature (1, 768) and 5 EVA hidden states (1, 577, 1024), random."""
    g = torch.Generator().manual_seed(seed)
    arcface = torch.nn.functional.normalize(torch.randn(1, ARCFACE, generator=g), dim=-1) * ARCFACE_NORM
    feature = torch.nn.functional.normalize(torch.randn(1, EVA_FEATURE, generator=g), dim=-1)
    hidden = [torch.randn(1, EVA_TOKENS, EVA_WIDTH, generator=g) for _ in range(5)]
    return arcface, feature, hidden


def _real_shapes(kind):
    from tinymodels import pulid_files

    if kind == "sdxl":
        return pulid_files.sdxl_shapes(pulid_files.REAL_SDXL), pulid_files.SDXL_FILE, pulid_files.SDXL_DTYPE
    return pulid_files.flux_shapes(pulid_files.REAL_FLUX), pulid_files.FLUX_FILE, pulid_files.FLUX_DTYPE


def write_file(folder, kind, seed):
    """The release at real size (tests/tinymodels/pulid_files with REAL_SDXL / REAL_FLUX), random weights, in the
    release's dtype (SDXL fp16, Flux bf16); returns (name, path, bytes, tensors, parameters)."""
    from tinymodels import pulid_files
    from tinymodels.weights import random_tensors

    shapes, name, dtype = _real_shapes(kind)
    state = random_tensors(shapes, seed)
    if kind == "flux":  # latents and proj_out N(0, 1/D), as the reference initialises them
        d = pulid_files.REAL_FLUX["dim"]
        g = torch.Generator().manual_seed(seed + 7)
        state["pulid_encoder.latents"] = torch.randn(1, pulid_files.REAL_FLUX["queries"], d, generator=g) / d ** 0.5
        state["pulid_encoder.proj_out"] = torch.randn(d, pulid_files.REAL_FLUX["out"], generator=g) / d ** 0.5
    params = sum(t.numel() for t in state.values())
    count = len(state)
    flat = {}
    for key in list(state):
        flat[key] = state.pop(key).to(dtype).contiguous()
    path = pathlib.Path(folder) / name
    save_file(flat, str(path))
    del flat
    gc.collect()
    return name, path, path.stat().st_size, count, params


def load(bench, folder, kind, seed, log, tag):
    """Write the file, load it with model_cache.load_adapter(name, "pulid"), delete it; (adapter, load info)."""
    from ipadapter_kit.nodes import model_cache

    bench.threads(bench.SETUP_THREADS)
    (name, path, size, tensors, params), seconds, _ = bench.wall(lambda: write_file(folder, kind, seed))
    log(f"[{tag}] wrote a real-size {name} ({tensors} tensors, {params / 1e6:.1f}M parameters, "
        f"{size / bench.MB:.0f} MB, {seconds:.0f} s)")
    bench.threads(bench.ARGS.threads)
    adapter, seconds, cpu = bench.wall(lambda: model_cache.load_adapter(name, FOLDER))
    path.unlink()  # its page cache counts against this machine's memory
    gc.collect()
    info = {"file": name, "file_bytes": size, "tensors": tensors, "params": params, "seconds": seconds, "cpu": cpu,
            "weights_bytes": bench.param_bytes(adapter.weights), "spec": adapter.spec.describe(),
            "kind": adapter.spec.kind,
            "dtype": str(next(adapter.weights.parameters()).dtype).replace("torch.", "")}
    log(f"[{tag}] loaded {name}: {info['weights_bytes'] / bench.MB:.0f} MB in memory ({info['dtype']}), "
        f"{seconds:.1f} s; {info['spec']}; RSS {bench.rss_gb()}")
    return adapter, info


def register_folder(tmp):
    folder = pathlib.Path(tmp) / FOLDER
    folder.mkdir(exist_ok=True)
    folder_paths.add_model_folder_path(FOLDER, str(folder), is_default=True)
    return folder


# ---------------------------------------------------------------------------------------------------- SDXL

def run_sdxl(bench, tmp, log, size):
    """PuLID on the real-size SDXL UNet: fidelity and style, one sampler step plain vs patched."""
    from ipadapter_kit.ipadapter_core import pulid as core_pulid
    from ipadapter_kit.ipadapter_core.attention import ImagePrompt
    from ipadapter_kit.nodes import patching
    from ipadapter_kit.nodes import pulid as node_pulid
    from tinymodels import pulid_files

    args = bench.ARGS
    started = time.time()
    assert pulid_files.REAL_SDXL["layer_widths"] == bench.cross_attn_widths("sdxl"), "PuLID SDXL layer widths"
    result = {"arch": "sdxl_pulid", "size": size, "date": bench.datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "device": args.device.upper(), "dtype": str(bench.DTYPE).replace("torch.", ""),
              "clock": bench.CLOCK.what, "memory": bench.MEMORY.what,
              "attention": comfy.ldm.modules.attention.optimized_attention.__name__}

    folder = register_folder(tmp)
    adapter, result["load"] = load(bench, folder, "sdxl", 400, log, "PuLID SDXL")

    bench.threads(bench.SETUP_THREADS)
    log("[PuLID SDXL] building the real-size SDXL UNet (random weights) ...")
    base, seconds, _ = bench.wall(lambda: bench.build_unet("sdxl"))
    result["unet_params"] = sum(p.numel() for p in base.model.diffusion_model.parameters())
    result["unet_bytes"] = bench.param_bytes(base.model.diffusion_model)
    log(f"[PuLID SDXL] UNet {result['unet_bytes'] / 1024 ** 3:.1f} GB ({seconds:.0f} s); RSS {bench.rss_gb()}")

    # what apply_pulid does after the face pipeline (identity tokens from the file's IDEncoder, then the prompt)
    bench.threads(args.threads)
    arcface, feature, hidden = face_condition()
    node_pulid.check_pulid(adapter, base)
    family = patching.check_model(base, adapter)
    patched, applied = {}, {}
    for case in SDXL_CASES:
        projection, zero_tokens = node_pulid.METHODS[case]

        def apply():
            with torch.no_grad():
                cond, uncond = core_pulid.identity_tokens(adapter.weights.image_proj, arcface, feature, hidden, 0.0,
                                                          zero_tokens, torch.Generator().manual_seed(0))
            prompt = ImagePrompt(weights=adapter.weights, cond=cond, uncond=uncond,
                                 layer_weights=family.layer_weights("linear", 1.0, None, adapter.spec.num_layers),
                                 masks=None, sigma_range=None, projection=projection)
            return patching.install(base, adapter, prompt, family), tuple(cond.shape)

        (patched[case], tokens), seconds, cpu = bench.wall(apply)
        applied[case] = {"projection": projection, "zero_tokens": zero_tokens, "tokens": list(tokens),
                         "cpu": cpu if bench.DEVICE.type == "cpu" else seconds}
        log(f"[PuLID SDXL] {case}: {projection}, identity tokens {tokens} ({zero_tokens} sinks); IDEncoder (cond + "
            f"uncond) + install {applied[case]['cpu'] * 1e3:.0f} ms")
    result["apply"] = applied

    forward = bench.Forward(base, "sdxl", size)
    probes = bench.PROBES
    log("[PuLID SDXL] first forwards (caches filled, projections and host reads counted) ...")
    with probes.count_syncs():
        _, s, c = bench.wall(lambda: forward(base, 0))
    plain_syncs = probes.sync_total()
    first = {"plain": c if bench.DEVICE.type == "cpu" else s}
    cold = {}
    for case, p in patched.items():
        probes.projections = 0
        with probes.count_syncs(), probes.time_kv() as kv_time:
            _, s, c = bench.wall(lambda: forward(p, 0))
        patch = bench.our_patch(p)
        first[case] = c if bench.DEVICE.type == "cpu" else s
        cold[case] = {"projections": probes.projections, "syncs": probes.sync_total() - plain_syncs,
                      "kv_s": kv_time[0], "cache_bytes": bench.cache_bytes(patch),
                      "cache_entries": bench.cache_entries(patch), "layers": len(patch.keys())}
    result["first"], result["cold"], result["plain_syncs"] = first, cold, plain_syncs
    log("[PuLID SDXL] first steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in first.items()))

    step = first["plain"]
    per_round = 1 + len(patched)
    rounds = max(3, min(args.pairs, int(args.pulid_budget // (per_round * step))))
    result["rounds"], result["budget"], result["step_estimate"] = rounds, args.pulid_budget, step
    log(f"[PuLID SDXL] timing {rounds} rounds ({per_round} steps each, ~{step:.1f} s a step; --pulid-budget "
        f"{args.pulid_budget:.0f} s) at latent {size}x{size}, batch 2 ...")
    probes.projections = 0
    load_avg = [bench.loadavg()]
    result["timed"] = bench.time_model(forward, base, patched, rounds, lambda m: log("[PuLID SDXL]" + m))
    result["loadavg"] = load_avg + [bench.loadavg()]
    log("[PuLID SDXL] one instrumented forward per case (time inside the patch beyond ComfyUI's attention) ...")
    result["inside"] = {c: bench.image_time_in_step(forward, p, rounds + 1) for c, p in patched.items()}
    result["steady_projections"] = probes.projections
    result["cache_after"] = {c: bench.cache_entries(bench.our_patch(p)) for c, p in patched.items()}
    log("[PuLID SDXL] level 1: one attn2 call ...")
    result["l1"], result["l1_shape"], result["l1_key"] = bench.attn2_level1("sdxl", size, patched, base)
    result["peak"] = bench.MEMORY.peak() if bench.MEMORY.ok else None
    result["phase_s"] = time.time() - started
    log(f"[PuLID SDXL] done in {result['phase_s'] / 60:.1f} minutes")
    return result


# ---------------------------------------------------------------------------------------------------- Flux

def ca_breakdown(bench, patch, patched, original, repeats=bench_flux.BREAKDOWN_CALLS):
    """Median seconds of one patched call, of the block in it and of the identity step after it (the CA)."""
    clock = bench.part_clock()
    rows = []
    real_add = patch.add_identities
    for _ in range(repeats):
        spent = {"block": 0.0, "identity": 0.0, "total": 0.0}

        def timed(name, fn):
            return bench.timed_into(spent, name, fn, clock)

        patch.add_identities = timed("identity", real_add)
        try:
            t0 = clock()
            patched(patch, timed("block", original))
            spent["total"] = clock() - t0
        finally:
            del patch.add_identities  # back to the class's method
        rows.append(spent)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["other"] = med["total"] - med["block"] - med["identity"]
    return med


def run_flux(bench, tmp, log):
    """PuLID-Flux: one double and one single block, each followed by its cross-attention, plain vs patched."""
    from ipadapter_kit.ipadapter_core import pulid as core_pulid
    from ipadapter_kit.ipadapter_core import pulid_flux as core_pulid_flux
    from ipadapter_kit.ipadapter_core.families import flux as core_flux
    from ipadapter_kit.nodes import patching
    from ipadapter_kit.nodes import pulid as node_pulid

    args = bench.ARGS
    started = time.time()
    text, image_tokens = args.flux_text, args.flux_tokens
    result = {"arch": "flux_pulid", "date": bench.datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "text": text,
              "device": args.device.upper(), "dtype": str(bench.DTYPE).replace("torch.", ""),
              "clock": bench.CLOCK.what, "attention": comfy.ldm.modules.attention.optimized_attention.__name__}
    folder = register_folder(tmp)
    adapter, result["load"] = load(bench, folder, "flux", 500, log, "PuLID Flux")

    bench.threads(bench.SETUP_THREADS)
    log(f"[PuLID Flux] building one double and one single block (hidden {bench_flux.HIDDEN}) ...")
    (double, single), seconds, _ = bench.wall(lambda: bench_flux.build_blocks(bench))
    result["block_params"] = {"double": sum(p.numel() for p in double.parameters()),
                              "single": sum(p.numel() for p in single.parameters())}
    ca = adapter.weights.pulid_ca[0]
    result["ca"] = {"params": sum(p.numel() for p in ca.parameters()), "heads": ca.heads,
                    "head_dim": ca.to_q.out_features // ca.heads, "width": ca.to_q.in_features,
                    "kv_width": ca.to_kv.in_features, "count": len(adapter.weights.pulid_ca)}
    bench.threads(args.threads)
    base = bench_flux.shell_patcher(bench, double, single)

    # what apply_pulid_flux does after the face pipeline: IDFormer tokens (no sinks, no noise), the prompt, install
    arcface, feature, hidden = face_condition()
    node_pulid.check_pulid(adapter, base, "pulid_flux")

    def apply():
        with torch.no_grad():
            cond, uncond = core_pulid.identity_tokens(adapter.weights.pulid_encoder, arcface, feature, hidden, 0.0, 0,
                                                      torch.Generator().manual_seed(0))
        prompt = core_flux.IdentityPrompt(weights=adapter.weights, cond=cond, uncond=uncond, weight=1.0)
        return patching.install_identity(base, adapter, prompt), tuple(cond.shape)

    (clone, tokens), seconds, cpu = bench.wall(apply)
    patch = bench_flux.installed_patch(clone)
    result["apply"] = {"cpu": cpu if bench.DEVICE.type == "cpu" else seconds, "tokens": list(tokens),
                       "keys": len(patch.keys())}
    log(f"[PuLID Flux] IDFormer (cond + uncond) + install: {result['apply']['cpu']:.2f} s; identity tokens {tokens}; "
        f"{len(patch.keys())} block keys")

    inputs = bench_flux.Inputs(bench, text, image_tokens)
    result["image_tokens"], result["grid"] = inputs.image, inputs.grid
    calls = bench_flux.block_calls(inputs, double, single)
    probes = bench.PROBES
    cold, warm = {}, {}
    log(f"[PuLID Flux] first calls ({text} text + {inputs.image} image tokens; host reads counted) ...")
    for kind, (plain, patched, _) in calls.items():
        with probes.count_syncs():
            plain()
        plain_syncs = probes.sync_total()
        with probes.count_syncs():
            _, s, c = bench.wall(lambda: patched(patch))
        cold[kind] = {"syncs": probes.sync_total() - plain_syncs, "first_s": c if bench.DEVICE.type == "cpu" else s}
        with probes.count_syncs():
            patched(patch)
        warm[kind] = {"syncs": probes.sync_total() - plain_syncs}
    result["cold"], result["warm"] = cold, warm

    timed, load_avg = {}, {}
    for kind, (plain, patched, _) in calls.items():
        log(f"[PuLID Flux] timing {args.pairs} rounds of the {kind} block: plain, pulid ...")
        before = bench.loadavg()
        timed[kind] = bench.time_model(lambda fn, step: fn(), plain, {"pulid": lambda: patched(patch)}, args.pairs,
                                       lambda m, k=kind: log(f"[PuLID Flux] {k}" + m))["pulid"]
        load_avg[kind] = (before, bench.loadavg())
    result["timed"], result["loadavg"] = timed, load_avg
    log(f"[PuLID Flux] where the patched call's time goes ({bench_flux.BREAKDOWN_CALLS} instrumented calls) ...")
    result["parts"] = {kind: ca_breakdown(bench, patch, patched, original)
                       for kind, (plain, patched, original) in calls.items()}
    result["ca_count"] = {"double": len(range(0, core_flux.DOUBLE_BLOCKS, core_pulid_flux.CA_DOUBLE_INTERVAL)),
                          "single": len(range(0, core_flux.SINGLE_BLOCKS, core_pulid_flux.CA_SINGLE_INTERVAL))}
    result["phase_s"] = time.time() - started
    log(f"[PuLID Flux] done in {result['phase_s'] / 60:.1f} minutes")
    return result


# ---------------------------------------------------------------------------------------------------- ID encoding

@contextlib.contextmanager
def stub_insightface(kps, raw):
    """nodes.faces.analyze replaced by one detected face with these keypoints and raw embedding (no ONNX models
    offline); everything after it is the node's own code."""
    from ipadapter_kit.nodes import faces

    real = faces.analyze

    def analyze(analyzer, images, skip_missing=False):
        return faces.FaceResult(normed=torch.nn.functional.normalize(raw, dim=-1), raw=raw,
                                crops=torch.zeros(1, 224, 224, 3), kept=(0,), boxes=torch.zeros(1, 4),
                                det_sizes=(640,), kps=kps)

    faces.analyze = analyze
    try:
        yield
    finally:
        faces.analyze = real


def _build(module_fn, seed):
    from tinymodels.weights import init_module

    with torch.device("meta"):
        module = module_fn()
    module = module.to_empty(device="cpu")
    init_module(module, seed=seed)
    for name, buf in module.named_buffers():  # BatchNorm statistics as an untrained net keeps them
        if name.endswith("running_var"):
            buf.fill_(1.0)
        elif name.endswith("running_mean") or name.endswith("num_batches_tracked"):
            buf.zero_()
    return module.eval().requires_grad_(False)


def _same_layout(module, shapes, what):
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    want = {k: tuple(v) for k, v in shapes.items()}
    assert got == want, f"{what}: the pack's module differs from the released layout"


def run_encode(bench, tmp, log):
    """The ID encoding of one face, step by step and end to end (CPU, bench threads)."""
    from ipadapter_kit.ipadapter_core import eva_clip as core_eva
    from ipadapter_kit.ipadapter_core import face_align, face_parsing
    from ipadapter_kit.ipadapter_core import pulid as core_pulid
    from ipadapter_kit.ipadapter_core import pulid_flux as core_pulid_flux
    from ipadapter_kit.nodes import pulid as node_pulid
    from tinymodels import pulid_files

    args = bench.ARGS
    started = time.time()
    result = {"arch": "pulid_encode", "date": bench.datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "clock": bench.CLOCK.what if bench.DEVICE.type == "cpu" else "wall time", "threads": args.threads}
    bench.threads(bench.SETUP_THREADS)
    log("[PuLID encode] building EVA02-CLIP-L-14-336, BiSeNet and the SDXL / Flux ID encoders at real size "
        "(random weights) ...")
    cfg = core_eva.EVAConfig()
    tower = _build(lambda: core_eva.EVAVisionTower(cfg), 31)
    parser = _build(lambda: face_parsing.BiSeNet(face_parsing.ParserConfig()), 32)
    sx, fx = pulid_files.REAL_SDXL, pulid_files.REAL_FLUX
    id_encoder = _build(lambda: core_pulid.IDEncoder(sx["id_cond"], (1024, 1024), sx["context"], sx["eva_width"],
                                                     (sx["mapping_hidden"],) * 2), 33)
    id_former = _build(lambda: core_pulid_flux.IDFormer(fx["dim"], fx["depth"], fx["heads"], fx["queries"], fx["out"],
                                                        fx["id_cond"], (fx["id_hidden"],) * 2, fx["eva_width"],
                                                        (fx["mapping_hidden"],) * 2, fx["ff_mult"]), 34)
    _same_layout(id_encoder, pulid_files.id_encoder_shapes(sx), "IDEncoder")
    _same_layout(id_former, pulid_files.id_former_shapes(fx), "IDFormer")
    result["params"] = {name: sum(p.numel() for p in m.parameters())
                        for name, m in (("eva", tower), ("parser", parser), ("id_encoder", id_encoder),
                                        ("id_former", id_former))}
    result["eva"] = {"image_size": cfg.image_size, "patch": cfg.patch_size, "width": cfg.width, "depth": cfg.depth,
                     "heads": cfg.heads, "tokens": 1 + cfg.grid ** 2}
    log("[PuLID encode] parameters: " + ", ".join(f"{k} {v / 1e6:.1f}M" for k, v in result["params"].items()))
    bench.threads(args.threads)

    g = torch.Generator().manual_seed(41)
    image = torch.rand(1, FACE_SIDE, FACE_SIDE, 3, generator=g)  # a ComfyUI IMAGE
    kps = (face_align.ffhq_template(FACE_SIDE) * 0.6 + FACE_SIDE * 0.2).float()[None]  # a face in the middle
    raw = torch.nn.functional.normalize(torch.randn(1, ARCFACE, generator=g), dim=-1) * ARCFACE_NORM
    eva = node_pulid.EVAWithParser("EVA02_CLIP_L_336_psz14_s6B.pt (random weights)", tower, parser)

    state = {}

    def align():
        aligned = face_align.align_faces(image, kps, node_pulid.ALIGNED)
        state["aligned"] = (aligned * 255).round() / 255
        return state["aligned"]

    def parse():
        state["labels"] = face_parsing.parse(parser, state["aligned"])

    def picture():
        state["pixels"] = face_parsing.eva_input(face_parsing.face_features(state["aligned"], state["labels"]),
                                                 size=cfg.image_size)

    def eva_tower():
        with torch.no_grad():
            state["feature"], state["hidden"] = tower(state["pixels"], core_eva.PULID_LAYERS)

    def encoder(module, zero_tokens):
        def run():
            with torch.no_grad():
                return core_pulid.identity_tokens(module, raw, state["feature"], state["hidden"], 0.0, zero_tokens,
                                                  torch.Generator().manual_seed(0))
        return run

    steps = (("align", "FFHQ alignment (`face_align.align_faces`, 512×512 crop)", align),
             ("parse", "BiSeNet face parsing at 512×512 (`face_parsing.parse`)", parse),
             ("picture", "face picture: gray, background white, 336 bicubic, CLIP mean/std", picture),
             ("eva", f"EVA02-CLIP-L-14-336 tower ({1 + cfg.grid ** 2} tokens, 24 blocks, hidden states 3/7/11/15/19)",
              eva_tower),
             ("id_encoder", "SDXL IDEncoder, cond + uncond (`pulid.identity_tokens`, 8 sinks)", encoder(id_encoder, 8)),
             ("id_former", "Flux IDFormer, cond + uncond (`pulid.identity_tokens`)", encoder(id_former, 0)))
    timings = {}
    for name, label, fn in steps:
        _, wall_s, cpu = bench.wall(fn)
        first = cpu if bench.DEVICE.type == "cpu" else wall_s
        runs = []
        for _ in range(ENCODE_RUNS):
            _, wall_s, cpu = bench.wall(fn)
            runs.append(cpu if bench.DEVICE.type == "cpu" else wall_s)
        timings[name] = {"label": label, "first": first, "runs": runs, "median": statistics.median(runs)}
        log(f"[PuLID encode] {name}: first {first:.3f} s, median of {ENCODE_RUNS} {timings[name]['median']:.3f} s")
    result["steps"] = timings

    # the node's own identity() end to end (InsightFace stubbed): what one Apply node run costs after detection
    totals = {}
    with stub_insightface(kps, raw):
        for name, module, zero_tokens in (("sdxl", id_encoder, 8), ("flux", id_former, 0)):
            runs = []
            for _ in range(2):
                _, wall_s, cpu = bench.wall(lambda: node_pulid.identity(None, eva, None, image, 0.0, zero_tokens,
                                                                        encoder=module))
                runs.append({"cpu": cpu, "wall": wall_s})
            totals[name] = {"cpu": min(r["cpu"] for r in runs), "wall": min(r["wall"] for r in runs), "runs": runs}
            log(f"[PuLID encode] nodes.pulid.identity ({name}): {totals[name]['cpu']:.2f} s CPU, "
                f"{totals[name]['wall']:.2f} s wall (the faster of 2)")
    result["totals"] = totals
    result["phase_s"] = time.time() - started
    return result


# ---------------------------------------------------------------------------------------------------- report

def _ms(seconds):
    return f"{seconds * 1e3:.0f} ms"


def _gb(b):
    return "n/a" if b is None else f"{b / 1024 ** 3:.1f} GB"


def encode_lines(r, which):
    """Markdown lines: the one-off ID encoding table (SDXL: its IDEncoder; Flux: its IDFormer)."""
    enc = r.get("id_encode")
    if not enc:
        return ["The one-off ID encoding was not measured in this run (see the other PuLID subsection, or run "
                "with `--cases pulid`)."]
    steps = enc["steps"]
    mine = "id_encoder" if which == "sdxl" else "id_former"
    keys = ("align", "parse", "picture", "eva", mine)
    total = sum(steps[k]["median"] for k in keys)
    params = enc["params"]
    plabel = {"eva": params["eva"], "parse": params["parser"], "id_encoder": params["id_encoder"],
              "id_former": params["id_former"]}
    node = enc["totals"][which]
    lines = [f"One-off ID encoding of one 512×512 face (run {enc['date']}, its own process; {enc['clock']}, "
             f"{enc['threads']} torch thread(s); real-size modules with random weights, built by the pack's classes; "
             f"each step once cold, then the median of {ENCODE_RUNS} runs):", "",
             "| step | parameters | first run | median |", "| --- | --- | --- | --- |"]
    for k in keys:
        s = steps[k]
        p = plabel.get(k)
        lines.append(f"| {s['label']} | {'—' if p is None else f'{p / 1e6:.1f}M'} | {s['first']:.3f} s | "
                     f"{s['median']:.3f} s |")
    lines += [f"| **sum of the steps** | | | **{total:.2f} s** |",
              f"| `nodes.pulid.identity` end to end (InsightFace stubbed) | | | {node['cpu']:.2f} s CPU, "
              f"{node['wall']:.2f} s wall |", "",
              "So one Apply PuLID" + (" (Flux)" if which == "flux" else "")
              + f" node run costs about {node['cpu']:.1f} s of CPU on {enc['threads']} thread(s) here beyond "
              "InsightFace's detection and ArcFace (not measured: no real-size ONNX models offline), most of it the "
              "EVA tower; it runs once per node execution, not per step."]
    return lines


def sdxl_section(bench, r):
    """The PuLID subsection of the SDXL section."""
    start, end = markers("sdxl_pulid")
    size = r["size"]
    ld = r["load"]
    lines = [start, f"### PuLID (identity tokens with PuLID's projections), latent {size}×{size}, batch 2, "
             f"{r['device']} {r['dtype']}", "",
             f"Run {r['date']} in its own process; this part took {r['phase_s'] / 60:.1f} minutes. {r['rounds']} "
             f"timed rounds of {1 + len(r['timed'])} steps each"
             + ("" if r["rounds"] >= bench.ARGS.pairs else
                f" (fewer than the other rows' {bench.ARGS.pairs}: a step took {r['step_estimate']:.1f} s, and "
                f"`--pulid-budget` {r['budget']:.0f} s of rounds keeps this part to a few minutes)")
             + f". Load average {r['loadavg'][0]:.1f} before and {r['loadavg'][1]:.1f} after them.", "",
             f"Method: the real-size SDXL UNet above and a real-size `{ld['file']}` in the released layout "
             f"({ld['tensors']} tensors, {ld['params'] / 1e6:.1f}M parameters: the IDEncoder `image_proj.*` and "
             "`to_k_ip`/`to_v_ip` of the 70 cross-attentions; fp16 as released, random weights), loaded by "
             "`model_cache.load_adapter(name, \"pulid\")`. The identity tokens are made by the file's IDEncoder "
             "from a random raw ArcFace embedding, a random normalised EVA feature and 5 random EVA hidden states "
             "(1, 577, 1024), with zeros for the negative (`pulid.identity_tokens`, as `nodes.pulid.identity` calls "
             "it), and the prompt is built and installed as `nodes.pulid.apply_pulid` does (`ImagePrompt` with the "
             "method's projection, weight 1.0 on every layer, `patching.install`). Fidelity: `ortho_v2` (the "
             "identity mass of each query over the first 5 tokens, unscaled logits) with 8 sink tokens; style: "
             "`ortho` with 16. Timed call, clock, threads and interleaving as the adapter rows above "
             f"({r['clock']}, {bench.ARGS.threads} thread(s)).", "",
             "| method | identity tokens | patched / plain (median) | min–max | target | patched step | plain step "
             "| time in the PuLID attention | K/V cache |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    met = {}
    for case, t in r["timed"].items():
        med, spread = bench.fmt_ratio(t["ratios"])
        ok = bench.summary(t["ratios"])[0] <= TARGETS["sdxl"]
        met[case] = ok
        ap, inside = r["apply"][case], r["inside"][case]
        lines.append(f"| {case} (`{ap['projection']}`) | {ap['tokens'][1]} ({ap['tokens'][1] - ap['zero_tokens']} + "
                     f"{ap['zero_tokens']} sinks) | {med} | {spread} | ≤ {TARGETS['sdxl']:.2f}× "
                     f"{'✅' if ok else '❌'} | {t['patched_s']:.2f} s | {t['unpatched_s']:.2f} s | "
                     f"{inside['image_s'] * 1e3:.0f} ms ({100 * inside['image_s'] / inside['step_s']:.1f}%) | "
                     f"{r['cold'][case]['cache_bytes'] / bench.MB:.2f} MB |")
    lines += ["", "*Time in the PuLID attention*: one more patched forward with timers around the patch's calls, "
              "minus ComfyUI's text attention inside them: the identity attention, the projection against the text "
              "output (and for fidelity the identity mass), measured below the noise of the step ratios.", "",
              f"One attn2 call (`{r['l1_key']}`: {r['l1_shape']}), the installed patch vs ComfyUI's "
              f"`{r['attention']}`, {bench.ARGS.l1_pairs} interleaved pairs of "
              f"{next(iter(r['l1'].values()))['calls']} calls:", "",
              "| method | patched / plain (median) | min–max | plain call | patched call | host reads per call "
              "| what the patch adds, by op |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for case, t in r["l1"].items():
        med, spread = bench.fmt_ratio(t["ratios"])
        ops = ", ".join(f"{name.replace('aten::', '')} {share:.0%}" for name, share in t["profile"])
        lines.append(f"| {case} | {med} | {spread} | {t['plain_ms']:.2f} ms | {t['patched_ms']:.2f} ms | "
                     f"{t['syncs'] / 3:g} | {ops} |")
    cold = r["cold"]
    lines += ["", f"One-off: load {ld['seconds']:.1f} s wall ({ld['file_bytes'] / bench.MB:.0f} MB file, "
              f"{ld['weights_bytes'] / bench.MB:.0f} MB {ld['dtype']} in memory; {ld['spec']}); IDEncoder on the "
              "face condition (cond + uncond) and install: "
              + ", ".join(f"{c} {a['cpu'] * 1e3:.0f} ms" for c, a in r["apply"].items())
              + "; first steps (K/V cache filled): plain " + f"{r['first']['plain']:.2f} s, "
              + ", ".join(f"{c} {r['first'][c]:.2f} s (K/V projection {_ms(cold[c]['kv_s'])}, "
                          f"{cold[c]['projections']} `scaled_kv` calls)" for c in r["timed"]) + ".", ""]
    lines += encode_lines(r, "sdxl")
    steady_ok = r["steady_projections"] == 0 and all(r["cache_after"][c] == cold[c]["cache_entries"] for c in cold)
    syncs_ok = all(c["syncs"] <= 0 for c in cold.values()) and all(t["syncs"] <= 0 for t in r["l1"].values())
    lines += ["", f"Checks: PuLID target ≤ {TARGETS['sdxl']:.2f}× the plain step "
              f"{'✅' if all(met.values()) else '❌'} (" + ", ".join(f"{c} {'met' if ok else 'missed'}"
                                                               for c, ok in met.items()) + "); "
              f"K/V projected in the first step only ({r['steady_projections']} `scaled_kv` calls in the timed and "
              f"instrumented steps, cache entries unchanged) {'✅' if steady_ok else '❌'}; host reads beyond the plain "
              f"step's own ({r['plain_syncs']}): first steps "
              + ", ".join(f"{c} {v['syncs']:+d}" for c, v in cold.items())
              + ", warm attn2 calls " + ", ".join(f"{c} {t['syncs'] / 3:+g}" for c, t in r["l1"].items())
              + f" {'✅' if syncs_ok else '❌'}. Peak RSS of this part {_gb(r['peak'])} (UNet "
              f"{_gb(r['unet_bytes'])}, PuLID weights {ld['weights_bytes'] / bench.MB:.0f} MB).", end]
    return "\n".join(lines)


def whole_model(r, source="ratio"):
    """Estimated Flux model step ratio with PuLID: 19 double and 38 single blocks, 10 + 10 of them followed by a
    cross-attention costing what one block's did (median ratio, or the instrumented CA time)."""
    t = r["timed"]
    d, s = t["double"]["unpatched_s"], t["single"]["unpatched_s"]
    nd, ns = bench_flux.DOUBLE, bench_flux.SINGLE
    cd, cs = r["ca_count"]["double"], r["ca_count"]["single"]
    if source == "ratio":
        added = cd * (statistics.median(t["double"]["ratios"]) - 1) * d + cs * (
            statistics.median(t["single"]["ratios"]) - 1) * s
    else:
        added = cd * r["parts"]["double"]["identity"] + cs * r["parts"]["single"]["identity"]
    return 1 + added / (nd * d + ns * s)


def ca_macs(r):
    """Multiply-adds of one PerceiverCA call at this token count (batch 1)."""
    ca, n, t = r["ca"], r["image_tokens"], r["apply"]["tokens"][1]
    inner = ca["heads"] * ca["head_dim"]
    return n * ca["width"] * inner * 2 + t * ca["kv_width"] * 2 * inner + 2 * n * t * inner


def flux_section(bench, r):
    """The PuLID subsection of the Flux section."""
    start, end = markers("flux_pulid")
    n, text = r["image_tokens"], r["text"]
    px = f"{16 * r['grid'][0]}×{16 * r['grid'][1]}"
    ld, ca = r["load"], r["ca"]
    lines = [start, "### PuLID-Flux (a cross-attention after every 2nd double and every 4th single block), "
             f"{text} text + {n} image tokens ({px} px), batch 1, {r['device']} {r['dtype']}", "",
             f"Run {r['date']} in its own process; this part took {r['phase_s'] / 60:.1f} minutes. "
             f"{bench.ARGS.pairs} timed rounds per block. Load average "
             + "; ".join(f"{k} block {a:.1f} before and {b:.1f} after its rounds" for k, (a, b) in r["loadavg"].items())
             + ".", "",
             f"Method: the blocks, inputs, clock and interleaving of the Flux rows above. A real-size `{ld['file']}` "
             f"in the released layout ({ld['tensors']} tensors, {ld['params'] / 1e6:.1f}M parameters: the IDFormer "
             f"`pulid_encoder.*` and {ca['count']} `pulid_ca.*` PerceiverCA modules of {ca['params'] / 1e6:.1f}M, "
             f"hidden {ca['width']}, {ca['heads']} heads × {ca['head_dim']}, kv width {ca['kv_width']}; bf16 as the "
             f"reference runs it, random weights) is loaded by `model_cache.load_adapter(name, \"pulid\")` "
             f"({ld['dtype']} in memory). Its IDFormer makes {r['apply']['tokens'][1]} identity tokens from a random "
             "face condition (and the negative from zeros), and an `IdentityPrompt` (weight 1.0) is installed with "
             "`patching.install_identity`, as `nodes.pulid.apply_pulid_flux` does, on the Flux shell model. "
             "*Patched* is the installed `FluxBlockPatch` called as Flux's forward calls a `dit` block replace on "
             "double block 0 and single block 0: the block, then "
             "`pulid_ca[k]` on the generated image's tokens, added with the weight; *plain* is the block alone.", "",
             "| block | patched / plain (median) | min–max | target | plain call | patched call | the cross-attention "
             "(instrumented) | 1 + CA / plain | host reads per patched call |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    met = {}
    for kind, t in r["timed"].items():
        med, spread = bench.fmt_ratio(t["ratios"])
        ok = bench.summary(t["ratios"])[0] <= TARGETS["flux"]
        met[kind] = ok
        p = r["parts"][kind]
        lines.append(f"| {bench_flux.BLOCK_NAMES[kind]} + `pulid_ca` | {med} | {spread} | ≤ {TARGETS['flux']:.2f}× "
                     f"{'✅' if ok else '❌'} | {_ms(t['unpatched_s'])} | {_ms(t['patched_s'])} | "
                     f"{_ms(p['identity'])} | {1 + p['identity'] / t['unpatched_s']:.3f}× | "
                     f"{r['warm'][kind]['syncs']:+d} |")
    est_ratio, est_ca = whole_model(r, "ratio"), whole_model(r, "ca")
    macs = ca_macs(r)
    cd, cs = r["ca_count"]["double"], r["ca_count"]["single"]
    lines += ["", f"*The cross-attention (instrumented)*: median of {bench_flux.BREAKDOWN_CALLS} patched calls with a "
              "timer around the patch's identity step (the identity tokens from the cache, `pulid_ca[k]`, the "
              f"weighted add); it is {macs / 1e9:.1f} G multiply-adds at {n} image tokens (to_q and to_out over the "
              "image tokens, to_kv over the identity tokens, recomputed each call), the same after a double or a "
              "single block. It is timed inside each call, so it does not depend on the plain calls around it: "
              "with other work on the machine (the load averages above) the block ratios' min–max spread is that "
              "noise, and *1 + CA / plain* (the CA time over the median plain call) is the steadier figure.", "",
              f"**Whole model** (an estimate: a whole Flux model does not fit this machine): of Flux.1's "
              f"{bench_flux.DOUBLE} double and {bench_flux.SINGLE} single blocks, {cd} double and {cs} single are "
              f"followed by a cross-attention ({cd + cs} over {bench_flux.DOUBLE + bench_flux.SINGLE} blocks). With "
              "each block's plain time from the rows above and each CA costing its instrumented time, one step costs "
              f"**{est_ca:.3f}×** the plain model; with each CA costing what the median block ratio says, "
              f"{est_ratio:.3f}× (the embedders and final layer, a small share of a step, left out of both).", "",
              f"One-off: load {ld['seconds']:.1f} s wall ({ld['file_bytes'] / bench.MB:.0f} MB file, "
              f"{ld['weights_bytes'] / bench.MB:.0f} MB {ld['dtype']} in memory; {ld['spec']}); IDFormer on the face "
              f"condition (cond + uncond) and install {r['apply']['cpu']:.2f} s; first patched calls "
              + ", ".join(f"{bench_flux.BLOCK_NAMES[k]} {c['first_s']:.2f} s" for k, c in r["cold"].items()) + ".", ""]
    lines += encode_lines(r, "flux")
    syncs_ok = all(c["syncs"] <= 0 for c in r["cold"].values()) and all(w["syncs"] <= 0 for w in r["warm"].values())
    lines += ["", f"Checks: block-level target ≤ {TARGETS['flux']:.2f}× {'✅' if all(met.values()) else '❌'} ("
              + ", ".join(f"{k} {'met' if ok else 'missed'} (1 + CA / plain "
                          f"{1 + r['parts'][k]['identity'] / r['timed'][k]['unpatched_s']:.3f}×)"
                          for k, ok in met.items()) + "); host reads beyond the "
              "plain block's own: first calls " + ", ".join(f"{k} {c['syncs']:+d}" for k, c in r["cold"].items())
              + ", warm " + ", ".join(f"{k} {w['syncs']:+d}" for k, w in r["warm"].items())
              + f" {'✅' if syncs_ok else '❌'}.", end]
    return "\n".join(lines)


SECTIONS = {"sdxl_pulid": sdxl_section, "flux_pulid": flux_section}


def section(bench, r):
    return SECTIONS[r["arch"]](bench, r)
