"""Helpers shared by stages: evaluate subnets for real (accuracy, ONNX latency) and fit predictors."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latency_luts.measure import Measurement, OrtSettings, measure_onnx_models
from latency_luts.onnx_export import export_onnx
from nas.pipeline import RunContext
from nas.training import evaluate, recalibrate_bn

log = logging.getLogger(__name__)


def measure_archs(ctx: RunContext, supernet: Any, archs: Sequence[Any], desc: str = "export for timing") -> list[Measurement]:
    """Export each subnet to ONNX (fast exporter) and time them all together on the configured device."""
    dev = ctx.cfg.device
    with tempfile.TemporaryDirectory(prefix="hwnas-measure-") as tmp:
        paths = []
        for i, arch in enumerate(tqdm(archs, desc=desc, unit="subnet", leave=False)):
            sub = ctx.space.extract(supernet, arch).eval()
            paths.append(export_onnx(sub, ctx.space.input_shape(arch, dev.batch), Path(tmp) / f"{i}.onnx",
                                     exporter=ctx.cfg.measure.exporter))
        settings = OrtSettings(dev.threads, dev.graph_optimization, dev.execution_mode, dev.spinning)
        return measure_onnx_models(
            paths, settings, warmup=dev.warmup, rounds=dev.rounds, batch=dev.batch, cv_threshold=dev.cv_threshold,
            max_extra_rounds=dev.max_extra_rounds, seed=int(ctx.cfg.seed), names=[a.to_string() for a in archs],
        )


def evaluate_archs(ctx: RunContext, supernet: Any, archs: Sequence[Any], splits: Sequence[str] = ("val",),
                   desc: str = "evaluate subnets") -> dict[str, list[float]]:
    """Accuracy of each extracted subnet after BatchNorm recalibration, on the requested splits."""
    data = ctx.data
    n_cal = int(ctx.cfg.predictor.calib_images)
    out: dict[str, list[float]] = {s: [] for s in splits}
    for arch in tqdm(archs, desc=desc, unit="subnet", leave=False):
        sub = ctx.space.extract(supernet, arch)
        recalibrate_bn(sub, data.x_train[:n_cal], arch.r)
        for s in splits:
            x, y = (data.x_val, data.y_val) if s == "val" else (data.x_test, data.y_test)
            out[s].append(evaluate(sub, x, y, arch.r, sub))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
