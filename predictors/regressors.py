"""Small-data regressors with uncertainty, sklearn conventions (``fit(X, y) -> self``, ``predict(X)``).

Used for the accuracy predictor (tens of supernet-evaluated subnets) and the latency model fitted on local
measurements. ``EnsembleRegressor`` bags ``n_members`` models of one kind on bootstrap resamples; the spread
of the members is the uncertainty returned by ``predict(X, return_std=True)``. ``kind="auto"`` picks the kind
among ``candidates`` by cross-validated Spearman; ``calibrate_std=True`` rescales the spread so that the
central 80% interval ``mean +- 1.2816 std`` holds 80% of the cross-validated (out-of-fold) residuals — a
bootstrap spread alone is usually too narrow on tens of points.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

KINDS = ("ridge", "extra_trees", "boost", "mlp", "gp")
Z80 = 1.2815515655446004  # the standard normal's 90% quantile: mean +- Z80 * std is the central 80% interval
MIN_CV_POINTS = 10  # auto selection and std calibration need this many points (5 folds of 2)


def make_base(kind: str, seed: int = 0) -> Any:
    if kind == "ridge":
        return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    if kind == "extra_trees":
        return ExtraTreesRegressor(n_estimators=100, min_samples_leaf=2, max_features=0.5, random_state=seed, n_jobs=1)
    if kind == "boost":
        return GradientBoostingRegressor(n_estimators=200, learning_rate=0.05, max_depth=3, subsample=0.8,
                                         min_samples_leaf=3, random_state=seed)
    if kind == "mlp":
        # L-BFGS with a firm weight penalty: on tens of points Adam's stochastic steps rank far worse
        mlp = MLPRegressor(hidden_layer_sizes=(32,), alpha=0.1, solver="lbfgs", max_iter=1000, random_state=seed)
        return TransformedTargetRegressor(make_pipeline(StandardScaler(), mlp), transformer=StandardScaler())
    if kind == "gp":
        kernel = ConstantKernel(1.0) * RBF(length_scale=10.0) + WhiteKernel(1e-2)
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, random_state=seed))
    raise ValueError(f"unknown regressor kind {kind!r}; expected one of {[*KINDS, 'auto']}")


def _quiet_fit(model: Any, X: np.ndarray, y: np.ndarray) -> Any:
    """Fit with sklearn's convergence notices silenced (a GP noise level at its bound, an MLP at max_iter on
    tens of points): nothing a user could act on; the cross-validated scores say whether the fit is good."""
    from threadpoolctl import threadpool_limits

    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y)


class EnsembleRegressor(BaseEstimator, RegressorMixin):
    """Bootstrap ensemble of one regressor kind; optional log-transformed target (for latencies).

    Args:
        kind: one of ``ridge``, ``extra_trees``, ``boost`` (gradient-boosted trees of depth 3), ``mlp`` (one hidden
            layer of 32, L-BFGS), ``gp`` (RBF + noise), or ``auto``: the kind of ``candidates`` with the best 5-fold
            cross-validated Spearman on the training data (``kind_``; every score in ``cv_spearman_``).
        n_members: bootstrap members (member 0 sees all the data).
        log_target: fit log(y) (latencies).
        calibrate_std: rescale the member spread by ``std_scale_`` so that 80% of the out-of-fold residuals
            fall inside ``mean +- 1.2816 std``.
        candidates: the kinds ``auto`` chooses from.
        seed: bootstrap and model seed.
    """

    def __init__(self, kind: str = "ridge", n_members: int = 8, log_target: bool = False, seed: int = 0,
                 calibrate_std: bool = False, candidates: tuple[str, ...] = ("ridge", "extra_trees", "boost", "gp")
                 ) -> None:
        self.kind = kind
        self.n_members = n_members
        self.log_target = log_target
        self.seed = seed
        self.calibrate_std = calibrate_std
        self.candidates = candidates
        self.check_params()

    def check_params(self) -> None:
        """One-line errors for invalid settings (at construction, so a bad config fails before any stage runs)."""
        if self.kind != "auto" and self.kind not in KINDS:
            make_base(self.kind)  # the one-line error naming the kind
        if self.kind == "auto":
            if not len(self.candidates):
                raise ValueError("kind='auto' with no candidates; expected a list of kinds")
            for k in self.candidates:
                if k not in KINDS:
                    raise ValueError(f"candidates has {k!r}; expected kinds from {list(KINDS)}")
        if not isinstance(self.n_members, int | np.integer) or isinstance(self.n_members, bool) or self.n_members < 1:
            raise ValueError(f"n_members={self.n_members!r} is invalid; expected an integer >= 1")

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Old pickled predictors (read only by ``hwnas-convert-predictor``) from before ``calibrate_std``/
        ``candidates``/``kind_`` existed convert as they predicted."""
        state.setdefault("calibrate_std", False)
        state.setdefault("candidates", ("ridge", "extra_trees", "boost", "gp"))
        if "members_" in state:
            state.setdefault("kind_", state["kind"])
            state.setdefault("std_scale_", 1.0)
        self.__dict__.update(state)

    def _check(self, X: np.ndarray, y: np.ndarray) -> None:
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X has shape {X.shape} and y has {y.shape}; expected (n, d) and (n,)")
        if len(y) < 3:
            raise ValueError(f"{len(y)} training points are too few; expected at least 3")
        if not np.all(np.isfinite(y)) or (self.log_target and np.any(y <= 0)):
            raise ValueError("targets contain NaN/inf (or non-positive values with log_target); expected finite values")
        self.check_params()

    def _fit_members(self, kind: str, X: np.ndarray, t: np.ndarray) -> list[Any]:
        rng = np.random.default_rng(self.seed)
        members = []
        for m in range(int(self.n_members)):
            idx = np.arange(len(t)) if m == 0 else rng.integers(0, len(t), len(t))
            if len(np.unique(idx)) < 3:
                idx = np.arange(len(t))
            members.append(_quiet_fit(clone(make_base(kind, self.seed + m)), X[idx], t[idx]))
        return members

    def _members_predict(self, members: list[Any], X: np.ndarray,
                         stacked: StackedMembers | None = None) -> tuple[np.ndarray, np.ndarray]:
        P = (stacked or StackedMembers(members)).predict(X)
        if self.log_target:
            P = np.exp(P)
        mean = P[0] if len(P) == 1 else 0.5 * (P[0] + P.mean(0))  # member 0 saw all data
        return mean, P.std(0)

    def fit(self, X: np.ndarray, y: np.ndarray) -> EnsembleRegressor:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).ravel()
        self._check(X, y)
        t = np.log(y) if self.log_target else y
        kinds = list(self.candidates) if self.kind == "auto" else [self.kind]
        self.kind_, self.std_scale_, self.cv_spearman_ = kinds[0], 1.0, {}
        if (self.kind == "auto" or self.calibrate_std) and len(y) >= MIN_CV_POINTS:
            folds = list(KFold(n_splits=5, shuffle=True, random_state=self.seed).split(X))
            oof = {}
            for k in kinds:
                mean, std = np.zeros(len(y)), np.zeros(len(y))
                for tr, te in folds:
                    mean[te], std[te] = self._members_predict(self._fit_members(k, X[tr], t[tr]), X[te])
                oof[k] = (mean, std)
                rho = spearmanr(mean, y).statistic
                self.cv_spearman_[k] = float(rho) if np.isfinite(rho) else 0.0
            self.kind_ = max(kinds, key=lambda k: self.cv_spearman_[k])
            if self.calibrate_std:
                mean, std = oof[self.kind_]
                z = np.abs(y - mean) / np.maximum(std, 1e-12 * max(1.0, float(np.abs(y).max())))
                self.std_scale_ = float(max(np.quantile(z, 0.8) / Z80, 1e-6))
        self.members_ = self._fit_members(self.kind_, X, t)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: np.ndarray, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "members_"):
            raise NotFittedError("EnsembleRegressor is not fitted; call fit(X, y) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {X.shape}; expected (n, {self.n_features_in_})")
        if getattr(self, "_stacked", None) is None or self._stacked.members is not self.members_:
            self._stacked = StackedMembers(self.members_)
        mean, std = self._members_predict(self.members_, X, self._stacked)
        return (mean, std * self.std_scale_) if return_std else mean

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_stacked", None)  # rebuilt from members_ at the first predict
        return state

    # --- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Atomic write in the data-only saved-predictor format (:mod:`predictors.saved`)."""
        from predictors import saved

        return saved.save(self, path)

    @staticmethod
    def load(path: str | Path) -> EnsembleRegressor:
        """Read a file written by :meth:`save`; any other file (a pickle included) is one ``ValueError`` line."""
        from predictors import saved

        return saved.read(path, EnsembleRegressor)


