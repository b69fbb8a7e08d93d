"""Feature blocks of the few-shot latency predictor, for table rows and for architectures outside the table.

Blocks (see :mod:`predictors.fewshot`): ``src`` (source latencies), ``proj`` (source latencies explained by
an additive per-op model), ``pmean`` (their average), and the architecture feature blocks (``enc``,
``phys``). :func:`table_blocks` builds them for the meta-training table and records the statistics with
which :func:`new_blocks` builds identical-in-distribution rows for any other architecture, given its
features and (imputed) source latencies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def standardise(a: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Per-column standardisation and its (mean, scale)."""
    m = a.mean(0)
    a = a - m
    sd = a.std(0)
    sd[sd == 0] = 1.0
    return a / sd, (m, sd)


def transform_latency(lat: np.ndarray, transform: str, col_mean: np.ndarray) -> np.ndarray:
    return np.log(lat) if transform == "log" else lat / col_mean


def op_costs(enc: np.ndarray, t: np.ndarray, alpha: float) -> np.ndarray:
    """Per-op costs (n_feat + 1, n_src) of each source column of ``t``: ridge on the encoding, refitted without
    outliers (|residual| > 3 robust std), so that a few failed/odd measurements do not leak."""
    x = np.hstack([enc, np.ones((len(enc), 1))])
    pen = alpha * len(enc) * np.eye(x.shape[1])
    pen[-1, -1] = 0.0
    costs = np.empty((x.shape[1], t.shape[1]))
    for j in range(t.shape[1]):
        keep = np.ones(len(x), dtype=bool)
        for _ in range(3):
            xk = x[keep]
            costs[:, j] = np.linalg.solve(xk.T @ xk + pen * keep.mean(), xk.T @ t[keep, j])
            resid = t[:, j] - x @ costs[:, j]
            mad = 1.4826 * np.median(np.abs(resid - np.median(resid))) + 1e-12
            keep = np.abs(resid - np.median(resid)) <= 3 * mad
    return costs


def table_blocks(lat: np.ndarray, feats: Mapping[str, np.ndarray], transform: str,
                 alpha: float) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Unscaled, per-column standardised blocks of the table rows (columns of src/proj = source devices), and
    the statistics :func:`new_blocks` needs."""
    col_mean = lat.mean(0)
    t = transform_latency(lat, transform, col_mean)
    src, src_stats = standardise(t)
    out = {"src": src}
    stats: dict[str, Any] = {"transform": transform, "col_mean": col_mean, "src": src_stats, "feat": {}}
    if "enc" in feats:
        enc = feats["enc"]
        stats["costs"] = op_costs(enc, t, alpha)
        out["proj"], stats["proj"] = standardise(np.hstack([enc, np.ones((len(enc), 1))]) @ stats["costs"])
    for name, x in feats.items():
        sd = x.std(0)
        mean = x.mean(0)
        out[name] = np.where(sd > 0, (x - mean) / np.where(sd > 0, sd, 1.0), 0.0)
        stats["feat"][name] = (mean, sd)
    if "proj" in out:
        stats["pmean"] = standardise(norm_blocks({"proj": out["proj"]})["proj"].mean(1, keepdims=True))[1]
    return out, stats


def norm_blocks(blocks: Mapping[str, np.ndarray], drop: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Drop source columns ``drop`` (leave-out) and divide each block by sqrt(width); add ``pmean``."""
    out = {}
    for name, b in blocks.items():
        if drop is not None and name in ("src", "proj"):
            b = np.delete(b, drop, axis=1)
        out[name] = b / np.sqrt(max(b.shape[1], 1))
    if "proj" in out:  # hierarchical prior: the sources' average additive model as its own direction
        out["pmean"] = standardise(out["proj"].mean(1, keepdims=True))[0]
    return out


def new_blocks(stats: Mapping[str, Any], feats: Mapping[str, np.ndarray], log_lat: np.ndarray) -> dict[str, np.ndarray]:
    """Normalised blocks (as :func:`norm_blocks` without leave-out) of architectures outside the table, from
    their feature blocks and imputed log latencies on the source devices (n, n_src)."""
    t = transform_latency(np.exp(log_lat), stats["transform"], stats["col_mean"])
    m, sd = stats["src"]
    raw = {"src": (t - m) / sd}
    if "costs" in stats:
        enc = feats["enc"]
        m, sd = stats["proj"]
        raw["proj"] = (np.hstack([enc, np.ones((len(enc), 1))]) @ stats["costs"] - m) / sd
    for name, (mean, sd) in stats["feat"].items():
        raw[name] = np.where(sd > 0, (feats[name] - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    out = {name: b / np.sqrt(max(b.shape[1], 1)) for name, b in raw.items()}
    if "proj" in out:
        m, sd = stats["pmean"]
        out["pmean"] = (out["proj"].mean(1, keepdims=True) - m) / sd
    return out
