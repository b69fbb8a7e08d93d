"""Stage 6: every Pareto subnet's deliverable -> onnx/: the very file the run timed for pareto.csv's
``latency_ms`` (byte-identical, its sha256 recorded), parity-checked against torch on test images."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from latency_luts.files import atomic_path
from nas.rundir import RunContext, write_csv_atomic
from nas.stages.common import TimingFiles, check_choice, positive_int, recalibrated_subnet, validate_device

log = logging.getLogger(__name__)


def validate(cfg: Any) -> None:
    check_choice(cfg, "export.exporter", ("legacy", "dynamo"))
    if cfg.export.exporter != cfg.measure.exporter:
        raise ValueError(f"export.exporter={cfg.export.exporter!r} differs from measure.exporter="
                         f"{cfg.measure.exporter!r}; the delivered files are the timed files, so expected one exporter "
                         f"(measure.exporter={cfg.export.exporter} times and delivers {cfg.export.exporter} files)")
    positive_int(cfg, "export.parity_batch")
    validate_device(cfg)


def reset(ctx: RunContext) -> None:
    """Nothing to remove before a forced rerun: the stage rewrites onnx/ and pareto.csv's export columns whole (atomically)."""


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _deliver_copy(src: Path, dst: Path) -> Path:
    """``src`` copied to ``dst`` atomically, checked byte for byte (sha256)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    if sha256(src) != sha256(dst):
        raise RuntimeError(f"{dst} differs from the timed file {src} after copying; expected identical bytes")
    return dst


def _deliver(ctx: RunContext, files: TimingFiles, supernet: Any, i: int, arch_string: str) -> dict[str, Any]:
    """One Pareto subnet: its timed file (and, for int8, the fp32 file it was quantised from) into onnx/,
    checked against the torch subnet with the same BatchNorm recalibration."""
    cfg, space, dev = ctx.cfg, ctx.space, ctx.device
    arch = space.parse(arch_string)
    timed = files.path(arch)
    if not timed.is_file():
        raise FileNotFoundError(f"the timed file of Pareto subnet {arch_string} is missing from {files.dir}; "
                                "expected the search stage's timing files (rerun with force=[search])")
    r, sub = space.resolution(arch), recalibrated_subnet(ctx, supernet, arch)
    x = ctx.data.at("test", r, int(cfg.export.parity_batch)).contiguous()
    out, stem = ctx.path("onnx"), f"pareto_{i:02d}_r{r}"
    row: dict[str, Any] = {"exporter": str(cfg.measure.exporter)}
    if dev.precision == "fp32":
        path = _deliver_copy(timed, out / f"{stem}.onnx")
        row["onnx_max_abs_diff"] = dev.check_parity(sub, path, x)
    else:  # the timed (deployable) file is the int8 one; its fp32 source is delivered beside it
        fp32 = _deliver_copy(dev.fp32_companion(timed), out / f"{stem}.onnx")
        path = _deliver_copy(timed, out / f"{stem}_{dev.precision}.onnx")
        row["onnx_max_abs_diff"] = dev.check_parity(sub, fp32, x)  # fp32 file vs torch
        row[f"{dev.precision}_top1_agreement"] = dev.agreement(sub, path, ctx.data.at("test", r).contiguous())
        row["fp32_onnx_path"] = str(fp32.relative_to(ctx.run_dir))
    row["onnx_path"] = str(path.relative_to(ctx.run_dir))
    row["onnx_sha256"] = sha256(path)
    return row


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    pareto = pd.read_csv(ctx.path("pareto.csv"))
    files, supernet = TimingFiles(ctx), ctx.load_supernet()
    rows = [_deliver(ctx, files, supernet, i, s)
            for i, s in enumerate(tqdm(pareto.arch, desc="deliver Pareto subnets", unit="subnet", leave=False))]
    res = pd.DataFrame(rows)
    for col in ("onnx_path", "exporter", "onnx_max_abs_diff", "int8_top1_agreement", "fp32_onnx_path", "onnx_sha256"):
        if col in res:
            pareto[col] = res[col]
    pareto["onnx_latency_ms"] = pareto["latency_ms"]  # the delivered file is the file timed for latency_ms
    write_csv_atomic(ctx.path("pareto.csv"), pareto)
    worst = float(res.onnx_max_abs_diff.max())
    bad = res[res.onnx_max_abs_diff > float(cfg.export.parity_atol)]
    if len(bad):
        log.warning("%d delivered subnets exceed the parity tolerance %.1e (worst %.2e)", len(bad),
                    cfg.export.parity_atol, worst)
    log.info("delivered %d subnets to %s (the files timed for pareto.csv); worst ONNX-vs-torch max abs diff %.2e",
             len(res), ctx.path("onnx"), worst)
    return {"n_exported": len(res), "worst_onnx_max_abs_diff": worst, "exporters": sorted(set(res.exporter)),
            "parity_ok": bool(len(bad) == 0)}
