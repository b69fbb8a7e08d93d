"""bench=scaling: seconds per pipeline stage as the work grows.

Three series, each a set of ``hwnas`` runs in fresh processes (as a user runs them), with the stage seconds
read from each run's ``summary.json``:

* ``measure.n_archs`` (``bench.measure_n_archs``): the measure, predict and search stages on one trained
  supernet (its train stage is run once and copied into every run directory);
* ``search.budget`` (``bench.search_budget``): the search stage alone, on the measure and predict stages of
  the ``measure.n_archs=bench.budget_n_archs`` run (40, the default);
* training images (``bench.train_images``): the train stage alone on the first N images of
  ``bench.train_data`` (``data.limit=N``), with ``bench.train_overrides``.

Finished runs are reused, so a rerun continues. Writes the JSON (one row per run: the setting, the seconds of
every stage it ran, the machine's load average before and after) and a PNG of the three series.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nas.bench.config import as_dict, bench_config, load_average, run_hwnas, seed_run_dir
from nas.rundir import write_json_atomic

log = logging.getLogger(__name__)


def _hwnas(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Run hwnas in a fresh process (unless the run directory already holds its summary) and return the
    summary with the load average around the run."""
    done = run_dir / "bench_scaling.json"
    if done.is_file():
        return json.loads(done.read_text())
    load_before = load_average()
    command = run_hwnas(run_dir, overrides)
    summary = json.loads((run_dir / "summary.json").read_text())
    rec = {"command": command, "seconds_per_stage": summary["seconds_per_stage"],
           "load_before": load_before, "load_after": load_average()}
    write_json_atomic(done, rec)
    return rec


def run(cfg: Any) -> dict:
    cfg = bench_config("scaling", cfg)
    if cfg.out is None:
        raise ValueError("bench.out is null; expected the path of the result JSON")
    for key in ("measure_n_archs", "search_budget", "train_images"):
        vals = list(cfg[key] or [])
        if any(not isinstance(v, int) or v < 1 for v in vals):
            raise ValueError(f"bench.{key}={vals} is invalid; expected a list of positive integers")
    nb = int(cfg.budget_n_archs)
    if nb not in list(cfg.measure_n_archs) and cfg.search_budget:
        raise ValueError(f"bench.budget_n_archs={nb} is not in bench.measure_n_archs={list(cfg.measure_n_archs)}; "
                         "expected one of them (the search_budget runs reuse that run's measure and predict stages)")
    out = Path(cfg.out)
    root = Path(cfg.run_root) if cfg.run_root else out.parent / "scaling_runs"
    base = [str(v) for v in cfg.base_overrides or []]
    plan: list[tuple[str, int, Path, list[str], Any]] = []
    trained = root / "trained"
    plan.append(("train_once", 0, trained, [*base, "stages=[train]"], None))
    for n in cfg.measure_n_archs:
        plan.append(("measure_n_archs", int(n), root / f"n_archs_{n}",
                     [*base, f"measure.n_archs={n}", "stages=[train,measure,predict,search]"], ("train",)))
    for b in cfg.search_budget:
        plan.append(("search_budget", int(b), root / f"budget_{b}",
                     [*base, f"measure.n_archs={nb}", f"search.budget={b}", "stages=[train,measure,predict,search]"],
                     ("train", "measure", "predict")))
    for n in cfg.train_images:
        plan.append(("train_images", int(n), root / f"train_{n}",
                     [*base, f"data={cfg.train_data}", f"data.limit={n}", *cfg.train_overrides, "stages=[train]"], None))
    rows = []
    for series, value, run_dir, overrides, seed_stages in tqdm(plan, desc="scaling runs", unit="run"):
        if seed_stages is not None:
            src = trained if seed_stages == ("train",) else root / f"n_archs_{nb}"
            seed_run_dir(src, run_dir, seed_stages)
        log.info("scaling: %s=%d in %s", series, value, run_dir)
        rec = _hwnas(run_dir, overrides)
        ran = {k: v for k, v in rec["seconds_per_stage"].items()
               if seed_stages is None or k not in seed_stages}  # the copied stages did not run here
        rows.append({"series": series, "value": value, "seconds": ran, "command": rec["command"],
                     "load_before": rec["load_before"], "load_after": rec["load_after"]})
    result = {"bench": "scaling", "config": as_dict(cfg), "cpus": os.cpu_count(),
              "rows": [r for r in rows if r["series"] != "train_once"]}
    plot = Path(cfg.plot) if cfg.plot else out.with_suffix(".png")
    _plot(result["rows"], plot)
    result["plot"] = str(plot)
    for r in result["rows"]:
        secs = ", ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items())
        print(f"{r['series']:<16} {r['value']:>6}  {secs}")
    write_json_atomic(out, result)
    return result


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"measure_n_archs": "measure.n_archs", "search_budget": "search.budget", "train_images": "training images (1 epoch)"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (series, title) in zip(axes, titles.items(), strict=True):
        rs = sorted((r for r in rows if r["series"] == series), key=lambda r: r["value"])
        if not rs:
            ax.set_visible(False)
            continue
        stages = [s for s in ("train", "measure", "predict", "search", "export") if any(s in r["seconds"] for r in rs)]
        for s in stages:
            ax.plot([r["value"] for r in rs], [r["seconds"].get(s, 0.0) for r in rs], "o-", label=s)
        ax.set_xlabel(title)
        ax.set_ylabel("seconds")
        ax.set_xticks([r["value"] for r in rs])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("hwnas stage seconds as the work grows (2 CPU cores)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
