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

The code is split in three modules next to this file, none of which runs anything at import: bench_harness (command
line, clocks, memory, threads, interleaved repeats), bench_probes (the models, the cases and what is measured) and
bench_report (the markdown); this file runs the phases, each in its own process.

    .host/venv/bin/python scripts/bench.py [--arch sd15|sdxl|flux|sd35|both|all] [--size N] [--pairs N]
                                           [--flux-tokens N] [--sd3-tokens N] [--instantid-budget S]
                                           [--pulid-budget S] [--cases a,b,...] [--device cpu|cuda]
"""
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import types

import bench_harness as harness  # scripts/, next to this file


def namespace():
    """The bench as the phase modules (bench_flux, bench_sd3, bench_instantid, bench_pulid) read it: the harness,
    the probes and the report in one namespace, after configure()."""
    import bench_probes  # noqa: PLC0415  (after prepare_host: it imports ComfyUI)
    import bench_report  # noqa: PLC0415

    names = {}
    for module in (harness, bench_probes, bench_report):
        names.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    return types.SimpleNamespace(**names)


def worker(args):
    """One phase (the CLIP encode, or one arch) in its own process, so that each starts with the memory free."""
    import torch  # noqa: PLC0415

    import bench_flux  # noqa: PLC0415  (the phase modules import ComfyUI: after prepare_host)
    import bench_instantid  # noqa: PLC0415
    import bench_probes  # noqa: PLC0415
    import bench_pulid  # noqa: PLC0415
    import bench_sd3  # noqa: PLC0415
    from ipadapter_kit.nodes import paths  # noqa: PLC0415

    torch.set_flush_denormal(True)
    paths.register_model_folders()
    bench_probes.install_probes()
    bench = namespace()
    log = harness.log
    sdxl_size = args.size or (64 if harness.DEVICE.type == "cuda" else harness.DEFAULT_SIZE["sdxl"])
    tmp = tempfile.mkdtemp(prefix="ipakit-bench-")
    try:
        if args.worker == "clip":
            result = bench_probes.encode_cost(log)
        elif args.worker == "flux":
            result = bench_flux.run_flux(bench, tmp, log)
        elif args.worker == "sd35":
            result = bench_sd3.run_sd3(bench, tmp, log)
        elif args.worker == "sdxl_instantid":
            result = bench_instantid.run_instantid(bench, tmp, log, sdxl_size)
        elif args.worker == "sdxl_pulid":
            result = bench_pulid.run_sdxl(bench, tmp, log, sdxl_size)
        elif args.worker == "flux_pulid":
            result = bench_pulid.run_flux(bench, tmp, log)
        elif args.worker == "pulid_encode":
            result = bench_pulid.run_encode(bench, tmp, log)
        else:
            size = args.size or (64 if harness.DEVICE.type == "cuda" else harness.DEFAULT_SIZE[args.worker])
            result = bench_probes.run_arch(args.worker, size, tmp, log)
            result.update(device=args.device.upper(), dtype=str(harness.DTYPE).replace("torch.", ""),
                          clock=harness.CLOCK.what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(args.result, "w") as f:
        json.dump(result, f)


def main(argv=None):
    args = harness.parse_args(argv)
    harness.prepare_host(args)
    harness.configure(args)
    if args.worker:
        return worker(args)
    import comfy.ldm.modules.attention  # noqa: PLC0415

    import bench_report  # noqa: PLC0415

    started = time.time()
    os.environ["IPAKIT_BENCH_T0"] = str(started)
    info = harness.machine()
    info["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    harness.log(f"{info['cpu']}, {info['cores']} cores; torch {info['torch']}, ComfyUI {info['comfyui']}; device "
                f"{args.device} {str(harness.DTYPE).replace('torch.', '')}; attention: "
                f"{comfy.ldm.modules.attention.optimized_attention.__name__}")
    wanted = list(harness.PHASES[args.arch])
    partial = set(wanted) != set(harness.PHASES["all"])
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    for sub, (parent, case) in harness.SUBPHASES.items():  # sub-phases: their own processes after their parent phase
        if parent in wanted and case in cases:
            at = wanted.index(parent) + 1
            while at < len(wanted) and wanted[at] in harness.SUBPHASES:
                at += 1
            wanted.insert(at, sub)
    if not cases - harness.SUB_CASES:  # --cases instantid / pulid: no adapter cases in the UNet (and Flux) phases
        skip = {"sd15", "sdxl"} | ({"flux"} if "pulid" in cases else set())
        wanted = [p for p in wanted if p not in skip]
        partial = True
    unet = any(p in ("sd15", "sdxl") for p in wanted)  # the CLIP encode figure is quoted in their sections
    pulid = any(p in ("sdxl_pulid", "flux_pulid") for p in wanted)  # PuLID's ID encoding, quoted in theirs
    phases = ([] if args.no_clip or not unet else ["clip"]) + \
        ([] if args.no_id_encode or not pulid else ["pulid_encode"]) + wanted
    results, clip, id_encode, failed = [], None, None, []
    with tempfile.TemporaryDirectory(prefix="ipakit-bench-") as tmp:
        for phase in phases:
            path = os.path.join(tmp, f"{phase}.json")
            command = [*(sys.argv[1:] if argv is None else argv), "--worker", phase, "--result", path]
            done = subprocess.run([sys.executable, os.path.abspath(__file__), *command])
            if done.returncode != 0 or not os.path.exists(path):
                harness.log(f"phase {phase} failed (exit status {done.returncode})")
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
    for sub, (parent, _) in harness.SUBPHASES.items():  # a sub-phase goes into its parent's section
        p = next((r for r in results if r["arch"] == parent), None)
        s = next((r for r in results if r["arch"] == sub), None)
        if p and s:
            p.setdefault("subs", {})[sub] = s
            results.remove(s)
    elapsed = time.time() - started
    bench = namespace()
    sections = "\n\n".join(bench_report.section_for(r, bench) for r in results)
    print("\n" + sections.replace("<!-- ", "").replace(" -->", ""))
    if args.out != "-" and results:
        bench_report.write_doc(pathlib.Path(args.out), results, info, elapsed, bench, partial=partial)
        harness.log(f"wrote {args.out}")
    harness.log(f"done in {elapsed / 60:.1f} minutes")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
