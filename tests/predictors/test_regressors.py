"""EnsembleRegressor on real architecture features: it learns, it reports uncertainty, it persists."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from predictors import EnsembleRegressor, featurize
from search_spaces import create_search_space


@pytest.fixture(scope="module")
def xy():
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
    archs = space.sample_many(200, np.random.default_rng(0))
    X = featurize(space, archs, "onehot+cost")
    y = np.array([space.macs(a) for a in archs]) / 1e6 + 3.0  # a latency-like target: MACs plus overhead
    return X, y


@pytest.mark.parametrize("kind", ["ridge", "extra_trees", "gp"])
def test_learns_ranking_from_few_points(kind, xy):
    X, y = xy
    m = EnsembleRegressor(kind=kind, n_members=4, log_target=True).fit(X[:40], y[:40])
    pred, std = m.predict(X[40:], return_std=True)
    assert spearmanr(pred, y[40:]).statistic > 0.9
    assert std.shape == pred.shape and (std >= 0).all() and std.max() > 0


def test_save_load_identical(xy, tmp_path):
    X, y = xy
    m = EnsembleRegressor(kind="ridge", n_members=3).fit(X[:30], y[:30])
    p = m.save(tmp_path / "m.pkl")
    assert np.array_equal(EnsembleRegressor.load(p).predict(X), m.predict(X))


def test_errors(xy):
    X, y = xy
    with pytest.raises(ValueError, match="unknown regressor kind 'svm'"):
        EnsembleRegressor(kind="svm").fit(X[:10], y[:10])
    with pytest.raises(ValueError, match="non-positive"):
        EnsembleRegressor(log_target=True).fit(X[:10], -y[:10])
    with pytest.raises(RuntimeError, match="not fitted"):
        EnsembleRegressor().predict(X)
