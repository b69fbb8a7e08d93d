"""Pure-NumPy multi-objective math: Pareto masks, non-dominated ranks and hypervolume.

All objectives are MINIMISED. A point ``q`` dominates ``p`` when ``q <= p`` in every objective and
``q < p`` in at least one, so exact duplicates never dominate each other.
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np
import numpy.typing as npt

__all__ = ["pareto_mask", "nondominated_ranks", "hypervolume", "normalize", "hv_ratio", "hv_history"]

# Upper bound on the number of elements of one broadcast comparison tensor (memory/speed trade-off).
_BLOCK_ELEMS = 2_000_000


def _as_matrix(F: npt.ArrayLike, name: str = "F") -> np.ndarray:
    """Return ``F`` as a float (n_points, n_objectives) array or raise a one-line ValueError."""
    try:
        A = np.asarray(F, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric and convertible to float; got {type(F).__name__}") from None
    if A.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array of shape (n_points, n_objectives); got {A.ndim}-D shape {A.shape}"
        )
    if A.shape[1] == 0:
        raise ValueError(f"{name} must have at least one objective column; got shape {A.shape}")
    nan = np.isnan(A)
    if nan.any():
        r, c = np.argwhere(nan)[0]
        raise ValueError(
            f"{name} contains NaN at row {r}, column {c} ({int(nan.sum())} NaN in total); expected numbers"
        )
    return A


def _as_point(v: npt.ArrayLike, name: str, m: int) -> np.ndarray:
    """Return ``v`` as a finite float vector of length ``m`` or raise a one-line ValueError."""
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got {v!r}") from None
    if a.shape != (m,):
        raise ValueError(
            f"{name}={a.tolist()} has shape {a.shape}; expected shape ({m},), one value per objective"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name}={a.tolist()} contains NaN or inf; expected finite values")
    return a


def _dominated_by(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Boolean mask over rows of ``P``: True where some row of ``Q`` dominates it (blocked over ``Q``)."""
    out = np.zeros(len(P), dtype=bool)
    if len(P) == 0 or len(Q) == 0:
        return out
    block = max(1, _BLOCK_ELEMS // (len(P) * P.shape[1]))
    for s in range(0, len(Q), block):
        todo = np.flatnonzero(~out)
        if len(todo) == 0:
            break
        Pt, Qb = P[todo], Q[s : s + block]
        # per-objective 2-D comparisons: much faster than reducing a (p, q, m) tensor over its short last axis
        le = Qb[None, :, 0] <= Pt[:, 0, None]
        eq = Qb[None, :, 0] == Pt[:, 0, None]
        for k in range(1, P.shape[1]):
            le &= Qb[None, :, k] <= Pt[:, k, None]
            eq &= Qb[None, :, k] == Pt[:, k, None]
        out[todo] = (le & ~eq).any(axis=1)
    return out


def _pareto_mask_2d(F: np.ndarray) -> np.ndarray:
    """O(n log n) non-dominated mask for two objectives (sort by f0, then f1)."""
    n = len(F)
    order = np.lexsort((F[:, 1], F[:, 0]))
    x, y = F[order, 0], F[order, 1]
    starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    gmin = y[starts]  # y is sorted within each group of equal x
    prev = np.r_[np.inf, np.minimum.accumulate(gmin)[:-1]]  # best f1 among strictly smaller f0
    gid = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
    nd_sorted = (y == gmin[gid]) & ((gid == 0) | (y < prev[gid]))
    mask = np.empty(n, dtype=bool)
    mask[order] = nd_sorted
    return mask


def pareto_mask(F: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Return a boolean mask that is True for the non-dominated rows of ``F`` (minimisation).

    Exact duplicates of a non-dominated point are all marked non-dominated. Two objectives use an
    O(n log n) sort; more objectives process points in lexicographic order in chunks, comparing each chunk
    only with the non-dominated points found so far (a dominator always precedes lexicographically).
    """
    F = _as_matrix(F)
    n, m = F.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if m == 1:
        return F[:, 0] == F[:, 0].min()
    if m == 2:
        return _pareto_mask_2d(F)
    order = np.lexsort(F.T[::-1])
    S = F[order]
    nd_sorted = np.zeros(n, dtype=bool)
    front = np.empty((0, m))
    chunk = max(1, int(np.sqrt(_BLOCK_ELEMS / m)))
    for s in range(0, n, chunk):
        C = S[s : s + chunk]
        idx = np.flatnonzero(~_dominated_by(C, front))
        Ck = C[idx]
        keep = ~_dominated_by(Ck, Ck)
        nd_sorted[s + idx[keep]] = True
        front = np.vstack([front, Ck[keep]])
    mask = np.empty(n, dtype=bool)
    mask[order] = nd_sorted
    return mask


def nondominated_ranks(F: npt.ArrayLike) -> npt.NDArray[np.int_]:
    """Return the non-dominated sorting rank of every row of ``F`` (0 = Pareto front, 1 = next front, ...)."""
    F = _as_matrix(F)
    n, m = F.shape
    ranks = np.full(n, -1, dtype=int)
    if n == 0:
        return ranks
    if m == 1:
        return np.unique(F[:, 0], return_inverse=True)[1].astype(int)
    if m == 2:
        # Lexicographic sweep; front k is summarised by (f1, f0) of its last-assigned point, and
        # "front k dominates p" is exactly (tail_f1, tail_f0) < (p_f1, p_f0), a prefix-monotone predicate.
        keys: list[tuple[float, float]] = []
        order = np.lexsort((F[:, 1], F[:, 0]))
        for i, (x, y) in zip(order.tolist(), F[order].tolist(), strict=True):
            k = bisect_left(keys, (y, x))
            if k == len(keys):
                keys.append((y, x))
            else:
                keys[k] = (y, x)
            ranks[i] = k
        return ranks
    remaining = np.arange(n)
    rank = 0
    while len(remaining):
        nd = pareto_mask(F[remaining])
        ranks[remaining[nd]] = rank
        remaining = remaining[~nd]
        rank += 1
    return ranks


def _hv2d(P: np.ndarray, r: np.ndarray) -> float:
    """Exact 2-D hypervolume by a sweep over f0; tolerates dominated points and duplicates."""
    order = np.argsort(P[:, 0], kind="stable")
    x = P[order, 0]
    y = np.minimum.accumulate(P[order, 1])
    return float(np.sum(np.diff(np.r_[x, r[0]]) * (r[1] - y)))


def _hv3d(P: np.ndarray, r: np.ndarray) -> float:
    """Exact 3-D hypervolume: slabs along f2, each slab's 2-D area computed for all prefixes at once."""
    n = len(P)
    zorder = np.argsort(P[:, 2], kind="stable")
    thick = np.diff(np.r_[P[zorder, 2], r[2]])
    zrank = np.empty(n, dtype=int)
    zrank[zorder] = np.arange(n)
    xorder = np.argsort(P[:, 0], kind="stable")
    width = np.diff(np.r_[P[xorder, 0], r[0]])
    ys, zr = P[xorder, 1], zrank[xorder]
    ks = np.flatnonzero(thick > 0)
    rows = max(1, _BLOCK_ELEMS // n)
    total = 0.0
    for s in range(0, len(ks), rows):
        k = ks[s : s + rows]
        M = np.where(zr[None, :] <= k[:, None], ys[None, :], np.inf)  # prefix k = points with zrank <= k
        stair = np.minimum(np.minimum.accumulate(M, axis=1), r[1])
        total += float(thick[k] @ ((r[1] - stair) @ width))
    return total


def _hv(P: np.ndarray, r: np.ndarray) -> float:
    """Exact hypervolume of points ``P`` (all strictly better than ``r``) by slicing along the last axis."""
    m = P.shape[1]
    if len(P) == 0:
        return 0.0
    if m == 1:
        return float(r[0] - P[:, 0].min())
    if m == 2:
        return _hv2d(P, r)
    if m == 3:
        return _hv3d(P, r)
    P = P[np.argsort(P[:, -1], kind="stable")]
    thick = np.diff(np.r_[P[:, -1], r[-1]])
    total = 0.0
    for k in np.flatnonzero(thick > 0):
        Q = P[: k + 1, :-1]
        total += float(thick[k]) * _hv(Q[pareto_mask(Q)], r[:-1])
    return total


def hypervolume(F: npt.ArrayLike, ref: npt.ArrayLike) -> float:
    """Exact hypervolume dominated by the rows of ``F`` and bounded by the reference point ``ref``.

    Points that are not strictly better than ``ref`` in every objective contribute nothing (``+inf``
    values are allowed and ignored that way). Exact sweep in 2-D, vectorised slab sweep in 3-D and
    recursive slicing (HSO) above; practical for 4 objectives up to a few hundred non-dominated points.
    """
    F = _as_matrix(F)
    r = _as_point(ref, "ref", F.shape[1])
    if np.isneginf(F).any():
        raise ValueError("F contains -inf; expected values bounded below (hypervolume would be infinite)")
    P = F[np.all(F < r, axis=1)]
    if len(P) == 0:
        return 0.0
    P = np.unique(P, axis=0)
    return _hv(P[pareto_mask(P)], r)


def normalize(F: npt.ArrayLike, ideal: npt.ArrayLike, nadir: npt.ArrayLike) -> np.ndarray:
    """Map ``F`` affinely so ``ideal`` goes to 0 and ``nadir`` to 1 per objective.

    Objectives where ``nadir == ideal`` are only shifted (their span is taken as 1).
    """
    F = _as_matrix(F)
    lo = _as_point(ideal, "ideal", F.shape[1])
    hi = _as_point(nadir, "nadir", F.shape[1])
    span = hi - lo
    if (span < 0).any():
        raise ValueError(f"nadir={hi.tolist()} is below ideal={lo.tolist()}; expected nadir >= ideal")
    return (F - lo) / np.where(span > 0, span, 1.0)


def hv_ratio(F: npt.ArrayLike, true_front: npt.ArrayLike, ref: float | npt.ArrayLike = 1.1) -> float:
    """Return HV(non-dominated F) / HV(true front) after normalising both with the true front's bounds.

    The ideal/nadir points are the min/max of the non-dominated part of ``true_front``; ``ref`` (scalar
    or one value per objective) is the reference point in normalised space. 1.0 means the true front's
    hypervolume is matched; values above 1 mean ``F`` dominates beyond it.
    """
    T = _as_matrix(true_front, "true_front")
    F = _as_matrix(F)
    m = T.shape[1]
    if len(T) == 0:
        raise ValueError("true_front is empty; expected at least one point")
    if not np.isfinite(T).all():
        raise ValueError("true_front contains inf; expected finite values")
    if F.shape[1] != m:
        raise ValueError(f"F has {F.shape[1]} objectives but true_front has {m}; expected equal counts")
    r = np.asarray(ref, dtype=float)
    r = _as_point(np.full(m, float(r)) if r.ndim == 0 else r, "ref", m)
    T = T[pareto_mask(T)]
    ideal, nadir = T.min(axis=0), T.max(axis=0)
    hv_true = hypervolume(normalize(T, ideal, nadir), r)
    if hv_true <= 0:
        raise ValueError(
            f"ref={r.tolist()} leaves the normalised true front zero hypervolume; expected ref > 1"
        )
    if len(F) == 0:
        return 0.0
    return hypervolume(normalize(F[pareto_mask(F)], ideal, nadir), r) / hv_true


def hv_history(F: npt.ArrayLike, ref: npt.ArrayLike) -> np.ndarray:
    """Hypervolume of the first ``i + 1`` rows of ``F`` (in evaluation order) for every ``i``.

    Keeps the running non-dominated front and recomputes its hypervolume only when a new point enters
    it, so 2-D costs O(n * front_size log front_size).
    """
    F = _as_matrix(F)
    n, m = F.shape
    r = _as_point(ref, "ref", m)
    if np.isneginf(F).any():
        raise ValueError("F contains -inf; expected values bounded below (hypervolume would be infinite)")
    out = np.zeros(n)
    front = np.empty((0, m))
    hv = 0.0
    for i, p in enumerate(F):
        if np.all(p < r) and not np.all(front <= p, axis=1).any():
            front = np.vstack([front[~np.all(p <= front, axis=1)], p])
            hv = _hv(front, r)
        out[i] = hv
    return out
