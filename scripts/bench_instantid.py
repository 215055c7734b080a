"""InstantID in the SDXL phase of `make bench` (scripts/bench.py --arch sdxl): the real-size SDXL UNet plus a
real-size IdentityNet (ComfyUI's own ControlNet class with the SDXL config, random weights), one sampler step
(ControlNet + UNet, batch 2) plain and with InstantID, timed interleaved like the other SDXL rows.

It runs in its own process after the SDXL adapter cases (scripts/bench.py spawns it as the `sdxl_instantid` worker):
the UNet (10 GB in float32), IdentityNet (5 GB) and the other SDXL adapters (6 GB) do not fit this machine's 24 GB
together. Its figures go into the SDXL section of docs/benchmarks.md, between <!-- bench:sdxl_instantid -->
markers.

Imported by scripts/bench.py, which passes `bench` (namespace()): the clock, memory probe, probes, argument values and
helpers are the same as for the SD1.5/SDXL phases.
"""
import gc
import pathlib
import statistics
import time

import torch

import comfy.cldm.cldm
import comfy.controlnet
import comfy.ldm.modules.attention
import comfy.model_management
import comfy.ops
import folder_paths

ADAPTER_FILE = "ip-adapter.bin"  # models/instantid/, as users keep InstantX's file
FOLDER = "instantid"
ID_DIM, QUERIES, DIM, HEADS, HEAD_DIM, DEPTH, FF_MULT = 512, 16, 1280, 20, 64, 4, 4  # the released resampler
IP_WEIGHT = 0.8  # the Apply InstantID node's default weight (identity tokens and IdentityNet)
CN_STRENGTH = 0.8
TARGET = 1.05  # the issue: the attention part adds at most 5% to the step (ControlNet included)
START = "<!-- bench:sdxl_instantid -->"
END = "<!-- /bench:sdxl_instantid -->"
# (name, label) of the three timed forwards; "identity" is the reference every round starts and ends with
RUNS = (("identity", "plain UNet + IdentityNet reading the identity tokens"),
        ("text", "plain UNet + IdentityNet reading the text (a plain ControlNet)"),
        ("instantid", "InstantID: patched UNet (identity tokens, weight 0.8) + IdentityNet reading them"))


# ---------------------------------------------------------------------------------------------------- files

def adapter_shapes(bench):
    """InstantX's ip-adapter.bin at real size: the Resampler over one ArcFace embedding, to_k_ip/to_v_ip x 70."""
    ctx = bench.UNETS["sdxl"]["context_dim"]
    inner, ff = HEADS * HEAD_DIM, DIM * FF_MULT
    proj = {"latents": (1, QUERIES, DIM), "proj_in.weight": (DIM, ID_DIM), "proj_in.bias": (DIM,),
            "proj_out.weight": (ctx, DIM), "proj_out.bias": (ctx,), "norm_out.weight": (ctx,), "norm_out.bias": (ctx,)}
    from tinymodels import instantid_files  # the released key layout (tiny widths): same keys, same ranks
    from tinymodels.weights import perceiver_layer_shapes
    proj.update(perceiver_layer_shapes(DEPTH, DIM, inner, ff))
    tiny = instantid_files.instantid_shapes()
    assert set(proj) == set(tiny["image_proj"]), "InstantID image_proj keys differ from tests/tinymodels"
    assert all(len(proj[k]) == len(s) for k, s in tiny["image_proj"].items())
    ip = {}
    for i, width in enumerate(bench.cross_attn_widths("sdxl")):
        ip[f"{2 * i + 1}.to_k_ip.weight"] = (width, ctx)
        ip[f"{2 * i + 1}.to_v_ip.weight"] = (width, ctx)
    assert set(ip) == set(tiny["ip_adapter"]) and len(ip) == 2 * instantid_files.REAL["layers"]
    return {"image_proj": proj, "ip_adapter": ip}


def write_adapter(bench, folder, seed=300):
    """torch.save of {"image_proj", "ip_adapter"} in float32, as released; returns (path, size)."""
    from tinymodels.weights import nested_adapter, save_nested

    nested = nested_adapter(adapter_shapes(bench), seed, latents=(QUERIES, DIM))
    path = save_nested(nested, pathlib.Path(folder) / ADAPTER_FILE)
    del nested
    gc.collect()
    return path, path.stat().st_size


