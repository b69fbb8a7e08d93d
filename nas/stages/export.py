"""Stage 6: every Pareto subnet -> standalone module -> single-file ONNX (onnx/), parity-checked and timed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from latency_luts.measure import OrtSettings, measure_onnx_models
from latency_luts.quantize import quantize_qdq
from nas.export import export_subnet, int8_agreement
from nas.rundir import RunContext, write_csv_atomic
from nas.stages.common import bn_calibration, calibration_batch, check_choice, positive_int, validate_device
from nas.training import recalibrate_bn

log = logging.getLogger(__name__)


def validate(cfg: Any) -> None:
    check_choice(cfg, "export.exporter", ("legacy", "dynamo"))
    positive_int(cfg, "export.parity_batch")
    validate_device(cfg)



def reset(ctx: RunContext) -> None:
    """Nothing to remove before a forced rerun: the stage rewrites onnx/ and pareto.csv's export columns whole (atomically)."""


def run(ctx: RunContext) -> dict:
    cfg, space = ctx.cfg, ctx.space
    pareto = pd.read_csv(ctx.path("pareto.csv"))
    supernet = ctx.load_supernet()
    out_dir = ctx.path("onnx")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, s in enumerate(tqdm(pareto.arch, desc="export Pareto subnets to ONNX", unit="subnet", leave=False)):
        arch = space.parse(s)
        sub = space.extract(supernet, arch)
        r, calib = ctx.space.resolution(arch), bn_calibration(cfg)
        recalibrate_bn(sub, ctx.data.at("train", r, calib["calib_images"]), r, calib["calib_batch"], calib["calib_mode"])
        x = ctx.data.at("test", r, int(cfg.export.parity_batch)).contiguous()
        path = out_dir / f"pareto_{i:02d}_r{ctx.space.resolution(arch)}.onnx"
        row = export_subnet(sub.eval(), space.input_shape(arch, 1), path, x, cfg.export.exporter,
                            bool(cfg.export.fallback_to_legacy))
        if cfg.device.precision == "int8":  # the deployable file is the static-QDQ int8 model
            q = quantize_qdq(path, path.with_name(path.stem + "_int8.onnx"), calibration_batch(ctx, arch))
            xt = ctx.data.at("test", r).contiguous()
            row["int8_top1_agreement"] = int8_agreement(sub, q, xt)
            row["fp32_onnx_path"], row["onnx_path"] = row["onnx_path"], str(q)
        rows.append(row)
    res = pd.DataFrame(rows)
    dev = cfg.device
    if dev.runtime == "remote":  # the exported files run on the remote device; its timings are in pareto.csv
        ms = None
    else:
        ms = measure_onnx_models(
            list(res.onnx_path), OrtSettings(dev.threads, dev.graph_optimization, dev.execution_mode, dev.spinning),
            warmup=dev.warmup, rounds=dev.rounds, batch=dev.batch, cv_threshold=dev.cv_threshold,
            max_extra_rounds=dev.max_extra_rounds, seed=int(cfg.seed),
        )
    pareto["onnx_path"] = [str(p.relative_to(ctx.run_dir)) if p.is_relative_to(ctx.run_dir) else str(p)
                           for p in map(Path, res.onnx_path)]
    pareto["exporter"] = res.exporter
    pareto["onnx_max_abs_diff"] = res.onnx_max_abs_diff  # fp32 file vs torch
    for extra in ("int8_top1_agreement", "fp32_onnx_path"):
        if extra in res:
            pareto[extra] = res[extra]
    pareto["onnx_latency_ms"] = [m.latency_ms for m in ms] if ms else pareto["latency_ms"]
    write_csv_atomic(ctx.path("pareto.csv"), pareto)
    worst = float(res.onnx_max_abs_diff.max())
    bad = res[res.onnx_max_abs_diff > float(cfg.export.parity_atol)]
    if len(bad):
        log.warning("%d exported subnets exceed the parity tolerance %.1e (worst %.2e)", len(bad),
                    cfg.export.parity_atol, worst)
    log.info("exported %d subnets to %s; worst ONNX-vs-torch max abs diff %.2e", len(res), out_dir, worst)
    return {"n_exported": len(res), "worst_onnx_max_abs_diff": worst, "exporters": sorted(set(res.exporter)),
            "parity_ok": bool(len(bad) == 0)}
