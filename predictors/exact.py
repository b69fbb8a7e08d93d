"""Exact costs (params, MACs) on the face every model shares: nothing to learn, std 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

METRICS = ("params", "macs")


class ExactCost:
    """``predict(archs)`` = ``space.params`` or ``space.macs`` of each architecture; ``fit`` leaves it as it is
    (the value is computed, not learned)."""

    def __init__(self, space: Any, metric: str = "params") -> None:
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} is invalid; expected one of {list(METRICS)}")
        self.space = space
        self.metric = metric

    def fit(self, archs: Sequence[Any], y: Any) -> ExactCost:
        return self

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        fn = self.space.params if self.metric == "params" else self.space.macs
        mean = np.array([fn(self.space.parse(a) if isinstance(a, str) else a) for a in archs], dtype=np.float64)
        return (mean, np.zeros(len(mean))) if return_std else mean

    def __repr__(self) -> str:
        return f"ExactCost({self.metric!r})"