# ---------------------------------------------------------------------------------------------------- IdentityNet

def build_identitynet(bench, seed=21):
    """InstantID's IdentityNet at real size: comfy.cldm.cldm.ControlNet with the config load_controlnet derives
    from the release's diffusers file (model detection's SDXL UNet config, no out_channels, 3 hint channels),
    random weights, wrapped in ComfyUI's controlnet.ControlNet as Load ControlNet Model returns it."""
    from tinymodels import instantid_files
    from tinymodels.weights import init_module

    real = instantid_files.REAL_IDENTITYNET_CONFIG
    cfg = dict(bench.UNETS["sdxl"])
    cfg.pop("out_channels")
    load_device = comfy.model_management.get_torch_device()
    manual_cast = comfy.model_management.unet_manual_cast(bench.DTYPE, load_device)
    cfg.update(hint_channels=real["conditioning_channels"], dtype=bench.DTYPE,
               device=comfy.model_management.unet_offload_device(),
               operations=comfy.ops.pick_operations(bench.DTYPE, manual_cast))
    # the release's config, read as load_controlnet reads it: widths, depths, context, heads of 64
    assert tuple(cfg["model_channels"] * m for m in cfg["channel_mult"]) == tuple(real["block_out_channels"])
    assert cfg["context_dim"] == real["cross_attention_dim"] and cfg["adm_in_channels"] == \
        real["projection_class_embeddings_input_dim"]
    assert cfg["transformer_depth"][1::2] == [0, *real["transformer_layers_per_block"][1:]]
    assert all(w // cfg["num_head_channels"] == h for w, h in zip(real["block_out_channels"],
                                                                    real["attention_head_dim"]))
    net = comfy.cldm.cldm.ControlNet(**cfg)
    init_module(net, seed=seed)  # ComfyUI builds its layers uninitialised; the zero convs get weights too
    net.eval()
    if bench.DEVICE.type != "cpu":
        net.to(bench.DEVICE)
    return comfy.controlnet.ControlNet(net, load_device=load_device, manual_cast_dtype=manual_cast)


def keypoints_hint(side):
    """A keypoints image like Face Keypoints draws for a frontal face filling the middle of the picture."""
    from ipadapter_kit.ipadapter_core import keypoints as core_keypoints

    kps = torch.tensor([[[0.38, 0.40], [0.62, 0.40], [0.50, 0.55], [0.42, 0.70], [0.58, 0.70]]]) * side
    return core_keypoints.keypoint_images(kps, side, side)


class ControlForward:
    """One sampler step's model call with a ControlNet on the conditioning, as calc_cond_batch issues it: the
    ControlNet's get_control over the batch (uncond + cond), then apply_model with its output as `control`."""

    def __init__(self, bench, base, forward, control, cn_context=None):
        self.bench, self.forward, self.control = bench, forward, control
        self.cn_context = cn_context  # (2, T, 2048) crossattn_controlnet, uncond row first; None: the text
        sampling = base.model.model_sampling
        control.pre_run(base.model, lambda a: sampling.percent_to_sigma(a))  # as samplers.pre_run_control does
        self.split = None  # (ControlNet s, UNet s) of the last call, CPU only

    def __call__(self, patcher, step=0):
        f, device = self.forward, self.bench.DEVICE
        sigma = torch.full((2,), f.sigmas[step % len(f.sigmas)], device=device)
        options = dict(patcher.model_options["transformer_options"])  # what calc_cond_batch passes, shallow copy
        options["cond_or_uncond"] = [1, 0]
        options["sigmas"] = sigma
        c = {"c_crossattn": f.context, **f.extra, "transformer_options": options}
        if self.cn_context is not None:
            c["crossattn_controlnet"] = self.cn_context
        cpu = device.type == "cpu"
        with torch.no_grad():
            t0 = time.process_time()
            c["control"] = self.control.get_control(f.x, sigma, c, 2, options)
            t1 = time.process_time()
            out = f.model.apply_model(f.x, sigma, **c)
            if cpu:
                self.split = (t1 - t0, time.process_time() - t1)
            return out


# ---------------------------------------------------------------------------------------------------- timing

