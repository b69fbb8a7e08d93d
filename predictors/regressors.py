"""Small-data regressors with uncertainty, sklearn conventions (``fit(X, y) -> self``, ``predict(X)``).

Used for the accuracy predictor (tens of supernet-evaluated subnets) and the latency model fitted on local
measurements. ``EnsembleRegressor`` bags ``n_members`` models on bootstrap resamples; the spread of the
members is the uncertainty returned by ``predict(X, return_std=True)``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

KINDS = ("ridge", "extra_trees", "gp")


def make_base(kind: str, seed: int = 0) -> Any:
    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if kind == "extra_trees":
        return ExtraTreesRegressor(n_estimators=100, min_samples_leaf=2, max_features=0.5, random_state=seed, n_jobs=1)
    if kind == "gp":
        kernel = ConstantKernel(1.0) * RBF(length_scale=10.0) + WhiteKernel(1e-2)
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed))
    raise ValueError(f"unknown regressor kind {kind!r}; expected one of {list(KINDS)}")


class EnsembleRegressor(BaseEstimator, RegressorMixin):
    """Bootstrap ensemble of one regressor kind; optional log-transformed target (for latencies)."""

    def __init__(self, kind: str = "ridge", n_members: int = 8, log_target: bool = False, seed: int = 0) -> None:
        self.kind = kind
        self.n_members = n_members
        self.log_target = log_target
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> EnsembleRegressor:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X has shape {X.shape} and y has {y.shape}; expected (n, d) and (n,)")
        if len(y) < 3:
            raise ValueError(f"{len(y)} training points are too few; expected at least 3")
        if not np.all(np.isfinite(y)) or (self.log_target and np.any(y <= 0)):
            raise ValueError("targets contain NaN/inf (or non-positive values with log_target); expected finite values")
        if int(self.n_members) < 1:
            raise ValueError(f"n_members={self.n_members} is invalid; expected >= 1")
        make_base(self.kind)  # validates kind
        t = np.log(y) if self.log_target else y
        rng = np.random.default_rng(self.seed)
        self.members_ = []
        for m in range(int(self.n_members)):
            idx = np.arange(len(y)) if m == 0 else rng.integers(0, len(y), len(y))
            if len(np.unique(idx)) < 3:
                idx = np.arange(len(y))
            model = clone(make_base(self.kind, self.seed + m)).fit(X[idx], t[idx])
            self.members_.append(model)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "members_"):
            raise RuntimeError("EnsembleRegressor is not fitted; call fit(X, y) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; expected (n, {self.n_features_in_})")
        P = np.stack([m.predict(X) for m in self.members_])
        if self.log_target:
            P = np.exp(P)
        mean = P[0] if len(P) == 1 else 0.5 * (P[0] + P.mean(0))  # member 0 saw all data
        return (mean, P.std(0)) if return_std else mean

    # --- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self, f)
        tmp.replace(path)
        return path

    @staticmethod
    def load(path: str | Path) -> EnsembleRegressor:
        with open(path, "rb") as f:
            obj = pickle.load(f)
        if not isinstance(obj, EnsembleRegressor):
            raise ValueError(f"{path} holds a {type(obj).__name__}; expected an EnsembleRegressor")
        return obj


def featurize(space: Any, archs: list[Any], kind: str = "onehot+cost") -> np.ndarray:
    """Predictor inputs for ``archs``: ``onehot``, ``cost`` (MACs/params per stage) or both."""
    parts = []
    if "onehot" in kind:
        parts.append(space.encode(archs))
    if "cost" in kind:
        cost = np.asarray(space.cost_features(archs), dtype=np.float64)
        if not cost.shape[1]:
            raise ValueError(f"space {space.name!r} has no cost features; expected features='onehot'")
        parts.append(cost)
    if not parts:
        raise ValueError(f"unknown feature kind {kind!r}; expected onehot, cost or onehot+cost")
    return np.hstack(parts)
