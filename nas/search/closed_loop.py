"""Our closed-loop strategy: fit surrogates on what was really evaluated, search the predictions, evaluate the
most promising batch (predicted-front membership + uncertainty), refit, repeat.

Per round: every objective's surrogate is refitted on the evaluated candidates; all candidates are scored
(exhaustively for a tabular space; :meth:`ClosedLoopSearch.inner_search` runs the predictor-driven pymoo
NSGA-II instead for spaces too large to enumerate); each gets an *optimistic* point ``mean - beta * std``;
the batch is picked greedily by the hypervolume it would add to the evaluated front (UCB-style hypervolume
improvement), each pick's optimistic point joining the front so the batch spreads along it. Hypervolumes are
normalised with the evaluated front's ideal and the nadir of the front the optimistic points would form, so
the reference point reaches as far as the predicted front does.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from nas.pareto import pareto_mask
from nas.search.acquisition import select_batch
from nas.search.base import Strategy


class ClosedLoopSearch(Strategy):
    """Predictor-driven closed loop over a finite candidate list (minimised objectives).

    Args:
        candidates: every architecture that may be proposed (hashable, e.g. ``space.all_archs()``).
        surrogates: one surrogate per objective (``fit(rows, y)``, ``predict(rows) -> (mean, std)``), rows
            index ``candidates``.
        n_initial: random evaluations before the first fit.
        batch_size: evaluations per round after that.
        beta: optimism: the acquisition scores ``mean - beta * std``; one number or one per objective (e.g.
            ``(1.0, 0.0)``: optimistic error, mean latency from a meta-trained prior).
        seed: seed of the initial design.
        space: optional; needed only by :meth:`inner_search` (integer genome).
    """

    def __init__(self, *, candidates: Sequence[Hashable], surrogates: Sequence[Any], n_initial: int = 10,
                 batch_size: int = 10, beta: float | Sequence[float] = 1.0, seed: int = 0, space: Any = None) -> None:
        if len(candidates) < 2:
            raise ValueError(f"candidates has {len(candidates)} archs; expected at least 2")
        if len(surrogates) != 2:
            raise ValueError(f"got {len(surrogates)} surrogates; expected 2 (one per objective, two objectives)")
        for s in surrogates:
            if not (hasattr(s, "fit") and hasattr(s, "predict")):
                raise ValueError(f"surrogate {type(s).__name__} lacks fit/predict; expected fit(rows, y), predict(rows)")
        for key, val in (("n_initial", n_initial), ("batch_size", batch_size)):
            if not isinstance(val, int | np.integer) or val < 1:
                raise ValueError(f"{key}={val!r} is invalid; expected an integer >= 1")
        if n_initial < 3:
            raise ValueError(f"n_initial={n_initial} is invalid; expected >= 3 to fit surrogates")
        b = np.asarray(beta, dtype=np.float64).reshape(-1) if np.ndim(beta) else np.full(2, float(beta))
        if b.shape != (2,) or not np.isfinite(b).all() or (b < 0).any():
            raise ValueError(f"beta={beta!r} is invalid; expected a finite number >= 0 or one per objective (2)")
        self.candidates = list(candidates)
        self.row = {a: i for i, a in enumerate(self.candidates)}
        if len(self.row) != len(self.candidates):
            raise ValueError("candidates contain duplicates; expected distinct architectures")
        self.surrogates = list(surrogates)
        self.n_initial = int(n_initial)
        self.batch_size = int(batch_size)
        self.beta = b
        self.space = space
        self.rng = np.random.default_rng(int(seed))
        self.evaluated = np.zeros(len(self.candidates), dtype=bool)
        self.pending = np.zeros(len(self.candidates), dtype=bool)
        self.rows_: list[int] = []
        self.F_: list[np.ndarray] = []
        self.fit_seconds_: list[float] = []

    # ------------------------------------------------------------------ ask / tell
    def _fit(self) -> None:
        rows = np.asarray(self.rows_)
        F = np.asarray(self.F_)
        for k, s in enumerate(self.surrogates):
            s.fit(rows, F[:, k])

    def _screen(self, free: np.ndarray, front: np.ndarray, keep: int = 2000) -> np.ndarray:
        """Candidates worth a full (mean, std) prediction: the ``keep`` whose mean points are closest to the
        evaluated front (domination margin in front-normalised units); all of them when surrogates have no
        ``predict_mean``."""
        if len(free) <= keep or not all(hasattr(s, "predict_mean") for s in self.surrogates):
            return free
        from nas.search.acquisition import domination_margin

        mean = np.stack([s.predict_mean(free) for s in self.surrogates], 1)
        lo, span = front.min(0), np.maximum(front.max(0) - front.min(0), 1e-12)
        margin = domination_margin((mean - lo) / span, (front - lo) / span)
        return free[np.argsort(margin, kind="stable")[:keep]]

    @staticmethod
    def _bounds(front: np.ndarray, optimistic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ideal, nadir) that normalise the acquisition: the evaluated front's ideal, and the nadir of the front
        the optimistic predictions would give (never inside the evaluated front's). With the evaluated front's
        own nadir the reference point sits 10% of its span past its slowest point, so a candidate one latency
        plateau further (quantised latencies: fpga, eyeriss, pixel2) can never add hypervolume and the accurate,
        slow end of the front is never explored."""
        union = np.vstack([front, optimistic[pareto_mask(optimistic)]])
        return front.min(0), np.maximum(front.max(0), union[pareto_mask(union)].max(0))

    def predict(self, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (mean, std), each (len(rows), 2), of the fitted surrogates (all candidates by default)."""
        rows = np.arange(len(self.candidates)) if rows is None else np.asarray(rows, dtype=int)
        out = [s.predict(rows) for s in self.surrogates]
        return np.stack([m for m, _ in out], 1), np.stack([sd for _, sd in out], 1)

    def ask(self) -> list[Hashable]:
        busy = self.evaluated | self.pending
        free = np.flatnonzero(~busy)
        if not len(free):
            return []
        if len(self.rows_) < self.n_initial:
            need = min(self.n_initial - len(self.rows_) - int(self.pending.sum()), len(free))
            picks = self.rng.choice(free, size=max(need, 0), replace=False) if need > 0 else np.zeros(0, int)
        else:
            t0 = time.perf_counter()
            self._fit()
            F = np.asarray(self.F_)
            front = F[pareto_mask(F)]
            rows = self._screen(free, front)
            mean, std = self.predict(rows)
            optimistic = np.full((len(self.candidates), 2), np.inf)
            optimistic[rows] = mean - self.beta * std
            picks = select_batch(optimistic, front, self.batch_size, exclude=busy | ~np.isfinite(optimistic[:, 0]),
                                 bounds=self._bounds(front, optimistic[rows]))
            self.fit_seconds_.append(time.perf_counter() - t0)
        self.pending[picks] = True
        return [self.candidates[i] for i in picks]

    def tell(self, archs: Sequence[Hashable], F: np.ndarray) -> None:
        F = np.asarray(F, dtype=np.float64).reshape(len(archs), -1)
        for a, f in zip(archs, F, strict=True):
            i = self.row.get(a)
            if i is None:
                raise ValueError(f"tell() got arch {a!s} that is not among the candidates")
            self.pending[i] = False
            if self.evaluated[i] or not np.isfinite(f).all():
                continue
            self.evaluated[i] = True
            self.rows_.append(i)
            self.F_.append(f)

    @property
    def history_(self) -> dict[Hashable, np.ndarray]:
        return {self.candidates[i]: f for i, f in zip(self.rows_, self.F_, strict=True)}

    # ------------------------------------------------------------------ predictor-driven inner search
    def inner_search(self, n_candidates: int = 20_000, method: str = "exhaustive", pop_size: int = 100,
                     seed: int = 0) -> dict[str, Any]:
        """Refit the surrogates and search their mean predictions for the predicted Pareto front.

        ``method="exhaustive"`` scores ``n_candidates`` candidates at once (all of them when the list is that
        short, as for nb201's 15625); ``"nsga2"`` runs the pymoo NSGA-II for ``n_candidates // pop_size``
        generations (needs ``space``; pymoo's duplicate elimination makes it slow on a space this small).
        Returns the predicted front (archs, F), the number of candidates scored and the wall time (s).
        """
        if method not in ("exhaustive", "nsga2"):
            raise ValueError(f"method={method!r} is invalid; expected 'exhaustive' or 'nsga2'")
        if len(self.rows_) < 3:
            raise ValueError(f"inner_search needs >= 3 evaluated archs to fit surrogates; got {len(self.rows_)}")
        t0 = time.perf_counter()
        self._fit()
        if method == "exhaustive":
            n = len(self.candidates)
            rows = np.arange(n) if n <= n_candidates else np.random.default_rng(seed).choice(n, n_candidates, False)
            mean, _ = self.predict(rows)
            m = pareto_mask(mean)
            front, Fp, n_scored = [self.candidates[i] for i in rows[m]], mean[m], len(rows)
        else:
            from nas.search.nsga2 import PymooNSGA2

            if self.space is None:
                raise ValueError("inner_search(method='nsga2') needs space=...; expected an integer-genome space")
            algo = PymooNSGA2(space=self.space, pop_size=pop_size, seed=seed)
            for _ in range(max(1, int(n_candidates) // int(pop_size))):
                archs = algo.ask()
                algo.tell(archs, self.predict(np.array([self.row[a] for a in archs]))[0])
            front, Fp = algo.front()
            n_scored = len(algo.history_)
        return {"seconds": time.perf_counter() - t0, "front": front, "F": Fp, "n_scored": n_scored}
