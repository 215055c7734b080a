"""Soak: many prompts through a ComfyUI server of its own, on the tiny models, with varied graphs and some bad ones.

Every good prompt must return an image and every bad one an execution error, the server must stay up, and its
resident memory after the last prompt must be within 5% of what it was after the 20th (by then every graph kind
has run at least once, so every model is loaded). SOAK_PROMPTS sets the count (30 in the normal suite; `make soak` runs
200 and prints the figures).
"""
import os
import time

import psutil
import pytest

from comfy_server import execution_error
from test_reliability import (CLIP_G, adapter_prompt, advanced_prompt, dedicated_server, faceid_prompt, half_mask,
                              images, mask_batch, txt2img, unified_prompt, write_bad_world)

PROMPTS = int(os.environ.get("SOAK_PROMPTS", "30"))
WARMUP = 20
TOLERANCE = 0.05
TWO = ("reference_a.png", "reference_b.png")

# (kind, build(i), good?) in a fixed cycle: seeds and weights vary with i, so every prompt really samples.
GRAPHS = [
    ("plain", lambda i: txt2img("soak_plain", seed=i), True),
    ("adapter", lambda i: adapter_prompt(weight=0.5 + i % 7 / 10, seed=i, prefix="soak_adapter"), True),
    ("advanced_mask", lambda i: advanced_prompt(half_mask(48, 32), adapter_file="ip-adapter-plus_sd15.safetensors",
                                                seed=i, prefix="soak_mask"), True),
    ("faceid", lambda i: faceid_prompt(seed=i, prefix="soak_faceid"), True),
    ("bad_lora_file", lambda i: adapter_prompt("zz_lora.safetensors", seed=i), False),
    ("light_bin", lambda i: adapter_prompt("ip-adapter_sd15_light_v11.bin", seed=i, prefix="soak_light"), True),
    ("two_masks", lambda i: advanced_prompt(mask_batch(2), TWO, "separate", seed=i, prefix="soak_two"), True),
    ("bad_sdxl_adapter", lambda i: adapter_prompt("ip-adapter_sdxl_vit-h.safetensors", seed=i), False),
    ("unified_plus", lambda i: unified_prompt("PLUS (high strength)", seed=i, prefix="soak_unified"), True),
    ("bad_payload", lambda i: adapter_prompt("zz_payload.bin", seed=i), False),
    ("bad_encoder", lambda i: adapter_prompt(clip=CLIP_G, seed=i), False),
    ("bad_no_face", lambda i: faceid_prompt(("zz_no_face.png",), seed=i), False),
    ("bad_mask_count", lambda i: advanced_prompt(mask_batch(3), TWO, "separate", seed=i), False),
]


@pytest.fixture(scope="module")
def soak_server(world, tmp_path_factory):
    world_dir, marker = write_bad_world(world, tmp_path_factory.mktemp("soak"))
    with dedicated_server(world_dir, tmp_path_factory.mktemp("soak_server")) as server:
        yield server, marker


def rss(server):
    return psutil.Process(server.process.pid).memory_info().rss


@pytest.mark.skipif(PROMPTS <= WARMUP, reason=f"SOAK_PROMPTS must be above {WARMUP} to compare memory")
def test_soak(soak_server):
    server, marker = soak_server
    counts = {"good": 0, "bad": 0}
    rss_warm = None
    start = time.perf_counter()
    for i in range(PROMPTS):
        kind, build, good = GRAPHS[i % len(GRAPHS)]
        entry = server.run(build(i))
        status, error = entry["status"]["status_str"], execution_error(entry)
        if good:
            assert status == "success", (i, kind, error, server.log_tail())
            saved = images(server, entry)
            assert saved and all(img.std() > 1.0 for img in saved.values()), (i, kind)
        else:
            assert status == "error" and error is not None and error["exception_message"], (i, kind, entry["status"])
            assert "ipadapter_core.errors." in error["exception_type"], (i, kind, error["exception_type"])
        counts["good" if good else "bad"] += 1
        assert server.process.poll() is None, f"the server died at prompt {i} ({kind}):\n{server.log_tail()}"
        if i + 1 == WARMUP:
            rss_warm = rss(server)
            warm_time = time.perf_counter()
    elapsed = time.perf_counter() - start
    rss_last = rss(server)
    assert server.get("/system_stats")["system"]
    assert not marker.exists(), "a payload ran"
    growth = rss_last / rss_warm - 1
    after_warmup = (time.perf_counter() - warm_time) / (PROMPTS - WARMUP)
    print(f"\nsoak: {PROMPTS} prompts ({counts['good']} good, {counts['bad']} bad) in {elapsed:.1f} s, "
          f"{elapsed / PROMPTS:.2f} s per prompt ({after_warmup:.2f} s after the {WARMUP}th); server RSS after "
          f"prompt {WARMUP}: {rss_warm / 2**20:.1f} MiB, after prompt {PROMPTS}: {rss_last / 2**20:.1f} MiB "
          f"({growth:+.2%})")
    assert growth <= TOLERANCE, f"RSS grew {growth:.1%} from prompt {WARMUP} to {PROMPTS}"


def test_graph_mix_has_every_kind():
    kinds = {kind for kind, _, _ in GRAPHS}
    assert {"plain", "adapter", "advanced_mask", "faceid"} <= kinds and any(not good for _, _, good in GRAPHS)
    assert 2 * len(GRAPHS) >= WARMUP - 1  # each kind has run before the memory baseline is taken
