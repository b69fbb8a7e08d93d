"""Predictor-driven NSGA-II (pymoo) over a space's integer genome, vectorised over whole populations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.base import Strategy, check_space
from search_spaces.base import Architecture

UNEVALUATED = 1e12  # objective value pymoo sees for a proposal that was not evaluated


class PymooNSGA2(Strategy):
    """NSGA-II with integer SBX crossover and polynomial mutation on ``space.to_genome`` vectors.

    Keyword-only, validated at construction. Keeps every (arch, objectives) pair it was told in
    ``history_`` so the caller can take the non-dominated set over everything seen. With
    ``n_constraints > 0`` each ``tell`` also takes ``G`` (pymoo's convention: ``<= 0`` feasible); NSGA-II then
    uses constrained domination and :meth:`front` keeps feasible architectures only.
    """

    def __init__(self, *, space: Any, n_objectives: int = 2, pop_size: int = 64, seed: int = 0,
                 initial: Sequence[Architecture] | None = None, n_constraints: int = 0) -> None:
        check_space(space)
        if int(pop_size) < 4:
            raise ValueError(f"pop_size={pop_size} is invalid; expected >= 4")
        if int(n_objectives) < 1:
            raise ValueError(f"n_objectives={n_objectives} is invalid; expected >= 1")
        if int(n_constraints) < 0:
            raise ValueError(f"n_constraints={n_constraints} is invalid; expected >= 0")
        self.n_constraints = int(n_constraints)
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.population import Population
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling

        self.space = space
        lo, hi = space.genome_bounds()
        problem = Problem(n_var=len(lo), n_obj=int(n_objectives), n_ieq_constr=self.n_constraints, xl=lo, xu=hi,
                          vtype=int)
        sampling: Any = IntegerRandomSampling()
        if initial:
            X0 = np.stack([space.to_genome(a) for a in initial])
            if len(X0) < pop_size:
                rng = np.random.default_rng(seed)
                extra = np.stack([space.to_genome(space.sample(rng)) for _ in range(int(pop_size) - len(X0))])
                X0 = np.vstack([X0, extra])
            sampling = Population.new(X=X0[: int(pop_size)])
        self.algorithm = NSGA2(
            pop_size=int(pop_size),
            sampling=sampling,
            crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
            mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
            eliminate_duplicates=True,
        )
        self.algorithm.setup(problem, seed=int(seed), verbose=False)
        self._pending = None
        self.history_: dict[Any, np.ndarray] = {}
        self.violation_: dict[Any, np.ndarray] = {}

    label = "pymoo_nsga2"

    @classmethod
    def from_problem(cls, problem: Any, **params: Any) -> PymooNSGA2:
        """NSGA-II whose every proposal is evaluated (a peer in benchmarks); ``params``: pop_size."""
        return cls(space=problem.space, n_objectives=problem.n_objectives, seed=problem.seed,
                   n_constraints=problem.n_constraints, **params)

    def ask(self) -> list[Architecture]:
        self._pending = self.algorithm.ask()
        return [self.space.from_genome(x) for x in self._pending.get("X")]

    def tell(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        if self._pending is None or len(archs) != len(self._pending):
            raise ValueError("tell() must answer the last ask() with one objective row per architecture")
        F = np.asarray(F, dtype=np.float64)
        # rows told inf (proposals past the budget, never evaluated) reach pymoo as the worst finite value, so
        # its crowding distances stay defined (inf - inf would warn and poison the survival step)
        F_told = np.where(np.isfinite(F), F, UNEVALUATED)
        if self.n_constraints:
            G = np.asarray(G if G is not None else np.full((len(archs), 0), np.nan), dtype=np.float64)
            if G.shape != (len(archs), self.n_constraints):
                raise ValueError(f"tell() got G of shape {G.shape}; expected ({len(archs)}, {self.n_constraints})")
            self._pending.set("F", F_told, "G", G)
        elif G is not None and np.size(G):
            raise ValueError("tell() got G but the strategy was built with n_constraints=0")
        else:
            self._pending.set("F", F_told)
        self.algorithm.tell(infills=self._pending)
        for i, (a, f) in enumerate(zip(archs, F, strict=True)):
            self.history_[a] = f
            if self.n_constraints:
                self.violation_[a] = G[i]
        self._pending = None

    def front(self) -> tuple[list[Architecture], np.ndarray]:
        """Non-dominated architectures among everything told so far (feasible ones only, when constrained;
        if none is feasible, the least-violating one)."""
        from nas.pareto import pareto_mask

        archs = list(self.history_)
        if self.n_constraints:
            viol = np.stack([np.clip(self.violation_[a], 0, None).sum() for a in archs])
            ok = viol <= 0
            if not ok.any():
                i = int(np.argmin(viol))
                return [archs[i]], self.history_[archs[i]][None, :]
            archs = [a for a, k in zip(archs, ok, strict=True) if k]
        F = np.stack([self.history_[a] for a in archs])
        m = pareto_mask(F)
        return [a for a, k in zip(archs, m, strict=True) if k], F[m]
