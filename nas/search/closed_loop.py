"""The closed loop, hwnas's default strategy: fit surrogates on what was really evaluated, search their
predictions, evaluate the most promising batch, refit, repeat.

Per ``ask`` (after ``n_initial`` evaluations, random before): the models it learns are refitted on the
evaluated architectures (the error GP of ``conf/search/closed_loop.yaml`` for the accuracy column, and the
problem's models it marks ``refit``, e.g. a latency model of a device known only from its evaluations); the
problem's fitted models (the run's predictors, exact costs) are used as they are. The candidate pool is scored: every
unevaluated candidate of a finite space (NB201's 15,625 cells, each with mean and std), or every architecture a predictor-driven NSGA-II
(:class:`~nas.search.nsga2.VectorisedNSGA2`, ``pop_size`` x ``generations``, whole generations scored at once) visits in a space too large to enumerate (OFA, FBNet: means only, the ``screen`` closest to the
evaluated front then get their std), predicted-infeasible ones dropped. Each pool member gets an *optimistic* point ``mean - beta * std`` in every objective column
(``search.objectives``: two, three or more), and the batch is picked greedily by the hypervolume it would add
to the evaluated (feasible) front in all of them, each pick joining the front so the batch spreads along it. Hypervolumes are normalised with
the evaluated front's ideal and the nadir of the front the optimistic points would form, so the reference
point reaches as far as the predicted front does. ``acquisition="spread"`` instead takes ``batch_size``
members of the predicted front spread evenly along the cost (the one-pass ``search=nsga2``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas.pareto import pareto_mask
from nas.search.acquisition import domination_margin, select_batch
from nas.search.base import Strategy, check_space
from nas.search.problem import SearchProblem
from search_spaces.base import Architecture

ACQUISITIONS = ("hypervolume", "spread")


def spread_pick(values: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` items spread evenly over the sorted ``values`` (both ends included)."""
    order = np.argsort(values, kind="stable")
    if k >= len(order):
        return order.tolist()
    pos = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return order[pos].tolist()


