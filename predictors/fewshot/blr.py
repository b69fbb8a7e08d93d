"""Bayesian linear regression over scaled feature blocks, shared by the few-shot predictor.

Dual form here (``n x n`` kernels); where the total feature width is below the number of training rows,
:func:`grams_between` hands back the centred features instead and every function below runs the exact primal
form of :mod:`predictors.fewshot.blr_primal` (``d x d`` matrices; same results to rounding).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.linalg.lapack import dtrtri

from predictors.fewshot import blr_primal as _primal
from predictors.fewshot.blr_primal import BLOCKS
from predictors.fewshot.common import kmeans_pick

_FORM = "auto"  # "auto": primal where the feature width < train rows; "dual"/"primal" force one (tests)


def grams(blocks: dict[str, np.ndarray], tr: np.ndarray, query: np.ndarray) -> dict[str, tuple] | _primal.PrimalFeats:
    """Per-block linear-kernel pieces (train x train, query x train, query diag), centred on the train mean."""
    return grams_between({n: b[tr] for n, b in blocks.items()}, {n: b[query] for n, b in blocks.items()})


def grams_between(
    train: dict[str, np.ndarray], query: dict[str, np.ndarray],
) -> dict[str, tuple] | _primal.PrimalFeats:
    """:func:`grams` of given train rows and query rows (same block names); the centred features
    (:class:`~predictors.fewshot.blr_primal.PrimalFeats`) where the primal form is cheaper (see ``_FORM``)."""
    n = len(next(iter(train.values())))
    if _FORM == "primal" or (_FORM == "auto" and _primal.width(train) < n):
        return _primal.feats_between(train, query)
    out = {}
    for name, b_tr in train.items():
        m = b_tr.mean(0)
        btr, bq = b_tr - m, query[name] - m
        out[name] = (btr @ btr.T, bq @ btr.T, (bq**2).sum(1))
    return out

def batch_posterior(grams: dict[str, tuple], scales: np.ndarray, noises: np.ndarray, z: np.ndarray):
    """BLR in dual form for many configurations at once.

    ``scales`` (C, len(BLOCKS)), ``noises`` (C,); returns the posterior mean of the standardised target at
    the query rows (C, q), the Cholesky factors (C, n, n), the dual weights (C, n) and log evidence (C,).
    """
    if isinstance(grams, _primal.PrimalFeats):
        return _primal.batch_posterior(grams, scales, noises, z)
    names = [nm for nm in BLOCKS if nm in grams]
    a2 = scales[:, [BLOCKS.index(nm) for nm in names]] ** 2
    n = len(z)
    k_tr = np.einsum("cb,bij->cij", a2, np.stack([grams[nm][0] for nm in names]))
    k_tr += (noises**2)[:, None, None] * np.eye(n)
    chol = np.linalg.cholesky(k_tr)
    alpha = np.stack([cho_solve((c, True), z) for c in chol])  # two triangular solves per configuration
    mean = sum(grams[nm][1] @ (a2[:, i : i + 1] * alpha).T for i, nm in enumerate(names)).T
    log_ev = -0.5 * alpha @ z - np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1) - 0.5 * n * np.log(2 * np.pi)
    return mean, chol, alpha, log_ev

def query_var(grams: dict[str, tuple], scales: np.ndarray, noise: float, chol: np.ndarray) -> np.ndarray:
    """Predictive variance (standardised units) of one configuration at the query rows."""
    if isinstance(grams, _primal.PrimalFeats):
        return _primal.query_var(grams, scales, noise, chol)
    names = [nm for nm in BLOCKS if nm in grams]
    k_q = sum(scales[BLOCKS.index(nm)] ** 2 * grams[nm][1] for nm in names)
    k_qq = sum(scales[BLOCKS.index(nm)] ** 2 * grams[nm][2] for nm in names)
    v = solve_triangular(chol, np.asarray(k_q).T, lower=True)
    return np.maximum(k_qq - (v**2).sum(0), 0.0) + noise**2

def loo(chol: np.ndarray, alpha: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out predictive mean and variance (standardised target units) of every training point under
    every configuration (C, n each), from the Cholesky factors and dual weights of :func:`batch_posterior`."""
    if isinstance(chol, _primal.PrimalFactor):
        return _primal.loo(chol, alpha, z)
    linv = np.stack([dtrtri(c, lower=1)[0] for c in chol])  # triangular inverses
    kinv_diag = (linv**2).sum(1)  # diag of K^-1
    return z - alpha / kinv_diag, 1.0 / kinv_diag


def point_jacobian(y: np.ndarray, transform: str) -> np.ndarray:
    """Per-measurement log |d z / d y| (its sum is :func:`jacobian`)."""
    t = np.log(y) if transform == "log" else y / y.mean()
    sd = float(t.std()) or 1.0
    return -np.log(y * sd) if transform == "log" else np.full(len(y), -np.log(y.mean() * sd))


def jacobian(y: np.ndarray, transform: str) -> float:
    """log |d z / d y| summed over measurements, so evidences of raw and log models are comparable."""
    t = np.log(y) if transform == "log" else y / y.mean()
    sd = float(t.std()) or 1.0
    per = -np.log(y).sum() if transform == "log" else -len(y) * np.log(y.mean())
    return float(per - len(y) * np.log(sd))