class StackedMembers:
    """The fitted members of an ensemble evaluated together: ``predict(X) -> (n_members, n)``.

    Linear members (scaler + ridge) collapse into one weight matrix and one matmul; tree members (extra trees,
    gradient boosting) run every tree's compiled ``predict`` on one float32 copy of ``X``, skipping sklearn's
    per-call input validation (which dominates on the inner search's batches of 64); other kinds are asked one
    by one. The results equal the members' own ``predict`` (tested)."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members
        self.mode = "loop"
        if all(_is_linear(m) for m in members):
            W, b = zip(*(_linear_weights(m) for m in members), strict=True)
            self.W, self.b, self.mode = np.column_stack(W), np.asarray(b), "linear"
        elif all(isinstance(m, ExtraTreesRegressor) for m in members):
            self.trees = [[t.tree_ for t in m.estimators_] for m in members]
            self.mode = "forest"
        elif all(isinstance(m, GradientBoostingRegressor) and m.loss == "squared_error" for m in members):
            self.trees = [[t.tree_ for t in m.estimators_[:, 0]] for m in members]
            self.rates = [float(m.learning_rate) for m in members]
            self.inits = [m.init_ for m in members]
            self.mode = "boost"

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.mode == "linear":
            return (X @ self.W + self.b).T
        if self.mode in ("forest", "boost"):
            X32 = np.ascontiguousarray(X, dtype=np.float32)  # what sklearn's trees compare against
            out = np.empty((len(self.trees), len(X)))
            for m, trees in enumerate(self.trees):
                acc = np.zeros(len(X))
                for t in trees:
                    acc += t.predict(X32)[:, 0]
                if self.mode == "forest":
                    out[m] = acc / len(trees)
                else:
                    out[m] = np.asarray(self.inits[m].predict(X), dtype=np.float64).reshape(-1) + self.rates[m] * acc
            return out
        return np.stack([m.predict(X) for m in self.members])


def _is_linear(model: Any) -> bool:
    from sklearn.pipeline import Pipeline

    return (isinstance(model, Pipeline) and len(model.steps) == 2 and isinstance(model.steps[0][1], StandardScaler)
            and isinstance(model.steps[1][1], RidgeCV) and np.ndim(model.steps[1][1].coef_) == 1)


def _linear_weights(model: Any) -> tuple[np.ndarray, float]:
    """(w, b) with ``model.predict(X) == X @ w + b`` for a StandardScaler + RidgeCV pipeline."""
    scaler, ridge = model.steps[0][1], model.steps[1][1]
    mean = scaler.mean_ if scaler.with_mean else np.zeros_like(ridge.coef_)
    scale = scaler.scale_ if scaler.with_std else np.ones_like(ridge.coef_)
    w = ridge.coef_ / scale
    return w, float(ridge.intercept_ - mean @ w)


FEATURES = ("onehot", "cost", "onehot+cost", "surrogate")


def check_features(space: Any, kind: str) -> None:
    """One-line error for a feature kind ``space`` cannot give (``predictor.features``)."""
    if kind not in FEATURES:
        raise ValueError(f"predictor.features={kind!r} is invalid; expected one of {list(FEATURES)}")
    if "cost" in kind and not np.asarray(space.cost_features([space.sample(np.random.default_rng(0))])).shape[1]:
        raise ValueError(f"predictor.features={kind!r} is invalid: space {space.name!r} has no cost features; "
                         "expected onehot or surrogate")


def featurize(space: Any, archs: list[Any], kind: str = "onehot+cost") -> np.ndarray:
    """Predictor inputs for ``archs``: ``onehot``, ``cost`` (MACs/params per stage), both, or ``surrogate``
    (the space's ``surrogate_features``: NB201's structure and Weisfeiler-Lehman counts, elsewhere the encoding
    beside the cost features)."""
    if kind == "surrogate":
        return np.asarray(space.surrogate_features(archs), dtype=np.float64)
    parts = []
    if "onehot" in kind:
        parts.append(space.encode(archs))
    if "cost" in kind:
        cost = np.asarray(space.cost_features(archs), dtype=np.float64)
        if not cost.shape[1]:
            raise ValueError(f"space {space.name!r} has no cost features; expected features='onehot'")
        parts.append(cost)
    if not parts:
        raise ValueError(f"unknown feature kind {kind!r}; expected onehot, cost, onehot+cost or surrogate")
    return np.hstack(parts)