class ClosedLoopSearch(Strategy):
    """Surrogate-driven closed loop (minimised objectives); see the module docstring.

    Args:
        space: the search space (``sample``, integer genome for NSGA-II, ``surrogate_features``).
        n_objectives: objective columns told.
        models: one model per objective column (``fit(archs, y)``, ``predict(archs, return_std=False)``): the
            accuracy column's predicts accuracy (the column is its error ``1 - accuracy``), the others their
            column; ``None`` entries must be covered by ``error_model``.
        refit: per column, whether the model is refitted on the evaluations every round (default: none; the
            problem's models are fitted already).
        error_model: the strategy's own model of the accuracy column's error (a fresh copy, its ``featurizer``
            given ``space``, refitted every round); ``None`` keeps the problem's model of that column.
        accuracy_column: the column that is ``1 - accuracy``.
        candidates: finite list of every proposable architecture (exhaustive pool); ``None`` = NSGA-II pool.
        n_initial: random evaluations before the first fit (evaluations handed to ``warm_start`` count).
        batch_size: evaluations per ask after that.
        beta: optimism ``mean - beta * std``; one number for every column, or two: the accuracy column's and
            every cost column's.
        acquisition: ``"hypervolume"`` (optimistic hypervolume improvement) or ``"spread"``.
        pop_size, generations: the predictor-driven NSGA-II of the pool (spaces without ``candidates``).
        screen: NSGA-II pool members kept for the full (mean, std) prediction, by domination margin of the mean
            (a finite candidate list is scored whole).
        n_constraints, constraint_model: constraint columns told, and ``(archs, F_mean) -> G`` for the pool.
        seed: seed of the initial design and of the inner NSGA-II.
    """

    def __init__(self, *, space: Any, n_objectives: int = 2, models: Sequence[Any] | None = None,
                 refit: Sequence[bool] | None = None, error_model: Any = None, accuracy_column: int = 0,
                 candidates: Sequence[Architecture] | None = None,
                 n_initial: int = 10, batch_size: int = 5, beta: float | Sequence[float] = 1.0,
                 acquisition: str = "hypervolume", pop_size: int = 64, generations: int = 40, screen: int = 2000,
                 n_constraints: int = 0, constraint_model: Callable[[Sequence[Architecture], np.ndarray], np.ndarray] | None = None,
                 seed: int = 0) -> None:
        for key, val, lo in (("n_objectives", n_objectives, 2), ("n_initial", n_initial, 3), ("batch_size", batch_size, 1),
                             ("pop_size", pop_size, 4), ("generations", generations, 1), ("screen", screen, 1),
                             ("n_constraints", n_constraints, 0)):
            if not isinstance(val, int | np.integer) or isinstance(val, bool) or val < lo:
                raise ValueError(f"{key}={val!r} is invalid; expected an integer >= {lo}")
        check_space(space)
        if acquisition not in ACQUISITIONS:
            raise ValueError(f"acquisition={acquisition!r} is invalid; expected one of {list(ACQUISITIONS)}")
        models = list(models) if models is not None else [None] * int(n_objectives)
        if len(models) != n_objectives:
            raise ValueError(f"got {len(models)} models; expected one per objective ({n_objectives})")
        if not 0 <= accuracy_column < n_objectives:
            raise ValueError(f"accuracy_column={accuracy_column} is invalid; expected a column < {n_objectives}")
        learn = [False] * n_objectives if refit is None else [bool(v) for v in refit]
        if len(learn) != n_objectives:
            raise ValueError(f"refit has {len(learn)} entries; expected one per objective ({n_objectives})")
        if error_model is not None:
            from sklearn.base import clone

            models[accuracy_column] = clone(error_model).set_params(featurizer__space=space)
            learn[accuracy_column] = True
        missing = [k for k, m in enumerate(models) if m is None]
        if missing:
            raise ValueError(f"objective column {missing[0]} has no model; expected a predictor (fit(archs, y), "
                             "predict(archs, return_std)) or error_model for the accuracy column")
        b = np.asarray(beta, dtype=np.float64).reshape(-1) if np.ndim(beta) else np.full(2, float(beta))
        if b.shape != (2,) or not np.isfinite(b).all() or (b < 0).any():
            raise ValueError(f"beta={beta!r} is invalid; expected a finite number >= 0 or two (the accuracy "
                             "column's, every cost column's)")
        if n_constraints and constraint_model is None:
            raise ValueError(f"n_constraints={n_constraints} needs constraint_model; expected (archs, F_mean) -> G")
        self.space = space
        self.n_objectives = int(n_objectives)
        self.models, self.learn = models, learn
        self.accuracy_column, self.own_error = int(accuracy_column), error_model is not None
        # the acquisition's columns: accuracy first, then every cost column in order
        self.columns = (int(accuracy_column), *(k for k in range(n_objectives) if k != accuracy_column))
        b = np.r_[b[0], np.full(n_objectives - 1, b[1])]
        self.candidates = None if candidates is None else list(candidates)
        if self.candidates is not None and len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates contain duplicates; expected distinct architectures")
        self.n_initial, self.batch_size, self.beta = int(n_initial), int(batch_size), b
        self.acquisition, self.pop_size, self.generations = acquisition, int(pop_size), int(generations)
        self.screen, self.n_constraints, self.constraint_model = int(screen), int(n_constraints), constraint_model
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.archs_: list[Architecture] = []  # told, in order
        self.F_: list[np.ndarray] = []
        self.G_: list[np.ndarray] = []
        self.pending: set[Architecture] = set()
        self.rounds_ = 0
        self.inner_seconds_: list[float] = []
        self.predictor_evaluations_ = 0

    @classmethod
    def from_problem(cls, problem: SearchProblem, **params: Any) -> ClosedLoopSearch:
        return cls(space=problem.space, n_objectives=problem.n_objectives, models=problem.models,
                   refit=problem.refit, accuracy_column=problem.accuracy_column, candidates=problem.candidates,
                   n_constraints=problem.n_constraints, constraint_model=problem.constraint_model,
                   seed=problem.seed, **params)

    @property
    def label(self) -> str:  # type: ignore[override]
        return "closed_loop" if self.acquisition == "hypervolume" else "nsga2"

    # ------------------------------------------------------------------ bookkeeping
    @property
    def inner_search_seconds(self) -> float:
        return float(np.sum(self.inner_seconds_))

    @property
    def predictor_evaluations(self) -> int:
        return int(self.predictor_evaluations_)

    @property
    def history_(self) -> dict[Architecture, np.ndarray]:
        return dict(zip(self.archs_, self.F_, strict=True))

    def warm_start(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        self._record(archs, F, G)

    def tell(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        for a in archs:
            self.pending.discard(a)
        self._record(archs, F, G)

    def _record(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None) -> None:
        F = np.asarray(F, dtype=np.float64).reshape(len(archs), -1)
        if F.shape[1] != self.n_objectives:
            raise ValueError(f"tell() got {F.shape[1]} objective columns; expected {self.n_objectives}")
        G = np.zeros((len(archs), 0)) if G is None else np.asarray(G, dtype=np.float64).reshape(len(archs), -1)
        if self.n_constraints and G.shape[1] != self.n_constraints:
            raise ValueError(f"tell() got G of shape {G.shape}; expected ({len(archs)}, {self.n_constraints})")
        known = set(self.archs_)
        for a, f, g in zip(archs, F, G if self.n_constraints else [None] * len(archs), strict=True):
            if a in known or not np.isfinite(f).all():
                continue
            known.add(a)
            self.archs_.append(a)
            self.F_.append(f)
            self.G_.append(np.zeros(0) if g is None else g)

    # ------------------------------------------------------------------ models
    def fit(self) -> None:
        """Refit the models the strategy learns on the evaluated architectures."""
        F = np.asarray(self.F_)
        for k, m in enumerate(self.models):
            if self.learn[k]:
                m.fit(self.archs_, F[:, k])

    def predict(self, archs: Sequence[Architecture], mean_only: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean, std) of every objective column for ``archs`` (std None with ``mean_only``: cheaper)."""
        archs = list(archs)
        self.predictor_evaluations_ += len(archs)
        means, stds = [], []
        for k, m in enumerate(self.models):
            out = m.predict(archs, return_std=not mean_only)
            mu, sd = (out, None) if mean_only else out
            mu = np.asarray(mu, dtype=np.float64)
            means.append(1.0 - mu if k == self.accuracy_column and not self.own_error else mu)
            stds.append(sd)
        return np.stack(means, 1), None if mean_only else np.stack([np.asarray(s, np.float64) for s in stds], 1)

    def _violation(self, archs: Sequence[Architecture], mean: np.ndarray) -> np.ndarray:
        if not self.n_constraints:
            return np.zeros((len(mean), 0))
        return np.asarray(self.constraint_model(list(archs), mean), dtype=np.float64).reshape(len(mean), -1)

    # ------------------------------------------------------------------ ask
    def _random(self, k: int) -> list[Architecture]:
        busy = set(self.archs_) | self.pending
        if self.candidates is not None:
            free = [i for i, a in enumerate(self.candidates) if a not in busy]
            idx = self.rng.choice(len(free), size=min(k, len(free)), replace=False) if free else []
            return [self.candidates[free[i]] for i in idx]
        out: list[Architecture] = []
        for _ in range(1000 * k):
            if len(out) == k:
                break
            a = self.space.sample(self.rng)
            if a not in busy and a not in out:
                out.append(a)
        return out

    def _pool(self) -> tuple[list[Architecture], np.ndarray, np.ndarray | None]:
        """Unevaluated, predicted-feasible candidates, their mean predictions and, for a finite candidate list
        (scored whole), their std; an NSGA-II pool gets means only (its ``screen`` best get the std later)."""
        busy = set(self.archs_) | self.pending
        std = None
        if self.candidates is not None:
            pool = [a for a in self.candidates if a not in busy]
            mean, std = self.predict(pool)
        else:
            from nas.search.nsga2 import VectorisedNSGA2

            def score(archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray | None]:
                m, _ = self.predict(archs, mean_only=True)
                return m, (self._violation(archs, m) if self.n_constraints else None)

            nsga = VectorisedNSGA2(space=self.space, pop_size=self.pop_size, seed=self.seed + self.rounds_,
                                   initial=self.archs_[-self.pop_size:])
            archs, F, G = nsga.run(score, self.generations)
            ok = np.array([a not in busy for a in archs], dtype=bool)
            if self.n_constraints:
                ok &= np.all(G <= 0, axis=1)
            return [a for a, k in zip(archs, ok, strict=True) if k], F[ok], None
        if self.n_constraints and len(pool):
            ok = np.all(self._violation(pool, mean) <= 0, axis=1)
            pool, mean = [a for a, k in zip(pool, ok, strict=True) if k], mean[ok]
            std = None if std is None else std[ok]
        return pool, mean, std

    def _evaluated_front(self) -> np.ndarray:
        F = np.asarray(self.F_)[:, list(self.columns)]
        if self.n_constraints:
            F = F[np.all(np.asarray(self.G_) <= 0, axis=1)]
        return F[pareto_mask(F)] if len(F) else F

    @staticmethod
    def _bounds(front: np.ndarray, optimistic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ideal, nadir) that normalise the acquisition: the evaluated front's ideal, and the nadir of the front
        the optimistic predictions would give (never inside the evaluated front's). With the evaluated front's
        own nadir the reference point sits 10% of its span past its slowest point, so a candidate one latency
        plateau further (quantised latencies: fpga, eyeriss, pixel2) can never add hypervolume and the accurate,
        slow end of the front is never explored."""
        union = np.vstack([front, optimistic[pareto_mask(optimistic)]])
        return front.min(0), np.maximum(front.max(0), union[pareto_mask(union)].max(0))

    def ask(self) -> list[Architecture]:
        if len(self.archs_) + len(self.pending) < self.n_initial:
            picks = self._random(self.n_initial - len(self.archs_) - len(self.pending))
        else:
            t0 = time.perf_counter()
            self.fit()
            pool, mean, std = self._pool()
            picks = self._acquire(pool, mean, std) if pool else []
            self.inner_seconds_.append(time.perf_counter() - t0)
            self.rounds_ += 1
        self.pending.update(picks)
        return picks

    def _acquire(self, pool: list[Architecture], mean: np.ndarray, std: np.ndarray | None) -> list[Architecture]:
        c = list(self.columns)
        if self.acquisition == "spread":
            front = np.flatnonzero(pareto_mask(mean))
            return [pool[front[i]] for i in spread_pick(mean[front, c[1]], self.batch_size)]
        front = self._evaluated_front()
        if std is not None:  # the models gave (mean, std) for the whole pool already
            kept, mu, sd = pool, mean, std
        else:  # the full (mean, std) only for the ``screen`` most promising means
            rows = np.arange(len(pool))
            if len(front) and len(pool) > self.screen:
                lo, span = front.min(0), np.maximum(front.max(0) - front.min(0), 1e-12)
                rows = np.argsort(domination_margin((mean[:, c] - lo) / span, (front - lo) / span), kind="stable")
                rows = rows[: self.screen]
            kept = [pool[i] for i in rows]
            mu, sd = self.predict(kept)
        optimistic = mu[:, c] - self.beta * sd[:, c]
        if not len(front):  # nothing feasible evaluated yet: the best optimistic point stands in
            front = optimistic[pareto_mask(optimistic)][:1]
        idx = select_batch(optimistic, front, self.batch_size, bounds=self._bounds(front, optimistic))
        return [kept[i] for i in idx]

    # ------------------------------------------------------------------ timing of the inner search alone
    def inner_search(self) -> dict[str, Any]:
        """Refit the models and score the pool once (what every ``ask`` does before acquiring): seconds and
        the number of candidates scored."""
        if len(self.archs_) < 3:
            raise ValueError(f"inner_search needs >= 3 evaluated archs to fit models; got {len(self.archs_)}")
        n0, t0 = self.predictor_evaluations_, time.perf_counter()
        self.fit()
        pool, _, _ = self._pool()
        return {"seconds": time.perf_counter() - t0, "n_scored": self.predictor_evaluations_ - n0, "pool": len(pool)}
