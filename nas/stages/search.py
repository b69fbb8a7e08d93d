"""Stage 5: NSGA-II over the predictors, then real evaluation of the predicted front.

All candidates (the measure stage's subnets plus ``search.budget`` picks spread along the predicted front) are
evaluated for accuracy and re-timed together in one interleaved measurement, so their latencies are
comparable. Writes candidates.csv, pareto.csv, pareto.png and the hypervolume of the measured front.
Latency comes from the calibrate stage's few-shot predictor (predictors/latency_fewshot.pkl) when the run has
one, else from the predict stage's regressor (predictors/latency.pkl).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from nas.pareto import hypervolume, pareto_mask
from nas.pipeline import RunContext, write_csv_atomic
from nas.plots import plot_pareto
from nas.search import PymooNSGA2
from nas.stages.common import evaluate_archs, measure_archs, spearman
from predictors import EnsembleRegressor, featurize
from predictors.fewshot import FewShotLatencyPredictor

log = logging.getLogger(__name__)


def spread_pick(values: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` items spread evenly over the sorted ``values`` (both ends included)."""
    order = np.argsort(values, kind="stable")
    if k >= len(order):
        return order.tolist()
    pos = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return order[pos].tolist()


def run(ctx: RunContext) -> dict:
    cfg, space = ctx.cfg, ctx.space
    lat_model = EnsembleRegressor.load(ctx.path("predictors", "latency.pkl"))
    acc_model = EnsembleRegressor.load(ctx.path("predictors", "accuracy.pkl"))
    fewshot_path = ctx.path("predictors", "latency_fewshot.pkl")
    fewshot = FewShotLatencyPredictor.load(fewshot_path) if fewshot_path.is_file() else None
    feats = cfg.predictor.features
    meas = pd.read_csv(ctx.path("measurements.csv"))
    seen = [space.parse(s) for s in meas.arch]

    def predict_latency(archs: list, X: np.ndarray, return_std: bool = False):  # noqa: ANN202
        if fewshot is not None:
            return fewshot.predict([a.to_string() for a in archs], return_std=return_std)
        return lat_model.predict(X, return_std=return_std)

    def objective(archs: list) -> np.ndarray:
        X = featurize(space, archs, feats)
        return np.column_stack([-acc_model.predict(X), predict_latency(archs, X)])

    t0 = time.perf_counter()
    strategy = PymooNSGA2(space=space, pop_size=int(cfg.search.pop_size), seed=int(cfg.search.seed), initial=seen)
    for _ in tqdm(range(int(cfg.search.generations)), desc="NSGA-II on predictors", unit="gen", leave=False):
        archs = strategy.ask()
        strategy.tell(archs, objective(archs))
    front, F = strategy.front()
    search_seconds = time.perf_counter() - t0
    seen_set = set(seen)
    new_idx = [i for i, a in enumerate(front) if a not in seen_set]
    picks = [front[new_idx[i]] for i in spread_pick(F[new_idx, 1], int(cfg.search.budget))] if new_idx else []
    log.info("NSGA-II: %d evaluations of the predictors, predicted front of %d subnets, %d new picked for real "
             "evaluation (%.1f s)", len(strategy.history_), len(front), len(picks), search_seconds)

    archs = seen + picks
    supernet = ctx.load_supernet()
    evals = pd.read_csv(ctx.path("evaluations.csv"))
    new = evaluate_archs(ctx, supernet, picks, ("val", "test"), desc="evaluate predicted-front picks")
    accs = {s: list(evals[f"{s}_accuracy"]) + new[s] for s in ("val", "test")}
    ms = measure_archs(ctx, supernet, archs, desc="export candidates", stage="search")
    X = featurize(space, archs, feats)
    pred_acc, acc_std = acc_model.predict(X, return_std=True)
    pred_lat, lat_std = predict_latency(archs, X, return_std=True)
    cand = pd.DataFrame({
        "arch": [a.to_string() for a in archs],
        "source": ["measure"] * len(seen) + ["search"] * len(picks),
        "predicted_latency_ms": pred_lat, "predicted_latency_std": lat_std,
        "latency_ms": [m.latency_ms for m in ms], "latency_median_ms": [m.median_ms for m in ms],
        "latency_p10_ms": [m.p10_ms for m in ms], "latency_p90_ms": [m.p90_ms for m in ms],
        "latency_cv": [m.cv for m in ms],
        "predicted_accuracy": pred_acc, "predicted_accuracy_std": acc_std,
        "val_accuracy": accs["val"], "test_accuracy": accs["test"],
        "params": [space.params(a) for a in archs], "macs": [space.macs(a) for a in archs],
        "resolution": [ctx.space.resolution(a) for a in archs],
    })
    Fm = np.column_stack([1.0 - cand.val_accuracy.to_numpy(), cand.latency_ms.to_numpy()])
    cand["pareto"] = pareto_mask(Fm)
    write_csv_atomic(ctx.path("candidates.csv"), cand)
    pareto = cand[cand.pareto].sort_values("latency_ms").drop(columns="pareto").reset_index(drop=True)
    pareto["onnx_path"] = ""
    write_csv_atomic(ctx.path("pareto.csv"), pareto)
    # hypervolume of the measured front: error in [0, 1], latency scaled by the slowest candidate, ref (1, 1.1)
    lat_scale = float(cand.latency_ms.max())
    ref = [1.0, 1.1]
    hv = hypervolume(np.column_stack([Fm[:, 0], Fm[:, 1] / lat_scale]), ref)
    plot_pareto(cand, ctx.path("pareto.png"), title=f"{space.name} on {cfg.data.name}, {cfg.device.name}")
    span = float(pareto.latency_ms.max() / pareto.latency_ms.min())
    log.info("measured Pareto front: %d subnets, latency %.3f..%.3f ms (x%.1f), best test accuracy %.4f",
             len(pareto), pareto.latency_ms.min(), pareto.latency_ms.max(), span, pareto.test_accuracy.max())
    return {
        "n_candidates": len(cand), "n_pareto": len(pareto), "n_search_picks": len(picks),
        "latency_predictor": "fewshot (calibrate stage)" if fewshot is not None else "regressor (predict stage)",
        "latency_predictor_spearman": spearman(cand.predicted_latency_ms.to_numpy(), cand.latency_ms.to_numpy()),
        "predictor_evaluations": len(strategy.history_), "inner_search_seconds": round(search_seconds, 3),
        "hypervolume": hv,
        "hypervolume_ref": {"objectives": ["1 - val_accuracy", "latency_ms / max candidate latency"], "ref": ref,
                            "latency_scale_ms": lat_scale},
        "pareto_latency_span": span, "best_test_accuracy": float(pareto.test_accuracy.max()),
    }
