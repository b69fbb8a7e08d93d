"""Random search: uniform draws of architectures not proposed before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.base import Strategy, check_space
from search_spaces.base import Architecture


class RandomSearch(Strategy):
    """Uniform sampling without repeats; ``ask()`` returns ``batch_size`` archs never proposed before.

    With ``candidates`` it samples that finite list without replacement (a tabular space), else
    ``space.sample``.
    """

    def __init__(self, *, space: Any, batch_size: int = 10, seed: int = 0,
                 candidates: Sequence[Architecture] | None = None) -> None:
        check_space(space)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size} is invalid; expected an integer >= 1")
        self.space = space
        self.batch_size = int(batch_size)
        self.rng = np.random.default_rng(int(seed))
        self._order = None if candidates is None else [candidates[i] for i in self.rng.permutation(len(candidates))]
        self._pos = 0
        self.seen_: set[Architecture] = set()
        self.history_: dict[Architecture, np.ndarray] = {}

    label = "random"

    @classmethod
    def from_problem(cls, problem: Any, **params: Any) -> RandomSearch:
        return cls(space=problem.space, seed=problem.seed, candidates=problem.candidates, **params)

    def ask(self) -> list[Architecture]:
        out: list[Architecture] = []
        tries = 0
        while len(out) < self.batch_size:
            if self._order is not None:
                if self._pos >= len(self._order):
                    break
                a = self._order[self._pos]
                self._pos += 1
            else:
                a = self.space.sample(self.rng)
                tries += 1
                if tries > 1000 * self.batch_size:
                    break
            if a not in self.seen_:
                self.seen_.add(a)
                out.append(a)
        return out

    def tell(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        """Record the rows; ``G`` (constraints) is ignored: uniform proposals do not depend on feasibility."""
        F = np.asarray(F, dtype=np.float64)
        if len(F) != len(archs):
            raise ValueError(f"tell() got {len(archs)} archs but {len(F)} objective rows; expected one row each")
        for a, f in zip(archs, F, strict=True):
            self.seen_.add(a)
            self.history_[a] = f
