"""Models with predictive uncertainty fitted on a search's real evaluations: an exact GP and a Bayesian linear
regression, both on the face every model shares (``fit(archs, y) -> self``, ``predict(archs, return_std=False)``)
with features from their ``featurizer`` (e.g. :class:`predictors.SpaceFeatures`).

:class:`GPPredictor` is the closed loop's error model (``conf/search/closed_loop.yaml``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError


def _features(model: Any, archs: Sequence[Any]) -> np.ndarray:
    if model.featurizer is None:
        raise ValueError(f"{type(model).__name__} has no featurizer; expected featurizer=SpaceFeatures(...)")
    return np.asarray(model.featurizer(list(archs)), dtype=np.float64)


def _require(model: Any, attr: str) -> None:
    if attr not in model.__dict__:
        raise NotFittedError(f"{type(model).__name__} is not fitted; call fit(archs, y) first")


class GPPredictor(BaseEstimator):
    """Exact GP with a stationary kernel; lengthscale and noise picked by marginal likelihood over a small grid
    (closed form, no gradient steps), targets standardised.

    The feature geometry is fixed at the first fit, from the training rows then (for the pipeline: the measure
    stage's random subnets; for a benchmark: the random initial design): ``scale="median"`` keeps the features'
    own geometry (counts, one-hots) and divides by their median pairwise distance, so the lengthscale grid
    means the same for any encoding; ``scale="columns"`` standardises every column (then divides by
    sqrt(#columns)). ``kernel``: ``"rbf"`` or ``"exponential"`` (Matern-1/2: rougher, suits count features).
    ``log_target`` models ``log(y - shift * min(y))`` (positive targets such as error or latency).
    ``predict(archs)`` without std is the posterior mean alone (no triangular solve: cheap screening).
    """

    def __init__(self, featurizer: Callable[[Sequence[Any]], np.ndarray] | None = None,
                 lengthscales: Sequence[float] = (0.5, 1.0, 2.0), noises: Sequence[float] = (0.005, 0.02, 0.1),
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
        self.featurizer = featurizer
        self.lengthscales = lengthscales
        self.noises = noises
        self.log_target = log_target
        self.shift = shift
        self.kernel = kernel
        self.scale = scale

    def _geometry(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.scale == "columns":
            sd = X.std(0)
            return X.mean(0), np.where(sd > 0, sd, 1.0) * np.sqrt(X.shape[1])
        d = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))[np.triu_indices(len(X), 1)]
        med = float(np.median(d[d > 0])) if (d > 0).any() else 1.0
        return np.zeros(X.shape[1]), np.full(X.shape[1], med)

    def _z(self, X: np.ndarray) -> np.ndarray:
        off, div = self.geometry_
        return (X - off) / div

    def _k(self, A: np.ndarray, B: np.ndarray, ell: float) -> np.ndarray:
        d2 = np.maximum((A**2).sum(1)[:, None] + (B**2).sum(1)[None, :] - 2.0 * A @ B.T, 0.0)
        if self.kernel == "exponential":
            return np.exp(-np.sqrt(d2) / ell)
        return np.exp(-0.5 * d2 / ell**2)

    def fit(self, archs: Sequence[Any], y: Any) -> GPPredictor:
        X = _features(self, archs)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y) or len(y) < 2:
            raise ValueError(f"features have shape {X.shape} and y {y.shape}; expected (n, d) and (n,) with n >= 2")
        if "geometry_" not in self.__dict__:  # fixed at the first fit (see the class text)
            self.geometry_ = self._geometry(X)
        Z = self._z(X)
        self.offset_ = float(self.shift) * float(y.min()) if self.log_target else 0.0
        if self.log_target and np.any(y - self.offset_ <= 0):
            raise ValueError("log_target needs positive targets (e.g. error, latency); got values <= 0")
        t = np.log(y - self.offset_) if self.log_target else y
        self.mu_, self.sd_ = float(t.mean()), float(t.std()) or 1.0
        z = (t - self.mu_) / self.sd_
        best = None
        for ell in (float(v) for v in self.lengthscales):
            K0 = self._k(Z, Z, ell)
            for noise in (float(v) for v in self.noises):
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

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        _require(self, "alpha_")
        Ks = self._k(self._z(_features(self, archs)), self.Z_, self.ell_)
        m = self.mu_ + self.sd_ * (Ks @ self.alpha_)
        if not return_std:
            return self.offset_ + np.exp(m) if self.log_target else m
        v = solve_triangular(self.L_, Ks.T, lower=True)
        s = self.sd_ * np.sqrt(np.maximum(1.0 - (v**2).sum(0), 1e-12) + self.noise_)
        if self.log_target:
            return self.offset_ + np.exp(m), np.exp(m) * s
        return m, s


class BayesLinearPredictor(BaseEstimator):
    """Bayesian linear regression (sklearn ``BayesianRidge``: evidence-tuned Gaussian weight prior and noise) on
    the featurizer's columns, standardised at the first fit; ``log_target`` models log(y) (latency)."""

    def __init__(self, featurizer: Callable[[Sequence[Any]], np.ndarray] | None = None, log_target: bool = True) -> None:
        self.featurizer = featurizer
        self.log_target = log_target

    def _z(self, archs: Sequence[Any]) -> np.ndarray:
        X = _features(self, archs)
        if "geometry_" not in self.__dict__:
            sd = X.std(0)
            self.geometry_ = (X.mean(0), np.where(sd > 0, sd, 1.0))
        return (X - self.geometry_[0]) / self.geometry_[1]

    def fit(self, archs: Sequence[Any], y: Any) -> BayesLinearPredictor:
        from sklearn.linear_model import BayesianRidge

        y = np.asarray(y, dtype=np.float64)
        self.model_ = BayesianRidge().fit(self._z(archs), np.log(y) if self.log_target else y)
        return self

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        _require(self, "model_")
        m, s = self.model_.predict(self._z(archs), return_std=True)
        if self.log_target:
            m, s = np.exp(m), np.exp(m) * s
        return (m, s) if return_std else m
