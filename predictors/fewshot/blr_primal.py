"""Bayesian linear regression over scaled feature blocks in primal (weight-space) form.

The same model as the dual form of :mod:`predictors.fewshot.blr` - target ``z = Phi w + noise``, prior
``w ~ N(0, I)`` on the features scaled by their block's prior std (``Phi = X diag(s)``, ``X`` the blocks
centred on the train mean) - but worked through the ``d x d`` matrix ``M = sigma^2 I + Phi^T Phi`` instead of
the ``n x n`` kernel ``K + sigma^2 I = Phi Phi^T + sigma^2 I`` (Woodbury / Sylvester):

* posterior mean weights ``w = M^-1 Phi^T z``, dual weights ``alpha = (z - Phi w) / sigma^2``,
* ``log det(K + sigma^2 I) = (n - d) log sigma^2 + log det M``,
* predictive variance ``sigma^2 (phi_q^T M^-1 phi_q + 1)``,
* ``diag (K + sigma^2 I)^-1 = (1 - h) / sigma^2`` with leverages ``h_i = phi_i^T M^-1 phi_i``.

A block whose scale is 0 keeps its columns with weight 0 (``M`` is then ``sigma^2`` on them, which the
``(n - d)`` term cancels), so every configuration has the same ``d`` and the factorisations batch.
Per configuration O(d^3) for the posterior and O(n d^2) for leave-one-out, against O(n^3) in dual form:
the cheaper path whenever the total feature width ``d`` is below the number of measurements ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular

BLOCKS = ("src", "proj", "pmean", "enc", "phys")


@dataclass
class PrimalFeats:
    """Centred train and query features of the blocks (columns in :data:`BLOCKS` order) and each column's
    block position in :data:`BLOCKS` - the primal counterpart of the dual form's per-block Gram matrices."""

    x: np.ndarray  # train rows x d, centred on the train mean
    xq: np.ndarray  # query rows x d, centred on the train mean
    block: np.ndarray  # d: index into BLOCKS of each column


@dataclass
class PrimalFactor:
    """Cholesky factors of ``M`` of a batch of configurations, with what :func:`loo` needs besides."""

    chol: np.ndarray  # C x d x d, lower
    scale: np.ndarray  # C x d, prior std of each column
    noise: np.ndarray  # C
    x: np.ndarray  # n x d, centred train features

    def __len__(self) -> int:
        return len(self.chol)

    def __getitem__(self, k: int) -> PrimalFactor:
        return PrimalFactor(self.chol[k : k + 1], self.scale[k : k + 1], self.noise[k : k + 1], self.x)


def width(train: dict[str, np.ndarray]) -> int:
    """Total feature width ``d`` of the blocks (the primal form's matrix size)."""
    return int(sum(b.shape[1] for n, b in train.items() if n in BLOCKS))


def feats_between(train: dict[str, np.ndarray], query: dict[str, np.ndarray]) -> PrimalFeats:
    """Train and query blocks centred on the train mean, exactly as the dual form's ``grams_between``."""
    names = [nm for nm in BLOCKS if nm in train]
    n, q = len(next(iter(train.values()))), len(next(iter(query.values())))
    xs, xqs, block = [np.empty((n, 0))], [np.empty((q, 0))], [np.empty(0, dtype=np.int64)]
    for nm in names:
        m = train[nm].mean(0)
        xs.append(train[nm] - m)
        xqs.append(query[nm] - m)
        block.append(np.full(train[nm].shape[1], BLOCKS.index(nm), dtype=np.int64))
    return PrimalFeats(np.hstack(xs), np.hstack(xqs), np.concatenate(block))


def batch_posterior(feats: PrimalFeats, scales: np.ndarray, noises: np.ndarray, z: np.ndarray):
    """As the dual form's ``batch_posterior``: posterior mean at the query rows (C, q), the factors (a
    :class:`PrimalFactor`), the dual weights (C, n) and log evidence (C,)."""
    x, n, d = feats.x, len(z), feats.x.shape[1]
    s = np.asarray(scales, dtype=np.float64)[:, feats.block]  # C x d
    s2n = np.asarray(noises, dtype=np.float64) ** 2
    gram, xz = x.T @ x, x.T @ z
    m = s[:, :, None] * gram[None] * s[:, None, :]
    m[:, np.arange(d), np.arange(d)] += s2n[:, None]
    chol = np.linalg.cholesky(m)
    w = np.stack([cho_solve((c, True), si * xz) for c, si in zip(chol, s, strict=True)]) * s  # C x d, unscaled
    resid = z[None, :] - w @ x.T  # C x n
    alpha = resid / s2n[:, None]
    log_det = (n - d) * np.log(s2n) + 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(1)
    log_ev = -0.5 * alpha @ z - 0.5 * log_det - 0.5 * n * np.log(2 * np.pi)
    mean = w @ feats.xq.T
    return mean, PrimalFactor(chol, s, np.sqrt(s2n), x), alpha, log_ev


def query_var(feats: PrimalFeats, scales: np.ndarray, noise: float, factor: PrimalFactor) -> np.ndarray:
    """Predictive variance (standardised units) of one configuration at the query rows."""
    s = np.asarray(scales, dtype=np.float64)[feats.block]
    v = solve_triangular(factor.chol[0], (feats.xq * s).T, lower=True)
    return noise**2 * ((v**2).sum(0) + 1.0)


def leverage(factor: PrimalFactor) -> np.ndarray:
    """``h_i = phi_i^T M^-1 phi_i`` of every training row under every configuration (C, n)."""
    return np.stack([(solve_triangular(c, (factor.x * si).T, lower=True) ** 2).sum(0)
                     for c, si in zip(factor.chol, factor.scale, strict=True)])


def loo(factor: PrimalFactor, alpha: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out predictive mean and variance (C, n each), as the dual form's ``loo``:
    ``z - r / (1 - h)`` and ``sigma^2 / (1 - h)``, ``r = sigma^2 alpha`` the training residuals."""
    s2n = factor.noise[:, None] ** 2
    keep = 1.0 - leverage(factor)
    return z - alpha * s2n / keep, s2n / keep
