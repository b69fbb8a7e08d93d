"""Syne Tune's multi-objective searchers behind the ask/tell interface, driven in this process (no Tuner, no
backend): a peer of the benchmarks, in the optional extra ``pip install -e '.[peers]'``.

``method``:

* ``morea``: multi-objective regularised evolution
  (``syne_tune.optimizer.schedulers.multiobjective.MultiObjectiveRegularizedEvolution``: a population of the
  last ``population_size`` results ranked by non-dominated sorting, parents picked from ``sample_size``
  random members, one gene mutated) under a ``SingleFidelityScheduler``;
* ``ehvi``: Syne Tune's multi-objective Bayesian optimisation, ``syne_tune.optimizer.baselines.EHVI``
  (independent BoTorch GPs per objective, qLogEHVI with pending trials fantasised, one candidate per
  ``suggest``). Syne Tune 0.16's other multi-objective BO, random scalarisation over multiple surrogates,
  does not import in that release (its ``random_scalarization`` module is missing).

The config space is one ``choice`` per gene of ``space.to_genome`` (the Optuna peers' encoding). A batch is
``batch_size`` consecutive ``scheduler.suggest()`` calls, each a trial with our own id (0, 1, ...); results go
back through ``scheduler.on_trial_result`` and ``scheduler.on_trial_complete`` with every objective minimised;
a trial that will not be evaluated through ``scheduler.on_trial_error``. Repeats, candidates and constraints:
:mod:`nas.search.library_peer`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from nas.search.ax_search import require
from nas.search.library_peer import LibraryPeer, check_ints, quiet
from search_spaces.base import Architecture

METHODS = ("morea", "ehvi")


@contextmanager
def _own_numpy_rng(owner: SyneTuneSearch) -> Iterator[None]:
    """numpy's global RNG switched to the strategy's own seeded state for the call: Syne Tune 0.16 draws its
    random configurations (MOREA's first population, EHVI's first trials) with ``Domain.sample()`` from the
    global RNG, not its searcher's seeded one; the caller's global state is restored afterwards."""
    saved = np.random.get_state()
    np.random.set_state(owner._np_state)
    try:
        yield
    finally:
        owner._np_state = np.random.get_state()
        np.random.set_state(saved)


@contextmanager
def _double() -> Iterator[None]:
    """torch's default dtype float64 for the call: Syne Tune 0.16's EHVI fits its GPs in float64 but builds its
    reference point and partitioning in the default float32, which BoTorch 0.18's fused log-EHVI rejects
    ("expected scalar type Double but found Float"); with float64 as default every tensor it makes agrees."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class SyneTuneSearch(LibraryPeer):
    """A Syne Tune scheduler driven ask/tell in-process.

    Args:
        space: the search space.
        method: ``"morea"`` or ``"ehvi"`` (see the module doc).
        n_objectives: objective columns of every ``tell`` (minimised).
        batch_size: suggestions per ``ask()``.
        seed: the scheduler's and searcher's ``random_seed``.
        candidates: a tabular space's architectures (proposals outside are replaced, see library_peer).
        population_size, sample_size: MOREA's population and tournament size (Syne Tune's defaults 100, 10).
        max_retries: proposal rounds without a new arch before unseen archs are drawn uniformly.
    """

    def __init__(self, *, space: Any, method: str = "morea", n_objectives: int = 2, batch_size: int = 10,
                 seed: int = 0, candidates: Sequence[Architecture] | None = None, population_size: int = 100,
                 sample_size: int = 10, max_retries: int = 3) -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r} is invalid; expected one of {list(METHODS)}")
        check_ints((("population_size", population_size, 2), ("sample_size", sample_size, 1)))
        super().__init__(space=space, n_objectives=n_objectives, batch_size=batch_size, seed=seed,
                         candidates=candidates, max_retries=max_retries)
        with quiet():
            require("syne_tune", "syne-tune")
            from syne_tune.config_space import choice

        self.method = method
        self.config_space = {n: choice(list(range(lo, hi + 1))) if hi > lo else lo
                             for n, (lo, hi) in zip(self.names, self.bounds, strict=True)}
        self.population_size, self.sample_size = int(population_size), int(sample_size)
        with quiet():
            self.scheduler = self._scheduler()
        self._np_state = np.random.RandomState(self.seed).get_state()
        self._trials: dict[int, Any] = {}
        self._next_id = 0

    def _scheduler(self) -> Any:
        if self.method == "ehvi":
            from syne_tune.optimizer.baselines import EHVI

            return EHVI(self.config_space, metrics=self.metrics, do_minimize=True, random_seed=self.seed)
        from syne_tune.optimizer.schedulers.multiobjective import MultiObjectiveRegularizedEvolution
        from syne_tune.optimizer.schedulers.single_fidelity_scheduler import SingleFidelityScheduler

        searcher = MultiObjectiveRegularizedEvolution(self.config_space, population_size=self.population_size,
                                                      sample_size=self.sample_size, random_seed=self.seed)
        return SingleFidelityScheduler(self.config_space, metrics=self.metrics, do_minimize=True, searcher=searcher,
                                       random_seed=self.seed)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"syne_{self.method}"

    def _genome(self, config: dict[str, Any]) -> np.ndarray:
        return np.array([int(config[n]) for n in self.names], dtype=np.int64)

    def _new_trial(self, config: dict[str, Any]) -> int:
        from syne_tune.backend.trial_status import Trial

        tid = self._next_id
        self._next_id += 1
        self._trials[tid] = Trial(trial_id=tid, config=dict(config), creation_time=datetime.datetime.now())
        return tid

    def _propose(self, n: int) -> list[tuple[Any, np.ndarray]]:
        out = []
        with quiet(), _double(), _own_numpy_rng(self):
            for _ in range(n):
                suggestion = self.scheduler.suggest()
                if suggestion is None:  # the searcher has nothing more to suggest
                    break
                config = {**{k: v for k, v in self.config_space.items() if not _is_domain(v)},
                          **suggestion.config}
                out.append((self._new_trial(config), self._genome(config)))
        return out

    def _complete(self, handle: Any, f: np.ndarray) -> None:
        result = {m: float(v) for m, v in zip(self.metrics, f, strict=True)}
        trial = self._trials.pop(int(handle))
        with quiet():
            self.scheduler.on_trial_result(trial, result)
            self.scheduler.on_trial_complete(trial, result)

    def _abandon(self, handle: Any) -> None:
        trial = self._trials.pop(int(handle))
        with quiet():
            self.scheduler.on_trial_error(trial)
            try:  # EHVI keeps a failed trial pending (fantasised) unless told; MOREA has no pending trials
                cleanup = self.scheduler.searcher.cleanup_pending
            except AttributeError:
                return
            cleanup(trial.trial_id)

    def _inject(self, genome: np.ndarray) -> Any:
        """A trial of ``genome`` as the searcher's next suggestion (its ``points_to_evaluate`` queue)."""
        config = {n: int(g) for n, g in zip(self.names, genome, strict=True)}
        searcher = self.scheduler.searcher
        searcher.points_to_evaluate.insert(0, {n: v for n, v in config.items()
                                               if _is_domain(self.config_space[n])})
        with quiet():
            suggestion = self.scheduler.suggest()
        if suggestion is None or self._genome({**config, **suggestion.config}).tolist() != list(map(int, genome)):
            raise RuntimeError("syne tune did not take the injected configuration first")  # pragma: no cover
        return self._new_trial(config)

    def describe(self) -> dict[str, Any]:
        s = self.scheduler
        out = {**super().describe(), "method": self.method, "scheduler": type(s).__name__,
               "searcher": type(s.searcher).__name__}
        if self.method == "morea":
            out |= {"population_size": self.population_size, "sample_size": self.sample_size}
        return out


def _is_domain(value: Any) -> bool:
    """Whether a config-space entry is a Syne Tune domain (searched), not a constant."""
    from syne_tune.config_space import Domain

    return isinstance(value, Domain)
