"""bench=scaling on a shrunk run: the three series run in fresh processes, each row times exactly the stages
it ran, a rerun reuses the finished runs, and bad settings fail in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_data_loaders import _write_idx  # noqa: E402

from nas.bench.scaling import run as bench_run  # noqa: E402


@pytest.mark.slow
def test_scaling_series_time_what_they_ran(tmp_path: Path) -> None:
    idx = tmp_path / "mnist"
    _write_idx(idx, n_train=300, n_test=60)
    out = tmp_path / "scaling.json"
    cfg = {"base_overrides": ["experiment=smoke", "device.rounds=3"], "measure_n_archs": [6], "budget_n_archs": 6,
           "search_budget": [3], "train_images": [100], "train_data": "mnist",
           "train_overrides": ["train.epochs=1", f"data.root={idx}"], "out": str(out)}
    res = bench_run(cfg)
    got = {(r["series"], r["value"]): set(r["seconds"]) for r in res["rows"]}
    assert got == {("measure_n_archs", 6): {"measure", "predict", "search"},
                   ("search_budget", 3): {"search"}, ("train_images", 100): {"train"}}
    assert all(v > 0 for r in res["rows"] for v in r["seconds"].values())
    assert Path(res["plot"]).stat().st_size > 10_000 and out.is_file()
    import pandas as pd

    budget_run = tmp_path / "scaling_runs" / "budget_3"
    assert len(pd.read_csv(budget_run / "measurements.csv")) == 6  # the n_archs=6 run's measure stage, reused
    assert len(pd.read_csv(budget_run / "search_evaluations.csv")) == 3
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "scaling_runs").glob("*/bench_scaling.json")}
    again = bench_run(cfg)  # every run finished: nothing reruns
    assert again["rows"] == res["rows"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_scaling_bad_settings_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bench.measure_n_archs=\[0\] is invalid"):
        bench_run({"measure_n_archs": [0], "out": str(tmp_path / "x.json")})
    with pytest.raises(ValueError, match="bench.budget_n_archs=40 is not in"):
        bench_run({"measure_n_archs": [20], "out": str(tmp_path / "x.json")})
