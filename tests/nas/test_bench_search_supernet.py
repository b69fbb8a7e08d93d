"""bench=search_supernet on a real trained supernet (the session's smoke run, digits): the pipeline's default
strategy beside its peers on the same cached evaluations, the LUT checked against whole-network timing, and a
rerun that repeats no evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nas.bench import search_supernet as bench

pytestmark = pytest.mark.slow

SMALL = {"val_images": 200, "calib_images": 64, "lut_fit": 4, "lut_check": 12, "timing_rounds": 20,
         "n_random": 20, "budget": 12, "checkpoints": [6, 12], "seeds": 2,
         "strategies": ["ours", "random", "optuna_tpe", "pymoo_nsga2"]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, smoke_through_predict: Path) -> Path:
    """The smoke run's trained supernet, with the config hwnas leaves in .hydra/."""
    run = tmp_path_factory.mktemp("search_supernet") / "run"
    shutil.copytree(smoke_through_predict, run)
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"run_dir={run}"])
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    return run


@pytest.fixture(scope="module")
def first(run_dir: Path) -> dict:
    """Two worker processes evaluate the random subnets and run the (strategy, seed) jobs."""
    cache = run_dir.parent / "cache"
    return bench.run({**SMALL, "run_dir": str(run_dir), "cache_dir": str(cache), "out": str(cache / "r.json"),
                      "workers": 2})


def test_ours_is_the_pipelines_default_strategy_and_every_run_is_scored(first: dict) -> None:
    from nas.search import build_strategy, strategy_class
    from nas.search.problem import strategy_config

    assert first["ours_strategy"] == strategy_config()
    default = strategy_class(build_strategy(strategy_config(), bench.make_problem(_objective_stub(), 0, "ours")))
    assert first["strategies"]["ours"]["strategy_class"] == default == "nas.search.closed_loop.ClosedLoopSearch"
    for name, s in first["strategies"].items():
        assert s["no_repeats"], name
        for run in s["per_seed"]:
            assert run["n_evaluated"] == SMALL["budget"], (name, run)
            at = [run["hv_ratio_at"][str(k)] for k in SMALL["checkpoints"]]
            assert 0 <= at[0] <= at[1] <= 1 + 1e-9, (name, at)  # the reference front holds every evaluation
            assert 1 <= run["evals_to_98pct"] <= SMALL["budget"] + 1
            hit = run["evals_to_98pct"] <= SMALL["budget"]
            assert hit == (at[-1] >= bench.TARGET_FRACTION), (name, run)
            curve = run["hv_curve"]
            assert len(curve) == SMALL["budget"] and all(b >= a for a, b in zip(curve, curve[1:]))
            assert [curve[k - 1] for k in SMALL["checkpoints"]] == pytest.approx(at, abs=1e-5)
    vs = first["ours_vs_best_peer_final_hv"]
    finals = {k: v["hv_ratio_median"][str(SMALL["budget"])] for k, v in first["strategies"].items() if k != "ours"}
    assert vs["best_peer"] == max(finals, key=finals.get) and vs["its_median_hv_ratio"] == max(finals.values())
    for run, n in zip(first["strategies"]["ours"]["per_seed"], vs["ours_evals_to_reach_it"], strict=True):
        reached = [i + 1 for i, v in enumerate(run["hv_curve"]) if v >= vs["its_median_hv_ratio"]]
        assert n == (reached[0] if reached else SMALL["budget"] + 1)
    ref = first["reference"]
    assert ref["n_random"] == SMALL["n_random"] and ref["n_evaluated"] > SMALL["n_random"] + SMALL["budget"]
    lo, hi = ref["val_accuracy_range"]
    assert hi - lo > 0.05, "the subnets' accuracies do not differ: no front to search"


def _objective_stub():
    """What make_problem reads of the objective, for building a strategy outside a bench run: its space and its
    latency column's model (a real predictor on the one model face; MACs stand in for the LUT estimate)."""
    from predictors import ExactCost
    from search_spaces import create_search_space

    class Stub:
        space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=3)
        latency = ExactCost(space, "macs")

        def latency_ms(self, archs):  # noqa: ANN001, ANN202
            return np.ones(len(archs))

    return Stub()


