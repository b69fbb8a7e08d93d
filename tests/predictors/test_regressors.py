"""EnsembleRegressor on real architecture features: it learns, it reports uncertainty, it persists."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.exceptions import NotFittedError

from predictors import EnsembleRegressor, featurize
from search_spaces import create_search_space


@pytest.fixture(scope="module")
def xy():
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
    archs = space.sample_many(200, np.random.default_rng(0))
    X = featurize(space, archs, "onehot+cost")
    y = np.array([space.macs(a) for a in archs]) / 1e6 + 3.0  # a latency-like target: MACs plus overhead
    return X, y


@pytest.mark.parametrize("kind", ["ridge", "extra_trees", "boost", "mlp", "gp"])
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
        EnsembleRegressor(kind="svm")  # at construction: a bad config fails before any stage runs
    with pytest.raises(ValueError, match="candidates has 'svm'; expected kinds from"):
        EnsembleRegressor(kind="auto", candidates=("ridge", "svm"))
    with pytest.raises(ValueError, match="n_members=0 is invalid"):
        EnsembleRegressor(n_members=0)
    with pytest.raises(ValueError, match="non-positive"):
        EnsembleRegressor(log_target=True).fit(X[:10], -y[:10])
    with pytest.raises(NotFittedError, match="not fitted"):
        EnsembleRegressor().predict(X)


def _linear(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    return X, X @ np.array([1.0, -0.5, 0.25, 0.0, 0.0, 0.0]) + 0.3 * rng.normal(size=n)


def test_auto_picks_the_kind_with_the_best_cross_validated_spearman():
    X, y = _linear(80, 0)
    m = EnsembleRegressor(kind="auto", n_members=3, candidates=("extra_trees", "ridge")).fit(X, y)
    assert set(m.cv_spearman_) == {"extra_trees", "ridge"}
    assert m.kind_ == max(m.cv_spearman_, key=m.cv_spearman_.get) == "ridge"  # a linear target: ridge wins
    assert m.cv_spearman_["ridge"] > m.cv_spearman_["extra_trees"]
    ridge = EnsembleRegressor(kind="ridge", n_members=3).fit(X, y)
    assert np.allclose(m.predict(X[:20]), ridge.predict(X[:20]))  # then fitted as that kind, on every point


def test_calibrated_std_covers_about_80_percent_of_new_points():
    X, y = _linear(120, 1)
    Xt, yt = _linear(4000, 2)
    cover = {}
    for cal in (False, True):
        m = EnsembleRegressor(kind="extra_trees", n_members=8, calibrate_std=cal).fit(X, y)
        mean, std = m.predict(Xt, return_std=True)
        cover[cal] = float(np.mean(np.abs(yt - mean) <= 1.2816 * std))
    assert cover[False] < 0.65  # the bootstrap spread alone is too narrow here
    assert 0.7 <= cover[True] <= 0.9
    small = EnsembleRegressor(kind="auto", calibrate_std=True).fit(X[:8], y[:8])  # too few points to cross-validate
    assert small.kind_ == "ridge" and small.std_scale_ == 1.0 and small.cv_spearman_ == {}


def test_predictor_pickled_before_calibration_converts_and_predicts_the_same(xy, tmp_path):
    import pickle

    from predictors.convert import convert

    X, y = xy
    m = EnsembleRegressor(kind="ridge", n_members=3).fit(X[:30], y[:30])
    state = {k: v for k, v in m.__dict__.items() if k not in ("calibrate_std", "candidates", "kind_", "std_scale_",
                                                              "cv_spearman_")}
    old = EnsembleRegressor.__new__(EnsembleRegressor)
    old.__dict__.update(state)
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(old))
    with pytest.raises(ValueError, match="hwnas-convert-predictor --trusted"):
        EnsembleRegressor.load(tmp_path / "old.pkl")
    back = EnsembleRegressor.load(convert(tmp_path / "old.pkl", tmp_path / "new.skops"))
    assert np.array_equal(back.predict(X, return_std=True)[1], m.predict(X, return_std=True)[1])
    assert back.get_params()["calibrate_std"] is False
