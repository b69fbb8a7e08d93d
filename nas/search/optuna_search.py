"""Optuna samplers (NSGA-II, TPE, GP, random) behind the ask/tell interface, over a persistent study.

One categorical parameter per gene of ``space.to_genome``; each trial stores its canonical arch string in
``user_attrs["arch"]``. Re-creating the strategy with the same ``storage`` and ``study_name`` resumes the
study: the completed trials seed an evaluation cache, and an arch that was already evaluated is never proposed
again (a sampler's repeat is told its cached objectives at once and marked ``user_attrs["duplicate"]``).

Example::

    s = OptunaSearch(space=space, sampler="tpe", storage="sqlite:///study.db", study_name="nb201-pixel3")
    archs = s.ask(); s.tell(archs, F)          # F: (len(archs), n_objectives), minimised
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.base import Strategy, check_space
from search_spaces.base import Architecture

SAMPLERS = ("nsga2", "tpe", "gp", "random")


def _constraints_of(trial: Any) -> list[float]:
    """Constraint values a strategy stored on the trial (``<= 0`` feasible), for Optuna's constraints_func."""
    return list(trial.user_attrs["constraints"])


def make_sampler(name: str, seed: int, population_size: int = 24, constrained: bool = False) -> Any:
    """An Optuna sampler by short name, seeded; ``constrained``: it reads ``user_attrs["constraints"]``."""
    import optuna

    cf = {"constraints_func": _constraints_of} if constrained else {}
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=int(population_size), seed=seed, **cf)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, **cf)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **cf)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler={name!r} is invalid; expected one of {list(SAMPLERS)}")


