"""The steps of :meth:`predictors.fewshot.FewShotLatencyPredictor.meta_fit`: the source table and features it
learns from, the simulated few-shot tasks on every held-out source device, and the choice of measurement rule,
feature geometry and prior strength those tasks score."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from predictors.fewshot import blr as _blr
from predictors.fewshot.blocks import norm_blocks
from predictors.fewshot.common import arch_key, check_source_table
from predictors.fewshot.meta import device_family, rowwise_spearman, simulated_tasks

FEATURE_BLOCKS = ("enc", "phys")
Config = tuple[str, tuple[float, ...], float]


def source_inputs(source_table: pd.DataFrame, arch_features: Any, featurizer: Callable[[list[str]], Any] | None,
                  meta_budget: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The checked latency table and its feature blocks (``enc``/``phys``, aligned with its rows; computed by
    ``featurizer`` when ``arch_features`` is None)."""
    if featurizer is not None and not callable(featurizer):
        raise ValueError(f"featurizer {featurizer!r} is not callable; expected archs -> features")
    if arch_features is None and featurizer is not None:
        keys = [arch_key(a) for a in source_table.index]
        arch_features = featurizer(keys)
        arch_features = ({k: pd.DataFrame(np.asarray(v), index=keys) for k, v in arch_features.items()}
                         if isinstance(arch_features, Mapping) else pd.DataFrame(np.asarray(arch_features), index=keys))
    if isinstance(arch_features, Mapping):
        unknown = sorted(set(arch_features) - set(FEATURE_BLOCKS))
        if unknown:
            raise ValueError(f"arch_features block {unknown[0]!r} is unknown; expected keys {list(FEATURE_BLOCKS)}")
        feats = {}
        for name, x in arch_features.items():
            table, feats[name] = check_source_table(source_table, x)
        table = check_source_table(source_table)[0]
    else:
        table, enc = check_source_table(source_table, arch_features)
        feats = {} if enc is None else {"enc": enc}
    if table.shape[1] < 2:
        raise ValueError(f"meta_fit needs >= 2 source devices for leave-one-out, got {list(table.columns)}")
    if len(table) < meta_budget + 10:
        raise ValueError(f"source_table has {len(table)} archs; expected at least {meta_budget + 10}")
    return table, feats


@dataclass
class MetaTasks:
    """Simulated few-shot tasks: ``(held-out device, pool, query)`` rows of ``lat``; ``held[j]``: the devices
    held out with device ``j`` (its family); ``loo[j]``: the normalised blocks without them, per transform."""

    lat: np.ndarray
    tasks: list[tuple[int, np.ndarray, np.ndarray]]
    held: list[list[int]]
    loo: list[dict[str, Any]]

    @property
    def n_dev(self) -> int:
        return self.lat.shape[1]

    @property
    def task_dev(self) -> np.ndarray:
        return np.array([tk[0] for tk in self.tasks])

    def per_device(self, per_task: np.ndarray) -> np.ndarray:
        task_dev = self.task_dev
        return np.stack([per_task[task_dev == j].mean(0) for j in range(self.n_dev)])


