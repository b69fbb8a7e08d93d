"""bench=supernet_overhead runs through the hwnas-bench app and reports per-arch timings (values checked in BENCHMARKS)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("space", ["ofa_mbv3_small", "fbnet_cifar100"])
def test_supernet_overhead_bench_writes_its_json(space, tmp_path):
    out = tmp_path / "so.json"
    proc = subprocess.run([sys.executable, "-m", "nas.bench.cli", "bench=supernet_overhead", f"bench.spaces=[{space}]",
                           "bench.n_archs=2", "bench.steps=1", "bench.warmup=1", f"bench.out={out}",
                           f"hydra.run.dir={tmp_path / 'h'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    sp = res["spaces"][space]
    assert sp["n_archs"] == 2 and len(sp["archs"]) == 2
    for row in sp["archs"]:
        assert row["supernet_ms"] > 0 and row["static_ms"] > 0
        assert row["ratio"] == pytest.approx(row["supernet_ms"] / row["static_ms"], rel=1e-9)


def test_unknown_space_is_refused(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nas.bench.cli", "bench=supernet_overhead", "bench.spaces=[fbnet]",
                           f"bench.out={tmp_path / 'x.json'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bench.spaces contains 'fbnet'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
