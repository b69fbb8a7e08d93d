"""bench=quickstart: the README's main command (``hwnas`` with the embedded default), timed as a user runs it.

``bench.competing=N`` runs N CPU-bound busy-loop processes beside it (started before, killed after): the
busy-machine figure, run back to back with ``competing=0``. The result records what the run saw of the load:
each stage's torch threads and measurements.csv's load columns."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from nas.bench.config import bench_config, load_average, run_hwnas
from nas.rundir import write_json_atomic


def run(cfg: Any) -> dict:
    cfg = bench_config("quickstart", cfg)
    if cfg.out is None:
        raise ValueError("bench.out is null; expected the path of the result JSON")
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.parent / "quickstart_run"
    n_busy = int(cfg.competing)
    if n_busy < 0:
        raise ValueError(f"bench.competing={n_busy} is invalid; expected an integer >= 0")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
    load_before = load_average()
    try:
        t0 = time.perf_counter()
        command = run_hwnas(run_dir, cfg.overrides or [])
        wall = time.perf_counter() - t0
    finally:
        for p in busy:
            p.kill()
            p.wait()
    meas = pd.read_csv(run_dir / "measurements.csv")
    summary = json.loads((run_dir / "summary.json").read_text())
    search = summary["stages"].get("search", {})
    result = {
        "bench": "quickstart",
        "command": command,
        "wall_seconds": round(wall, 1),
        "seconds_total": summary["seconds_total"],
        "seconds_per_stage": summary["seconds_per_stage"],
        "n_pareto": search.get("n_pareto"),
        "pareto_latency_span": search.get("pareto_latency_span"),
        "best_test_accuracy": search.get("best_test_accuracy"),
        "hypervolume": search.get("hypervolume"),
        "worst_parity_max_abs_diff": summary["stages"].get("export", {}).get("worst_parity_max_abs_diff"),
        "device": summary["device"],
        "competing": n_busy,
        "load_average_before": load_before,
        "torch_threads_per_stage": {k: v.get("torch_threads") for k, v in summary["stages"].items()},
        "measurements_load": {"other_cpus_median": round(float(meas.other_cpus.median()), 3),
                              "drift_median": round(float(meas.drift.median()), 4),
                              "flags": {str(k): int(v) for k, v in meas["load"].value_counts().items()}},
        "run_dir": str(run_dir),
        "target_seconds": 600,
    }
    result["meets_target"] = bool(wall <= 600)
    write_json_atomic(out, result)
    return result
