"""LUT-sum latency estimate plus a learned residual (fusion, per-network overhead), on the one model face.

log latency(arch) ~ a * log lut_sum(arch) + b, fitted with ridge on a few whole-network measurements (a
multiplicative fusion factor and a per-network offset); the predictive std is the fit's residual spread on the
log scale (``std_ms = mean_ms * s``). With no fit it is the plain LUT sum (std 0: nothing measured to say how
far off it is). Built from config as ``{_target_: predictors.lut_residual.LUTResidualPredictor, lut: PATH}``
with the run's space given by the caller.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import RidgeCV

from latency_luts.lut import LatencyLUT


class LUTResidualPredictor:
    """``fit(archs, latencies_ms) -> self`` then ``predict(archs, return_std=False)``.

    Args:
        lut: per-block times (a :class:`LatencyLUT`, or the path of a saved one).
        space: the search space the architectures belong to.
        alphas: ridge penalties tried by cross-validation for the residual fit.
    """

    def __init__(self, lut: LatencyLUT | str | os.PathLike, space: Any,
                 alphas: Sequence[float] = tuple(np.logspace(-4, 2, 13))) -> None:
        if not len(alphas) or min(alphas) <= 0:
            raise ValueError(f"alphas={list(alphas)} is invalid; expected a non-empty list of positive penalties")
        self.lut = lut if isinstance(lut, LatencyLUT) else LatencyLUT.load(lut, space=space.name)
        self.space = space
        self.alphas = alphas

    def _features(self, archs: Sequence[Any]) -> np.ndarray:
        return self.lut.estimate(self.space, archs).reshape(-1, 1)

    def estimate_lut_sum(self, archs: Sequence[Any]) -> np.ndarray:
        return self.lut.estimate(self.space, archs)

    def fit(self, archs: Sequence[Any], latencies_ms: Sequence[float]) -> LUTResidualPredictor:
        y = np.asarray(latencies_ms, dtype=float)
        if len(y) != len(archs) or len(y) < 2:
            raise ValueError(f"got {len(archs)} archs and {len(y)} latencies; expected equal counts >= 2")
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise ValueError("latencies contain NaN/inf or values <= 0; expected positive milliseconds")
        X = np.log(self._features(archs))
        self.model_ = RidgeCV(alphas=np.asarray(self.alphas, dtype=float)).fit(X, np.log(y))
        if self.model_.coef_[0] < 0:  # a few noisy timings can tilt the fit against the summed block times, which
            # would order every subnet backwards; keep the LUT's order and fit its scale alone (latency = c * sum)
            self.model_.coef_ = np.ones(1)
            self.model_.intercept_ = float(np.mean(np.log(y) - X[:, 0]))
        resid = np.log(y) - self.model_.predict(X)
        self.log_std_ = float(np.sqrt((resid**2).sum() / max(len(y) - 2, 1)))
        return self

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        X = self._features(archs)
        if "model_" not in self.__dict__:  # no whole-network measurements: the plain LUT sum
            mean, s = X[:, 0], 0.0
        else:
            mean, s = np.exp(self.model_.predict(np.log(X))), self.log_std_
        return (mean, mean * s) if return_std else mean
