"""Every search strategy on the real NB201 tabular problem (CIFAR-10 error, pixel2 latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.bench.search_nb201 import HELP_TRAIN, Problem, _plain, make_strategy
from nas.bench.search_nb201 import run as run_bench
from nas.pareto import hv_ratio, pareto_mask
from nas.search.acquisition import select_batch
from nas.search.closed_loop import ClosedLoopSearch
from nas.search.loop import run_budget
from nas.search.optuna_search import OptunaSearch
from nas.search.random_search import RandomSearch

DEVICE = "pixel2"


@pytest.fixture(scope="module")
def CFG(shared_data: Path) -> dict[str, Any]:
    """The bench's settings as hwnas-bench reads them (conf/bench/search_nb201.yaml), smaller peer populations."""
    return {**_plain({"data": str(shared_data / "latency" / "nb201_help.csv.gz"),
                      "accuracy": str(shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv")}), "pop_size": 12}


@pytest.fixture(scope="module")
def problem(shared_data: Path) -> Problem:
    return Problem(str(shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv"),
                   str(shared_data / "latency" / "nb201_help.csv.gz"), [DEVICE], HELP_TRAIN)


def _objective(problem: Problem):  # noqa: ANN202
    F = problem.F(DEVICE)
    calls: list[Any] = []

    def f(archs: list[Any]) -> np.ndarray:
        calls.extend(archs)
        return F[[problem.row[a] for a in archs]]

    return f, calls


@pytest.mark.parametrize("name", ["ours", "random", "optuna_nsga2", "optuna_tpe", "pymoo_nsga2"])
def test_no_arch_evaluated_twice_and_deterministic(problem: Problem, name: str, CFG) -> None:
    fronts = []
    for _ in range(2):
        f, calls = _objective(problem)
        order, F = run_budget(make_strategy(name, problem, 3, CFG), f, 40)
        assert len(order) == 40 and len(calls) == 40 and len(set(calls)) == 40
        np.testing.assert_array_equal(F, problem.F(DEVICE)[[problem.row[a] for a in order]])
        fronts.append(sorted(a.to_string() for a, k in zip(order, pareto_mask(F), strict=True) if k))
    assert fronts[0] == fronts[1]  # same seed twice -> identical front


@pytest.mark.slow
def test_optuna_gp_runs_without_repeats(problem: Problem, CFG) -> None:
    f, calls = _objective(problem)
    run_budget(make_strategy("optuna_gp", problem, 0, CFG), f, 14)
    assert len(calls) == 14 == len(set(calls))


def test_optuna_sqlite_resume_never_repeats(problem: Problem, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    f, calls = _objective(problem)
    first = OptunaSearch(space=problem.space, sampler="tpe", storage=storage, study_name="resume", seed=0)
    run_budget(first, f, 30)
    again = OptunaSearch(space=problem.space, sampler="tpe", storage=storage, study_name="resume", seed=0)
    assert len(again.history_) == 30 == again.resumed_evaluations  # completed trials seed the cache
    run_budget(again, f, 50, cache=dict(again.history_))  # the budget counts the resumed study's 30
    assert len(calls) == 50 and len(set(calls)) == 50
    assert len(again.history_) == 50


def test_ours_beats_random_on_hv_ratio(problem: Problem, CFG) -> None:
    F = problem.F(DEVICE)
    true = F[pareto_mask(F)]
    scores = {}
    for name in ("ours", "random"):
        f, _ = _objective(problem)
        _, Fe = run_budget(make_strategy(name, problem, 0, CFG), f, 100)
        scores[name] = hv_ratio(Fe, true, 1.1)
    assert scores["ours"] > scores["random"] + 0.02, scores
    assert scores["ours"] > 0.9, scores


def test_ours_inner_search_scores_every_unevaluated_cell(problem: Problem, CFG) -> None:
    st = make_strategy("ours", problem, 0, CFG)
    f, _ = _objective(problem)
    run_budget(st, f, 30)
    out = st.inner_search()
    assert out["pool"] == len(problem.archs) - 30 and out["n_scored"] >= out["pool"]
    assert out["seconds"] < 5
    assert st.predictor_evaluations >= out["n_scored"] and st.inner_search_seconds > 0


def test_bad_constructor_args_raise_one_line_errors(problem: Problem, CFG) -> None:
    sp = problem.space

    def ours(change: dict[str, Any]) -> Any:
        return make_strategy("ours", problem, 0, {**CFG, "ours": {**CFG["ours"], **change}})

    cases = [
        (lambda: RandomSearch(space=sp, batch_size=0), "batch_size=0"),
        (lambda: OptunaSearch(space=sp, sampler="cmaes", storage=None), "sampler='cmaes'"),
        (lambda: OptunaSearch(space=sp, storage="study.db"), "storage='study.db'"),
        (lambda: OptunaSearch(space=object(), storage=None), "expected a search_spaces.SearchSpace"),
        (lambda: ClosedLoopSearch(space=sp, models=[]), "expected one per objective"),
        (lambda: ClosedLoopSearch(space=sp, models=[None, None]), "objective column 0 has no model"),
        (lambda: ours({"beta": -1.0}), "beta=-1.0"),
        (lambda: ours({"beta": [1.0, -0.5]}), "beta=[1.0, -0.5]"),
        (lambda: ours({"beta": [1.0, 0.0, 0.0]}), "or two (the accuracy column's, every cost column's)"),
        (lambda: ours({"error_model": {**CFG["ours"]["error_model"], "kernel": "cosine"}}), "kernel='cosine'"),
        (lambda: ours({"n_initial": 2}), "n_initial=2"),
        (lambda: ours({"acquisition": "ei"}), "acquisition='ei'"),
    ]
    for build, text in cases:
        with pytest.raises(ValueError, match="invalid|expected") as e:
            build()
        assert text in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(TypeError):
        RandomSearch(sp)  # type: ignore[misc]  # keyword-only


def test_acquisition_reaches_past_the_evaluated_front_on_a_latency_plateau() -> None:
    """Quantised latencies (fpga, eyeriss, pixel2): the next plateau past the evaluated front's slowest point
    lies beyond a reference point set from that front alone; the predicted front's nadir must reach it."""
    front = np.array([[13.0, 1.0], [9.0, 2.0], [6.1, 3.6]])  # error %, latency ms (evaluated)
    cand = np.array([[5.6, 4.2], [12.95, 1.0], [9.5, 2.5]])  # optimistic points; row 0 is one plateau slower
    assert select_batch(cand, front, 1)[0] != 0  # ref latency 1 + 1.1 * 2.6 = 3.86 < 4.2: row 0 adds nothing
    lo, hi = ClosedLoopSearch._bounds(front, cand)
    np.testing.assert_allclose(lo, front.min(0))
    np.testing.assert_allclose(hi, [13.0, 4.2])
    assert select_batch(cand, front, 1, bounds=(lo, hi))[0] == 0
    # an optimistic point dominated by the evaluated front does not stretch the bounds
    lo2, hi2 = ClosedLoopSearch._bounds(front, np.array([[14.0, 5.0]]))
    np.testing.assert_allclose(hi2, front.max(0))


def test_bench_results_do_not_depend_on_worker_count(shared_data: Path, tmp_path: Path) -> None:
    cfg = {"data": str(shared_data / "latency" / "nb201_help.csv.gz"), "devices": ["fpga"], "seeds": 2,
           "accuracy": str(shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv"), "budget": 30,
           "strategies": ["ours", "random"]}
    out = [run_bench({**cfg, "workers": w, "out": str(tmp_path / f"w{w}.json")}) for w in (1, 2)]
    for name in ("ours", "random"):
        a, b = (r["devices"]["fpga"][name]["per_seed"] for r in out)
        assert [s["hv_ratio"] for s in a] == [s["hv_ratio"] for s in b]
        assert [s["evals_to_99pct"] for s in a] == [s["evals_to_99pct"] for s in b]
        assert all(s["n_evaluated"] == 30 and s["distinct"] for s in a + b)
    assert out[1]["workers"] == 2 and (tmp_path / "w2.json").exists()
    assert out[0]["devices"]["fpga"]["ours"]["strategy_class"] == "nas.search.closed_loop.ClosedLoopSearch"
    assert out[0]["devices"]["fpga"]["random"]["strategy_class"] == "nas.search.random_search.RandomSearch"


def test_bench_rerun_reuses_recorded_runs(shared_data: Path, tmp_path: Path) -> None:
    cfg = {"data": str(shared_data / "latency" / "nb201_help.csv.gz"), "devices": ["raspi4"], "seeds": 2,
           "accuracy": str(shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv"), "budget": 20,
           "strategies": ["random", "pymoo_nsga2"], "out": str(tmp_path / "r.json")}
    first = run_bench(cfg)
    journal = tmp_path / "r.json.jobs.jsonl"
    assert first["runs_reused"] == 0 and len(journal.read_text().splitlines()) == 4
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # killed mid-write
    again = run_bench(cfg)
    assert again["runs_reused"] == 3  # the torn record is run again, the others are not
    for name in cfg["strategies"]:
        a, b = (r["devices"]["raspi4"][name]["per_seed"] for r in (first, again))
        assert [(s["hv_ratio"], s["evals_to_99pct"]) for s in a] == [(s["hv_ratio"], s["evals_to_99pct"]) for s in b]
    assert first["devices"]["raspi4"]["pymoo_nsga2"]["per_seed"][1]["seconds"] != \
        again["devices"]["raspi4"]["pymoo_nsga2"]["per_seed"][1]["seconds"]  # the torn one did run again
    changed = run_bench({**cfg, "budget": 21})  # other settings: nothing reused
    assert changed["runs_reused"] == 0 and changed["fingerprint"] != first["fingerprint"]
