"""What the strategies over outside optimisation libraries (Ax, Syne Tune) share: the genome encoding, batches,
candidates and repeats.

A library proposes parameterisations (one integer per gene of ``space.to_genome``); the adapter turns each into
an architecture and hands ``ask()`` only architectures never proposed before:

* a proposal of an architecture evaluated before is answered at once with its cached objective row (the library
  learns it again; nothing is evaluated or counted, as :func:`nas.search.run_budget` answers repeats);
* a proposal of an architecture pending in the same batch (two genomes of one architecture, where a space has
  inactive genes) is answered with that architecture's row when it is told;
* a proposal outside ``candidates`` (a tabular space) is abandoned in the library and replaced by a uniformly
  drawn unseen candidate, which the library is told it proposed (:meth:`LibraryPeer._inject`);
* after ``max_retries`` proposal rounds that bring nothing new, unseen architectures are drawn uniformly and
  injected the same way, so a converged library still spends the budget.

Rows told ``inf`` (proposals past the budget, not evaluated) are abandoned in the library.
"""

from __future__ import annotations

import logging
import warnings
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from nas.search.base import Strategy, check_space
from search_spaces.base import Architecture


@contextmanager
def quiet() -> Iterator[None]:
    """A library call with its INFO/WARNING logs and Python warnings (jitter added to a covariance, tensor copy
    advice, objective thresholds inferred, a converged generator falling back to Sobol) silenced: nothing there
    a user of the strategy can act on. Errors still log."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def check_ints(settings: Sequence[tuple[str, Any, int]]) -> None:
    """One line for the first ``(name, value, lowest)`` whose value is not an integer >= lowest."""
    for key, val, lo in settings:
        if not isinstance(val, int | np.integer) or isinstance(val, bool) or val < lo:
            raise ValueError(f"{key}={val!r} is invalid; expected an integer >= {lo}")


class LibraryPeer(Strategy):
    """Ask/tell over a library's own ask/tell (subclasses implement :meth:`_propose`, :meth:`_complete`,
    :meth:`_abandon` and :meth:`_inject`); see the module doc for repeats and candidates."""

    def __init__(self, *, space: Any, n_objectives: int = 2, batch_size: int = 10, seed: int = 0,
                 candidates: Sequence[Architecture] | None = None, max_retries: int = 3) -> None:
        check_space(space)
        check_ints((("n_objectives", n_objectives, 2), ("batch_size", batch_size, 1),
                    ("max_retries", max_retries, 1), ("seed", seed, 0)))
        self.space = space
        self.n_objectives = int(n_objectives)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.max_retries = int(max_retries)
        self.rng = np.random.default_rng(int(seed))
        self.candidates = None if candidates is None else list(candidates)
        self._candidate_set = None if candidates is None else set(self.candidates)
        lo, hi = space.genome_bounds()
        self.bounds = [(int(a), int(b)) for a, b in zip(lo, hi, strict=True)]
        self.names = [f"g{k}" for k in range(len(self.bounds))]  # the library's parameter per gene
        self.metrics = [f"f{j}" for j in range(self.n_objectives)]  # and its metric per objective column
        self.cache_: dict[Architecture, np.ndarray] = {}
        self._pending: dict[Architecture, Any] = {}  # arch -> the library's handle of its trial
        self._followers: dict[Architecture, list[Any]] = {}  # same-batch repeats, answered when it is told
        self.repeats_answered = 0  # proposals of evaluated archs, answered from the cache
        self.same_batch_repeats = 0  # two proposals of one arch in a batch: one evaluation answers both
        self.injected = 0  # unseen archs drawn by the adapter (library converged, or a non-candidate proposal)

    @classmethod
    def from_problem(cls, problem: Any, **params: Any) -> LibraryPeer:
        """Space, objective count, seed and candidates from the problem; constraints (``G``) are ignored: neither
        library's default strategy here takes them (documented in docs/benchmarks/search_nb201.md)."""
        return cls(space=problem.space, n_objectives=problem.n_objectives, seed=problem.seed,
                   candidates=problem.candidates, **params)

    # ------------------------------------------------------------------ the library's side
    @abstractmethod
    def _propose(self, n: int) -> list[tuple[Any, np.ndarray]]:
        """Up to ``n`` new trials of the library: ``(handle, genome)``."""

    @abstractmethod
    def _complete(self, handle: Any, f: np.ndarray) -> None:
        """Tell the library the objective row (minimised) of its trial."""

    @abstractmethod
    def _abandon(self, handle: Any) -> None:
        """Tell the library its trial will not be evaluated."""

    @abstractmethod
    def _inject(self, genome: np.ndarray) -> Any:
        """Register a trial of ``genome`` with the library as if it had proposed it; returns its handle."""

    def warm_start(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        """Evaluations made before the search: told to the library as trials it ran (never proposed again)."""
        F = np.asarray(F, dtype=np.float64).reshape(len(archs), -1)
        for a, f in zip(archs, F, strict=True):
            if a not in self.cache_ and np.isfinite(f).all():
                self._complete(self._inject(self.space.to_genome(a)), f)
                self.cache_[a] = f

    # ------------------------------------------------------------------ ask/tell
    def _unseen(self) -> Architecture | None:
        for _ in range(10_000):
            if self.candidates is not None:
                a = self.candidates[int(self.rng.integers(len(self.candidates)))]
            else:
                a = self.space.sample(self.rng)
            if a not in self.cache_ and a not in self._pending:
                return a
        return None

    def _take(self, handle: Any, genome: np.ndarray, out: list[Architecture]) -> None:
        arch = self.space.from_genome(np.asarray(genome, dtype=np.int64))
        if self._candidate_set is not None and arch not in self._candidate_set:
            self._abandon(handle)
            arch = self._unseen()
            if arch is None:
                return
            handle = self._inject(self.space.to_genome(arch))
            self.injected += 1
        if arch in self.cache_:
            self._complete(handle, self.cache_[arch])
            self.repeats_answered += 1
        elif arch in self._pending:
            self._followers.setdefault(arch, []).append(handle)
            self.same_batch_repeats += 1
        else:
            self._pending[arch] = handle
            out.append(arch)

    def ask(self) -> list[Architecture]:
        out: list[Architecture] = []
        dry = 0
        while len(out) < self.batch_size:
            if dry < self.max_retries:
                n0 = len(out)
                for handle, genome in self._propose(self.batch_size - len(out)):
                    self._take(handle, genome, out)
                dry = 0 if len(out) > n0 else dry + 1
                continue
            arch = self._unseen()  # the library keeps proposing what is known: unseen archs, drawn uniformly
            if arch is None:
                break
            self.injected += 1
            genome = self.space.to_genome(arch)
            self._take(self._inject(genome), genome, out)
        return out

    def tell(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        """Objective rows of the asked archs (``inf``: not evaluated, abandoned); ``G`` is ignored."""
        F = np.asarray(F, dtype=np.float64).reshape(len(archs), -1)
        if F.shape[1] != self.n_objectives:
            raise ValueError(f"tell() got {F.shape[1]} objective columns; expected {self.n_objectives}")
        for a, f in zip(archs, F, strict=True):
            if a not in self._pending:
                raise ValueError(f"tell() got arch {a.to_string()!r} that is not pending from ask()")
            handles = [self._pending.pop(a), *self._followers.pop(a, [])]
            for h in handles:
                if np.isfinite(f).all():
                    self._complete(h, f)
                else:
                    self._abandon(h)
            if np.isfinite(f).all():
                self.cache_[a] = f

    @property
    def history_(self) -> dict[Architecture, np.ndarray]:
        """Every evaluated arch -> objective row."""
        return self.cache_

    def describe(self) -> dict[str, Any]:
        """What the run used, for benchmark JSON (subclasses add the library's method)."""
        return {"repeats_answered": self.repeats_answered, "same_batch_repeats": self.same_batch_repeats,
                "injected": self.injected, "batch_size": self.batch_size}
