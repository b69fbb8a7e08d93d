"""The one model face beyond the feature regressors: the LUT + residual latency model (std, built from a LUT
file as config gives it) and one "not fitted" error type for every model a stage or strategy uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from predictors import (
    ArchPredictor,
    BayesLinearPredictor,
    EnsembleRegressor,
    GPPredictor,
    NotFittedError,
    SpaceFeatures,
)
from predictors.lut_residual import LUTResidualPredictor
from search_spaces import create_search_space

LUT = Path(__file__).resolve().parents[2] / "latency_luts" / "data" / "ofa_mbv3_imagenet_ort_cpu_1thread.json"


@pytest.fixture(scope="module")
def space():  # noqa: ANN201
    return create_search_space("ofa_mbv3", setting="imagenet")


def test_lut_residual_from_a_lut_file_has_a_calibrated_std(space) -> None:  # noqa: ANN001
    """Built from the shipped LUT's path (what a config node holds); with no fit it is the plain LUT sum with
    std 0; fitted on latencies that are the LUT sum times a fusion factor with 5% log-normal noise, it learns
    the factor and its std is that noise (about 5% of the mean)."""
    archs = space.sample_many(80, np.random.default_rng(0))
    model = LUTResidualPredictor(str(LUT), space)
    lut_sum = model.estimate_lut_sum(archs)
    mean, std = model.predict(archs, return_std=True)
    np.testing.assert_array_equal(mean, lut_sum)
    assert (std == 0).all()
    y = 0.7 * lut_sum * np.exp(np.random.default_rng(1).normal(0.0, 0.05, len(archs)))
    assert model.fit(archs[:60], y[:60]) is model
    mean, std = model.predict(archs[60:], return_std=True)
    np.testing.assert_array_equal(model.predict(archs[60:]), mean)
    assert np.median(np.abs(mean / (0.7 * lut_sum[60:]) - 1)) < 0.02
    assert 0.035 < float(np.median(std / mean)) < 0.07
    assert spearmanr(mean, y[60:]).statistic > 0.9
    with pytest.raises(ValueError, match="alphas=\\[\\] is invalid"):
        LUTResidualPredictor(str(LUT), space, alphas=[])


def test_lut_residual_never_orders_subnets_against_their_block_times(space) -> None:  # noqa: ANN001
    """Four timings that happen to fall as the LUT sum rises (noise on tiny subnets) would fit a negative
    exponent and order every subnet backwards; the fit keeps the LUT's order and learns only its scale."""
    archs = space.sample_many(40, np.random.default_rng(2))
    model = LUTResidualPredictor(str(LUT), space)
    lut_sum = model.estimate_lut_sum(archs)
    fit = np.argsort(lut_sum)[[0, 13, 26, 39]]
    y = 2.0 / lut_sum[fit]  # falling with the LUT sum
    model.fit([archs[i] for i in fit], y)
    assert model.model_.coef_[0] == 1.0
    assert spearmanr(model.predict(archs), lut_sum).statistic == pytest.approx(1.0)
    np.testing.assert_allclose(np.exp(np.mean(np.log(model.predict([archs[i] for i in fit]) / y))), 1.0, rtol=1e-9)


def test_every_model_raises_one_not_fitted_error(space) -> None:  # noqa: ANN001
    archs = space.sample_many(3, np.random.default_rng(0))
    feats = SpaceFeatures("onehot+cost", space)
    for model in (GPPredictor(feats), BayesLinearPredictor(feats), ArchPredictor(EnsembleRegressor(), space)):
        with pytest.raises(NotFittedError, match="is not fitted; call fit"):
            model.predict(archs)
    with pytest.raises(ValueError, match="featurizer kind='foo' is invalid"):
        SpaceFeatures("foo")
    with pytest.raises(ValueError, match="SpaceFeatures has no space"):
        SpaceFeatures("surrogate")(archs)


def test_gp_mean_without_std_equals_mean_with_std(space) -> None:  # noqa: ANN001
    """The cheap mean-only path (screening) and the full prediction agree."""
    archs = space.sample_many(40, np.random.default_rng(3))
    y = np.array([space.macs(a) for a in archs]) / 1e6
    gp = GPPredictor(SpaceFeatures("surrogate", space), kernel="exponential", scale="median", log_target=True,
                     shift=0.5).fit(archs[:30], y[:30])
    mean, std = gp.predict(archs[30:], return_std=True)
    np.testing.assert_allclose(gp.predict(archs[30:]), mean, rtol=1e-12)
    assert (std > 0).all() and spearmanr(mean, y[30:]).statistic > 0.8
