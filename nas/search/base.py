"""The ask/tell contract shared by every search strategy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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
    ``resumed_evaluations`` counts this strategy's evaluations recovered from a persistent store, which a
    budget driver counts as done.
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

    @property
    def resumed_evaluations(self) -> int:
        return 0

    def budget_state(self) -> tuple[int, int] | None:
        """For a strategy over a study several workers share: (evaluations completed study-wide, trials other
        live workers are evaluating now). ``None`` (the default): the budget counts this process's evaluations
        (see ``nas.search.loop.run_budget``)."""
        return None

    def within_budget(self, archs: list[Any], budget: int) -> list[Any]:
        """Of the archs this worker is about to evaluate, those a shared ``budget`` still has room for once
        every live worker's asked trials are counted (the check after ``ask``; ``budget_state`` is the one
        before). The default, for a strategy no other process shares: all of them."""
        return archs

    def wait_for_others(self) -> None:
        """Called while the rest of a shared budget is in other workers' hands."""
        import time

        time.sleep(1.0)

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
