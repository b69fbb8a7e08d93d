"""Surrogate models of one objective column, with predictive uncertainty, for :class:`ClosedLoopSearch`.

A surrogate is fitted on the architectures that were really evaluated and predicts mean and std for any:
``fit(archs, X, y) -> self``, ``predict(archs, X) -> (mean, std)`` and optionally ``predict_mean(archs, X)``.
``X`` holds the archs' features (``space.surrogate_features``, computed once per batch by the strategy);
feature-based surrogates (:class:`GPSurrogate`, :class:`BayesLinearSurrogate`) read ``X``, model wrappers
read ``archs``: :class:`FixedModel` (an already fitted predictor: the predict stage's regressors, a calibrated
few-shot latency predictor, exact params/MACs) and :class:`FewShotSurrogate` (the meta-learned latency
predictor, adapted to the evaluated archs at every fit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

from search_spaces.base import Architecture


class Surrogate(Protocol):
    def fit(self, archs: Sequence[Architecture], X: np.ndarray, y: np.ndarray) -> Surrogate: ...

    def predict(self, archs: Sequence[Architecture], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


def _standardise_cols(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


class GPSurrogate:
    """Exact GP with a stationary kernel on the strategy's features; lengthscale and noise picked by marginal
    likelihood over a small grid (closed form, no gradient steps), targets standardised.

    The feature geometry is fixed at the first fit, from the training rows then (for the pipeline: the measure
    stage's random subnets; for a benchmark: the random initial design): ``scale="median"`` keeps the features'
    own geometry (counts, one-hots) and divides by their median pairwise distance, so the lengthscale grid
    means the same for any encoding; ``scale="columns"`` standardises every column (then divides by
    sqrt(#columns)). ``kernel``: ``"rbf"`` or ``"exponential"`` (Matern-1/2: rougher, suits count features).
    ``log_target`` models ``log(y - shift * min(y))`` (positive targets such as error or latency).
    """

    def __init__(self, lengthscales: Sequence[float] = (0.5, 1.0, 2.0), noises: Sequence[float] = (0.005, 0.02, 0.1),
                 log_target: bool = False, shift: float = 0.0, kernel: str = "rbf", scale: str = "columns") -> None:
        if kernel not in ("rbf", "exponential"):
            raise ValueError(f"kernel={kernel!r} is invalid; expected 'rbf' or 'exponential'")
        if scale not in ("columns", "median"):
            raise ValueError(f"scale={scale!r} is invalid; expected 'columns' or 'median'")
        if not 0.0 <= float(shift) < 1.0:
            raise ValueError(f"shift={shift!r} is invalid; expected 0 <= shift < 1 (share of min(y) subtracted before log)")
        if not len(lengthscales) or not len(noises) or min(lengthscales) <= 0 or min(noises) <= 0:
            raise ValueError(f"lengthscales={list(lengthscales)} / noises={list(noises)} are invalid; expected "
                             "non-empty lists of positive numbers")
        self.kernel = kernel
        self.scale = scale
        self.lengthscales = tuple(float(v) for v in lengthscales)
        self.noises = tuple(float(v) for v in noises)
        self.log_target = bool(log_target)
        self.shift = float(shift)
        self.geometry_: tuple[np.ndarray, np.ndarray] | None = None  # (offset, divisor) of the features

    def __repr__(self) -> str:
        return f"GPSurrogate(kernel={self.kernel!r}, scale={self.scale!r}, log_target={self.log_target})"

    def _geometry(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.scale == "columns":
            sd = X.std(0)
            return X.mean(0), np.where(sd > 0, sd, 1.0) * np.sqrt(X.shape[1])
        d = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))[np.triu_indices(len(X), 1)]
        med = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
        return np.zeros(X.shape[1]), np.full(X.shape[1], med)

    def _z(self, X: np.ndarray) -> np.ndarray:
        off, div = self.geometry_
        return (np.asarray(X, dtype=np.float64) - off) / div

    def _k(self, A: np.ndarray, B: np.ndarray, ell: float) -> np.ndarray:
        d2 = np.maximum((A**2).sum(1)[:, None] + (B**2).sum(1)[None, :] - 2.0 * A @ B.T, 0.0)
        if self.kernel == "exponential":
            return np.exp(-np.sqrt(d2) / ell)
        return np.exp(-0.5 * d2 / ell**2)

    def fit(self, archs: Sequence[Architecture], X: np.ndarray, y: np.ndarray) -> GPSurrogate:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
            raise ValueError(f"X has shape {X.shape} and y {y.shape}; expected (n, d) and (n,) with n >= 2")
        if self.geometry_ is None:
            self.geometry_ = self._geometry(X)
        Z = self._z(X)
        self.offset_ = self.shift * float(y.min()) if self.log_target else 0.0
        if self.log_target and np.any(y - self.offset_ <= 0):
            raise ValueError("log_target needs positive targets (e.g. error, latency); got values <= 0")
        t = np.log(y - self.offset_) if self.log_target else y
        self.mu_, self.sd_ = float(t.mean()), float(t.std()) or 1.0
        z = (t - self.mu_) / self.sd_
        best = None
        for ell in self.lengthscales:
            K0 = self._k(Z, Z, ell)
            for noise in self.noises:
                try:
                    L = np.linalg.cholesky(K0 + noise * np.eye(len(Z)))
                except np.linalg.LinAlgError:
                    continue
                alpha = cho_solve((L, True), z)
                ll = -0.5 * z @ alpha - np.log(np.diag(L)).sum()
                if best is None or ll > best[0]:
                    best = (ll, ell, noise, L, alpha)
        if best is None:
            raise ValueError("GP fit failed for every lengthscale/noise on the grid")
        _, self.ell_, self.noise_, self.L_, self.alpha_ = best
        self.Z_ = Z
        return self

    def predict_mean(self, archs: Sequence[Architecture], X: np.ndarray) -> np.ndarray:
        """Posterior mean only (no triangular solve): cheap screening of many candidates."""
        m = self.mu_ + self.sd_ * (self._k(self._z(X), self.Z_, self.ell_) @ self.alpha_)
        return self.offset_ + np.exp(m) if self.log_target else m

    def predict(self, archs: Sequence[Architecture], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Ks = self._k(self._z(X), self.Z_, self.ell_)
        mean = Ks @ self.alpha_
        v = solve_triangular(self.L_, Ks.T, lower=True)
        var = np.maximum(1.0 - (v**2).sum(0), 1e-12) + self.noise_
        m, s = self.mu_ + self.sd_ * mean, self.sd_ * np.sqrt(var)
        if self.log_target:
            return self.offset_ + np.exp(m), np.exp(m) * s
        return m, s


class BayesLinearSurrogate:
    """Bayesian linear regression (sklearn ``BayesianRidge``: evidence-tuned Gaussian weight prior and noise,
    fitted on the evaluated archs only) on columns standardised at the first fit; ``log_target`` models
    log latency. ``features`` (optional) replaces the strategy's features by the caller's own, e.g. an arch
    encoding beside the archs' latencies on other devices."""

    def __init__(self, log_target: bool = True, features: Callable[[Sequence[Architecture]], np.ndarray] | None = None) -> None:
        self.log_target = bool(log_target)
        self.features = features
        self.geometry_: tuple[np.ndarray, np.ndarray] | None = None

    def _z(self, archs: Sequence[Architecture], X: np.ndarray) -> np.ndarray:
        X = np.asarray(self.features(archs) if self.features is not None else X, dtype=np.float64)
        if self.geometry_ is None:
            sd = X.std(0)
            self.geometry_ = (X.mean(0), np.where(sd > 0, sd, 1.0))
        return (X - self.geometry_[0]) / self.geometry_[1]

    def fit(self, archs: Sequence[Architecture], X: np.ndarray, y: np.ndarray) -> BayesLinearSurrogate:
        from sklearn.linear_model import BayesianRidge

        y = np.asarray(y, dtype=np.float64)
        t = np.log(y) if self.log_target else y
        self.model_ = BayesianRidge().fit(self._z(archs, X), t)
        return self

    def predict(self, archs: Sequence[Architecture], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.model_.predict(self._z(archs, X), return_std=True)
        if self.log_target:
            return np.exp(m), np.exp(m) * s
        return m, s


class FixedModel:
    """An already fitted model of one objective column (``fit`` leaves it as it is): ``predict(archs)`` returns
    ``(mean, std)``; a predictor of the run (accuracy or latency, ``predict(archs, return_std=True)``) or an
    exact cost (params, MACs: std 0)."""

    def __init__(self, predict: Callable[[Sequence[Architecture]], tuple[np.ndarray, np.ndarray]], name: str = "model") -> None:
        self._predict = predict
        self.name = name

    def fit(self, archs: Sequence[Architecture], X: np.ndarray, y: np.ndarray) -> FixedModel:
        return self

    def predict(self, archs: Sequence[Architecture], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self._predict(list(archs))
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def predict_mean(self, archs: Sequence[Architecture], X: np.ndarray) -> np.ndarray:
        return self.predict(archs, X)[0]

    def __repr__(self) -> str:
        return f"FixedModel({self.name})"


class FewShotSurrogate:
    """The meta-learned few-shot latency predictor as a surrogate: ``adapt`` on the evaluated archs only."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def fit(self, archs: Sequence[Architecture], X: np.ndarray, y: np.ndarray) -> FewShotSurrogate:
        self.predictor.adapt([a.to_string() for a in archs], np.asarray(y, dtype=np.float64))
        return self

    def predict(self, archs: Sequence[Architecture], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.predictor.predict([a.to_string() for a in archs], return_std=True)
        return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
