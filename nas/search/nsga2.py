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


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of the rows of one front (ends infinite), objectives normalised by their span."""
    n, m = F.shape
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(F[:, k], kind="stable")
        f = F[order, k]
        span = f[-1] - f[0]
        gap = np.full(n, np.inf)
        if span > 0:
            gap[1:-1] = (f[2:] - f[:-2]) / span
        else:
            gap[1:-1] = 0.0
        d[order] += gap
    return d


def survival_keys(F: np.ndarray, CV: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rank, crowding) of every row under constrained domination: feasible rows (``CV == 0``) by non-dominated
    rank, then infeasible ones by total violation, each violation level its own rank."""
    from nas.pareto import nondominated_ranks

    n = len(F)
    rank = np.zeros(n, dtype=np.int64)
    feas = CV <= 0
    if feas.any():
        rank[feas] = nondominated_ranks(F[feas])
    if (~feas).any():
        top = int(rank[feas].max()) + 1 if feas.any() else 0
        rank[~feas] = top + np.unique(CV[~feas], return_inverse=True)[1]
    crowd = np.zeros(n)
    for r in np.unique(rank):
        idx = np.flatnonzero(rank == r)
        crowd[idx] = crowding_distance(F[idx])
    return rank, crowd


class VectorisedNSGA2:
    """NSGA-II over a space's integer genome for objectives that score a whole population at once (the closed
    loop's predictors): binary tournaments on (rank, crowding), uniform crossover, per-gene resampling mutation,
    offspring already seen dropped, elitist survival by constrained non-dominated rank and crowding distance.
    Genomes live in numpy arrays; the only per-candidate Python work is building the architecture objects the
    predictors are asked about (and hashing them, so no candidate is scored twice).

    ``run(evaluate, generations)`` calls ``evaluate(archs) -> (F, G)`` once per generation (the first with the
    initial population) and returns every distinct architecture scored, with its objective and constraint rows.
    """

    def __init__(self, *, space: Any, pop_size: int = 64, seed: int = 0, initial: Sequence[Architecture] | None = None,
                 crossover_prob: float = 0.9, mutation_rate: float | None = None) -> None:
        check_space(space)
        if int(pop_size) < 4:
            raise ValueError(f"pop_size={pop_size} is invalid; expected >= 4")
        self.space, self.pop_size = space, int(pop_size)
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = (np.asarray(b, dtype=np.int64) for b in space.genome_bounds())
        self.crossover_prob = float(crossover_prob)
        self.mutation_rate = 1.0 / len(self.lo) if mutation_rate is None else float(mutation_rate)
        self.initial = list(initial or [])[-self.pop_size:]

    def _random_genomes(self, n: int) -> np.ndarray:
        return self.rng.integers(self.lo, self.hi + 1, size=(n, len(self.lo)))

    def _tournament(self, rank: np.ndarray, crowd: np.ndarray, n: int) -> np.ndarray:
        a, b = self.rng.integers(0, len(rank), size=(2, n))
        a_wins = (rank[a] < rank[b]) | ((rank[a] == rank[b]) & (crowd[a] >= crowd[b]))
        return np.where(a_wins, a, b)

    def _offspring(self, X: np.ndarray, rank: np.ndarray, crowd: np.ndarray, n: int) -> np.ndarray:
        p1, p2 = X[self._tournament(rank, crowd, n)], X[self._tournament(rank, crowd, n)]
        swap = (self.rng.random(p1.shape) < 0.5) & (self.rng.random(n) < self.crossover_prob)[:, None]
        child = np.where(swap, p2, p1)
        mutate = self.rng.random(child.shape) < self.mutation_rate
        return np.where(mutate, self._random_genomes(n), child)

    def _novel(self, G: np.ndarray, seen: set[Architecture], n: int) -> tuple[np.ndarray, list[Architecture]]:
        rows, archs, fresh = [], [], set()
        for i, a in enumerate(self.space.from_genomes(G)):
            if a not in seen and a not in fresh:
                fresh.add(a)
                rows.append(i)
                archs.append(a)
                if len(archs) == n:
                    break
        return G[rows], archs

    def run(self, evaluate: Any, generations: int) -> tuple[list[Architecture], np.ndarray, np.ndarray]:
        """Every distinct architecture scored, in order, with its rows of ``F`` and ``G`` (``(n, 0)`` without
        constraints)."""
        seen: set[Architecture] = set()
        archs_all: list[Architecture] = []
        F_all: list[np.ndarray] = []
        G_all: list[np.ndarray] = []

        def score(archs: list[Architecture]) -> tuple[np.ndarray, np.ndarray]:
            F, G = evaluate(archs)
            F = np.asarray(F, dtype=np.float64).reshape(len(archs), -1)
            G = np.zeros((len(archs), 0)) if G is None else np.asarray(G, dtype=np.float64).reshape(len(archs), -1)
            seen.update(archs)
            archs_all.extend(archs)
            F_all.append(F)
            G_all.append(G)
            return F, G

        G0 = np.stack([self.space.to_genome(a) for a in self.initial]) if self.initial else np.zeros((0, len(self.lo)), int)
        X, pop = self._novel(np.vstack([G0, self._random_genomes(4 * self.pop_size)]), seen, self.pop_size)
        F, C = score(pop)
        for _ in range(int(generations) - 1):
            CV = np.clip(C, 0, None).sum(1)
            rank, crowd = survival_keys(F, CV)
            kids, kid_archs = self._novel(self._offspring(X, rank, crowd, 2 * self.pop_size), seen, self.pop_size)
            if not kid_archs:
                break
            Fk, Ck = score(kid_archs)
            X, F, C = np.vstack([X, kids]), np.vstack([F, Fk]), np.vstack([C, Ck])
            rank, crowd = survival_keys(F, np.clip(C, 0, None).sum(1))
            keep = np.lexsort((-crowd, rank))[: self.pop_size]
            X, F, C = X[keep], F[keep], C[keep]
        return archs_all, np.vstack(F_all), np.vstack(G_all)