def simulate_tasks(model: Any, table: pd.DataFrame, raw: dict[str, Any], rng: np.random.Generator) -> MetaTasks:
    """``model.meta_tasks`` tasks per source device, its family (or only itself) held out of the features."""
    lat = table.to_numpy()
    n = len(table)
    n_pool = min(model.meta_pool, n // 2)
    n_query = min(model.meta_query, n - n_pool)
    tasks = simulated_tasks(lat, model.meta_tasks, n_pool, n_query, model.task_trim, rng)
    family = [device_family(d) if model.leave_out == "family" else d for d in table.columns]
    held = [[i for i, f in enumerate(family) if f == family[j]] for j in range(lat.shape[1])]
    if any(len(h) == lat.shape[1] for h in held):
        raise ValueError(f"meta_fit needs source devices of >= 2 families for leave_out='family', got {family}")
    loo = [{t: norm_blocks(raw[t], drop=held[j]) for t in model.transforms} for j in range(lat.shape[1])]
    return MetaTasks(lat, tasks, held, loo)


def score_rule(model: Any, mt: MetaTasks, rule: str, geometry: Config | None, rng: np.random.Generator,
               n_keep: int) -> tuple[np.ndarray, list[tuple]]:
    """Per-device Spearman of every configuration (devices x configs) when each task measures
    ``model.meta_budget`` pool archs picked by ``rule`` in ``geometry`` (None: at random), and per task the
    ``n_keep`` configurations of highest evidence (indices, evidence, predictions, query latencies)."""
    spear = np.zeros((len(mt.tasks), len(model.configs_)))
    kept = []
    for k, (j, pool, query) in enumerate(mt.tasks):
        if geometry is None:
            picks = rng.choice(len(pool), size=model.meta_budget, replace=False)
        else:
            picks = _blr.pick(mt.loo[j][geometry[0]], geometry[1], rule, pool, model.meta_budget, rng)
        tr = pool[picks]
        preds, ev = model._all_configs(mt.loo[j], tr, mt.lat[tr, j], query)
        spear[k] = rowwise_spearman(preds, mt.lat[query, j])
        top = np.argsort(-ev)[:n_keep]
        kept.append((top, ev[top], preds[top], mt.lat[query, j]))
    return mt.per_device(spear), kept


def mixture_scores(model: Any, mt: MetaTasks, dev_scores: np.ndarray, kept: list[tuple]) -> dict[float | None, np.ndarray]:
    """Per-device Spearman of the model average per candidate prior strength (``prior_mix="choose"``) or of
    the one mixing them all (key None), each task's prior learned without its device's family."""
    mixes = [[k] for k in model.prior_strengths] if model.prior_mix == "choose" else [list(model.prior_strengths)]
    task_dev = mt.task_dev
    out = {}
    for mix in mixes:
        bma = np.zeros(len(kept))
        for k, (top, ev, preds, y_q) in enumerate(kept):
            others = np.setdiff1d(np.arange(mt.n_dev), mt.held[task_dev[k]])
            w = _blr.mixture_weights(ev, dev_scores[np.ix_(others, top)].mean(0), mix, model.prior_mix == "evidence")
            bma[k] = rowwise_spearman((w @ preds)[None], y_q)[0]
        out[float(mix[0]) if len(mix) == 1 else None] = mt.per_device(bma[:, None])[:, 0]
    return out


def choose(model: Any, mt: MetaTasks, configs: Sequence[Config], rng: np.random.Generator
           ) -> tuple[str, float | None, dict[str, np.ndarray], dict[tuple[str, float | None], np.ndarray], Config]:
    """Score every rule of ``model.selections`` (a non-random one in the geometry of the best configuration
    under random picks, of ``selection_transform``) and prior strength; return the best (rule, strength, by
    the one-standard-error rule), every rule's per-config scores, every (rule, strength)'s per-device scores,
    and the geometry."""
    n_keep = min(64, len(configs))
    first = score_rule(model, mt, "random", None, rng, n_keep)
    allowed = [i for i, c in enumerate(configs) if model.selection_transform in ("any", c[0])] or list(range(len(configs)))
    geometry = configs[allowed[int(np.argmax(first[0].mean(0)[allowed]))]]
    table_scores: dict[tuple[str, float | None], np.ndarray] = {}  # per-device BMA Spearman
    per_rule = {}
    for rule in model.selections:
        dev_scores, kept = first if rule == "random" else score_rule(model, mt, rule, geometry, rng, n_keep)
        per_rule[rule] = dev_scores.mean(0)
        for kappa, scores in mixture_scores(model, mt, dev_scores, kept).items():
            table_scores[(rule, kappa)] = scores
    (rule, best_kappa) = max(table_scores, key=lambda key: table_scores[key].mean())
    kappa = best_kappa  # None with prior_mix="average": no strength to choose
    if best_kappa is not None:  # one-standard-error rule: the weakest prior within 1 SE (paired over devices)
        for k in sorted(model.prior_strengths):
            diff = table_scores[(rule, float(k))] - table_scores[(rule, best_kappa)]
            if diff.mean() >= -diff.std(ddof=1) / np.sqrt(mt.n_dev):
                kappa = float(k)
                break
    return rule, kappa, per_rule, table_scores, geometry
