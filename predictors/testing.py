"""The contract suite of a predictor (the one face of DESIGN.md: ``fit(archs, y) -> self``,
``predict(archs, return_std=False)`` on architectures), shipped so that whoever adds a predictor runs the checks
the project's own predictors pass (as ``optuna.testing`` ships Optuna's own tests).

Subclass the test case, name the predictor and, optionally, how it is saved and read back::

    from predictors.testing import PredictorContract

    class TestMyPredictor(PredictorContract):
        def make_predictor(self, space):
            return MyPredictor(space)

        def save_and_load(self, predictor, path):  # leave undefined for a predictor that is not saved
            return MyPredictor.load(predictor.save(path / "p.json"))

or call :func:`check_predictor` with a fresh predictor and a space. Imported only by tests (it imports pytest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search_spaces.base import SearchSpace, WeightSharingSpace


def learnable_target(space: SearchSpace, archs: list[Any]) -> np.ndarray:
    """A positive target every predictor on the space's features should rank: MACs (millions) of a
    weight-sharing space, else a fixed random linear function of the encoding."""
    if isinstance(space, WeightSharingSpace):
        return np.array([space.macs(a) / 1e6 for a in archs])
    X = np.asarray(space.encode(archs), dtype=np.float64)
    w = np.random.default_rng(0).uniform(0.5, 1.5, X.shape[1])
    return 1.0 + X @ w


def check_predictor(predictor: Any, space: SearchSpace, n_train: int = 30, n_test: int = 10, seed: int = 4,
                    min_spearman: float = 0.6, learns: bool = True) -> Any:
    """An unfitted ``predictor`` that ``learns`` refuses to predict with sklearn's ``NotFittedError`` in one
    line; fitted on ``n_train`` archs of ``space`` it returns itself, predicts ``n_test`` others with finite
    means and non-negative stds of the right shapes, ranks a learnable target (Spearman > ``min_spearman``) and
    answers the same on a repeated call. Returns the fitted predictor and the held-out archs."""
    from scipy.stats import spearmanr
    from sklearn.exceptions import NotFittedError

    archs = space.sample_many(n_train + n_test, np.random.default_rng(seed))
    y = learnable_target(space, archs)
    train, test = archs[:n_train], archs[n_train:]
    if learns:
        with pytest.raises(NotFittedError) as e:
            predictor.predict(test)
        assert str(e.value) and "\n" not in str(e.value), f"unfitted predict error is not one line: {e.value!r}"
    assert predictor.fit(train, y[:n_train]) is predictor
    mean = np.asarray(predictor.predict(test), dtype=np.float64)
    m2, std = predictor.predict(test, return_std=True)
    m2, std = np.asarray(m2, dtype=np.float64), np.asarray(std, dtype=np.float64)
    assert mean.shape == m2.shape == std.shape == (n_test,)
    assert np.isfinite(mean).all() and np.isfinite(std).all() and (std >= 0).all()
    np.testing.assert_allclose(m2, mean, rtol=1e-9, atol=1e-12 * float(np.abs(mean).max()))
    np.testing.assert_array_equal(np.asarray(predictor.predict(test), dtype=np.float64), mean)
    rho = spearmanr(mean, y[n_train:]).statistic
    assert rho > min_spearman, f"Spearman {rho:.2f} <= {min_spearman} on a learnable target"
    return predictor, test


def check_save_and_load(predictor: Any, back: Any, archs: list[Any]) -> None:
    """A predictor read back predicts exactly what it predicted before it was saved, std included."""
    for return_std in (False, True):
        want, got = predictor.predict(archs, return_std=return_std), back.predict(archs, return_std=return_std)
        for w, g in zip(want if return_std else [want], got if return_std else [got], strict=True):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


class PredictorContract:
    """The checks every predictor passes; subclass it and define :meth:`make_predictor` (and
    :meth:`save_and_load` for a predictor that is saved). ``space`` is the space the checks draw from."""

    def make_space(self) -> SearchSpace:
        from search_spaces import create_search_space

        return create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16, 24])

    def make_predictor(self, space: SearchSpace) -> Any:
        raise NotImplementedError("a contract test case names its predictor: define make_predictor(space)")

    def save_and_load(self, predictor: Any, path: Path) -> Any:
        """The predictor written under ``path`` and read back; a predictor that is not saved leaves it undefined."""
        raise NotImplementedError

    def test_fit_predict(self) -> None:
        space = self.make_space()
        check_predictor(self.make_predictor(space), space)

    def test_save_and_load(self, tmp_path: Path) -> None:
        if type(self).save_and_load is PredictorContract.save_and_load:
            pytest.skip(f"{type(self).__name__} saves no predictor (no save_and_load)")
        space = self.make_space()
        predictor, test = check_predictor(self.make_predictor(space), space)
        check_save_and_load(predictor, self.save_and_load(predictor, tmp_path), test)