def test_the_lut_estimate_is_checked_against_whole_network_timing(first: dict) -> None:
    lc = first["latency_check"]
    assert lc["n_check"] == SMALL["lut_check"] and lc["n_fit"] == SMALL["lut_fit"]
    # subnets spread over the MACs range, 20 interleaved rounds: the estimate must order them. The smoke subnets
    # (8x8 digits) are small enough that per-block overhead blurs the LUT sum: here 0.95-0.98 on 12 subnets, but
    # a CI machine once ordered 8 of them at 0.43. 0.5 is the 5% significance bound for 12; the product's figure
    # is bench=search_supernet on Fashion-MNIST (0.96 on 50 subnets, docs/results.md).
    assert lc["spearman"] > 0.5, lc
    assert 0 <= lc["within10"] <= 1 and lc["measured_ms_range"][1] > lc["measured_ms_range"][0]


def test_evaluations_are_cached_per_arch_and_a_rerun_repeats_none(first: dict, run_dir: Path) -> None:
    """The workers' evaluations are all on disk, once per arch; a rerun in one process reuses every run."""
    cache = run_dir.parent / "cache"
    files = [p for p in (cache / "evaluations").glob("*/*.json") if p.name != "key.json"]
    assert len(files) == first["reference"]["n_evaluated"] == first["evaluated_this_invocation"]
    again = bench.run({**SMALL, "run_dir": str(run_dir), "cache_dir": str(cache), "out": str(cache / "r.json")})
    assert again["evaluated_this_invocation"] == 0
    assert again["runs_reused"] == len(SMALL["strategies"]) * SMALL["seeds"]
    assert again["strategies"] == first["strategies"]
    row = json.loads(files[0].read_text())
    assert 0 <= row["val_accuracy"] <= 1 and "arch" in row


def test_an_evaluation_another_worker_wrote_meanwhile_is_read_not_repeated(first: dict, run_dir: Path) -> None:
    from nas.rundir import file_stem, write_json_atomic

    cache = run_dir.parent / "cache"
    obj = bench.SupernetObjective(bench._config({**SMALL, "run_dir": str(run_dir), "cache_dir": str(cache)}), run_dir)
    fresh = next(a for a in obj.space.sample_many(200, np.random.default_rng(99)) if a.to_string() not in obj.acc)
    key = fresh.to_string()
    write_json_atomic(obj.dir / f"{file_stem(key)}.json", {"arch": key, "val_accuracy": 0.123})  # another process
    assert obj.accuracy([fresh]).tolist() == [0.123]
    assert obj._supernet is None  # nothing was evaluated: the supernet was never loaded
    (obj.dir / f"{file_stem(key)}.json").unlink()  # leave the cache as the other tests expect it


def test_accuracy_predictor_bench_scores_the_pipelines_predictor_on_the_evaluated_subnets(first: dict,
                                                                                        run_dir: Path) -> None:
    """bench=accuracy_predictor reads the random subnets this bench evaluated (issue 13's Fashion-MNIST check:
    fitted on 50, scored on 200 others; here 10 and 10 of the smoke supernet's 20)."""
    import pandas as pd

    from nas.bench import accuracy_predictor

    csv = first["random_evaluations_csv"]
    assert len(pd.read_csv(csv)) == SMALL["n_random"]
    res = accuracy_predictor.run({"evaluations": csv, "run_dir": str(run_dir), "n_train": 10, "n_test": 10,
                                  "seeds": 2, "kinds": ["ridge", "auto"], "main": "auto",
                                  "out": str(run_dir.parent / "acc.json")})
    assert res["space"] == "ofa_mbv3" and res["n_test"] == 10 and res["source"] == csv
    assert all(len(r["runs"]) == 2 and np.isfinite(r["spearman_mean"]) for r in res["kinds"].values())
    with pytest.raises(ValueError, match="bench.run_dir is null"):
        accuracy_predictor.run({"evaluations": csv})


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has no checkpoints/supernet.pt"):
        bench.run({"run_dir": str(tmp_path), "cache_dir": str(tmp_path / "c")})
    with pytest.raises(ValueError, match=r"bench.checkpoints=\[50, 300\] is invalid"):
        bench.run({"checkpoints": [50, 300], "cache_dir": str(tmp_path / "c")})
    with pytest.raises(ValueError, match="bench.strategies has 'nope'"):
        bench.run({"strategies": ["ours", "nope"], "cache_dir": str(tmp_path / "c")})
