"""The budget driver of every search: ask, evaluate what is new, tell; no architecture is evaluated twice.

The pipeline's search stage (real supernet evaluations, journalled) and the benchmarks (tabular objectives)
both run their strategy through :func:`run_budget`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from nas.search.base import Strategy
from search_spaces.base import Architecture

Objective = Callable[[list[Architecture]], "np.ndarray | tuple[np.ndarray, np.ndarray]"]


def run_budget(
    strategy: Strategy,
    objective: Objective,
    budget: int,
    cache: dict[Architecture, np.ndarray] | None = None,
    max_stall: int = 50,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Architecture], np.ndarray]:
    """Ask/tell until ``budget`` distinct archs were evaluated (in order); repeats are answered from ``cache``.

    ``objective(archs)`` returns the objective rows ``F`` (minimised) or ``(F, G)`` with constraint rows
    (``<= 0`` feasible). The budget is the strategy's :meth:`~nas.search.Strategy.budget`: evaluations a
    strategy recovered from its own store (a resumed Optuna study) count towards it. Proposals past the
    budget are told ``inf`` (not evaluated). Returns the archs evaluated by this call, in order, and their
    objective rows. Stops early when the strategy proposes only cached archs for ``max_stall`` rounds in a row
    (a converged population).

    A strategy over a study that several workers share (:class:`~nas.search.OptunaSearch`) counts the budget
    study-wide (:class:`nas.workers.StudyBudget`): this worker asks only while the study's completed plus other
    workers' running trials are short of ``budget``, waits while the rest is in flight (a dead worker's trial
    comes back as a retry it may take), and returns once the study holds ``budget``.
    """
    if int(budget) < 1:
        raise ValueError(f"budget={budget} is invalid; expected an integer >= 1")
    cache = {} if cache is None else cache
    constraints: dict[Architecture, np.ndarray] = {}
    order: list[Architecture] = []
    rows: list[np.ndarray] = []
    stall = 0
    plan = strategy.budget(int(budget))
    while stall < max_stall:
        room = plan.room(len(order))
        if room is None:
            break
        if room == 0:
            plan.wait()
            continue
        archs = strategy.ask()
        new: list[Architecture] = []
        for a in archs:
            if a not in cache and a not in new and len(new) < room:
                new.append(a)
        if new:
            new = plan.admit(new)
        if new:
            out = objective(new)
            F_new, G_new = out if isinstance(out, tuple) else (out, None)
            F_new = np.asarray(F_new, dtype=np.float64).reshape(len(new), -1)
            for i, (a, f) in enumerate(zip(new, F_new, strict=True)):
                if not np.isfinite(f).all():  # not evaluated (e.g. another worker holds it): told nan, not counted
                    continue
                cache[a] = f
                if G_new is not None:
                    constraints[a] = np.asarray(G_new, dtype=np.float64).reshape(len(new), -1)[i]
                order.append(a)
                rows.append(f)
            if progress is not None:
                progress(sum(a in cache for a in new))
            stall = 0
        else:
            stall += 1
        if not archs:
            continue
        width = F_new.shape[1] if new else len(next(iter(cache.values())))
        F = np.stack([cache[a] if a in cache else np.full(width, np.inf) for a in archs])
        if constraints:
            n_g = len(next(iter(constraints.values())))
            G = np.stack([constraints.get(a, np.zeros(n_g)) for a in archs])
            strategy.tell(archs, F, G)
        else:
            strategy.tell(archs, F)
    return order, np.asarray(rows, dtype=np.float64)


def history_front(archs: Sequence[Architecture], F: np.ndarray) -> tuple[list[Architecture], np.ndarray]:
    """Non-dominated archs among ``archs`` with objective rows ``F``."""
    from nas.pareto import pareto_mask

    m = pareto_mask(F)
    return [a for a, k in zip(archs, m, strict=True) if k], F[m]
