"""Meta-learned few-shot latency predictor (beats HELP on HELP's benchmark; see docs/results.md).

Idea: on a new device, latency is very well explained by a linear combination of
(a) the latencies of the same architecture on the source (meta-train) devices and
(b) additive per-op costs of the architecture encoding, whose plausible directions are the per-op cost
    vectors fitted on the source devices.
With only ~20 target measurements everything hinges on the prior, so the predictor is Bayesian linear
regression with up to five feature blocks, each with its own prior scale:

* ``src``  - standardised source-device latencies of the arch,
* ``proj`` - the source devices' latencies *as explained by an additive per-op model* (encoding @ op costs
  fitted on all source rows): a prior that the target's op costs are a combination of the sources',
* ``pmean`` - the average of the ``proj`` columns (a hierarchical prior: target ~ typical source),
* ``enc``  - the raw architecture encoding (isotropic prior on per-op costs, for what the sources miss),
* ``phys`` - optional analytic cost features (MACs, activations per stage), a low-dimensional prior for
  devices whose latency follows the compute/memory volume.

``meta_fit`` simulates the few-shot task on every source device in turn, holding out its whole hardware
family (``1080ti_1/32/256`` go together) from the features: random pool, ``meta_budget`` measurements,
Spearman on held-out archs. This scores every configuration (block scales, noise, target transform raw/log)
and picks the measurement-selection rule among ``selections`` (random, k-means medoids, greedy max prior
variance = pivoted Cholesky in feature space, or ``mixed``: half by max variance, half at random - the default,
in the feature geometry of the best log-latency configuration) and, with ``prior_mix="choose"``,
the strength ``kappa`` of the meta-learned prior over configurations (one-standard-error rule: the weakest
prior within one paired SE of the best). Max variance alone bets the whole budget on the prior's geometry: on
devices of other measurement campaigns it picked architectures the prior misjudged; the random half keeps the
measurements, and so the evidence that weighs the models, representative of the candidates (docs/benchmarks/latency_fewshot.md).

``adapt`` computes the closed-form posterior of *every* configuration and averages them (Bayesian model
averaging) with weights ``marginal likelihood of the measurements x exp(kappa * meta score)``, by default
averaged over every candidate ``kappa`` (``prior_mix="average"``); so a noisy target falls back to heavily
regularised models and an additive one to per-op costs. Every configuration also exists in a second *view*
where the space has dead code (NB201: :mod:`predictors.fewshot.views`): the architecture as a compiler runs it.
Both views share the meta-learned prior, so the target's measurements alone decide whether the device runs
the network as written (PyTorch) or without its dead operations (exporters, inference engines).
``predict(..., return_std=True)`` returns the mixture's predictive std (ms).

Architectures absent from the source table (e.g. the search's proposals): given a ``featurizer`` at
``meta_fit`` (e.g. :class:`predictors.arch_features.SpaceFeaturizer`), their source latencies are imputed
from their features by per-source-device regressors (:mod:`predictors.fewshot.impute`, held as the fitted
``outside_``); every other block is exact. Their predictive std adds the held-out imputation error propagated
through each configuration's weights on the ``src`` block. The ridge baseline lives in
:mod:`predictors.fewshot.baseline`; the linear algebra in :mod:`predictors.fewshot.blr`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError

from predictors.fewshot import blr as _blr
from predictors.fewshot.blocks import norm_blocks, table_blocks
from predictors.fewshot.common import (
    arch_key,
    load_state,
    save_state,
    validate_budget,
    validate_measurements,
)
from predictors.fewshot.impute import OutsideTable
from predictors.fewshot.meta import check_params, device_family
from predictors.fewshot.metafit import choose, simulate_tasks, source_inputs
from predictors.fewshot.views import VIEWS, view_keys

__all__ = ["FewShotLatencyPredictor", "device_family"]


class FewShotLatencyPredictor:
    """Bayesian linear latency predictor with a meta-learned prior; adapts from a handful of measurements.

    Args:
        src_scales, proj_scales, pmean_scales, enc_scales, phys_scales: candidate prior std of each feature
            block (0 disables a block).
        noises: candidate noise std (in units of the target's std over the measured archs); 0.6 lets the
            evidence regularise a noisy device (HELP's phones, timings with 25% noise) harder (docs/benchmarks/latency_fewshot.md).
        transforms: candidate target transforms, ``"raw"`` (ms relative to the mean) and/or ``"log"``.
        selections: candidate selection rules for :meth:`select`: ``"random"``, ``"kmeans"``, ``"variance"``,
            ``"mixed"`` (half max variance, half random); :meth:`meta_fit` picks one when given several (the
            meta-learned choice flipped between meta-training seeds). Default ``mixed``: on devices unlike the
            sources max variance alone lost to ridge, random alone lost on HELP's noisy phones (docs/benchmarks/latency_fewshot.md).
        prior_strengths: candidate weights kappa of the meta-learned log prior ``kappa * meta_score`` over
            configurations (meta-learned too; 0 = pure marginal-likelihood weighting).
        meta_tasks: simulated few-shot tasks per held-out source device.
        meta_budget, meta_pool, meta_query: budget, pool size and query size of those tasks.
        feature_alpha: ridge penalty of the per-op cost fit on each source device.
        impute: how :meth:`meta_fit` learns to impute the source latencies of architectures absent from the
            table (only with a ``featurizer``): ``"boost"`` (ridge + boosted trees on its residual, per device
            where that helps), ``"ridge"`` (additive per-op model) or ``"none"`` (only table archs can be
            scored).
        prior_check: ``"loo"``: :meth:`adapt` re-chooses the prior strength among ``prior_strengths`` by the
            leave-one-out predictive density of the target measurements under the model average, so a target
            unlike the sources (a CPU after GPU meta-training) can overrule the meta-learned prior;
            ``"none"``: always the meta-learned strength.
        leave_out: ``"family"`` holds out every source device of the held-out device's family (same name up
            to a trailing ``_<batch>``, e.g. ``1080ti_1``/``1080ti_32``) when simulating a new device, so the
            meta-learned prior is judged on genuinely new hardware; ``"device"`` holds out one device only.
        task_trim: what the simulated tasks trim to the held-out device's 10th-90th latency percentile:
            ``"pool+query"`` (HELP's protocol), ``"query"`` (the pool is whole, as on a new device whose
            latencies nobody knows yet) or ``"none"``.
        prior_mix: how the meta-learned prior enters the model average: ``"average"`` mixes the model averages
            of every strength in ``prior_strengths`` with equal weight, so no single strength - the choice that
            moved most between meta-training seeds - decides; ``"evidence"`` weighs them by their marginal
            likelihood of the target's measurements (type-II ML; validated no better than ``"average"``);
            ``"choose"`` uses the one strength :meth:`meta_fit` picks (``prior_strength_``, checked by
            ``prior_check``).
        selection_transform: the target transform of the feature geometry a non-random rule selects in
            (``geometry_``: the best configuration under random picks among those of this transform, or among
            all when ``transforms`` lacks it): ``"log"``, ``"raw"`` or ``"any"``. The best raw and log
            configurations score alike on simulated tasks (4th digit), so with ``"any"`` the geometry flipped
            between meta-training seeds; on held-out devices log-geometry picks scored higher (docs/benchmarks/latency_fewshot.md).
        views: ``("asis", "live")``: also every configuration on the archs as a compiler runs them (dead
            operations removed, :mod:`predictors.fewshot.views`), where that changes some arch of the table and
            those archs can be scored; ``views_`` holds the views kept. ``("asis",)``: as written only.
        random_state: seed of the meta-training simulation.
    """

    def __init__(
        self,
        *,
        src_scales: Sequence[float] = (0.0, 0.3, 1.0),
        proj_scales: Sequence[float] = (0.0, 0.3, 1.0, 3.0, 10.0),
        pmean_scales: Sequence[float] = (0.0, 3.0),
        enc_scales: Sequence[float] = (0.0, 0.3, 1.0),
        phys_scales: Sequence[float] = (0.0, 0.3, 1.0, 3.0),
        noises: Sequence[float] = (0.1, 0.3, 0.6),
        transforms: Sequence[str] = ("raw", "log"),
        selections: Sequence[str] = ("mixed",),
        prior_strengths: Sequence[float] = (0.0, 30.0, 100.0, 300.0, 1000.0),
        meta_tasks: int = 4,
        meta_budget: int = 20,
        meta_pool: int = 900,
        meta_query: int = 1000,
        feature_alpha: float = 1e-2,
        leave_out: str = "family",
        impute: str = "boost",
        prior_check: str = "loo",
        task_trim: str = "pool+query",
        prior_mix: str = "average",
        selection_transform: str = "log",
        views: Sequence[str] = VIEWS,
        random_state: int = 0,
    ) -> None:
        self.src_scales = src_scales
        self.proj_scales = proj_scales
        self.pmean_scales = pmean_scales
        self.enc_scales = enc_scales
        self.phys_scales = phys_scales
        self.noises = noises
        self.transforms = transforms
        self.selections = selections
        self.prior_strengths = prior_strengths
        self.meta_tasks = meta_tasks
        self.meta_budget = meta_budget
        self.meta_pool = meta_pool
        self.meta_query = meta_query
        self.feature_alpha = feature_alpha
        self.leave_out = leave_out
        self.impute = impute
        self.prior_check = prior_check
        self.task_trim = task_trim
        self.prior_mix = prior_mix
        self.selection_transform = selection_transform
        self.views = views
        self.random_state = random_state
        check_params(self)  # a bad setting fails at construction (the calibrate stage dry-builds from config)

    # ------------------------------------------------------------------ features
    def _check_params(self) -> None:
        check_params(self)

    def _configs(self, names: Sequence[str]) -> list[tuple[str, tuple[float, ...], float]]:
        has_enc = "enc" in names
        grid = itertools.product(
            self.transforms,
            self.src_scales,
            self.proj_scales if has_enc else (0.0,),
            self.pmean_scales if has_enc else (0.0,),
            self.enc_scales if has_enc else (0.0,),
            self.phys_scales if "phys" in names else (0.0,),
            self.noises,
        )
        return [(g[0], tuple(g[1:-1]), g[-1]) for g in grid if any(g[1:-1])]

    # ------------------------------------------------------------------ public API
    def meta_fit(self, source_table: pd.DataFrame, arch_features: Any = None,
                 featurizer: Callable[[list[str]], Any] | None = None) -> FewShotLatencyPredictor:
        """Learn the prior from an archs x source-devices latency table.

        ``arch_features`` (rows aligned with ``source_table``, DataFrames are aligned by arch string): either
        one matrix (the architecture encoding, block ``enc``) or a mapping with keys ``"enc"`` and/or
        ``"phys"`` (analytic cost features). Without it only the source latencies are used.

        ``featurizer`` (a picklable callable: list of canonical arch strings -> features in the same form)
        lets :meth:`select`, :meth:`adapt` and :meth:`predict` take architectures absent from the table:
        their source latencies are imputed from their features (see ``impute``) and the imputation error
        widens ``return_std``. Without ``arch_features`` it computes them for the table too.
        """
        self._check_params()
        table, feats = source_inputs(source_table, arch_features, featurizer, self.meta_budget)
        lat = table.to_numpy()
        raw, stats = {}, {}
        for t in self.transforms:
            raw[t], stats[t] = table_blocks(lat, feats, t, self.feature_alpha)
        configs = self._configs(list(feats))
        rng = np.random.default_rng(self.random_state)
        tasks = simulate_tasks(self, table, raw, rng)
        self._set_configs(configs)
        rule, kappa, per_rule, table_scores, geometry = choose(self, tasks, configs, rng)
        self.selection_ = rule
        self.prior_strength_ = kappa
        self.meta_scores_ = per_rule[rule]
        self.meta_table_ = {f"{r}/kappa={'average' if k is None else f'{k:g}'}": float(v.mean())
                            for (r, k), v in table_scores.items()}
        self.geometry_ = geometry
        self.blocks_ = {t: norm_blocks(raw[t]) for t in self.transforms}
        self.source_devices_ = list(table.columns)
        self.index_ = {a: i for i, a in enumerate(table.index)}
        self.block_stats_ = stats
        self.featurizer_ = featurizer
        self.outside_ = OutsideTable(featurizer, self.impute, self.random_state).fit(
            list(table.index), feats, lat, stats, self.blocks_)
        # a second view where it changes some arch and its archs can be scored (views.py): every configuration
        # again on the compiled archs, same meta-learned prior, so only the target's measurements decide
        keys = list(table.index)
        self.views_ = ["asis"] + [v for v in self.views if v != "asis" and (vk := view_keys(keys, v)) != keys
                                  and (self.outside_.imputer_ is not None or set(vk) <= set(keys))]
        self._set_configs([(t if v == "asis" else f"{t}|{v}", sc, nz) for v in self.views_ for t, sc, nz in configs])
        self.meta_scores_ = np.tile(self.meta_scores_, len(self.views_))
        return self

    def _blocks_of(self, archs: Sequence[Any], transforms: Sequence[str] | None = None):
        """Normalised blocks per transform for ``archs`` (table rows where known, imputed source latencies
        otherwise, see ``outside_``) and the mask of imputed archs."""
        keys = [arch_key(a) for a in archs]
        out, absent = {}, np.zeros(len(keys), dtype=bool)
        wanted = list(transforms or np.unique(self.config_transforms_))
        for view in self.views_:
            ts = [t for t in wanted if (t.partition("|")[2] or "asis") == view]
            if not ts:
                continue
            vkeys = view_keys(keys, view)
            rows = np.array([self.index_.get(k, -1) for k in vkeys], dtype=np.int64)
            new = np.flatnonzero(rows < 0)
            absent |= rows < 0
            base = {t: t.partition("|")[0] for t in ts}
            for t in ts:
                out[t] = {n: b[rows] for n, b in self.blocks_[base[t]].items()}
            if len(new):
                imputed = self.outside_.blocks([vkeys[i] for i in new], self.block_stats_, sorted(set(base.values())))
                for t in ts:
                    for n, b in imputed[base[t]].items():
                        out[t][n][new] = b
        return out, absent

    def _set_configs(self, configs: list[tuple[str, tuple[float, ...], float]]) -> None:
        self.configs_ = configs
        self.config_scales_ = np.array([c[1] for c in configs], dtype=np.float64)
        self.config_noises_ = np.array([c[2] for c in configs], dtype=np.float64)
        self.config_transforms_ = np.array([c[0] for c in configs])

    def _all_configs(self, blocks: dict, tr: np.ndarray, y_tr: np.ndarray, query: np.ndarray, which=None):
        """Predicted latency (configs x query) and log evidence of the measurements (configs) per config."""
        which = np.arange(len(self.configs_)) if which is None else np.asarray(which)
        preds = np.empty((len(which), len(query)))
        ev = np.empty(len(which))
        for t in np.unique(self.config_transforms_[which]):
            sel = np.flatnonzero(self.config_transforms_[which] == t)
            idx = which[sel]
            tf = t.partition("|")[0]
            z, stats = _blr.target(y_tr, tf)
            grams = _blr.grams(blocks[t], tr, query)
            f, _, _, log_ev = _blr.batch_posterior(grams, self.config_scales_[idx], self.config_noises_[idx], z)
            preds[sel] = _blr.untarget(f, np.zeros_like(f), tf, stats)[0]
            ev[sel] = log_ev + _blr.jacobian(y_tr, tf)
        return preds, ev

    # ------------------------------------------------------------------ few-shot use
    def _evidence(self, blocks: dict, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log evidence (configs) of the target measurements in latency units (Jacobian included, so raw and
        log models compare) and each configuration's leave-one-out predicted latency (configs x measurements)."""
        ev = np.empty(len(self.configs_))
        loo = np.empty((len(self.configs_), len(y)))
        tr = np.arange(len(y))
        for t in np.unique(self.config_transforms_):
            idx = np.flatnonzero(self.config_transforms_ == t)
            tf = t.partition("|")[0]
            z, stats = _blr.target(y, tf)
            grams = _blr.grams(blocks[t], tr, tr[:1])
            _, chol, alpha, log_ev = _blr.batch_posterior(grams, self.config_scales_[idx], self.config_noises_[idx], z)
            ev[idx] = log_ev + _blr.jacobian(y, tf)
            loo[idx] = _blr.untarget(_blr.loo(chol, alpha, z)[0], 0.0, tf, stats)[0]
        return ev, loo

    def select(self, candidate_archs: Sequence[Any], budget: int, rng: np.random.Generator) -> list[Any]:
        """Choose ``budget`` of ``candidate_archs`` to measure on the target with ``selection_`` (the one rule
        of ``selections``, or the one :meth:`meta_fit` picked among several)."""
        self._require("configs_")
        validate_budget(len(candidate_archs), budget)
        t, scales, _ = self.geometry_
        blocks = self._blocks_of(candidate_archs, [t])[0][t]
        picks = _blr.pick(blocks, scales, self.selection_, np.arange(len(candidate_archs)), budget, rng)
        return [candidate_archs[int(i)] for i in picks]

    def adapt(self, archs: Sequence[Any], latencies: Any) -> FewShotLatencyPredictor:
        """Condition on target-device measurements (ms) of ``archs``.

        Every configuration's posterior is weighted by its marginal likelihood of the measurements times the
        meta-learned prior ``exp(kappa * meta_score)`` (Bayesian model averaging). With ``prior_mix="average"``
        the weights are the mean of those model averages over every ``kappa`` in ``prior_strengths``
        (``kappa_`` is None); with ``"choose"``, ``kappa_`` is the meta-learned ``prior_strength_`` or, with
        ``prior_check="loo"``, the candidate strength under which the model average predicts each measurement
        best from the others.
        """
        self._require("configs_")
        y = validate_measurements(archs, latencies)
        self.train_blocks_, self.train_imputed_ = self._blocks_of(archs)
        self.train_y_ = y
        ev, loo = self._evidence(self.train_blocks_, y)
        # candidate priors: the meta-learned one first (every strength mixed, or the chosen one), then each
        # single strength; prior_check="loo" moves off the first only when another is clearly better
        singles = [[k] for k in self.prior_strengths]
        if self.prior_mix == "choose":
            mixes, base = singles, list(self.prior_strengths).index(self.prior_strength_)
        else:
            mixes, base = [list(self.prior_strengths), *singles], 0
        pick, by_ev = base, self.prior_mix == "evidence"
        if self.prior_check == "loo":
            pick, self.loo_gain_ = _blr.check_prior_mix(ev, loo, y, self.meta_scores_, mixes, base, by_ev)
        self.kappa_ = float(mixes[pick][0]) if len(mixes[pick]) == 1 else None
        w = _blr.mixture_weights(ev, self.meta_scores_, mixes[pick], by_ev)
        self.active_ = np.flatnonzero(w >= 1e-4 * w.max())
        self.weights_ = w[self.active_] / w[self.active_].sum()
        return self

    def fit(self, archs: Sequence[Any], latencies: Any) -> FewShotLatencyPredictor:
        """The face every model of a run shares: :meth:`adapt` (the meta-learned prior stays as it is)."""
        return self.adapt(archs, latencies)

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted target latency (ms) of ``archs``; with ``return_std`` also the predictive std (ms).

        For archs outside the meta-training table the std includes the error of their imputed source
        latencies (held-out imputation error propagated through each configuration's source weights)."""
        self._require("weights_")
        q_blocks, imputed = self._blocks_of(archs)
        mean = np.zeros(len(archs))
        second = np.zeros(len(archs))
        src = _blr.BLOCKS.index("src")
        for t in np.unique(self.config_transforms_[self.active_]):
            sel = np.flatnonzero(self.config_transforms_[self.active_] == t)
            idx = self.active_[sel]
            tf = t.partition("|")[0]
            z, stats = _blr.target(self.train_y_, tf)
            grams = _blr.grams_between(self.train_blocks_[t], q_blocks[t])
            f, chol, alpha, _ = _blr.batch_posterior(grams, self.config_scales_[idx], self.config_noises_[idx], z)
            extra = np.zeros(len(idx))
            if return_std and imputed.any() and tf in self.outside_.impute_cov_:
                s_tr = self.train_blocks_[t]["src"] - self.train_blocks_[t]["src"].mean(0)
                w_src = self.config_scales_[idx, src, None] ** 2 * (alpha @ s_tr)  # configs x source devices
                extra = np.einsum("ci,ij,cj->c", w_src, self.outside_.impute_cov_[tf], w_src)
            for k, (i, w) in enumerate(zip(idx, self.weights_[sel], strict=True)):
                if return_std:
                    var = _blr.query_var(grams, self.config_scales_[i], self.config_noises_[i], chol[k]) + extra[k] * imputed
                else:
                    var = 0 * f[k]
                mu, sd = _blr.untarget(f[k], var, tf, stats)
                mean += w * mu
                second += w * (sd**2 + mu**2)
        if return_std:
            return mean, np.sqrt(np.maximum(second - mean**2, 0.0))
        return mean

    def save(self, path: str | os.PathLike) -> None:
        """Persist the fitted predictor (atomic write); :meth:`load` restores identical predictions."""
        save_state(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FewShotLatencyPredictor:
        return load_state(cls, path)

    def _require(self, attr: str) -> None:
        if not hasattr(self, attr):
            step = "meta_fit" if attr == "configs_" else "adapt"
            raise NotFittedError(f"{type(self).__name__} is not fitted; call {step}() first")
