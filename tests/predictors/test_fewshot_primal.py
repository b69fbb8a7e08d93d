"""The few-shot predictor's Bayesian linear regression in primal form (d x d) equals the dual form (n x n):
posterior mean, predictive variance, log evidence and leave-one-out, and the fitted predictor's predictions."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from predictors.fewshot import FewShotLatencyPredictor, blr, blr_primal

WIDTHS = {"src": 6, "proj": 6, "pmean": 1, "enc": 30, "phys": 4}  # d = 47, NB201-like
RTOL = 1e-8


def _blocks(n: int, q: int, seed: int):
    rng = np.random.default_rng(seed)
    train, query = {}, {}
    for name, w in WIDTHS.items():
        b = rng.normal(size=(n + q, w)) / np.sqrt(w) + rng.normal(size=w)  # off-centre: the centring matters
        train[name], query[name] = b[:n], b[n:]
    z = rng.normal(size=n)
    return train, query, (z - z.mean()) / z.std()


def _configs() -> tuple[np.ndarray, np.ndarray]:
    grid = [g for g in itertools.product((0, 0.3, 1), (0, 1, 10), (0, 3), (0, 0.3, 1), (0, 1, 3)) if any(g)]
    scales = np.repeat(np.array(grid, dtype=np.float64), 3, axis=0)
    return scales, np.tile([0.1, 0.3, 0.6], len(grid))


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Equal to ``RTOL`` relative to each configuration's largest value (entries near 0 have no relative error)."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    scale = np.abs(b).max(axis=1, keepdims=True)
    assert np.all(np.abs(a - b) <= RTOL * scale), float((np.abs(a - b) / scale).max())


@pytest.mark.parametrize("n", [300, 20])  # n > d and n < d
def test_primal_form_equals_dual_form(n: int) -> None:
    train, query, z = _blocks(n, 40, seed=n)
    scales, noises = _configs()
    blr._FORM = "dual"
    try:
        dual = blr.grams_between(train, query)
    finally:
        blr._FORM = "auto"
    feats = blr_primal.feats_between(train, query)
    assert isinstance(dual, dict)
    mean_d, chol, alpha_d, ev_d = blr.batch_posterior(dual, scales, noises, z)
    mean_p, factor, alpha_p, ev_p = blr.batch_posterior(feats, scales, noises, z)
    _close(mean_p, mean_d)
    _close(alpha_p, alpha_d)
    assert np.allclose(ev_p, ev_d, rtol=RTOL, atol=0)
    for got, want in zip(blr.loo(factor, alpha_p, z), blr.loo(chol, alpha_d, z), strict=True):
        _close(got, want)
    for k in range(0, len(scales), 7):
        var_p = blr.query_var(feats, scales[k], noises[k], factor[k])
        var_d = blr.query_var(dual, scales[k], noises[k], chol[k])
        assert np.allclose(var_p, var_d, rtol=RTOL, atol=0)


def test_the_cheaper_form_is_chosen_by_width() -> None:
    train, query, _ = _blocks(300, 5, seed=0)
    assert isinstance(blr.grams_between(train, query), blr_primal.PrimalFeats)  # d = 47 < n = 300
    small = {nm: b[:30] for nm, b in train.items()}
    assert isinstance(blr.grams_between(small, query), dict)  # d = 47 > n = 30


def _source(n_archs: int = 400, n_dev: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    archs = [f"a{i}" for i in range(n_archs)]
    enc = (rng.random((n_archs, 12)) < 0.4).astype(np.float64)
    costs = rng.gamma(2.0, 1.0, size=(12, n_dev + 1))
    lat = np.exp(0.1 * enc @ costs + 0.05 * rng.normal(size=(n_archs, n_dev + 1)))
    cols = [f"dev{j}" for j in range(n_dev)]
    return (pd.DataFrame(lat[:, :n_dev], index=archs, columns=cols), pd.DataFrame(enc, index=archs),
            archs, lat[:, n_dev])


@pytest.mark.parametrize("n", [120, 15])  # d = 4 + 4 + 1 + 12 = 21: primal by default at 120, dual at 15
def test_fitted_predictor_is_the_same_in_both_forms(n: int) -> None:
    table, enc, archs, target = _source()
    model = FewShotLatencyPredictor(
        src_scales=(0.0, 1.0), proj_scales=(0.0, 1.0, 10.0), pmean_scales=(0.0, 3.0), enc_scales=(0.0, 0.3),
        noises=(0.1, 0.3), prior_strengths=(0.0, 100.0), meta_tasks=1, meta_budget=10, meta_pool=200,
        meta_query=100, impute="none", views=("asis",),
    ).meta_fit(table, enc)
    train, query = archs[:n], archs[200:]
    out = {}
    for form in ("dual", "primal"):
        blr._FORM = form
        try:
            model.fit(train, target[:n])
            out[form] = (model.active_.copy(), model.weights_.copy(), *model.predict(query, return_std=True))
        finally:
            blr._FORM = "auto"
    (act_d, w_d, mean_d, sd_d), (act_p, w_p, mean_p, sd_p) = out["dual"], out["primal"]
    assert np.array_equal(act_d, act_p)
    assert np.allclose(w_p, w_d, rtol=1e-6, atol=1e-12)  # exp of evidences of O(n): their rounding, magnified
    assert np.allclose(mean_p, mean_d, rtol=RTOL, atol=0)
    assert np.allclose(sd_p, sd_d, rtol=RTOL, atol=0)
