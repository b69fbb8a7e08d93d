"""bench=quickstart: the README's main command (``hwnas`` with the embedded default), timed as a user runs it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nas.bench.config import bench_config, run_hwnas
from nas.rundir import write_json_atomic


def run(cfg: Any) -> dict:
    cfg = bench_config("quickstart", cfg)
    if cfg.out is None:
        raise ValueError("bench.out is null; expected the path of the result JSON")
    out = Path(cfg.out)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else out.parent / "quickstart_run"
    t0 = time.perf_counter()
    command = run_hwnas(run_dir, cfg.overrides or [])
    wall = time.perf_counter() - t0
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
        "worst_onnx_max_abs_diff": summary["stages"].get("export", {}).get("worst_onnx_max_abs_diff"),
        "device": summary["device"],
        "run_dir": str(run_dir),
        "target_seconds": 600,
    }
    result["meets_target"] = bool(wall <= 600)
    write_json_atomic(out, result)
    return result
