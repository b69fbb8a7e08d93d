"""Strong simple baseline for few-shot latency prediction: ridge on the source devices' latencies.

The features of an arch are its measured latencies (ms) on the source (meta-train) devices, standardised with
the statistics of the measured target archs; a ridge regression is fitted on the ``budget`` random target
measurements. Same interface as :class:`predictors.fewshot.FewShotLatencyPredictor`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from predictors.fewshot.common import (
    check_source_table,
    load_state,
    rows_of,
    save_state,
    validate_budget,
    validate_measurements,
)


class SourceRidgeBaseline:
    """Ridge regression of target latency on source-device latencies, fitted on the few target measurements.

    Args:
        alpha: ridge penalty on standardised source latencies.
    """

    def __init__(self, *, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def meta_fit(self, source_table: pd.DataFrame, arch_features: Any = None) -> SourceRidgeBaseline:
        """Store the archs x source-devices latency table (``arch_features`` is accepted and ignored)."""
        if self.alpha < 0:
            raise ValueError(f"alpha={self.alpha} is invalid; expected >= 0")
        table, _ = check_source_table(source_table, None)
        self.source_devices_ = list(table.columns)
        self.latency_ = table.to_numpy()
        self.index_ = {a: i for i, a in enumerate(table.index)}
        return self

    def select(self, candidate_archs: Sequence[Any], budget: int, rng: np.random.Generator) -> list[Any]:
        """``budget`` archs drawn uniformly without replacement."""
        validate_budget(len(candidate_archs), budget)
        return [candidate_archs[int(i)] for i in rng.choice(len(candidate_archs), size=budget, replace=False)]

    def adapt(self, archs: Sequence[Any], latencies: Any) -> SourceRidgeBaseline:
        if not hasattr(self, "latency_"):
            raise NotFittedError("SourceRidgeBaseline is not fitted; call meta_fit() first")
        y = validate_measurements(archs, latencies)
        x = self.latency_[rows_of(self.index_, archs)]
        self.x_mean_, sd = x.mean(0), x.std(0)
        self.x_scale_ = np.where(sd > 0, sd, 1.0)
        xs = (x - self.x_mean_) / self.x_scale_
        self.intercept_ = float(y.mean())
        gram = xs.T @ xs + self.alpha * np.eye(xs.shape[1])
        self.coef_ = np.linalg.solve(gram, xs.T @ (y - self.intercept_))
        hat = xs @ np.linalg.solve(gram, xs.T) + 1.0 / len(y)  # leave-one-out residuals for the std
        loo = (y - self.intercept_ - xs @ self.coef_) / np.maximum(1.0 - np.diag(hat), 1e-6)
        self.residual_std_ = float(np.sqrt(np.mean(loo**2)))
        return self

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted latency (ms); ``return_std`` adds the leave-one-out RMSE (same for every arch)."""
        if not hasattr(self, "coef_"):
            raise ValueError("SourceRidgeBaseline is not adapted; call adapt() first")
        xs = (self.latency_[rows_of(self.index_, archs)] - self.x_mean_) / self.x_scale_
        mean = self.intercept_ + xs @ self.coef_
        if return_std:
            return mean, np.full(len(mean), self.residual_std_)
        return mean

    def save(self, path: str | os.PathLike) -> None:
        save_state(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SourceRidgeBaseline:
        return load_state(cls, path)
