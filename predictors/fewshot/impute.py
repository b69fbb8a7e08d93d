"""Source-device latencies of architectures that are not in the meta-training table, from their features.

The few-shot predictor describes an architecture by its latencies on the source devices. For an architecture
nobody measured there, :class:`SourceImputer` predicts them: per source device, a ridge regression of log
latency on the architecture features (one-hot encoding = additive per-op costs, plus analytic cost features),
optionally followed by boosted trees on the ridge residual (interactions such as GPU efficiency at
particular widths). Whether the trees help is decided per device on a held-out part of the table, and the
held-out predictions are kept so that the caller can turn the imputation error into predictive uncertainty.
:class:`OutsideTable` (fitted, held by the few-shot predictor) gives it the blocks of such architectures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from predictors.fewshot.blocks import new_blocks

KINDS = ("ridge", "boost")


def _one_openmp_thread():  # noqa: ANN202
    """Boosted trees on one OpenMP thread: with torch's OpenMP runtime loaded in the same process (the
    pipeline), sklearn's parallel histogram loops can spin for minutes on a busy 2-core machine."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


class SourceImputer:
    """Predict log latency on every source device from architecture feature blocks.

    Args:
        kind: ``"ridge"`` (additive model) or ``"boost"`` (ridge + boosted trees on its residual, kept per
            device only where it lowers the held-out error).
        alpha: ridge penalty per row (the penalty matrix is ``alpha * n_rows``; the intercept is free).
        holdout: share of the table held out to choose the model per device and estimate its error.
        max_iter: boosting iterations.
        max_rows: at most this many (random) rows train the trees (bounds meta_fit time).
        random_state: seed of the split and the row subsample.
    """

    def __init__(self, *, kind: str = "boost", alpha: float = 1e-2, holdout: float = 0.2, max_iter: int = 100,
                 max_rows: int = 3000, random_state: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"imputer kind {kind!r} is invalid; expected one of {list(KINDS)}")
        if not 0.0 < holdout < 0.5:
            raise ValueError(f"holdout={holdout} is invalid; expected 0 < holdout < 0.5")
        self.kind = kind
        self.alpha = alpha
        self.holdout = holdout
        self.max_iter = max_iter
        self.max_rows = max_rows
        self.random_state = random_state

    # ------------------------------------------------------------------ features
    def _linear(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        parts = [(feats[n] - self.lin_mean_[n]) / self.lin_scale_[n] for n in self.names_]
        return np.hstack([*parts, np.ones((len(parts[0]), 1))])

    def _trees(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.hstack([feats[n] for n in self.names_])

    def _ridge(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        pen = self.alpha * len(x) * np.eye(x.shape[1])
        pen[-1, -1] = 0.0
        return np.linalg.solve(x.T @ x + pen, x.T @ y)

    def _boost(self, x: np.ndarray, r: np.ndarray, rng: np.random.Generator) -> list:
        from sklearn.ensemble import HistGradientBoostingRegressor

        rows = np.arange(len(x)) if len(x) <= self.max_rows else np.sort(rng.choice(len(x), self.max_rows, replace=False))
        with _one_openmp_thread():
            return [HistGradientBoostingRegressor(max_iter=self.max_iter, max_bins=64, early_stopping=False,
                                                  random_state=self.random_state).fit(x[rows], r[rows, j])
                    for j in range(r.shape[1])]

    # ------------------------------------------------------------------ fit / predict
    def fit(self, feats: Mapping[str, np.ndarray], log_lat: np.ndarray) -> SourceImputer:
        """``feats``: name -> (n, width) blocks; ``log_lat``: (n, n_src) log latencies of the same rows."""
        self.names_ = sorted(feats)
        if not self.names_:
            raise ValueError("SourceImputer needs at least one feature block; got none")
        n = len(log_lat)
        # one-hot columns stay as they are (per-op costs); other blocks are standardised
        self.lin_mean_, self.lin_scale_ = {}, {}
        for name in self.names_:
            x = np.asarray(feats[name], dtype=np.float64)
            binary = bool(np.isin(x, (0.0, 1.0)).all())
            sd = x.std(0)
            self.lin_mean_[name] = np.zeros(x.shape[1]) if binary else x.mean(0)
            self.lin_scale_[name] = np.ones(x.shape[1]) if binary else np.where(sd > 0, sd, 1.0)
        xl, xt = self._linear(feats), self._trees(feats)
        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(n)
        n_hold = max(int(self.holdout * n), 2)
        hold, fit = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
        coef = self._ridge(xl[fit], log_lat[fit])
        pred_hold = xl[hold] @ coef
        self.use_trees_ = np.zeros(log_lat.shape[1], dtype=bool)
        if self.kind == "boost":
            trees = self._boost(xt[fit], log_lat[fit] - xl[fit] @ coef, rng)
            with _one_openmp_thread():
                boosted = pred_hold + np.column_stack([t.predict(xt[hold]) for t in trees])
            err_lin = ((pred_hold - log_lat[hold]) ** 2).mean(0)
            err_boost = ((boosted - log_lat[hold]) ** 2).mean(0)
            self.use_trees_ = err_boost < 0.95 * err_lin
            pred_hold = np.where(self.use_trees_, boosted, pred_hold)
        self.holdout_rows_ = hold
        self.holdout_pred_ = pred_hold
        # final models on every row
        self.coef_ = self._ridge(xl, log_lat)
        self.trees_: list = [None] * log_lat.shape[1]
        if self.use_trees_.any():
            cols = np.flatnonzero(self.use_trees_)
            for j, t in zip(cols, self._boost(xt, (log_lat - xl @ self.coef_)[:, cols], rng), strict=True):
                self.trees_[j] = t
        return self

    def predict(self, feats: Mapping[str, np.ndarray]) -> np.ndarray:
        """Imputed log latency (n, n_src)."""
        missing = [n for n in self.names_ if n not in feats]
        if missing:
            raise ValueError(f"features lack block {missing[0]!r}; expected blocks {self.names_}")
        out = self._linear(feats) @ self.coef_
        if any(t is not None for t in self.trees_):
            xt = self._trees(feats)
            with _one_openmp_thread():
                for j, t in enumerate(self.trees_):
                    if t is not None:
                        out[:, j] += t.predict(xt)
        return out


def featurize_blocks(featurizer: Callable[[list[str]], Any], keys: list[str],
                     widths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Call ``featurizer`` on arch strings and check its blocks against the meta-training ``widths``."""
    out = featurizer(keys)
    blocks = dict(out) if isinstance(out, Mapping) else {"enc": out}
    feats = {}
    for name, width in widths.items():
        if name not in blocks:
            raise ValueError(f"featurizer returned blocks {sorted(blocks)}; expected {sorted(widths)}")
        x = np.asarray(blocks[name], dtype=np.float64)
        if x.shape != (len(keys), width):
            raise ValueError(f"featurizer block {name!r} has shape {x.shape}; expected ({len(keys)}, {width})")
        feats[name] = x
    return feats


def check_featurizer(featurize: Callable[[list[str]], dict[str, np.ndarray]], keys: list[str],
                     feats: Mapping[str, np.ndarray]) -> None:
    """The featurizer must reproduce the meta-training features of the first table rows ``keys``."""
    if not feats:
        raise ValueError("featurizer given but no features; expected 'enc' and/or 'phys' blocks")
    got = featurize(keys)
    for name, x in feats.items():
        if not np.allclose(got[name], x[: len(keys)], rtol=1e-9, atol=1e-12):
            raise ValueError(f"featurizer disagrees with arch_features block {name!r} for arch {keys[0]!r}; "
                             "expected the same features")


def imputation_cov(imputer: SourceImputer, feats: Mapping[str, np.ndarray], stats: Mapping[str, Any],
                   blocks: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Mean outer product of the held-out imputation error of the normalised ``src`` block, per transform."""
    hold = imputer.holdout_rows_
    out = {}
    for t, st in stats.items():
        imputed = new_blocks(st, {k: v[hold] for k, v in feats.items()}, imputer.holdout_pred_)
        resid = blocks[t]["src"][hold] - imputed["src"]
        out[t] = resid.T @ resid / len(hold)
    return out


class OutsideTable:
    """Blocks of architectures outside the meta-training table, a fitted attribute (``outside_``) of
    :class:`predictors.fewshot.FewShotLatencyPredictor`: their source latencies are imputed from their features
    (``featurizer``) and turned into normalised blocks with the table's statistics; ``impute_cov_`` is the
    held-out imputation error in units of the normalised ``src`` block (per transform), for the predictive std.

    Args:
        featurizer: picklable callable, canonical arch strings -> feature blocks (``None``: table archs only).
        impute: ``"boost"``, ``"ridge"`` or ``"none"`` (see :class:`SourceImputer`).
        random_state: seed of the imputer's held-out split.
    """

    def __init__(self, featurizer: Callable[[list[str]], Any] | None, impute: str = "boost",
                 random_state: int = 0) -> None:
        self.featurizer = featurizer
        self.impute = impute
        self.random_state = random_state

    def fit(self, keys: list[str], feats: dict[str, np.ndarray], lat: np.ndarray, block_stats: Mapping[str, Any],
            blocks: Mapping[str, Mapping[str, np.ndarray]]) -> OutsideTable:
        """``keys``: the table's arch strings; ``feats``/``lat``: its feature blocks and latencies (ms);
        ``block_stats``/``blocks``: the predictor's normalisation statistics and normalised blocks."""
        self.feature_widths_ = {name: x.shape[1] for name, x in feats.items()}
        if self.featurizer is not None:
            check_featurizer(self.featurize, keys[:3], feats)
        self.imputer_, self.impute_cov_ = None, {}
        if self.impute != "none" and self.featurizer is not None:
            self.imputer_ = SourceImputer(kind=self.impute, random_state=self.random_state).fit(feats, np.log(lat))
            self.impute_cov_ = imputation_cov(self.imputer_, feats, block_stats, blocks)
        return self

    def featurize(self, keys: list[str]) -> dict[str, np.ndarray]:
        return featurize_blocks(self.featurizer, keys, self.feature_widths_)

    def blocks(self, keys: list[str], block_stats: Mapping[str, Any],
               transforms: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
        """Normalised blocks per transform of archs absent from the table (an error names the first one when
        this table has no imputer)."""
        if self.imputer_ is None:
            raise ValueError(f"architecture {keys[0]!r} has no source-device latencies; meta_fit on a table "
                             "that contains it, or with a featurizer (and impute != 'none') to impute them")
        feats = self.featurize(keys)
        log_lat = self.imputer_.predict(feats)
        return {t: new_blocks(block_stats[t], feats, log_lat) for t in transforms}