def target(y: np.ndarray, transform: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    ref = float(y.mean())
    t = np.log(y) if transform == "log" else y / ref
    mu, sd = float(t.mean()), float(t.std()) or 1.0
    return (t - mu) / sd, (ref, mu, sd)

def untarget(f: np.ndarray, var: np.ndarray, transform: str, stats: tuple[float, float, float]):
    ref, mu, sd = stats
    t = mu + sd * f
    if transform == "log":
        lat = np.exp(t)
        return lat, lat * sd * np.sqrt(var)
    return np.maximum(t * ref, 1e-9), ref * sd * np.sqrt(var)


def mixture_weights(ev: np.ndarray, meta_scores: np.ndarray, strengths, by_evidence: bool = False) -> np.ndarray:  # noqa: ANN001
    """Model-average weights of the configurations: ``exp(ev + kappa * meta_scores)`` normalised, averaged over
    the prior strengths ``strengths`` (one strength: that prior alone) - with equal weight, or, ``by_evidence``,
    with weight proportional to each strength's marginal likelihood of the measurements,
    ``sum_c exp(ev_c) * prior_kappa(c)`` (type-II maximum likelihood over the prior's strength: a target the
    meta-learned prior explains keeps it, one it does not falls back to the flat prior, kappa = 0)."""
    per, log_marg = [], []
    for kappa in strengths:
        log_prior = float(kappa) * meta_scores
        log_prior = log_prior - _logsumexp(log_prior)
        logw = ev + log_prior
        log_marg.append(_logsumexp(logw))
        w = np.exp(logw - logw.max())
        per.append(w / w.sum())
    lm = np.asarray(log_marg)
    mix = np.exp(lm - lm.max()) if by_evidence else np.ones(len(per))
    return np.asarray(mix / mix.sum()) @ np.stack(per)


def _logsumexp(a: np.ndarray) -> float:
    m = float(np.max(a))
    return m + float(np.log(np.exp(a - m).sum()))


# The share of the meta-learned prior's leave-one-out error another prior must remove before it replaces it.
# 0.2 until 2026-12-04: on 20 tied whole-millisecond timings (a coarse phone) a prior-free model cleared 20%
# and then overfitted them; a device whose costs invert the sources' (tests/predictors/
# test_fewshot_fallback.py) still clears half. Settled on validation devices (nb201 families left out, fbnet's
# meta-valid devices, nn-Meter's devices, whole device types held out), never on the meta-test devices.
LOO_MIN_GAIN = 0.5


def check_prior_mix(ev: np.ndarray, loo_pred: np.ndarray, y: np.ndarray, meta_scores: np.ndarray,
                    mixes, base_mix: int, by_evidence: bool = False) -> tuple[int, np.ndarray]:  # noqa: ANN001
    """Which of the candidate priors ``mixes`` (each a list of strengths, see :func:`mixture_weights`) the model
    average uses: ``mixes[base_mix]``, unless another predicts the measurements ``y`` clearly better
    leave-one-out (``loo_pred``: configs x measurements) - by 2 standard errors and by at least
    ``LOO_MIN_GAIN`` (half) of the base's mean squared log error (``by_evidence``: see :func:`mixture_weights`).
    Returns the index and the (thresholded) mean gain of every candidate."""
    err = np.array([np.log(mixture_weights(ev, meta_scores, mix, by_evidence) @ loo_pred / y) ** 2 for mix in mixes])
    base = err[base_mix]
    gain = base - err
    se = gain.std(1, ddof=1) / np.sqrt(len(y))
    clear = (gain.mean(1) > 2 * se) & (gain.mean(1) > LOO_MIN_GAIN * base.mean())
    gain = np.where(clear, gain.mean(1), 0.0)
    return (int(np.argmax(gain)) if gain.max() > 0 else base_mix), gain


def pick(
    blocks: dict[str, np.ndarray], scales: tuple[float, ...], rule: str, rows: np.ndarray, budget: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Positions in ``rows`` of ``budget`` archs to measure, in the feature geometry of one configuration
    (``scales`` per block of ``BLOCKS``): ``random``; ``kmeans`` medoids; ``variance`` (greedy max prior
    variance); ``mixed`` (half by max variance, the rest at random, so that part of the measurements is
    representative of the candidates)."""
    if rule == "random":
        return rng.choice(len(rows), size=budget, replace=False)
    z = np.hstack([a * blocks[n][rows] for n, a in zip(BLOCKS, scales, strict=True) if a and n in blocks])
    z = z - z.mean(0)
    if rule == "kmeans":
        return kmeans_pick(z, budget, rng)
    if rule == "mixed":
        first = _max_variance(z, budget // 2, rng)
        rest = rng.choice(np.setdiff1d(np.arange(len(rows)), first), size=budget - len(first), replace=False)
        return np.concatenate([first, rest])
    return _max_variance(z, budget, rng)


def _max_variance(z: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy max prior variance (pivoted Cholesky on the feature rows ``z``)."""
    chosen: list[int] = []
    resid = z.copy()
    norms = (resid**2).sum(1) + 1e-12 * rng.random(len(z))
    for _ in range(budget):
        i = int(np.argmax(norms))
        chosen.append(i)
        v = resid[i] / np.sqrt(max(norms[i], 1e-12))
        resid -= np.outer(resid @ v, v)
        norms = (resid**2).sum(1)
        norms[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)
