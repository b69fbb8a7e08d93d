"""Stage 6: every Pareto subnet's deliverable -> onnx/: the very file(s) the run's engine timed for pareto.csv's
``latency_ms`` (byte-identical, the main file's sha256 recorded; ``.onnx``, OpenVINO's ``.xml``+``.bin``,
``.tflite`` or ``.pte``), parity-checked against torch on test images at the device's precision."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
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


def _deliver_copy(dev: Any, src: Path, dst: Path) -> Path:
    """The artefact ``src`` (all its files) copied to ``dst`` atomically, each checked byte for byte (sha256)."""
    for a, b in zip(dev.artefact_files(src), dev.artefact_files(dst), strict=True):
        with atomic_path(b) as tmp:
            shutil.copyfile(a, tmp)
        if sha256(a) != sha256(b):
            raise RuntimeError(f"{b} differs from the timed file {a} after copying; expected identical bytes")
    return dst


def _deliver(ctx: RunContext, files: TimingFiles, supernet: Any, i: int, arch_string: str,
             out: Path) -> dict[str, Any]:
    """One Pareto subnet: its timed artefact (and, for int8, the fp32 artefact it was quantised from) into
    ``out`` (the folder that becomes onnx/; rows name the files there), checked against the torch subnet with
    the same BatchNorm recalibration."""
    cfg, space, dev = ctx.cfg, ctx.space, ctx.device
    arch = space.parse(arch_string)
    timed = files.path(arch)
    if not all(p.is_file() for p in dev.artefact_files(timed)):
        raise FileNotFoundError(f"the timed file of Pareto subnet {arch_string} is missing from {files.dir}; "
                                "expected the search stage's timing files (rerun with force=[search])")
    r, sub = space.resolution(arch), recalibrated_subnet(ctx, supernet, arch)
    x = ctx.data.at("test", r, int(cfg.export.parity_batch)).contiguous()
    stem, suffix = f"pareto_{i:02d}_r{r}", dev.suffix
    row: dict[str, Any] = {"engine": dev.runtime, "exporter": str(cfg.measure.exporter)}
    if dev.precision not in dev.quantized:  # fp32, or a reduced precision the engine runs the fp32 file at
        path = _deliver_copy(dev, timed, out / f"{stem}{suffix}")
        row["parity_max_abs_diff"] = _parity(dev, sub, path, x, arch_string)
    else:  # the timed (deployable) file is the int8 one; its fp32 source is delivered beside it
        fp32 = _deliver_copy(dev, dev.fp32_companion(timed), out / f"{stem}{suffix}")
        path = _deliver_copy(dev, timed, out / f"{stem}_{dev.precision}{suffix}")
        row["parity_max_abs_diff"] = _parity(dev, sub, fp32, x, arch_string)  # fp32 file vs torch
        row[f"{dev.precision}_top1_agreement"] = dev.agreement(sub, path, ctx.data.at("test", r).contiguous())
        row["fp32_artefact_path"] = f"onnx/{fp32.name}"
    row["artefact_path"] = f"onnx/{path.name}"
    row["artefact_sha256"] = sha256(path)
    return row


def _parity(dev: Any, sub: Any, path: Path, x: Any, arch_string: str) -> float:
    """Max abs difference vs torch; an artefact the engine cannot run on the test images is one line naming it."""
    try:
        return dev.check_parity(sub, path, x)
    except (RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"parity check of Pareto subnet {arch_string} ({path.name}) failed in {dev.runtime}: "
                         f"{first}") from None


def run(ctx: RunContext) -> dict:
    """Deliver every Pareto subnet into a fresh folder beside onnx/, check each against torch, then swap it in:
    a subnet over the parity tolerance is one line naming it, and onnx/ and pareto.csv stay as they were."""
    cfg, dev = ctx.cfg, ctx.device
    pareto = pd.read_csv(ctx.path("pareto.csv"))
    files, supernet = TimingFiles(ctx), ctx.load_supernet()
    final = ctx.path("onnx")
    staging = Path(tempfile.mkdtemp(prefix=".onnx-", dir=ctx.run_dir))
    try:
        rows = [_deliver(ctx, files, supernet, i, s, staging)
                for i, s in enumerate(tqdm(pareto.arch, desc="deliver Pareto subnets", unit="subnet", leave=False))]
        res = pd.DataFrame(rows)
        atol = dev.parity_atol(float(cfg.export.parity_atol))
        bad = res[res.parity_max_abs_diff > atol]
        if len(bad):
            worst = bad.parity_max_abs_diff.idxmax()
            raise ValueError(f"Pareto subnet {pareto.arch[worst]} differs from torch by {res.parity_max_abs_diff[worst]:.2e} "
                             f"in {dev.runtime} at {dev.precision} ({len(bad)} of {len(res)} subnets over the "
                             f"tolerance {atol:.1e}); expected at most export.parity_atol={atol:.1e}: nothing was "
                             "delivered (try measure.exporter=dynamo, or device.precision=fp32)")
        old = final.with_name(f".onnx-old-{os.getpid()}")
        if final.exists():
            final.rename(old)
        staging.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for col in ("artefact_path", "engine", "exporter", "parity_max_abs_diff", "int8_top1_agreement",
                "fp32_artefact_path", "artefact_sha256"):
        if col in res:
            pareto[col] = res[col]
    write_csv_atomic(ctx.path("pareto.csv"), pareto)
    worst = float(res.parity_max_abs_diff.max())
    log.info("delivered %d subnets to %s (the %s files timed for pareto.csv); worst max abs diff vs torch %.2e",
             len(res), final, dev.runtime, worst)
    return {"n_exported": len(res), "engine": dev.runtime, "worst_parity_max_abs_diff": worst,
            "parity_atol": atol, "exporters": sorted(set(res.exporter))}
