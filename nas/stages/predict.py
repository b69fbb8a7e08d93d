"""Stage 4 (DESIGN's "predict"): accuracy of the measured subnets on validation data, then fit both predictors.

Writes evaluations.csv (arch, val_accuracy), predictors/latency.skops, predictors/accuracy.skops and
predictors/metrics.json (cross-validated Spearman and MAPE of each predictor).

With ``predictor.accuracy_from=FILE`` (Once-for-All's published accuracy predictor, experiment=ofa_pretrained)
the accuracy model is that imported predictor, saved data-only as predictors/accuracy.npz; the measured subnets
are still evaluated, and metrics.json reports how the imported predictions rank them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from sklearn.base import clone
from sklearn.model_selection import KFold

from nas.rundir import RunContext, write_csv_atomic, write_json_atomic
from nas.stages.common import (
    check_choice,
    evaluate_archs,
    imported_accuracy,
    spearman,
    validate_bn_calibration,
)
from predictors import featurize
from predictors.build import build_predictor

log = logging.getLogger(__name__)


def validate(cfg: Any) -> None:
    from nas.rundir import build_space

    validate_bn_calibration(cfg)
    space = build_space(cfg.search_space, n_classes=10, in_channels=3)
    for name in ("latency", "accuracy"):  # dry-built: a bad kind, parameter or feature kind fails here
        build_predictor(OmegaConf.select(cfg, f"predictor.{name}"), space, cfg.predictor.features, f"predictor.{name}")
    if cfg.predictor.get("accuracy_from"):
        if cfg.search_space.name != "ofa_mbv3":
            raise ValueError(f"predictor.accuracy_from={cfg.predictor.accuracy_from!r} is OFA's MobileNetV3 accuracy "
                             f"predictor; this run's space is {cfg.search_space.name!r} (expected ofa_mbv3)")
        imported_accuracy(cfg)  # unreadable or wrong-shaped: fails before any stage runs
    check_choice(cfg, "predictor.accuracy_source", ("measured", "imported"), default="measured")
    if cfg.predictor.get("accuracy_source", "measured") == "imported" and not cfg.predictor.get("accuracy_from"):
        raise ValueError("predictor.accuracy_source=imported needs predictor.accuracy_from (OFA's accuracy predictor "
                         "checkpoint); expected a file, or accuracy_source=measured")


def accuracy_file(ctx: RunContext) -> Path:
    """Where this run's accuracy model is saved (the search stage reads it from here)."""
    return ctx.path("predictors", "accuracy.npz" if ctx.cfg.predictor.get("accuracy_from") else "accuracy.skops")


def _cv_scores(make, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:  # noqa: ANN001
    pred = np.zeros_like(y)
    for tr, te in KFold(n_splits=min(5, len(y)), shuffle=True, random_state=seed).split(X):
        pred[te] = make().fit(X[tr], y[tr]).predict(X[te])
    mape = float(np.mean(np.abs(pred - y) / np.abs(y))) if np.all(y != 0) else float("nan")  # undefined at 0
    return {"cv_spearman": spearman(pred, y), "cv_mape": mape}



def reset(ctx: RunContext) -> None:
    """Nothing to remove before a forced rerun: the stage rewrites evaluations.csv and predictors/ whole (atomically)."""


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    meas = pd.read_csv(ctx.path("measurements.csv"))
    archs = [ctx.space.parse(s) for s in meas.arch]
    supernet = ctx.load_supernet()
    res = evaluate_archs(ctx, supernet, archs, ("val", "test"), desc="evaluate sampled subnets")
    acc = res["val"]  # the predictor learns validation accuracy; test accuracy is kept for reporting only
    evals = pd.DataFrame({"arch": meas.arch, "val_accuracy": acc, "test_accuracy": res["test"]})
    write_csv_atomic(ctx.path("evaluations.csv"), evals)
    X = featurize(ctx.space, archs, cfg.predictor.features)
    y_lat = meas.latency_ms.to_numpy(dtype=float)
    y_acc = np.asarray(acc, dtype=float)
    feats = cfg.predictor.features
    lat_model, acc_model = (build_predictor(cfg.predictor[n], ctx.space, feats, f"predictor.{n}")
                            for n in ("latency", "accuracy"))
    metrics = {
        "latency": _cv_scores(lambda: clone(lat_model.model), X, y_lat, int(cfg.seed)),
        "accuracy": _cv_scores(lambda: clone(acc_model.model), X, y_acc, int(cfg.seed)),
        "n_train": len(archs),
    }
    lat_model.fit(archs, y_lat).save(ctx.path("predictors", "latency.skops"))
    if cfg.predictor.get("accuracy_from"):
        imported = imported_accuracy(cfg)
        metrics["accuracy_imported"] = {"file": str(cfg.predictor.accuracy_from),
                                        "spearman_vs_measured": spearman(imported.predict(archs), y_acc)}
        imported.save(accuracy_file(ctx))
    else:
        acc_model.fit(archs, y_acc).save(accuracy_file(ctx))
    write_json_atomic(ctx.path("predictors", "metrics.json"), metrics)
    log.info("predictors fitted on %d subnets: latency CV Spearman %.3f (MAPE %.3f), accuracy CV Spearman %.3f; "
             "val accuracy %.3f..%.3f", len(archs), metrics["latency"]["cv_spearman"], metrics["latency"]["cv_mape"],
             metrics["accuracy"]["cv_spearman"], y_acc.min(), y_acc.max())
    return {"n_evaluated": len(archs), "val_acc_min": float(y_acc.min()), "val_acc_max": float(y_acc.max()),
            "latency_cv_spearman": metrics["latency"]["cv_spearman"],
            "accuracy_cv_spearman": metrics["accuracy"]["cv_spearman"]}
