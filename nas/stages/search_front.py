"""The search stage's last step: every candidate (the measure stage's subnets and the search's picks) timed
together in one interleaved measurement, the feasible front, its hypervolume, and the files that show them
(candidates.csv, pareto.csv, pareto.png, hv_history.png)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nas.objectives import OTHER, Objectives
from nas.pareto import hv_history, hypervolume, pareto_mask
from nas.plots import plot_hv_history, plot_pareto
from nas.rundir import RunContext, write_csv_atomic
from nas.stages.common import measure_archs, spearman

log = logging.getLogger(__name__)


def candidates(ctx: RunContext, models: Any, seen: Sequence[Any], picks: Sequence[Any],
               acc: dict[str, tuple[float, float]], round_of: dict[str, int]) -> pd.DataFrame:
    """One row per candidate: measured and predicted latency, real and predicted accuracy, params, MACs."""
    space, archs = ctx.space, [*seen, *picks]
    ms = measure_archs(ctx, ctx.load_supernet(), archs, desc="export candidates", stage="search")
    # the predict stage's accuracy predictor (not the closed loop's refits): how good was it on what was found
    pred_acc, acc_std = models.acc.predict(archs, return_std=True)
    pred_lat, lat_std = models.lat.predict(archs, return_std=True)
    return pd.DataFrame({
        "arch": [a.to_string() for a in archs],
        "source": ["measure"] * len(seen) + ["search"] * len(picks),
        "search_round": [0] * len(seen) + [round_of[a.to_string()] + 1 for a in picks],  # 0 = the measure sample
        "eval_order": np.arange(len(archs)),
        "predicted_latency_ms": pred_lat, "predicted_latency_std": lat_std,
        "latency_ms": [m.latency_ms for m in ms], "latency_median_ms": [m.median_ms for m in ms],
        "latency_p10_ms": [m.p10_ms for m in ms], "latency_p90_ms": [m.p90_ms for m in ms],
        "latency_cv": [m.cv for m in ms],
        "predicted_accuracy": pred_acc, "predicted_accuracy_std": acc_std,
        "val_accuracy": [acc[a.to_string()][0] for a in archs],
        "test_accuracy": [acc[a.to_string()][1] for a in archs],
        "params": [space.params(a) for a in archs], "macs": [space.macs(a) for a in archs],
        "resolution": [space.resolution(a) for a in archs],
    })


def front(ctx: RunContext, cand: pd.DataFrame, obj: Objectives, models: Any) -> tuple[pd.DataFrame, np.ndarray]:
    """Marks the feasible non-dominated candidates (``feasible``, ``pareto`` columns), writes candidates.csv
    and pareto.csv; returns the front and the candidates' minimised objective rows. No feasible candidate: a
    one-line error naming the ranges found (after candidates.csv is written, to look at)."""
    archs = [ctx.space.parse(s) for s in cand.arch]
    val = cand.val_accuracy.to_numpy(float)
    values = {"accuracy": val, "latency_ms": cand.latency_ms.to_numpy(float),
              "params": cand.params.to_numpy(float), "macs": cand.macs.to_numpy(float)}
    for k, m in models.other.items():
        values[f"{OTHER}{k}"] = cand[f"{OTHER}{k}"] = np.asarray(m.predict(archs), float)
    feasible = obj.feasible(values)
    cand["feasible"] = feasible
    Fm = obj.minimised(values)  # error = 1 - accuracy, in [0, 1]
    mask = np.zeros(len(cand), dtype=bool)
    if feasible.any():
        mask[np.flatnonzero(feasible)[pareto_mask(Fm[feasible])]] = True
    cand["pareto"] = mask
    write_csv_atomic(ctx.path("candidates.csv"), cand)
    if not feasible.any():
        raise ValueError(f"no candidate meets search.constraints ({obj.describe_constraints()}); the measured "
                         f"latencies range {cand.latency_ms.min():.3g}..{cand.latency_ms.max():.3g} ms and val accuracy "
                         f"{val.min():.3f}..{val.max():.3f} (candidates.csv); loosen the constraints")
    pareto = cand[cand.pareto].sort_values("latency_ms").drop(columns=["pareto", "feasible"]).reset_index(drop=True)
    pareto["artefact_path"] = ""
    write_csv_atomic(ctx.path("pareto.csv"), pareto)
    return pareto, Fm


def hypervolume_record(ctx: RunContext, cand: pd.DataFrame, Fm: np.ndarray, obj: Objectives, n_seen: int,
                       label: str) -> dict[str, Any]:
    """Hypervolume of the measured (feasible) front and its history over the evaluation order: error in [0, 1],
    each cost scaled by the largest candidate's, reference point 1.0 for error and 1.1 for the costs; draws
    pareto.png and hv_history.png."""
    cfg = ctx.cfg
    feasible = cand.feasible.to_numpy(bool)
    scale = np.array([1.0 if n == "accuracy" else float(np.max(Fm[:, j])) for j, n in enumerate(obj.names)])
    ref = [1.0 if n == "accuracy" else 1.1 for n in obj.names]
    Fn = Fm / scale
    hist = hv_history(np.where(feasible[:, None], Fn, np.inf), ref)
    plot_pareto(cand, ctx.path("pareto.png"), title=f"{ctx.space.name} on {cfg.data.name}, {cfg.device.name}")
    plot_hv_history(hist, n_seen, ctx.path("hv_history.png"), title=f"{label}: measured-front hypervolume")
    return {
        "hypervolume": hypervolume(Fn[feasible], ref),
        "hypervolume_ref": {"objectives": [("1 - val_accuracy" if n == "accuracy" else f"{n} / max candidate {n}")
                                           for n in obj.names], "ref": ref,
                            "scale": dict(zip(obj.names, scale.tolist(), strict=True))},
        "hypervolume_history": [round(float(h), 9) for h in hist],
        "hypervolume_measure_sample": round(float(hist[n_seen - 1]), 9) if n_seen else 0.0,  # before any pick
    }


def front_record(ctx: RunContext, setup: Any, picks: Sequence[Any], acc: dict[str, tuple[float, float]],
                 round_of: dict[str, int]) -> dict[str, Any]:
    """Time every candidate, write the front and its pictures; the search stage's record of them."""
    obj, models, label = setup.obj, setup.models, setup.strategy.label
    cand = candidates(ctx, models, setup.seen, picks, acc, round_of)
    pareto, Fm = front(ctx, cand, obj, models)
    hv = hypervolume_record(ctx, cand, Fm, obj, len(setup.seen), label)
    span = float(pareto.latency_ms.max() / pareto.latency_ms.min())
    log.info("measured Pareto front: %d subnets (%d feasible candidates), latency %.3f..%.3f ms (x%.1f), best test "
             "accuracy %.4f", len(pareto), int(cand.feasible.sum()), pareto.latency_ms.min(), pareto.latency_ms.max(),
             span, pareto.test_accuracy.max())
    return {
        "n_candidates": len(cand), "n_feasible": int(cand.feasible.sum()), "n_pareto": len(pareto),
        "n_search_picks": len(picks),
        "latency_predictor": "fewshot (calibrate stage)" if models.fewshot else "regressor (predict stage)",
        "latency_predictor_spearman": spearman(cand.predicted_latency_ms.to_numpy(), cand.latency_ms.to_numpy()),
        "accuracy_predictor_spearman": spearman(cand.predicted_accuracy.to_numpy(), cand.val_accuracy.to_numpy()),
        **hv,
        "pareto_latency_span": span, "best_test_accuracy": float(pareto.test_accuracy.max()),
    }
