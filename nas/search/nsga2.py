"""Predictor-driven NSGA-II (pymoo) over a space's integer genome, vectorised over whole populations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.base import Strategy


class PymooNSGA2(Strategy):
    """NSGA-II with integer SBX crossover and polynomial mutation on ``space.to_genome`` vectors.

    Keyword-only, validated at construction. Keeps every (arch, objectives) pair it was told in
    ``history_`` so the caller can take the non-dominated set over everything seen.
    """

    def __init__(self, *, space: Any, n_objectives: int = 2, pop_size: int = 64, seed: int = 0,
                 initial: Sequence[Any] | None = None) -> None:
        for attr in ("genome_bounds", "to_genome", "from_genome"):
            if not hasattr(space, attr):
                raise ValueError(f"space {getattr(space, 'name', space)!r} has no integer genome ({attr}); "
                                 "expected a space with genome_bounds/to_genome/from_genome")
        if int(pop_size) < 4:
            raise ValueError(f"pop_size={pop_size} is invalid; expected >= 4")
        if int(n_objectives) < 1:
            raise ValueError(f"n_objectives={n_objectives} is invalid; expected >= 1")
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.population import Population
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.sbx import SBX
        from pymoo.operators.mutation.pm import PM
        from pymoo.operators.repair.rounding import RoundingRepair
        from pymoo.operators.sampling.rnd import IntegerRandomSampling

        self.space = space
        lo, hi = space.genome_bounds()
        problem = Problem(n_var=len(lo), n_obj=int(n_objectives), xl=lo, xu=hi, vtype=int)
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

    def ask(self) -> list[Any]:
        self._pending = self.algorithm.ask()
        return [self.space.from_genome(x) for x in self._pending.get("X")]

    def tell(self, archs: Sequence[Any], F: np.ndarray) -> None:
        if self._pending is None or len(archs) != len(self._pending):
            raise ValueError("tell() must answer the last ask() with one objective row per architecture")
        F = np.asarray(F, dtype=np.float64)
        self._pending.set("F", F)
        self.algorithm.tell(infills=self._pending)
        for a, f in zip(archs, F):
            self.history_[a] = f
        self._pending = None

    def front(self) -> tuple[list[Any], np.ndarray]:
        """Non-dominated architectures among everything told so far."""
        from nas.pareto import pareto_mask

        archs = list(self.history_)
        F = np.stack([self.history_[a] for a in archs])
        m = pareto_mask(F)
        return [a for a, k in zip(archs, m) if k], F[m]