def time_rounds(bench, calls, rounds, log):
    """Rounds of: identity, then text and instantid (order alternated), identity again (it opens the next round).
    Returns {name: times}, {name: step peaks}, {name: [(cn, unet)]} with the identity list one longer."""
    times = {n: [] for n, _ in RUNS}
    peaks = {n: [] for n, _ in RUNS}
    splits = {n: [] for n, _ in RUNS}
    memory = bench.MEMORY

    def run(name, step):
        if memory.ok:
            memory.reset()
        fn = calls[name]
        t = bench.CLOCK.measure(lambda: fn(step))
        times[name].append(t)
        peaks[name].append(memory.peak() if memory.ok else None)
        splits[name].append(fn.split)

    run("identity", 0)
    for r in range(rounds):
        for name in (("text", "instantid") if r % 2 == 0 else ("instantid", "text")):
            run(name, r + 1)
        run("identity", r + 1)
        ref = (times["identity"][-2] + times["identity"][-1]) / 2
        log(f"  round {r + 1}/{rounds}: identity {times['identity'][-1]:.2f} s, text {times['text'][-1] / ref:.3f}, "
            f"instantid {times['instantid'][-1] / ref:.3f} (attention part), instantid / text "
            f"{times['instantid'][-1] / times['text'][-1]:.3f}")
    return times, peaks, splits


def ratios(times):
    ref = [(a + b) / 2 for a, b in zip(times["identity"], times["identity"][1:])]
    return {"attention": [b / a for a, b in zip(ref, times["instantid"])],
            "context": [t / a for a, t in zip(ref, times["text"])],
            "whole": [b / t for b, t in zip(times["instantid"], times["text"])]}


# ---------------------------------------------------------------------------------------------------- run

