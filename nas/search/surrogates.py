"""Surrogate models of one objective over a fixed candidate list (rows), with predictive uncertainty.

A surrogate is fitted on candidate rows that were really evaluated and predicts mean and std for any rows:
``fit(rows, y) -> self`` and ``predict(rows) -> (mean, std)``. Feature-based ones hold the candidates' feature
matrix; :class:`FewShotSurrogate` wraps the meta-learned latency predictor (pre-trained on source devices,
adapted to the evaluated archs of the target device only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from scipy.linalg import cho_solve, solve_triangular


class Surrogate(Protocol):
    def fit(self, rows: np.ndarray, y: np.ndarray) -> Surrogate: ...

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _standardise_cols(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


class GPSurrogate:
    """Exact GP with a stationary kernel on fixed features; lengthscale and noise picked by marginal
    likelihood over a small grid (closed form, no gradient steps), targets standardised.

    ``scale="columns"`` standardises every feature column (then divides by sqrt(#columns));
    ``scale="median"`` keeps the features' own geometry (counts, one-hots) and divides by the median
    pairwise distance of a fixed sample of rows, so the lengthscale grid means the same for any encoding.
    ``kernel``: ``"rbf"`` or ``"exponential"`` (Matern-1/2: rougher, suits count features).
    """

    def __init__(self, X: np.ndarray, lengthscales: Sequence[float] = (0.5, 1.0, 2.0),
                 noises: Sequence[float] = (0.005, 0.02, 0.1), log_target: bool = False, shift: float = 0.0,
                 kernel: str = "rbf", scale: str = "columns") -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not len(X):
            raise ValueError(f"X has shape {X.shape}; expected a non-empty 2-D feature matrix")
        if kernel not in ("rbf", "exponential"):
            raise ValueError(f"kernel={kernel!r} is invalid; expected 'rbf' or 'exponential'")
        if scale not in ("columns", "median"):
            raise ValueError(f"scale={scale!r} is invalid; expected 'columns' or 'median'")
        if scale == "columns":
            self.X = _standardise_cols(X) / np.sqrt(X.shape[1])
        else:
            rng = np.random.default_rng(0)
            i, j = rng.integers(0, len(X), (2, 1000))
            d = np.sqrt(((X[i] - X[j]) ** 2).sum(1))
            self.X = X / (float(np.median(d[d > 0])) if (d > 0).any() else 1.0)
        self.sq = (self.X**2).sum(1)
        self.kernel = kernel
        self.lengthscales = tuple(float(v) for v in lengthscales)
        self.noises = tuple(float(v) for v in noises)
        self.log_target = bool(log_target)
        if not 0.0 <= float(shift) < 1.0:
            raise ValueError(f"shift={shift!r} is invalid; expected 0 <= shift < 1 (share of min(y) subtracted before log)")
        self.shift = float(shift)

    def _k(self, a: np.ndarray, b: np.ndarray, ell: float) -> np.ndarray:
        d2 = np.maximum(self.sq[a][:, None] + self.sq[b][None, :] - 2.0 * self.X[a] @ self.X[b].T, 0.0)
        if self.kernel == "exponential":
            return np.exp(-np.sqrt(d2) / ell)
        return np.exp(-0.5 * d2 / ell**2)

    def fit(self, rows: np.ndarray, y: np.ndarray) -> GPSurrogate:
        rows = np.asarray(rows, dtype=int)
        y = np.asarray(y, dtype=np.float64)
        self.offset_ = self.shift * float(y.min()) if self.log_target else 0.0
        t = np.log(y - self.offset_) if self.log_target else y
        self.mu_, self.sd_ = float(t.mean()), float(t.std()) or 1.0
        z = (t - self.mu_) / self.sd_
        best = None
        for ell in self.lengthscales:
            K0 = self._k(rows, rows, ell)
            for noise in self.noises:
                try:
                    L = np.linalg.cholesky(K0 + noise * np.eye(len(rows)))
                except np.linalg.LinAlgError:
                    continue
                alpha = cho_solve((L, True), z)
                ll = -0.5 * z @ alpha - np.log(np.diag(L)).sum()
                if best is None or ll > best[0]:
                    best = (ll, ell, noise, L, alpha)
        if best is None:
            raise ValueError("GP fit failed for every lengthscale/noise on the grid")
        _, self.ell_, self.noise_, self.L_, self.alpha_ = best
        self.rows_ = rows
        return self

    def predict_mean(self, rows: np.ndarray) -> np.ndarray:
        """Posterior mean only (no triangular solve): cheap screening of many candidates."""
        m = self.mu_ + self.sd_ * (self._k(np.asarray(rows, dtype=int), self.rows_, self.ell_) @ self.alpha_)
        return self.offset_ + np.exp(m) if self.log_target else m

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=int)
        Ks = self._k(rows, self.rows_, self.ell_)
        mean = Ks @ self.alpha_
        v = solve_triangular(self.L_, Ks.T, lower=True)
        var = np.maximum(1.0 - (v**2).sum(0), 1e-12) + self.noise_
        m, s = self.mu_ + self.sd_ * mean, self.sd_ * np.sqrt(var)
        if self.log_target:
            return self.offset_ + np.exp(m), np.exp(m) * s
        return m, s


class BayesLinearSurrogate:
    """Bayesian linear regression (sklearn ``BayesianRidge``, evidence-tuned priors) on fixed features, e.g.
    an arch encoding plus the archs' latencies on source devices; ``log_target`` models log latency."""

    def __init__(self, X: np.ndarray, log_target: bool = True) -> None:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or not len(X):
            raise ValueError(f"X has shape {X.shape}; expected a non-empty 2-D feature matrix")
        self.X = _standardise_cols(X)
        self.log_target = bool(log_target)

    def fit(self, rows: np.ndarray, y: np.ndarray) -> BayesLinearSurrogate:
        from sklearn.linear_model import BayesianRidge

        y = np.asarray(y, dtype=np.float64)
        t = np.log(y) if self.log_target else y
        self.model_ = BayesianRidge().fit(self.X[np.asarray(rows, dtype=int)], t)
        return self

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.model_.predict(self.X[np.asarray(rows, dtype=int)], return_std=True)
        if self.log_target:
            return np.exp(m), np.exp(m) * s
        return m, s


class FewShotSurrogate:
    """The meta-learned few-shot latency predictor as a surrogate: ``adapt`` on the evaluated archs only."""

    def __init__(self, predictor: Any, keys: Sequence[Any]) -> None:
        for attr in ("adapt", "predict"):
            if not hasattr(predictor, attr):
                raise ValueError(f"predictor {type(predictor).__name__} lacks {attr}(); expected a meta-fitted few-shot predictor")
        self.predictor = predictor
        self.keys = list(keys)

    def fit(self, rows: np.ndarray, y: np.ndarray) -> FewShotSurrogate:
        self.predictor.adapt([self.keys[i] for i in rows], np.asarray(y, dtype=np.float64))
        return self

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.predictor.predict([self.keys[i] for i in rows], return_std=True)
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
