"""Batch acquisition for any number of minimised objectives: greedy hypervolume improvement of optimistic
predictions (exact in every dimension: a staircase in 2-D, a grid of the front's coordinates beyond)."""

from __future__ import annotations

import numpy as np

from nas.pareto import pareto_mask


def hv_improvement_2d(P: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact 2-D hypervolume each row of ``P`` would add to ``front`` (all minimised, bounded by ``ref``)."""
    front = front[np.all(front < ref, axis=1)]
    if len(front):
        front = front[pareto_mask(front)]
        front = front[np.argsort(front[:, 0])]
    # staircase of the front: on [lo_j, hi_j) the front covers f1 >= h_j
    lo = np.r_[-np.inf, front[:, 0]]
    hi = np.r_[front[:, 0], ref[0]]
    h = np.r_[ref[1], front[:, 1]]
    w = np.clip(np.minimum(hi[None, :], ref[0]) - np.maximum(lo[None, :], P[:, :1]), 0.0, None)
    d = np.clip(np.minimum(h[None, :], ref[1]) - P[:, 1:2], 0.0, None)
    return (w * d).sum(1)


def hv_improvement_nd(P: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact hypervolume each row of ``P`` would add to ``front`` in any number of minimised objectives.

    The front's coordinates (below ``ref``) cut the box up to ``ref`` into a grid whose cells are each wholly
    dominated by the front or wholly free; a row's improvement is the free volume of its own box
    ``[p, ref]``: per axis the overlap of that box with each cell's interval, multiplied over the axes and
    summed over the free cells (one tensor contraction for all rows). Cells: prod over axes of (front size + 1).
    """
    P, ref = np.asarray(P, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    front = np.asarray(front, dtype=np.float64).reshape(-1, P.shape[1])
    front = front[np.all(front < ref, axis=1)]
    if len(front):
        front = front[pareto_mask(front)]
    k = P.shape[1]
    edges = [np.r_[-np.inf, np.unique(front[:, d]), ref[d]] for d in range(k)]
    free = np.ones(tuple(len(e) - 1 for e in edges))
    for f in front:  # a front point dominates every cell whose lower corner is >= it on every axis
        free[tuple(slice(int(np.searchsorted(e, f[d])), None) for d, e in enumerate(edges))] = 0.0
    overlaps = [np.clip(np.minimum(e[None, 1:], ref[d]) - np.maximum(e[None, :-1], P[:, d:d + 1]), 0.0, None)
                for d, e in enumerate(edges)]
    letters = "abcdefghjklmnopqrstuvwxyz"[:k]
    spec = ",".join(f"i{c}" for c in letters) + f",{letters}->i"
    return np.einsum(spec, *overlaps, free, optimize=True)


def hv_improvement(P: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact hypervolume each row of ``P`` would add to ``front``: the 2-D staircase for two objectives,
    :func:`hv_improvement_nd` for more."""
    if P.shape[1] == 2:
        return hv_improvement_2d(P, front, ref)
    gain = np.zeros(len(P))
    # only rows below ref and weakly dominated by no front point add volume: the grid is summed for those alone
    dominated = np.zeros(len(P), dtype=bool)
    for f in np.asarray(front, dtype=np.float64).reshape(-1, P.shape[1]):
        dominated |= np.all(P >= f, axis=1)
    live = np.all(P < ref, axis=1) & ~dominated
    if live.any():
        gain[live] = hv_improvement_nd(P[live], front, ref)
    return gain


def domination_margin(P: np.ndarray, front: np.ndarray) -> np.ndarray:
    """Smallest uniform shift each row of ``P`` needs to be non-dominated by ``front`` (<= 0: already is)."""
    if not len(front):
        return np.full(len(P), -np.inf)
    return (np.max(P[:, None, :] - front[None, :, :], axis=2)).min(1)


def select_batch(
    optimistic: np.ndarray, front: np.ndarray, k: int, ref: float = 1.1, exclude: np.ndarray | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Indices of ``k`` rows of ``optimistic`` picked greedily by hypervolume improvement over ``front``.

    Both are normalised with ``bounds`` = (ideal, nadir) first (default: the front's own); the reference point
    is ``ideal + ref * (nadir - ideal)``, so a row beyond it in any objective adds nothing. After each pick
    its optimistic point joins the front (so the batch spreads along it). Rows with no improvement left are
    ranked by domination margin. ``exclude``: boolean mask of rows never to pick (already evaluated).
    """
    lo, hi = (front.min(0), front.max(0)) if bounds is None else (np.asarray(bounds[0]), np.asarray(bounds[1]))
    if lo.shape != (front.shape[1],) or hi.shape != lo.shape:
        raise ValueError(f"bounds have shapes {lo.shape}/{hi.shape}; expected ({front.shape[1]},) each (ideal, nadir)")
    span = np.where(hi > lo, hi - lo, 1.0)
    P = (optimistic - lo) / span
    Fn = (front - lo) / span
    r = np.full(P.shape[1], float(ref))
    allowed = np.ones(len(P), dtype=bool) if exclude is None else ~exclude
    chosen: list[int] = []
    for _ in range(min(int(k), int(allowed.sum()))):
        gain = np.where(allowed, hv_improvement(P, Fn, r), -1.0)
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            margin = np.where(allowed, domination_margin(P, Fn), np.inf)
            i = int(np.argmin(margin))
        chosen.append(i)
        allowed[i] = False
        Fn = np.vstack([Fn, P[i]])
    return np.asarray(chosen, dtype=int)