def run_instantid(bench, tmp, log, size):
    from ipadapter_kit.ipadapter_core import embeds as core_embeds
    from ipadapter_kit.nodes import instantid, model_cache, patching

    args = bench.ARGS
    started = time.time()
    result = {"arch": "sdxl_instantid", "size": size, "date": bench.datetime.date.today().isoformat(),
              "device": args.device.upper(), "dtype": str(bench.DTYPE).replace("torch.", ""),
              "clock": bench.CLOCK.what, "memory": bench.MEMORY.what,
              "attention": comfy.ldm.modules.attention.optimized_attention.__name__}
    sizes = {}

    bench.threads(bench.SETUP_THREADS)
    folder = pathlib.Path(tmp) / FOLDER
    folder.mkdir()
    folder_paths.add_model_folder_path(FOLDER, str(folder), is_default=True)
    log("[InstantID] writing a real-size InstantID ip-adapter.bin (float32, random weights) ...")
    (path, file_bytes), seconds, _ = bench.wall(lambda: write_adapter(bench, folder))
    bench.threads(args.threads)
    adapter, seconds, cpu = bench.wall(lambda: model_cache.load_adapter(ADAPTER_FILE, FOLDER))
    instantid.check_instantid(adapter)
    path.unlink()  # its page cache counts against this machine's memory
    gc.collect()
    sizes["adapter"] = bench.param_bytes(adapter.weights)
    result["load"] = {"file": ADAPTER_FILE, "file_bytes": file_bytes, "seconds": seconds, "cpu": cpu,
                      "weights_bytes": sizes["adapter"], "spec": adapter.spec.describe(),
                      "dtype": str(next(adapter.weights.parameters()).dtype).replace("torch.", "")}
    log(f"[InstantID] loaded {ADAPTER_FILE}: file {file_bytes / bench.MB:.0f} MB, weights in memory "
        f"{sizes['adapter'] / bench.MB:.0f} MB; {adapter.spec.describe()}; {seconds:.1f} s; RSS {bench.rss_gb()}")

    bench.threads(bench.SETUP_THREADS)
    log("[InstantID] building the real-size SDXL UNet (random weights) ...")
    base, seconds, _ = bench.wall(lambda: bench.build_unet("sdxl"))
    sizes["unet"] = bench.param_bytes(base.model.diffusion_model)
    log(f"[InstantID] UNet {sizes['unet'] / 1024 ** 3:.1f} GB ({seconds:.0f} s); RSS {bench.rss_gb()}")
    log("[InstantID] building a real-size IdentityNet (comfy.cldm.cldm.ControlNet, SDXL config, random weights) ...")
    control_net, seconds, _ = bench.wall(lambda: build_identitynet(bench))
    cn_model = control_net.control_model
    result["cn_params"] = sum(p.numel() for p in cn_model.parameters())
    result["cn_attn2"] = sum(1 for n, _ in cn_model.named_modules() if n.endswith(".attn2"))
    result["unet_params"] = sum(p.numel() for p in base.model.diffusion_model.parameters())
    sizes["controlnet"] = bench.param_bytes(cn_model)
    result["weights_bytes"] = sizes
    log(f"[InstantID] IdentityNet: {result['cn_params'] / 1e6:.0f}M parameters, {result['cn_attn2']} attn2 layers, "
        f"{sizes['controlnet'] / 1024 ** 3:.1f} GB ({seconds:.0f} s); RSS {bench.rss_gb()}")

    # InstantID's two halves as nodes/instantid.py applies them (apply_attention without InsightFace: a random
    # ArcFace-like embedding; the negative is zeros, noise 0)
    bench.threads(args.threads)
    g = torch.Generator().manual_seed(17)
    embeds = torch.randn(1, ID_DIM, generator=g)  # a raw ArcFace embedding's scale (norm ~ 22)
    uncond = instantid.negative_embeds(embeds, 0.0)

    def attention_half():
        instantid.check_sdxl(base)
        return instantid.attention_from_embeds(base, adapter, embeds, uncond, IP_WEIGHT, 0.0, 1.0)

    (patched, tokens), apply_s, _ = bench.wall(attention_half)
    _, resampler_s, resampler_cpu = bench.wall(
        lambda: patching.project_tokens(adapter, embeds, uncond, "concat", core_embeds.project))
    result["apply_s"], result["resampler_s"] = apply_s, resampler_cpu if bench.DEVICE.type == "cpu" else resampler_s
    result["tokens"] = list(tokens.cond.shape)

    forward = bench.Forward(base, "sdxl", size)
    hint = keypoints_hint(8 * size)
    positive = [[forward.context[1:2], {"pooled_output": forward.extra["y"][1:2]}]]
    negative = [[forward.context[0:1], {"pooled_output": forward.extra["y"][0:1]}]]
    # the pack's second half: one IdentityNet for both (so the sampler batches them), identity tokens as context
    pos, neg = instantid.apply_controlnet(tokens, control_net, hint, positive, negative, CN_STRENGTH, 0.0, 1.0)
    net = pos[0][1]["control"]
    assert neg[0][1]["control"] is net, "positive and negative got different IdentityNets (no batching)"
    cn_context = torch.cat([neg[0][1]["cross_attn_controlnet"], pos[0][1]["cross_attn_controlnet"]])
    # a plain ControlNet as ComfyUI's Apply ControlNet attaches it: same hint and strength, reads the text
    text_net = control_net.copy().set_cond_hint(hint[..., :3].movedim(-1, 1), CN_STRENGTH, (0.0, 1.0))
    text_net.set_previous_controlnet(None)
    f_identity = ControlForward(bench, base, forward, net, cn_context.to(bench.DEVICE, bench.DTYPE))
    f_text = ControlForward(bench, base, forward, text_net)

    class Call:
        def __init__(self, fwd, patcher):
            self.fwd, self.patcher = fwd, patcher

        def __call__(self, step):
            return self.fwd(self.patcher, step)

        @property
        def split(self):
            return self.fwd.split

    calls = {"identity": Call(f_identity, base), "text": Call(f_text, base), "instantid": Call(f_identity, patched)}

    log("[InstantID] first forwards (cond hints and K/V caches filled, projections and host reads counted) ...")
    probes = bench.PROBES
    first = {}
    with probes.count_syncs():
        _, s, c = bench.wall(lambda: calls["identity"](0))
    plain_syncs = probes.sync_total()
    first["identity"] = c if bench.DEVICE.type == "cpu" else s
    _, s, c = bench.wall(lambda: calls["text"](0))
    first["text"] = c if bench.DEVICE.type == "cpu" else s
    probes.projections = 0
    with probes.count_syncs(), probes.time_kv() as kv_time:
        _, s, c = bench.wall(lambda: calls["instantid"](0))
    first["instantid"] = c if bench.DEVICE.type == "cpu" else s
    patch = bench.our_patch(patched)
    result["first"] = first
    result["cold"] = {"projections": probes.projections, "syncs": probes.sync_total() - plain_syncs,
                      "plain_syncs": plain_syncs, "kv_s": kv_time[0], "cache_bytes": bench.cache_bytes(patch),
                      "cache_entries": bench.cache_entries(patch), "layers": len(patch.keys())}
    setup_peak = bench.MEMORY.peak() if bench.MEMORY.ok else None
    result["rss_after_setup"] = bench.MEMORY.current() if bench.MEMORY.ok else None
    log(f"[InstantID] first steps: identity {first['identity']:.2f} s, text {first['text']:.2f} s, instantid "
        f"{first['instantid']:.2f} s (K/V projection {kv_time[0]:.2f} s); peak so far "
        f"{(setup_peak or 0) / 1024 ** 3:.1f} GB")

    step = statistics.mean(first[n] for n in ("identity", "text"))
    rounds = max(3, min(args.pairs, int(args.instantid_budget // (3 * step))))
    result["rounds"], result["budget"], result["step_estimate"] = rounds, args.instantid_budget, step
    log(f"[InstantID] timing {rounds} rounds (3 steps each, ~{step:.1f} s a step; --instantid-budget "
        f"{args.instantid_budget:.0f} s) at latent {size}x{size}, batch 2 ...")
    probes.projections = 0
    load = [bench.loadavg()]
    times, peaks, splits = time_rounds(bench, calls, rounds, log)
    result["loadavg"] = load + [bench.loadavg()]
    result["times"], result["ratios"] = times, ratios(times)
    result["splits"] = {n: [list(s) for s in v if s is not None] for n, v in splits.items()}
    step_peaks = [p for v in peaks.values() for p in v if p is not None]
    result["peaks"] = peaks
    result["phase_peak"] = max([p for p in [setup_peak, *step_peaks] if p is not None], default=None)
    ref = peaks["identity"]
    result["peak_delta"] = (statistics.median(b - max(ref[r], ref[r + 1]) for r, b in enumerate(peaks["instantid"]))
                            if bench.MEMORY.ok else None)

    log("[InstantID] one instrumented forward (time inside the patch beyond ComfyUI's attention) ...")
    result["inside"] = bench.image_time_in_step(f_identity, patched, rounds + 1)
    result["steady_projections"] = probes.projections
    result["cache_after"] = bench.cache_entries(patch)
    result["phase_s"] = time.time() - started
    log(f"[InstantID] done in {result['phase_s'] / 60:.1f} minutes; phase peak "
        f"{(result['phase_peak'] or 0) / 1024 ** 3:.1f} GB")
    return result


# ---------------------------------------------------------------------------------------------------- report

def context_macs(bench, tokens, batch=2):
    """Multiply-adds of IdentityNet's attn2 K/V projections of its context (tokens x 2048) in one step: its 34
    cross-attentions are the UNet's down-path (first 24 in processor order) and middle (last 10) ones."""
    widths = bench.cross_attn_widths("sdxl")
    cn_widths = widths[:24] + widths[-10:]
    return batch * tokens * 2 * bench.UNETS["sdxl"]["context_dim"] * sum(cn_widths)


def context_note(bench, size, cn_identity, cn_text, text_tokens=77, id_tokens=16):
    """Why *text* costs more than *identity* at this latent, and what that means at 1024x1024 px."""
    text, ident = context_macs(bench, text_tokens), context_macs(bench, id_tokens)
    return (f"The *text* / *identity* difference is IdentityNet's K/V projections of its context in its 34 "
            f"cross-attentions, the same for every latent size: {text_tokens} text tokens cost {text / 1e9:.1f} G "
            f"multiply-adds a step there, the {id_tokens} identity tokens {ident / 1e9:.1f} G (batch 2), and "
            f"`get_control` took {cn_text - cn_identity:.2f} s longer on the text. At this {size}×{size} latent that "
            f"is a visible share of the step; at 1024×1024 px (a 128×128 latent) everything else in the step grows "
            f"{(128 // size) ** 2}× or more while these projections do not, so there (b)/(a) tends to the attention "
            "part's ratio.")


def _gb(b):
    return "n/a" if b is None else f"{b / 1024 ** 3:.1f} GB"


def section(bench, r):
    """The InstantID subsection of the SDXL section, between <!-- bench:sdxl_instantid --> markers."""
    med = {k: bench.summary(v) for k, v in r["ratios"].items()}
    t = {n: statistics.median(v) for n, v in r["times"].items()}
    splits = {n: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v)) if v else None
              for n, v in r.get("splits", {}).items()}
    ok = med["attention"][0] <= TARGET
    size = r["size"]
    inside = r["inside"]
    sizes = r["weights_bytes"]
    lines = [START, f"### InstantID (identity tokens + IdentityNet), latent {size}×{size}, batch 2, {r['device']} "
             f"{r['dtype']}", "",
             f"Run {r['date']} in its own process after the adapter cases above (the UNet, IdentityNet and those "
             f"adapters do not fit in memory together); this part took {r['phase_s'] / 60:.1f} minutes. "
             f"{r['rounds']} timed rounds of 3 steps each"
             + ("" if r["rounds"] >= bench.ARGS.pairs else
                f" (fewer than the other rows' {bench.ARGS.pairs}: a step with IdentityNet took "
                f"{r['step_estimate']:.1f} s, and `--instantid-budget` {r['budget']:.0f} s of rounds keeps this "
                "part to a few minutes)")
             + f". Load average {r['loadavg'][0]:.1f} before and {r['loadavg'][1]:.1f} after them.", "",
             "Method: the real-size SDXL UNet above and a real-size IdentityNet built with ComfyUI's own "
             f"`comfy.cldm.cldm.ControlNet` from the config `load_controlnet` derives from InstantX's diffusers file "
             f"(SDXL widths 320/640/1280, transformer depths 0/2/10 and 10 in the middle, context 2048, heads of 64, "
             f"3 hint channels; {r['cn_params'] / 1e6:.0f}M parameters, {r['cn_attn2']} attn2 layers), random "
             "weights, wrapped in `comfy.controlnet.ControlNet` as Load ControlNet Model returns it. The adapter is "
             f"a real-size `{r['load']['file']}` in the released layout (Perceiver resampler over one 512-d ArcFace "
             "embedding → 16 tokens × 2048, `to_k_ip`/`to_v_ip` of the 70 cross-attentions; float32 as released, "
             "random weights), loaded by `model_cache.load_adapter(name, \"instantid\")`. The attention half is "
             "what `nodes/instantid.apply_attention` runs (`patching.apply_embeds`, weight 0.8, a random ArcFace-like "
             "embedding, zeros as the negative, and `project_tokens` for the identity tokens); the IdentityNet half "
             f"is the pack's `apply_controlnet` itself (strength {CN_STRENGTH:g}, a Face Keypoints image as the hint, "
             "one IdentityNet copy for positive and negative so that the sampler batches them, the identity tokens "
             "as `cross_attn_controlnet`). The timed call is one sampler step as `calc_cond_batch` issues it: "
             "`get_control` over the batch (uncond + cond), then `apply_model` with its output as `control`. "
             f"Clock: {r['clock']}, {bench.ARGS.threads} torch thread(s). Each round runs *identity* (plain UNet + "
             "IdentityNet on the identity tokens), then *text* and *InstantID* (order alternated), then *identity* "
             "again; the attention part is InstantID over the mean of the two *identity* steps around it (the same "
             "ControlNet call in both, so only the patch differs); the whole is InstantID over *text* in the same "
             "round.", "",
             "| comparison | ratio (median) | min–max | target | steps |",
             "| --- | --- | --- | --- | --- |",
             f"| **attention part**: InstantID / plain UNet, same IdentityNet (identity tokens) in both | "
             f"**{med['attention'][0]:.3f}×** | {med['attention'][1]:.3f}–{med['attention'][2]:.3f} | "
             f"≤ {TARGET:.2f}× {'✅' if ok else '❌'} | {t['instantid']:.2f} s / {t['identity']:.2f} s |",
             f"| **InstantID / plain model + plain ControlNet** (b)/(a): patched UNet + IdentityNet on the identity "
             f"tokens vs plain UNet + the same ControlNet on the text | **{med['whole'][0]:.3f}×** | "
             f"{med['whole'][1]:.3f}–{med['whole'][2]:.3f} | — | {t['instantid']:.2f} s / {t['text']:.2f} s |",
             f"| ControlNet context alone: text (77 tokens) / identity tokens (16), plain UNet in both | "
             f"{med['context'][0]:.3f}× | {med['context'][1]:.3f}–{med['context'][2]:.3f} | — | "
             f"{t['text']:.2f} s / {t['identity']:.2f} s |", ""]
    if splits.get("identity"):
        cn, unet = splits["identity"]
        lines.append(f"Where a step goes (median, process CPU time): IdentityNet's `get_control` {cn:.2f} s "
                     f"(identity tokens; {splits['text'][0]:.2f} s on the text), the UNet {unet:.2f} s plain and "
                     f"{splits['instantid'][1]:.2f} s patched. Inside one more patched step, the patch's own work "
                     f"beyond ComfyUI's attention took {inside['image_s'] * 1e3:.0f} ms "
                     f"({100 * inside['image_s'] / inside['step_s']:.1f}% of the step, {inside['calls']} attn2 "
                     "calls): what the attention part costs, measured below the noise of the step ratios. "
                     + context_note(bench, size, cn, splits["text"][0]))
        lines.append("")
    cold = r["cold"]
    lines += [f"Memory ({r['memory']}): weights in memory — UNet {_gb(sizes['unet'])}, IdentityNet "
              f"{_gb(sizes['controlnet'])}, InstantID adapter {sizes['adapter'] / bench.MB:.0f} MB "
              f"({r['load']['dtype']}); resident after setup {_gb(r['rss_after_setup'])}; **peak of this part "
              f"{_gb(r['phase_peak'])}** (setup and every step); step peak Δ of InstantID over the plain steps "
              f"{bench.fmt_mb(r['peak_delta'])}; K/V cache {cold['cache_bytes'] / bench.MB:.2f} MB.", "",
              f"One-off: load {r['load']['seconds']:.1f} s wall ({r['load']['file_bytes'] / bench.MB:.0f} MB "
              f"file; {r['load']['spec']}); the attention half's apply (`apply_embeds` + `project_tokens`) "
              f"{r['apply_s']:.2f} s, of which the resampler runs twice ({r['resampler_s'] * 1e3:.0f} ms each; "
              f"identity tokens {tuple(r['tokens'])}); first steps (cond hint resized, K/V cache filled): plain "
              f"{r['first']['identity']:.2f} s, InstantID {r['first']['instantid']:.2f} s, of which K/V projection "
              f"{cold['kv_s'] * 1e3:.0f} ms ({cold['projections']} calls of `attention.scaled_kv`: "
              f"{cold['layers']} layers × cond/uncond).", "",
              f"Checks: K/V projected in the first step only ({r['steady_projections']} `scaled_kv` calls in the "
              f"timed and instrumented steps, cache entries {cold['cache_entries']} → {r['cache_after']}) "
              f"{'✅' if r['steady_projections'] == 0 and cold['cache_entries'] == r['cache_after'] else '❌'}; host "
              f"reads in the first InstantID step beyond the plain step's own ({cold['plain_syncs']}, ComfyUI's): "
              f"{cold['syncs']:+d} {'✅' if cold['syncs'] <= 0 else '❌'}.",
              END]
    return "\n".join(lines)


def splice(sdxl_section, sub):
    """The SDXL section with its InstantID subsection replaced by sub (or added before its end marker)."""
    if START in sdxl_section and END in sdxl_section:
        return sdxl_section[:sdxl_section.index(START)] + sub + sdxl_section[sdxl_section.index(END) + len(END):]
    end = "<!-- /bench:sdxl -->"
    if end in sdxl_section:
        i = sdxl_section.index(end)
        return sdxl_section[:i].rstrip("\n") + "\n\n" + sub + "\n" + sdxl_section[i:]
    return sdxl_section.rstrip("\n") + "\n\n" + sub


def extract(sdxl_section):
    if START in sdxl_section and END in sdxl_section:
        return sdxl_section[sdxl_section.index(START):sdxl_section.index(END) + len(END)]
    return None

