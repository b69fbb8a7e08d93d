"""The closed loop in k objectives: exact hypervolume improvement in any dimension, the 3-objective search on the
real NB201 tables, and bench=search_nb201's latency model being the pipeline's."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.pareto import hypervolume, normalize, pareto_mask
from nas.search.acquisition import hv_improvement, hv_improvement_2d, hv_improvement_nd, select_batch

DEVICE = "pixel2"


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hv_improvement_is_exact_in_every_dimension(k: int) -> None:
    rng = np.random.default_rng(k)
    front, P, ref = rng.random((12, k)), rng.random((40, k)) * 1.2 - 0.1, np.full(k, 1.1)
    want = np.array([hypervolume(np.vstack([front, p]), ref) - hypervolume(front, ref) for p in P])
    np.testing.assert_allclose(hv_improvement_nd(P, front, ref), want, atol=1e-12)
    np.testing.assert_allclose(hv_improvement(P, front, ref), want, atol=1e-12)
    assert (want > 0).any() and (want == 0).any()  # some rows add volume, dominated ones add none
    if k == 2:
        np.testing.assert_allclose(hv_improvement_2d(P, front, ref), want, atol=1e-12)


def test_select_batch_uses_the_third_objective() -> None:
    """Two candidates equal in the first two objectives: only the third separates them."""
    front = np.array([[0.2, 0.8, 0.5], [0.8, 0.2, 0.5]])
    cand = np.array([[0.5, 0.5, 0.9], [0.5, 0.5, 0.1]])
    assert select_batch(cand, front, 1, bounds=(np.zeros(3), np.ones(3)))[0] == 1
    assert select_batch(cand[:, :2], front[:, :2], 1, bounds=(np.zeros(2), np.ones(2)))[0] == 0  # a tie in 2-D


def nb201_params(arch: Any) -> float:
    """Parameters (millions) of NAS-Bench-201's CIFAR-10 network for a cell (the tabular space declares no
    params): stem, three stages of five cells at 16/32/64 channels, two residual reductions, classifier; a
    ReLU-conv-BN op has k*k*C*C conv weights and 2C BN parameters."""
    n3, n1 = arch.ops.count("nor_conv_3x3"), arch.ops.count("nor_conv_1x1")
    cells = sum(5 * (n3 * (9 * c * c + 2 * c) + n1 * (c * c + 2 * c)) for c in (16, 32, 64))
    reductions = sum(9 * a * b + 2 * b + 9 * b * b + 2 * b + a * b for a, b in ((16, 32), (32, 64)))
    return (3 * 16 * 9 + 2 * 16 + cells + reductions + 2 * 64 + 64 * 10 + 10) / 1e6


class NB201Params:
    """Exact NB201 parameter counts on the one model face (nothing to learn)."""

    def fit(self, archs: Any, y: Any) -> NB201Params:
        return self

    def predict(self, archs: Any, return_std: bool = False) -> Any:
        mean = np.array([nb201_params(a) for a in archs])
        return (mean, np.zeros(len(mean))) if return_std else mean


@pytest.fixture(scope="module")
def nb201(shared_data: Path) -> Any:
    from nas.bench.search_nb201 import HELP_TRAIN, Problem

    return Problem(str(shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv"),
                   str(shared_data / "latency" / "nb201_help.csv.gz"), [DEVICE], HELP_TRAIN)


def _hv3(nb201: Any, strategy: Any, F: np.ndarray, true: np.ndarray, budget: int) -> float:
    from nas.search.loop import run_budget

    _, Fe = run_budget(strategy, lambda archs: F[[nb201.row[a] for a in archs]], budget)
    lo, hi = true.min(0), true.max(0)
    ref = np.full(3, 1.1)
    return hypervolume(normalize(Fe, lo, hi), ref) / hypervolume(normalize(true, lo, hi), ref)


def test_closed_loop_beats_random_in_three_objectives(nb201: Any) -> None:
    """(error, pixel2 latency, params) on the real tables: after 60 evaluations the closed loop's 3-D
    hypervolume (normalised by the true 3-D front) beats random search's, median of 5 seeds."""
    from nas.bench.search_nb201 import peer_config
    from nas.search import SearchProblem, build_strategy
    from nas.search.problem import strategy_config

    F = np.c_[nb201.F(DEVICE), [nb201_params(a) for a in nb201.archs]]
    true = F[pareto_mask(F)]
    assert len(true) > len(pareto_mask(F[:, :2]).nonzero()[0])  # the third objective widens the front
    scores: dict[str, list[float]] = {"ours": [], "random": []}
    for seed in range(5):
        for name, node in (("ours", strategy_config()), ("random", peer_config("random", {"batch_size": 10}))):
            problem = SearchProblem(space=nb201.space, n_objectives=3, seed=seed, candidates=nb201.archs,
                                    models=[None, copy.deepcopy(nb201.latency_model), NB201Params()],
                                    refit=[False, True, False], accuracy_column=0)
            st = build_strategy(node, problem)
            scores[name].append(_hv3(nb201, st, F, true, 60))
    ours, rand = float(np.median(scores["ours"])), float(np.median(scores["random"]))
    assert ours > rand + 0.03, scores


def _init_params(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in inspect.signature(type(obj).__init__).parameters if k != "self"}


def test_bench_latency_model_is_the_pipelines(nb201: Any) -> None:
    """bench=search_nb201's "ours" latency model and the pipeline's closed-loop latency model on a calibrated
    device (the calibrate stage's predictor, composed from the real config) are one class with one set of
    parameters; the bench records the class."""
    from hydra import compose, initialize_config_module

    from nas.bench.search_nb201 import make_problem
    from nas.stages.calibrate import latency_predictor

    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        cfg = compose("config", overrides=["calibrate.enabled=true"])
    pipeline = latency_predictor(cfg)
    bench = make_problem(nb201, 0, {}).models[1]
    assert type(bench) is type(pipeline)
    assert _init_params(bench) == _init_params(pipeline)
    assert bench.meta_budget == int(cfg.calibrate.budget)
    assert make_problem(nb201, 0, {}).refit == [False, True]  # calibrated on the target's evaluations
