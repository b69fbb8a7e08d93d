"""The contract suites of the framework, shipped so that whoever adds a search space, a search strategy or a
predictor runs the checks the project's own pass (as ``optuna.testing`` ships Optuna's own sampler tests):
:class:`SearchSpaceContract` / :class:`WeightSharingSpaceContract` (from :mod:`search_spaces.testing`),
:class:`PredictorContract` (from :mod:`predictors.testing`) and, here, :class:`StrategyContract`::

    from nas.testing import StrategyContract

    class TestMyStrategy(StrategyContract):
        def make_strategy(self, problem):
            return MyStrategy.from_problem(problem, batch_size=4)

pytest collects the inherited ``test_*`` methods; the ``check_*`` functions take the same arguments for a
registry-parametrised suite (tests/test_contracts.py). Imported only by tests (it imports pytest).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from nas.search import SearchProblem, Strategy, run_budget
from predictors.testing import PredictorContract, check_predictor, check_save_and_load
from search_spaces.base import SearchSpace, WeightSharingSpace
from search_spaces.testing import SearchSpaceContract, WeightSharingSpaceContract, sample_archs

__all__ = ["DigitsSupernet", "PredictorContract", "SearchSpaceContract", "StrategyContract", "WeightSharingSpaceContract",
           "check_predictor", "check_save_and_load", "check_strategy_constraints", "check_strategy_no_repeats",
           "check_strategy_resumes", "check_strategy_seeded", "contract_problem", "trained_digits_supernet"]

MakeStrategy = Callable[[SearchProblem], Strategy]


@dataclass(frozen=True)
class DigitsSupernet:
    """A trained supernet, its space and its data; what :func:`latency_luts.device.testing.check_device`
    prepares subnets of (``subnet``: extracted with BatchNorm recalibrated on training images, as a run
    delivers it; ``inputs``: test images at the arch's resolution)."""

    space: Any
    net: Any
    data: Any

    def subnet(self, arch: Any) -> Any:
        import torch

        from nas.subnet_eval import recalibrate_bn

        sub = self.space.extract(self.net, arch)
        recalibrate_bn(sub, torch.as_tensor(self.data.x_train), arch.r)
        return sub.eval()

    def inputs(self, arch: Any, n: int) -> Any:
        from nas.data import resize

        return resize(self.data.x_test[:n], arch.r)


@functools.lru_cache(maxsize=1)
def trained_digits_supernet() -> DigitsSupernet:
    """A small OFA-style supernet (16/24 px digits) trained one short epoch: enough that recalibrated subnets'
    outputs vary with the image, so parity and argmax agreement mean something."""
    import torch

    from nas.data import load_digits
    from nas.training import TrainConfig, train_supernet
    from search_spaces import create_search_space

    data = load_digits()
    data.x_train, data.y_train = data.x_train[:256], data.y_train[:256]
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16, 24])
    net = space.build_supernet()
    torch.manual_seed(0)
    train_supernet(net, space, data, TrainConfig(epochs=1, batch_size=64, n_random=0, threads=1))
    return DigitsSupernet(space, net.eval(), data)


def error_of(space: WeightSharingSpace, archs: list[Any]) -> np.ndarray:
    """A closed-form error that falls with size (parameters)."""
    p = np.array([space.params(a) for a in archs], dtype=np.float64)
    return 0.02 + 0.5 / (1.0 + p / 1e5)


def _macs(space: WeightSharingSpace, archs: list[Any]) -> np.ndarray:
    return np.array([space.macs(a) / 1e6 for a in archs])


def macs_bound(space: WeightSharingSpace) -> float:
    """The median MACs (millions) of 50 archs: a constraint half the space meets."""
    return float(np.median(_macs(space, sample_archs(space, 50, 9))))


class ClosedForm:
    """A model of the problem on the face every model shares whose value is computed, not learned: ``fit``
    leaves it as it is, ``predict(archs, return_std)`` is ``fn(archs)`` with a constant std."""

    def __init__(self, fn: Callable[[list[Any]], np.ndarray], std: float = 0.0) -> None:
        self.fn = fn
        self.std = float(std)

    def fit(self, archs: list[Any], y: Any) -> ClosedForm:
        return self

    def predict(self, archs: list[Any], return_std: bool = False) -> Any:
        mean = np.asarray(self.fn(list(archs)), dtype=np.float64)
        return (mean, np.full(len(mean), self.std)) if return_std else mean


def contract_problem(space: WeightSharingSpace, seed: int, n_constraints: int = 0,
                     storage: str | None = None) -> SearchProblem:
    """Two minimised objectives with closed-form costs of the space, an error that falls with size and MACs
    (millions), each with a model of the problem (the accuracy column's predicts accuracy); with
    ``n_constraints=1``, MACs at most :func:`macs_bound`."""
    bound = macs_bound(space)
    return SearchProblem(
        space=space, n_objectives=2, seed=seed, n_constraints=n_constraints,
        models=[ClosedForm(lambda archs: 1.0 - error_of(space, archs), std=0.01),
                ClosedForm(lambda archs: _macs(space, archs))],
        constraint_model=(lambda archs, F: (F[:, 1:2] - bound) / bound) if n_constraints else None,
        storage=storage, study_name="contract" if storage else None)


