"""Budgeted ask/evaluate/tell driver with an evaluation cache: no architecture is ever evaluated twice."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from nas.search.base import Strategy


def run_budget(
    strategy: Strategy,
    objective: Callable[[list[Hashable]], np.ndarray],
    budget: int,
    cache: dict[Hashable, np.ndarray] | None = None,
    max_stall: int = 50,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Hashable], np.ndarray]:
    """Ask/tell until ``budget`` distinct archs were evaluated (in order); repeats are answered from ``cache``.

    Returns the evaluated archs in evaluation order and their objective rows (minimised). Stops early when
    the strategy proposes only cached archs for ``max_stall`` rounds in a row (a converged population).
    """
    if int(budget) < 1:
        raise ValueError(f"budget={budget} is invalid; expected an integer >= 1")
    cache = {} if cache is None else cache
    order: list[Hashable] = []
    rows: list[np.ndarray] = []
    stall = 0
    while len(order) < budget and stall < max_stall:
        archs = strategy.ask()
        new: list[Hashable] = []
        for a in archs:
            if a not in cache and a not in new and len(order) + len(new) < budget:
                new.append(a)
        if new:
            F_new = np.asarray(objective(new), dtype=np.float64).reshape(len(new), -1)
            for a, f in zip(new, F_new, strict=True):
                cache[a] = f
                order.append(a)
                rows.append(f)
            if progress is not None:
                progress(len(new))
            stall = 0
        else:
            stall += 1
        F = np.stack([cache[a] if a in cache else np.full(len(next(iter(cache.values()))), np.inf) for a in archs])
        strategy.tell(archs, F)
    return order, np.asarray(rows, dtype=np.float64)


def history_front(archs: Sequence[Hashable], F: np.ndarray) -> tuple[list[Hashable], np.ndarray]:
    """Non-dominated archs among ``archs`` with objective rows ``F``."""
    from nas.pareto import pareto_mask

    m = pareto_mask(F)
    return [a for a, k in zip(archs, m, strict=True) if k], F[m]
