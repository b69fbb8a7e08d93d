"""bench=quickstart with ``bench.runs=N``: the median, min and max over runs, from three real runs' JSONs (the
2026-12-01 17:38 runs of docs/history.md), and bad input before any run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.bench import quickstart

RUNS = Path(__file__).resolve().parents[2] / "experiments" / "results" / "ablations"


def test_summary_of_three_runs_is_their_median_and_range() -> None:
    runs = [json.loads((RUNS / f"quickstart_issue16_timing_reuse_run{i}.json").read_text()) for i in (1, 2, 3)]
    s = quickstart.summarise(runs)
    # docs/history.md's table of these runs: totals 296.6 / 279.0 / 292.7, Pareto sizes 8 / 5 / 3
    assert s["median"]["seconds_total"] == pytest.approx(292.7, abs=0.05)
    assert (s["min"]["seconds_total"], s["max"]["seconds_total"]) == pytest.approx((279.0, 296.6), abs=0.05)
    assert (s["median"]["n_pareto"], s["min"]["n_pareto"], s["max"]["n_pareto"]) == (5, 3, 8)
    assert s["n_runs"] == 3 and s["runs"] == runs
    assert s["meets_target"] is (s["median"]["wall_seconds"] <= 600)


@pytest.mark.parametrize("key, value, fragment", [("runs", 0, "bench.runs=0 is invalid; expected an integer >= 1"),
                                                  ("competing", -1, "bench.competing=-1 is invalid")])
def test_bad_counts_are_one_line_before_any_run(tmp_path: Path, key: str, value: int, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")) as err:
        quickstart.run({key: value, "out": str(tmp_path / "q.json"), "run_dir": str(tmp_path / "r")})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists() and not (tmp_path / "q.json").exists()
