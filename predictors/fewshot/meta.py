"""Meta-training helpers of the few-shot latency predictor: parameter checks, device families, the simulated
few-shot tasks on the source devices and their scoring."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy.stats import rankdata

from predictors.fewshot.views import VIEWS

SELECTIONS = ("random", "kmeans", "variance", "mixed")
TASK_TRIMS = ("pool+query", "query", "none")  # which parts of a simulated task keep the 10th-90th latency percentile


def device_family(name: str) -> str:
    """Hardware family of a device name: the name without a trailing ``_<batch size>`` (``1080ti_32`` -> ``1080ti``)."""
    return re.sub(r"_\d+$", "", str(name))


def rowwise_spearman(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman of each row of ``pred`` (configs x n) with ``y`` (n)."""
    rp = rankdata(pred, axis=1)
    ry = rankdata(y)
    rp -= rp.mean(1, keepdims=True)
    ry = ry - ry.mean()
    den = np.sqrt((rp**2).sum(1) * (ry**2).sum())
    return np.where(den > 0, (rp @ ry) / np.where(den > 0, den, 1.0), 0.0)


def simulated_tasks(lat: np.ndarray, per_device: int, n_pool: int, n_query: int, task_trim: str,
                    rng: np.random.Generator) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``per_device`` few-shot tasks per source column of ``lat``: (device, pool rows, query rows), each a random
    split, trimmed to the device's 10th-90th latency percentile as ``task_trim`` says."""
    n = len(lat)
    tasks = []
    for j in range(lat.shape[1]):
        for _ in range(per_device):
            perm = rng.permutation(n)
            pool, query = perm[:n_pool], perm[n_pool : n_pool + n_query]
            if task_trim == "pool+query":
                pool = pool[np.argsort(lat[pool, j])][int(0.1 * len(pool)) : int(0.9 * len(pool))]
            if task_trim != "none":
                query = query[np.argsort(lat[query, j])][int(0.1 * len(query)) : int(0.9 * len(query))]
            tasks.append((j, pool, query))
    return tasks


def check_params(model: Any) -> None:
    """One-line errors for invalid :class:`FewShotLatencyPredictor` settings."""
    for t in model.transforms:
        if t not in ("raw", "log"):
            raise ValueError(f"transform {t!r} is invalid; expected 'raw' or 'log'")
    choices = {"prior_check": ("loo", "none"), "impute": ("boost", "ridge", "none"), "task_trim": TASK_TRIMS,
               "prior_mix": ("choose", "average", "evidence"), "selection_transform": ("log", "raw", "any"),
               "leave_out": ("family", "device")}
    for name, allowed in choices.items():
        if getattr(model, name) not in allowed:
            raise ValueError(f"{name}={getattr(model, name)!r} is invalid; expected one of {list(allowed)}")
    if "asis" not in model.views or any(v not in VIEWS for v in model.views):
        raise ValueError(f"views={list(model.views)} is invalid; expected 'asis' and optionally 'live'")
    for s in model.selections:
        if s not in SELECTIONS:
            raise ValueError(f"selection {s!r} is invalid; expected one of {list(SELECTIONS)}")
    if any(k < 0 for k in model.prior_strengths) or not len(model.prior_strengths):
        raise ValueError(f"prior_strengths={list(model.prior_strengths)} is invalid; expected values >= 0")
