"""Optuna samplers (NSGA-II, TPE, GP, random) behind the ask/tell interface, over a persistent study.

One categorical parameter per gene of ``space.to_genome``; each trial stores its canonical arch string in
``user_attrs["arch"]``. Re-creating the strategy with the same ``storage`` and ``study_name`` resumes the
study: the completed trials seed an evaluation cache, and an arch that was already evaluated is never proposed
again (a sampler's repeat is told its cached objectives at once and marked ``user_attrs["duplicate"]``).

Several processes (on one machine or many) may drive the same study at once -- "workers". Each running trial
carries its worker (``host:pid:session``) and a heartbeat (``user_attrs``) refreshed every
``heartbeat_interval`` seconds while it waits to be told. A trial whose worker is gone (a dead pid on this
host, or no heartbeat for ``grace_period`` seconds) is failed and re-enqueued with the same parameters, so
another worker evaluates it: nothing is lost. Repeats are filtered: after a trial is asked, the worker records
its arch, then reads the study; if a completed trial has the arch it is answered from it, and if a live trial
with a lower number holds it, this one yields (is failed, marked ``yielded``). That filter is cheap but not
airtight -- two workers that draw the same arch at the same moment can both miss each other -- so the objective
must make the final call: the pipeline's journal claims each arch atomically before evaluating it
(``nas.workers.EvaluationJournal``) and answers ``nan`` for an arch another live worker holds, which this
strategy tells as a failed, ``unevaluated`` trial. :meth:`budget` gives a budget driver the study-wide count
(``nas.workers.StudyBudget``; worker ids, heartbeats and dead workers' trials: ``nas.workers.StudyWorkers``).

Storage URLs: anything ``optuna.storages.RDBStorage`` takes (``sqlite:///study.db`` for one machine,
``postgresql://user@host/db`` for a cluster; its driver: ``pip install 'hwnas[postgres]'``) and
``journal:///path/study.log`` for Optuna's JournalFileBackend (a shared filesystem without a database).

Example::

    s = OptunaSearch(space=space, sampler="tpe", storage="sqlite:///study.db", study_name="nb201-pixel3")
    archs = s.ask(); s.tell(archs, F)          # F: (len(archs), n_objectives), minimised
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.base import Strategy, check_space
from nas.workers import StudyBudget, StudyWorkers
from search_spaces.base import Architecture

SAMPLERS = ("nsga2", "tpe", "gp", "random")
log = logging.getLogger(__name__)


def open_storage(url: str | None) -> Any:
    """An Optuna storage for a URL: ``journal:///path`` -> JournalStorage over a JournalFileBackend, any other
    URL -> RDBStorage (SQLite waits up to 60 s for a lock held by another worker); ``None`` -> in memory.
    A URL that cannot be opened gives one line naming it."""
    if url is None:
        return None
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"storage={url!r} is invalid; expected an Optuna storage URL like 'sqlite:///study.db', "
                         "'journal:///path/study.log' or 'postgresql://user@host/db'")
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal://"):
        path = url[len("journal://"):]
        if not path:
            raise ValueError(f"storage={url!r} is invalid; expected journal:///path/to/study.log")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    kw = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    retries = 4  # workers that open a fresh database at once race to create its schema: the loser finds it made
    while True:
        try:
            return RDBStorage(url, engine_kwargs=kw)
        except ImportError as e:
            raise ValueError(f"storage={url!r} needs a database driver that is not installed ({e}); for PostgreSQL: "
                             "pip install 'hwnas[postgres]'") from None
        except Exception as e:  # sqlalchemy's OperationalError and friends: say which URL and why, in one line
            text = str(e)
            if retries and any(m in text for m in ("UNIQUE constraint failed: alembic_version", "already exists",
                                                   "duplicate key")):
                time.sleep(0.2 * (5 - retries))
                retries -= 1
                continue
            reason = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            raise ValueError(f"storage={url!r} cannot be opened: {reason}") from None


def _constraints_of(trial: Any) -> list[float]:
    """Constraint values a strategy stored on the trial (``<= 0`` feasible), for Optuna's constraints_func."""
    return list(trial.user_attrs["constraints"])


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of worker ``worker`` of a study named after ``seed``: ``seed`` itself for worker 0 (a
    single process is unchanged), a distinct seed drawn from ``(seed, worker)`` for the others, so workers on one
    study propose different trials instead of repeats that the ask-time filter then drops."""
    if int(worker) == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(worker)]).generate_state(1)[0])


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
        heartbeat_interval: seconds between heartbeats of the trials being evaluated.
        grace_period: seconds without a heartbeat after which another worker's running trial counts as dead.
    """

    def __init__(self, *, space: Any, sampler: str = "tpe", storage: str | None = "sqlite:///optuna_study.db",
                 study_name: str = "hwnas", n_objectives: int = 2, batch_size: int = 1, seed: int = 0,
                 population_size: int = 24, max_retries: int = 20, n_constraints: int = 0,
                 heartbeat_interval: float = 5.0, grace_period: float = 60.0) -> None:
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
        for key, val in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)):
            if not isinstance(val, int | float) or isinstance(val, bool) or not val > 0:
                raise ValueError(f"{key}={val!r} is invalid; expected a positive number of seconds")
        if grace_period < 2 * heartbeat_interval:
            raise ValueError(f"grace_period={grace_period!r} is invalid; expected at least twice "
                             f"heartbeat_interval={heartbeat_interval!r}")
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
        self.grace_period = float(grace_period)
        self._storage = open_storage(storage) or optuna.storages.InMemoryStorage()
        self.study = optuna.create_study(
            storage=self._storage, study_name=study_name, load_if_exists=True,
            directions=["minimize"] * self.n_objectives, sampler=make_sampler(sampler, int(seed), population_size, constrained=self.n_constraints > 0),
        )
        self.workers = StudyWorkers(self.study, self._storage, grace_period, heartbeat_interval)
        self.cache_: dict[Architecture, np.ndarray] = {}
        self.violation_: dict[Architecture, np.ndarray] = {}
        self._pending: dict[Architecture, Any] = {}
        self._read_complete: set[int] = set()
        self.sampler_name = sampler
        self.workers.reap(self._others(self._refresh()))
        self._resumed = len(self.cache_)
        self.workers.start_heartbeat(self, lambda s: s._pending.values())

    def _refresh(self) -> list[Any]:
        """Read the study: completed trials' archs join the cache; returns the running trials."""
        import optuna

        TS = optuna.trial.TrialState
        running = []
        for t in self.study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.RUNNING)):
            if t.state == TS.RUNNING:
                running.append(t)
                continue
            if t.number in self._read_complete:  # completed trials do not change: each is read once
                continue
            self._read_complete.add(t.number)
            if "arch" in t.user_attrs and not t.user_attrs.get("duplicate"):
                a = self.space.parse(t.user_attrs["arch"])
                if a not in self.cache_:
                    self.cache_[a] = np.asarray(t.values, dtype=np.float64)
                    if self.n_constraints:
                        self.violation_[a] = np.asarray(t.user_attrs.get("constraints", [0.0] * self.n_constraints))
        return running

    def _others(self, running: list[Any]) -> list[Any]:
        mine = {t.number for t in self._pending.values()}
        return [t for t in running if t.number not in mine]

    @property
    def retried(self) -> int:
        """Dead workers' trials this worker re-enqueued."""
        return self.workers.retried

    def budget(self, total: int) -> StudyBudget:
        """The study's budget, spent by every worker of it together (see :class:`nas.workers.StudyBudget`)."""
        def state() -> tuple[int, list[Any], dict[Any, int]]:
            running = self._refresh()
            return len(self.cache_), running, {a: t.number for a, t in self._pending.items()}

        return StudyBudget(total, self.workers, state)

    @classmethod
    def from_problem(cls, problem: Any, **params: Any) -> OptunaSearch:
        """Study name and storage from the problem (the pipeline: SQLite in the run directory unless
        ``search.storage``); ``params``: sampler, batch_size, population_size, max_retries."""
        name = problem.study_name or f"hwnas-optuna_{params.get('sampler', 'tpe')}-seed{problem.seed}"
        return cls(space=problem.space, storage=problem.storage, study_name=name, n_objectives=problem.n_objectives,
                   seed=worker_seed(problem.seed, problem.worker), n_constraints=problem.n_constraints, **params)

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
            key = self._key(arch)
            trial.set_user_attr("arch", key)
            self.workers.mark(trial)
            running = self._refresh()  # after recording the arch: a worker holding it now is seen (see module doc)
            holder = [t for t in self._others(running)
                      if t.number < trial.number and t.user_attrs.get("arch") == key and not self.workers.dead(t, time.time())]
            if arch in self.cache_:
                trial.set_user_attr("duplicate", True)
                if self.n_constraints:
                    trial.set_user_attr("constraints", self.violation_[arch].tolist())
                self.study.tell(trial, self.cache_[arch].tolist())
            elif arch in self._pending or holder:
                trial.set_user_attr("yielded", True)  # another trial holds this arch; it is not lost
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
            import optuna

            try:
                if not np.isfinite(f).all():  # not evaluated (past the budget, or the evaluation failed)
                    trial.set_user_attr("unevaluated", True)
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                if self.n_constraints:
                    trial.set_user_attr("constraints", G[i].tolist())
                    self.violation_[a] = G[i]
                self.study.tell(trial, f.tolist())
            except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale by another worker meanwhile
                log.warning("optuna: trial %d (%s) was failed by another worker as dead before it was told (no "
                            "heartbeat for %.0f s); its retry will find this result in the run's journal",
                            trial.number, self._key(a), self.grace_period)
            if np.isfinite(f).all():
                self.cache_[a] = f

    @property
    def history_(self) -> dict[Architecture, np.ndarray]:
        """Every evaluated arch (this session and resumed ones) -> objective row."""
        return self.cache_
