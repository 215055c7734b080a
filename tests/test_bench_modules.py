"""scripts/bench.py's modules import without running anything (no command line read, no patching, no threads set)."""
import importlib
import pathlib
import sys
import types

import torch

from ipadapter_kit.ipadapter_core import attention
from ipadapter_kit.ipadapter_core.adapter import KVProjection

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_bench_modules_run_nothing_at_import(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    monkeypatch.setattr(sys, "argv", ["pytest", "--not-a-bench-option"])  # argparse would exit on it
    threads, scaled_kv, tensor_item = torch.get_num_threads(), attention.scaled_kv, torch.Tensor.item
    names = ("bench_harness", "bench_probes", "bench_report", "bench")
    modules = {name: importlib.import_module(name) for name in names}
    harness = modules["bench_harness"]
    assert harness.ARGS is None and harness.DEVICE is None and modules["bench_probes"].PROBES is None
    assert attention.scaled_kv is scaled_kv and torch.Tensor.item is tensor_item
    assert torch.get_num_threads() == threads


def test_the_probes_count_projections_once_installed(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    probes = importlib.import_module("bench_probes")
    monkeypatch.setattr(attention, "scaled_kv", attention.scaled_kv)  # the counter's wrapper goes after the test
    counter = probes.Probes()
    counter.install()
    prompt = types.SimpleNamespace(layer_weights=(1.0,), ref_weights=(1.0,), embeds_scaling="V only")
    attention.scaled_kv(prompt, 0, torch.randn(1, 2, 4), KVProjection(torch.randn(8, 4), torch.randn(8, 4)), 4)
    assert counter.projections == 1


def test_the_report_checks_chained_and_separate_against_one_plus_adapter(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    report = importlib.import_module("bench_report")

    def check(plus, four, masked):
        return report.fused_check({c: {"ratios": [v]} for c, v in (("plus", plus), ("four", four), ("masked", masked))})

    assert "✅" in check(1.30, 1.33, 1.34)[0]
    assert "❌" in check(1.30, 1.38, 1.31)[0]  # 6% above the plus adapter
    assert "❌" in check(1.34, 1.36, 1.35)[0]  # within 5% of it but above 1.35x
    assert check(1.30, 1.31, 1.32)[0].count("1.008×") == 1