def objective(space: WeightSharingSpace, calls: list[Any], bound: float | None = None) -> Callable[[list[Any]], Any]:
    """The real evaluation of :func:`contract_problem` (records every evaluated arch in ``calls``)."""
    def f(archs: list[Any]) -> Any:
        calls.extend(archs)
        F = np.c_[error_of(space, archs), _macs(space, archs)]
        return F if bound is None else (F, (F[:, 1:2] - bound) / bound)

    return f


def _warm(space: WeightSharingSpace) -> tuple[list[Any], np.ndarray]:
    warm = sample_archs(space, 12, 5)
    return warm, np.c_[error_of(space, warm), _macs(space, warm)]


def check_strategy_no_repeats(make: MakeStrategy, space: WeightSharingSpace, budget: int = 12) -> None:
    """Warm-started, the strategy asks for ``budget`` new archs of the space, none twice, none handed over, and
    ``run_budget`` returns what it evaluated in order."""
    calls: list[Any] = []
    st = make(contract_problem(space, 0))
    warm, F0 = _warm(space)
    st.warm_start(warm, F0)
    order, F = run_budget(st, objective(space, calls), budget)
    assert len(order) == len(calls) == len(set(calls)) == budget
    assert not set(calls) & set(warm)  # handed-over evaluations are not evaluated again
    assert all(space.parse(a.to_string()) == a for a in order)
    np.testing.assert_allclose(F[:, 1], _macs(space, order))


def check_strategy_seeded(make: MakeStrategy, space: WeightSharingSpace, budget: int = 10) -> None:
    """Same seed, same proposals."""
    runs = []
    for _ in range(2):
        calls: list[Any] = []
        run_budget(make(contract_problem(space, 3)), objective(space, calls), budget)
        runs.append([a.to_string() for a in calls])
    assert runs[0] == runs[1]


def check_strategy_constraints(make: MakeStrategy, space: WeightSharingSpace, predicts_feasibility: bool,
                               budget: int = 12) -> None:
    """The strategy takes a constraint column; one that proposes from its models (``predicts_feasibility``)
    proposes only predicted-feasible archs."""
    bound = macs_bound(space)
    calls: list[Any] = []
    st = make(contract_problem(space, 0, n_constraints=1))
    warm, F = _warm(space)
    st.warm_start(warm, F, (F[:, 1:2] - bound) / bound)
    run_budget(st, objective(space, calls, bound), budget)
    assert len(calls) == budget == len(set(calls))
    if predicts_feasibility:
        assert all(space.macs(a) / 1e6 <= bound for a in calls)


class _Killed(Exception):
    pass


def _journalled(space: WeightSharingSpace, journal: dict[str, np.ndarray], calls: list[Any],
                kill_after: int | None = None) -> Callable[[list[Any]], Any]:
    inner = objective(space, calls)

    def f(archs: list[Any]) -> Any:
        todo = [a for a in archs if a.to_string() not in journal]
        if kill_after is not None and len(calls) + len(todo) > kill_after:
            raise _Killed
        if todo:
            for a, row in zip(todo, inner(todo), strict=True):
                journal[a.to_string()] = row
        return np.stack([journal[a.to_string()] for a in archs])

    return f


def check_strategy_resumes(make: MakeStrategy, space: WeightSharingSpace, budget: int = 12, kill_after: int = 7) -> None:
    """The pipeline's resume: a rebuilt strategy, same seed, re-asks; a journal answers what the killed run
    evaluated. The resumed run must end where an uninterrupted one does, evaluating each arch once."""
    warm, F0 = _warm(space)

    def fresh() -> Strategy:
        st = make(contract_problem(space, 4))
        st.warm_start(warm, F0)
        return st

    ref, _ = run_budget(fresh(), _journalled(space, {}, []), budget)
    journal: dict[str, np.ndarray] = {}
    calls: list[Any] = []
    with pytest.raises(_Killed):
        run_budget(fresh(), _journalled(space, journal, calls, kill_after=kill_after), budget)
    assert 0 < len(calls) <= kill_after
    order, _ = run_budget(fresh(), _journalled(space, journal, calls), budget)
    assert [a.to_string() for a in order] == [a.to_string() for a in ref]
    assert len(calls) == len(set(calls)) == budget  # the killed run's evaluations were not made again


class StrategyContract:
    """The checks every search strategy passes on a weight-sharing space; subclass it and define
    :meth:`make_strategy` (set ``predicts_feasibility`` when it proposes only predicted-feasible archs)."""

    predicts_feasibility = False

    def make_space(self) -> WeightSharingSpace:
        from search_spaces import create_search_space

        return create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16, 24])

    def make_strategy(self, problem: SearchProblem) -> Strategy:
        raise NotImplementedError("a contract test case names its strategy: define make_strategy(problem)")

    @pytest.fixture(scope="class")
    @classmethod
    def space(cls) -> SearchSpace:
        return cls().make_space()

    def test_asks_tells_and_never_repeats_an_evaluation(self, space: WeightSharingSpace) -> None:
        check_strategy_no_repeats(self.make_strategy, space)

    def test_same_seed_same_proposals(self, space: WeightSharingSpace) -> None:
        check_strategy_seeded(self.make_strategy, space)

    def test_takes_constraints(self, space: WeightSharingSpace) -> None:
        check_strategy_constraints(self.make_strategy, space, self.predicts_feasibility)

    def test_killed_midway_resumes_from_the_journal(self, space: WeightSharingSpace) -> None:
        check_strategy_resumes(self.make_strategy, space)
