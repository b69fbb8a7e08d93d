"""Shared plumbing of the few-shot latency predictors: arch keys, source tables, selection, persistence."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

FORMAT_VERSION = 4  # 3: the imputer is the fitted attribute outside_ (predictors.fewshot.impute); 4: views_


def arch_key(arch: Any) -> str:
    """Canonical string of an architecture (strings pass through; objects need ``to_string()``)."""
    if isinstance(arch, str):
        return arch
    to_string = getattr(arch, "to_string", None)
    if to_string is None:
        raise ValueError(f"architecture {arch!r} is neither a string nor has to_string()")
    return str(to_string())


def check_source_table(source_table: pd.DataFrame, arch_features: Any = None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Validate an archs x devices latency table (+ optional features aligned to its rows)."""
    if not isinstance(source_table, pd.DataFrame):
        raise ValueError(f"source_table must be an archs x devices DataFrame, got {type(source_table).__name__}")
    if source_table.shape[1] < 1 or source_table.shape[0] < 2:
        raise ValueError(f"source_table has shape {source_table.shape}; expected >= 2 archs and >= 1 device")
    table = source_table.astype(float)
    table.index = [arch_key(a) for a in table.index]
    if table.index.has_duplicates:
        raise ValueError(f"source_table has duplicate arch {table.index[table.index.duplicated()][0]!r}")
    vals = table.to_numpy()
    bad = ~np.isfinite(vals) | (vals <= 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"source_table latency {float(vals[r, c])!r} for arch {table.index[r]!r} on device {table.columns[c]!r}; "
            "expected finite > 0 for every arch and source device"
        )
    feats = None
    if arch_features is not None:
        if isinstance(arch_features, pd.DataFrame):
            arch_features = arch_features.set_axis([arch_key(a) for a in arch_features.index]).reindex(table.index)
            if arch_features.isna().any().any():
                raise ValueError("arch_features lacks rows for some archs of source_table; expected the same index")
        feats = np.asarray(arch_features, dtype=np.float64)
        if feats.ndim != 2 or feats.shape[0] != len(table):
            raise ValueError(f"arch_features has shape {feats.shape}; expected ({len(table)}, n_features)")
    return table, feats


def rows_of(index: dict[str, int], archs: Sequence[Any]) -> np.ndarray:
    """Row numbers of ``archs`` in a meta-fitted table (one-line error for an unknown arch)."""
    out = np.empty(len(archs), dtype=np.int64)
    for i, a in enumerate(archs):
        k = arch_key(a)
        if k not in index:
            raise ValueError(f"architecture {k!r} has no source-device latencies; meta_fit on a table that contains it")
        out[i] = index[k]
    return out


def kmeans_pick(z: np.ndarray, budget: int, rng: np.random.Generator, n_iter: int = 30) -> np.ndarray:
    """Indices of ``budget`` rows of ``z``: the member nearest each k-means centre (k-means++ init)."""
    n = len(z)
    centres = [int(rng.integers(n))]
    d2 = ((z - z[centres[0]]) ** 2).sum(1)
    for _ in range(budget - 1):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        c = int(rng.choice(n, p=p))
        centres.append(c)
        d2 = np.minimum(d2, ((z - z[c]) ** 2).sum(1))
    cent = z[centres].copy()
    for _ in range(n_iter):
        lab = (((z[:, None, :] - cent[None]) ** 2).sum(2)).argmin(1)
        new = np.stack([z[lab == k].mean(0) if (lab == k).any() else cent[k] for k in range(budget)])
        if np.allclose(new, cent):
            break
        cent = new
    dist = ((z[:, None, :] - cent[None]) ** 2).sum(2)
    chosen: list[int] = []
    for k in range(budget):
        for i in np.argsort(dist[:, k]):
            if int(i) not in chosen:
                chosen.append(int(i))
                break
    return np.asarray(chosen)


def validate_budget(n_candidates: int, budget: int) -> None:
    if budget < 2 or budget > n_candidates:
        raise ValueError(f"budget={budget} is invalid; expected 2 <= budget <= {n_candidates} candidates")


def validate_measurements(archs: Sequence[Any], latencies: Any) -> np.ndarray:
    y = np.asarray(latencies, dtype=np.float64).ravel()
    if len(y) != len(archs):
        raise ValueError(f"got {len(archs)} archs but {len(y)} latencies; expected one latency per arch")
    if len(y) < 2:
        raise ValueError(f"got {len(y)} measurements; expected at least 2 to adapt")
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        raise ValueError(f"latency {float(y[bad][0])!r} of arch {arch_key(archs[int(np.flatnonzero(bad)[0])])!r}; expected finite > 0")
    return y


def save_state(obj: Any, path: str | os.PathLike) -> None:
    """Write a fitted few-shot predictor atomically in the data-only saved-predictor format (no pickle)."""
    from predictors import saved

    saved.save(obj, path, layout=FORMAT_VERSION)


def load_state(cls: type, path: str | os.PathLike) -> Any:
    """Read a ``cls`` written by :func:`save_state`; any other file (an old pickle included) is one line."""
    from predictors import saved

    return saved.read(path, cls, layout=FORMAT_VERSION)