class OptunaSearch(Strategy):
    """An Optuna study driven by ask/tell; all objectives minimised.

    Args:
        space: a search space with ``genome_bounds/to_genome/from_genome`` and ``parse``.
        sampler: ``"nsga2" | "tpe" | "gp" | "random"``.
        storage: any Optuna storage URL (default a SQLite file ``sqlite:///optuna_study.db``); ``None`` keeps
            the study in memory (no resume).
        study_name: the study to create or resume.
        n_objectives: number of objective columns told.
        batch_size: archs per ``ask()``.
        seed: sampler seed.
        population_size: NSGA-II population.
        max_retries: sampler repeats tolerated per proposal before a random unseen arch is enqueued.
        n_constraints: constraint columns each ``tell`` passes as ``G`` (``<= 0`` feasible); the NSGA-II, TPE
            and GP samplers take them into account (random ignores them).
    """

    def __init__(self, *, space: Any, sampler: str = "tpe", storage: str | None = "sqlite:///optuna_study.db",
                 study_name: str = "hwnas", n_objectives: int = 2, batch_size: int = 1, seed: int = 0,
                 population_size: int = 24, max_retries: int = 20, n_constraints: int = 0) -> None:
        check_space(space)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is invalid; expected one of {list(SAMPLERS)}")
        if storage is not None and (not isinstance(storage, str) or "://" not in storage):
            raise ValueError(f"storage={storage!r} is invalid; expected an Optuna storage URL like 'sqlite:///study.db'")
        if not isinstance(study_name, str) or not study_name:
            raise ValueError(f"study_name={study_name!r} is invalid; expected a non-empty string")
        for key, val, lo in (("n_objectives", n_objectives, 1), ("batch_size", batch_size, 1),
                             ("population_size", population_size, 2), ("max_retries", max_retries, 1),
                             ("n_constraints", n_constraints, 0)):
            if not isinstance(val, int | np.integer) or val < lo:
                raise ValueError(f"{key}={val!r} is invalid; expected an integer >= {lo}")
        import optuna
        from optuna.distributions import CategoricalDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.n_objectives = int(n_objectives)
        self.n_constraints = int(n_constraints)
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.rng = np.random.default_rng(int(seed))
        lo, hi = space.genome_bounds()
        self.dists = {f"g{k}": CategoricalDistribution(list(range(int(a), int(b) + 1))) for k, (a, b) in enumerate(zip(lo, hi))}
        self.study = optuna.create_study(
            storage=storage, study_name=study_name, load_if_exists=True,
            directions=["minimize"] * self.n_objectives, sampler=make_sampler(sampler, int(seed), population_size, constrained=self.n_constraints > 0),
        )
        self.cache_: dict[Architecture, np.ndarray] = {}
        self.violation_: dict[Architecture, np.ndarray] = {}
        TS = optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False):
            if t.state == TS.COMPLETE and "arch" in t.user_attrs and not t.user_attrs.get("duplicate"):
                a = space.parse(t.user_attrs["arch"])
                self.cache_[a] = np.asarray(t.values, dtype=np.float64)
                if self.n_constraints:
                    self.violation_[a] = np.asarray(t.user_attrs.get("constraints", [0.0] * self.n_constraints))
            elif t.state == TS.RUNNING:  # left over by an interrupted session: never told
                self.study.tell(t.number, state=TS.FAIL)
        self._pending: dict[Architecture, Any] = {}
        self.sampler_name = sampler
        self._resumed = len(self.cache_)

    @classmethod
    def from_problem(cls, problem: Any, **params: Any) -> OptunaSearch:
        """Study name and storage from the problem (the pipeline: SQLite in the run directory unless
        ``search.storage``); ``params``: sampler, batch_size, population_size, max_retries."""
        name = problem.study_name or f"hwnas-optuna_{params.get('sampler', 'tpe')}-seed{problem.seed}"
        return cls(space=problem.space, storage=problem.storage, study_name=name,
                   n_objectives=problem.n_objectives, seed=problem.seed, n_constraints=problem.n_constraints, **params)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"optuna_{self.sampler_name}"

    @property
    def resumed_evaluations(self) -> int:
        """Completed trials of this study found in its storage when the strategy was built."""
        return self._resumed

    @staticmethod
    def _key(arch: Any) -> str:
        return arch.to_string()

    def _random_unseen(self) -> Any:
        for _ in range(10_000):
            a = self.space.sample(self.rng)
            if a not in self.cache_ and a not in self._pending:
                return a
        raise ValueError("cannot find an unevaluated architecture; the space looks exhausted")

    def _ask_one(self) -> tuple[Any, Any]:
        import optuna

        for attempt in range(self.max_retries + 1):
            if attempt == self.max_retries:
                g = self.space.to_genome(self._random_unseen())
                self.study.enqueue_trial({f"g{k}": int(v) for k, v in enumerate(g)}, skip_if_exists=False)
            trial = self.study.ask(self.dists)
            arch = self.space.from_genome(np.array([trial.params[f"g{k}"] for k in range(len(self.dists))]))
            trial.set_user_attr("arch", self._key(arch))
            if arch in self.cache_:
                trial.set_user_attr("duplicate", True)
                if self.n_constraints:
                    trial.set_user_attr("constraints", self.violation_[arch].tolist())
                self.study.tell(trial, self.cache_[arch].tolist())
            elif arch in self._pending:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                return arch, trial
        raise ValueError("sampler kept proposing evaluated architectures")  # pragma: no cover

    def ask(self) -> list[Architecture]:
        out = []
        for _ in range(self.batch_size):
            arch, trial = self._ask_one()
            self._pending[arch] = trial
            out.append(arch)
        return out

    def tell(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        F = np.asarray(F, dtype=np.float64).reshape(len(archs), -1)
        if F.shape[1] != self.n_objectives:
            raise ValueError(f"tell() got {F.shape[1]} objective columns; expected {self.n_objectives}")
        if self.n_constraints:
            G = np.asarray(G if G is not None else np.zeros((len(archs), 0)), dtype=np.float64)
            if G.shape != (len(archs), self.n_constraints):
                raise ValueError(f"tell() got G of shape {G.shape}; expected ({len(archs)}, {self.n_constraints})")
        for i, (a, f) in enumerate(zip(archs, F, strict=True)):
            trial = self._pending.pop(a, None)
            if trial is None:
                raise ValueError(f"tell() got arch {self._key(a)!r} that is not pending from ask()")
            if not np.isfinite(f).all():
                import optuna

                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            if self.n_constraints:
                trial.set_user_attr("constraints", G[i].tolist())
                self.violation_[a] = G[i]
            self.study.tell(trial, f.tolist())
            self.cache_[a] = f

    @property
    def history_(self) -> dict[Architecture, np.ndarray]:
        """Every evaluated arch (this session and resumed ones) -> objective row."""
        return self.cache_
