"""The ask/tell contract shared by every search strategy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nas.workers import Budget
from search_spaces.base import Architecture


def check_space(space: object) -> None:
    """Strategies search a declared :class:`search_spaces.SearchSpace` (sampling, genome, strings, features)."""
    from search_spaces import SearchSpace

    if not isinstance(space, SearchSpace):
        raise ValueError(f"space {space!r} is a {type(space).__name__}; expected a search_spaces.SearchSpace")


class Strategy(ABC):
    """``ask()`` proposes architectures, ``tell(archs, F, G)`` reports their objective rows (minimised) and, for
    strategies built with ``n_constraints > 0``, constraint rows (``<= 0`` feasible, see nas.objectives).

    Built from config by ``nas.search.problem.build_strategy``: ``from_problem(problem, **params)`` takes what
    the problem fixes (space, objective count, seed, candidates, models, storage) and the configured
    parameters. ``warm_start`` hands over evaluations made before the search (the pipeline's measure stage);
    ``budget(total)`` is what a budget driver spends (worker coordination lives in ``nas.workers``).
    """

    label: str = "strategy"

    @classmethod
    @abstractmethod
    def from_problem(cls, problem: Any, **params: Any) -> Strategy:
        """``problem``: a :class:`nas.search.problem.SearchProblem`."""

    @abstractmethod
    def ask(self) -> list[Architecture]: ...

    @abstractmethod
    def tell(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None: ...

    def warm_start(self, archs: Sequence[Architecture], F: np.ndarray, G: np.ndarray | None = None) -> None:
        """Evaluations made before the search; strategies whose proposals ignore data drop them."""
        return None

    def budget(self, total: int) -> Budget:
        """The budget a driver (``nas.search.run_budget``) spends on this strategy: by default ``total``
        evaluations of this process; a strategy over a store several workers share returns one counted
        store-wide (``nas.workers.StudyBudget``), a resumed one counts what it recovered."""
        return Budget(total)

    @property
    def inner_search_seconds(self) -> float:
        """Seconds spent searching predictions (strategies that do; 0 for the others)."""
        return 0.0

    @property
    def predictor_evaluations(self) -> int:
        """Architectures scored by predictors (not evaluated for real) so far."""
        return 0

    def optimize(self, objective: Callable[[list[Architecture]], np.ndarray], n_iterations: int) -> None:
        """Run ``n_iterations`` ask/evaluate/tell rounds with a batch objective."""
        for _ in range(int(n_iterations)):
            archs = self.ask()
            self.tell(archs, np.asarray(objective(archs), dtype=np.float64))
