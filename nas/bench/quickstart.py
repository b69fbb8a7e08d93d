"""bench=quickstart: the README's main command (``hwnas`` with the embedded default), timed as a user runs it.

``bench.competing=N`` runs N CPU-bound busy-loop processes beside it (started before, killed after): the
busy-machine figure, run back to back with ``competing=0``. ``bench.runs=N`` runs the command N times one after
the other (into ``run_dir/run1`` ...) and reports every run and the median, min and max of its figures. The
result records what the run saw of the load: each stage's torch threads and measurements.csv's load columns."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from nas.bench.config import bench_config, load_average, run_hwnas
from nas.rundir import write_json_atomic

TARGET_SECONDS = 600  # the shared protocol's wall-time target for the command
# the figures of one run that the median over runs summarises
SUMMARISED = ("seconds_total", "wall_seconds", "n_pareto", "best_test_accuracy", "hypervolume",
              "pareto_latency_span", "worst_parity_max_abs_diff")


def run(cfg: Any) -> dict:
    cfg = bench_config("quickstart", cfg)
    if cfg.out is None:
        raise ValueError("bench.out is null; expected the path of the result JSON")
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.parent / "quickstart_run"
    n_busy, n_runs = int(cfg.competing), int(cfg.runs)
    if n_busy < 0:
        raise ValueError(f"bench.competing={n_busy} is invalid; expected an integer >= 0")
    if n_runs < 1:
        raise ValueError(f"bench.runs={n_runs} is invalid; expected an integer >= 1")
    dirs = [run_dir] if n_runs == 1 else [run_dir / f"run{i + 1}" for i in range(n_runs)]
    runs = [one_run(d, cfg.overrides or [], n_busy) for d in tqdm(dirs, desc="quickstart runs", disable=n_runs == 1)]
    result = runs[0] if n_runs == 1 else summarise(runs)
    write_json_atomic(out, result)
    return result


def summarise(runs: list[dict]) -> dict:
    """Several runs of the same command: each run's figures, and their median, min and max (the run-to-run spread:
    supernet training with 2 threads differs from process to process, and the machine drifts)."""
    import numpy as np

    def stat(f: Any) -> dict:
        return {k: float(f([r[k] for r in runs])) for k in SUMMARISED if all(r.get(k) is not None for r in runs)}

    median = stat(np.median)
    return {"bench": "quickstart", "command": runs[0]["command"], "n_runs": len(runs),
            "median": median, "min": stat(np.min), "max": stat(np.max), "runs": runs,
            "competing": runs[0].get("competing", 0), "target_seconds": TARGET_SECONDS,
            "meets_target": bool(median["wall_seconds"] <= TARGET_SECONDS)}


def one_run(run_dir: Path, overrides: list, n_busy: int) -> dict:
    """``hwnas`` once into ``run_dir`` beside ``n_busy`` busy loops: its seconds, front and load."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
    load_before = load_average()
    try:
        t0 = time.perf_counter()
        command = run_hwnas(run_dir, overrides)
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
        "target_seconds": TARGET_SECONDS,
    }
    result["meets_target"] = bool(wall <= TARGET_SECONDS)
    return result
