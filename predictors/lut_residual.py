"""LUT-sum latency estimate plus a learned residual (fusion, per-network overhead), sklearn-style.

log latency(arch) ~ a * log lut_sum(arch) + b, fitted with ridge on a few whole-network measurements (a
multiplicative fusion factor and a per-network offset); with no fit it falls back to the plain LUT sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import RidgeCV

from latency_luts.lut import LatencyLUT


class LUTResidualPredictor:
    """``fit(archs, latencies_ms)`` then ``predict(archs)``; ``lut`` holds per-block times."""

    def __init__(self, lut: LatencyLUT, space: Any) -> None:
        self.lut = lut
        self.space = space

    def _features(self, archs: Sequence[Any]) -> np.ndarray:
        return self.lut.estimate(self.space, archs).reshape(-1, 1)

    def estimate_lut_sum(self, archs: Sequence[Any]) -> np.ndarray:
        return self.lut.estimate(self.space, archs)

    def fit(self, archs: Sequence[Any], latencies_ms: Sequence[float]) -> LUTResidualPredictor:
        y = np.asarray(latencies_ms, dtype=float)
        if len(y) != len(archs) or len(y) < 2:
            raise ValueError(f"got {len(archs)} archs and {len(y)} latencies; expected equal counts >= 2")
        X = self._features(archs)
        self.model_ = RidgeCV(alphas=np.logspace(-4, 2, 13)).fit(np.log(X), np.log(y))
        return self

    def predict(self, archs: Sequence[Any]) -> np.ndarray:
        X = self._features(archs)
        if not hasattr(self, "model_"):
            return X[:, 0]
        return np.exp(self.model_.predict(np.log(X)))
