"""The ask/tell contract shared by every search strategy."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class Strategy(ABC):
    """``ask()`` proposes architectures, ``tell(archs, F)`` reports their objective rows (minimised).

    ``tell(archs, F, G)`` also passes constraint rows (``<= 0`` feasible, see nas.objectives) to strategies
    built with ``n_constraints > 0``; strategies whose proposals do not depend on what they are told ignore it.
    """

    @abstractmethod
    def ask(self) -> list[Any]: ...

    @abstractmethod
    def tell(self, archs: Sequence[Any], F: np.ndarray, G: np.ndarray | None = None) -> None: ...

    def optimize(self, objective: Callable[[list[Any]], np.ndarray], n_iterations: int) -> None:
        """Run ``n_iterations`` ask/evaluate/tell rounds with a batch objective."""
        for _ in range(int(n_iterations)):
            archs = self.ask()
            self.tell(archs, np.asarray(objective(archs), dtype=np.float64))
