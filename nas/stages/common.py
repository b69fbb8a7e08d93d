"""Helpers shared by stages: evaluate subnets for real (accuracy, ONNX latency) and fit predictors."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latency_luts.build import measure_in_fresh_process
from latency_luts.measure import Measurement, OrtSettings
from latency_luts.onnx_export import export_onnx
from latency_luts.quantize import quantize_qdq
from nas.rundir import RunContext, file_stem
from nas.training import evaluate, fold_batchnorm, recalibrate_bn

log = logging.getLogger(__name__)


def positive_int(cfg: Any, key: str, lo: int = 1) -> int:
    """``cfg.<key>`` as an int >= ``lo``, or a one-line ValueError naming the value."""
    from omegaconf import OmegaConf

    val = OmegaConf.select(cfg, key)
    if not isinstance(val, int) or isinstance(val, bool) or val < lo:
        want = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise ValueError(f"{key}={val!r} is invalid; expected {want}")
    return val


def check_threads(cfg: Any, key: str, zero: bool = False) -> None:
    """``cfg.<key>`` is ``auto`` or a positive integer (or 0 = torch's default, where ``zero``)."""
    from omegaconf import OmegaConf

    val = OmegaConf.select(cfg, key)
    if val == "auto" or (isinstance(val, int) and not isinstance(val, bool) and val >= (0 if zero else 1)):
        return
    want = "auto or an integer >= 0 (0 = torch's default)" if zero else "auto or a positive integer"
    raise ValueError(f"{key}={val!r} is invalid; expected {want}")


def check_choice(cfg: Any, key: str, choices: Sequence[str], default: Any = None) -> None:
    from omegaconf import OmegaConf

    val = OmegaConf.select(cfg, key, default=default)
    if val not in choices:
        raise ValueError(f"{key}={val!r} is invalid; expected one of {list(choices)}")


def validate_device(cfg: Any) -> None:
    """device.* as every stage that times or exports subnets reads it."""
    for key in ("device.rounds", "device.threads", "device.batch"):
        positive_int(cfg, key)
    positive_int(cfg, "device.warmup", lo=0)
    check_choice(cfg, "device.runtime", ("onnxruntime", "remote"), default="onnxruntime")
    check_choice(cfg, "device.precision", ("fp32", "int8"))
    check_choice(cfg, "measure.exporter", ("legacy", "dynamo"))
    if cfg.device.get("runtime", "onnxruntime") == "remote":
        validate_device_csv(cfg)


def validate_device_csv(cfg: Any) -> None:
    """Every ``device.csv`` file read and checked before any stage runs (not when the measure stage first needs
    it, after training): interchange columns, finite positive latencies, no conflicting duplicates, rows of the
    run's device, and only architectures of the run's space and setting."""
    import pandas as pd

    from latency_luts.interchange import load_latency_table, select_rows
    from nas.rundir import build_space

    dev = cfg.device
    csvs = [str(p) for p in (dev.get("csv") or [])]
    if not csvs:
        return
    space = build_space(cfg.search_space, n_classes=10, in_channels=3)
    tables = []
    for path in csvs:  # one file at a time, so an error names its file
        df = load_latency_table([path])
        tables.append(df)
        other = sorted(set(df["space"]) - {space.name})
        if other:
            raise ValueError(f"device.csv file {path!r} holds space {other[0]!r} measurements; this run's space is "
                             f"{space.name!r}; expected measurements of this run's subnets (hwnas-measure output)")
        for arch in pd.unique(df["arch"]):
            try:
                space.parse(arch)
            except ValueError as e:
                raise ValueError(f"device.csv file {path!r}: {e}") from None
    select_rows(pd.concat(tables, ignore_index=True), space.name, [str(dev.name)])  # the device's; no repeated pair


def calibration_batch(ctx: RunContext, arch: Any, n: int = 64) -> np.ndarray:
    """Real training images at the arch's resolution, for static int8 calibration."""
    return ctx.data.at("train", ctx.space.resolution(arch), n).numpy()


def validate_bn_calibration(cfg: Any) -> None:
    from nas.training import CALIB_MODES

    positive_int(cfg, "predictor.calib_images")
    if cfg.predictor.get("calib_batch") is not None:
        positive_int(cfg, "predictor.calib_batch")
    check_choice(cfg, "predictor.calib_mode", CALIB_MODES, default="exact")


def imported_accuracy(cfg: Any) -> Any:  # predictors.ofa_accuracy.OFAAccuracyPredictor
    """The accuracy predictor of ``predictor.accuracy_from``, read once per file version (the search evaluates
    one subnet at a time: the checkpoint is not re-read for each)."""
    path = Path(str(cfg.predictor.accuracy_from)).expanduser()
    st = path.stat() if path.is_file() else None
    return _read_accuracy_predictor(str(path), st.st_mtime_ns if st else 0, st.st_size if st else 0)


@functools.lru_cache(maxsize=4)
def _read_accuracy_predictor(path: str, mtime_ns: int, size: int) -> Any:
    from predictors.ofa_accuracy import OFAAccuracyPredictor

    return OFAAccuracyPredictor.from_checkpoint(path)


def bn_calibration(cfg: Any) -> dict[str, Any]:
    """How every stage recalibrates BatchNorm of an extracted subnet (``predictor.calib_*``), as keyword
    arguments of :func:`nas.training.subnet_accuracy`."""
    p = cfg.predictor
    return {"calib_images": int(p.calib_images), "calib_batch": int(p.get("calib_batch", 256)),
            "calib_mode": str(p.get("calib_mode", "exact"))}


class NeedsMeasurement(Exception):
    """A remote device must time a kit before the pipeline can go on (the stage is left unfinished)."""


def _remote_measurements(ctx: RunContext, supernet: Any, archs: Sequence[Any], stage: str) -> list[Measurement]:
    """Latencies from CSVs measured by ``hwnas-measure``; missing archs -> write a kit and stop."""
    from latency_luts.interchange import load_latency_table
    from latency_luts.kit import write_manifest

    dev = ctx.cfg.device
    known: dict[Any, dict] = {}
    csvs = list(dev.get("csv") or [])
    if csvs:
        table = load_latency_table(csvs, space=ctx.space.name, devices=[dev.name])
        for row in table.to_dict("records"):
            known[ctx.space.parse(row["arch"])] = row
    missing = [a for a in archs if a not in known]
    if missing:
        kit = ctx.path("kits", stage)
        models = []
        for i, arch in enumerate(tqdm(missing, desc=f"write measurement kit ({stage})", unit="subnet", leave=False)):
            shape = ctx.space.input_shape(arch, dev.batch)
            export_onnx(ctx.space.extract(supernet, arch).eval(), shape, kit / f"{i:04d}.onnx",
                        exporter=ctx.cfg.measure.exporter)
            models.append({"file": f"{i:04d}.onnx", "arch": arch.to_string(), "input_shape": list(shape)})
        write_manifest(kit, ctx.space.name, models)
        raise NeedsMeasurement(
            f"{len(missing)} subnets need timing on {dev.name}: copy {kit} to the device, run "
            f"'hwnas-measure {kit.name} --device {dev.name} --out {stage}.csv', then rerun this command with "
            f"device.csv=[...,{stage}.csv]"
        )
    out = []
    for arch in archs:
        r = known[arch]
        get = lambda k, r=r: float(r.get(k, r["latency_ms"]))  # noqa: E731
        out.append(Measurement(arch.to_string(), float(r["latency_ms"]), get("median_ms"), get("p10_ms"),
                               get("p90_ms"), float(r.get("cv", 0.0)), int(r.get("runs", 0)), int(r.get("warmup", 0)),
                               float(r.get("other_cpus", float("nan"))), float(r.get("drift", 1.0)),
                               str(r.get("load", "ok"))))
    return out


class TimingFiles:
    """The ONNX files a run timed, kept in ``timing_onnx/`` and keyed by arch: the search stage's joint
    re-timing of all candidates reuses the measure stage's files instead of exporting them again.

    The files belong to one supernet checkpoint and one export setting (exporter, precision, batch); when any
    of them changes, the folder is emptied and refilled. Each file is written under a process-unique temporary
    name and renamed, so concurrent writers never see or leave half a file.
    """

    def __init__(self, ctx: RunContext) -> None:
        import json

        dev = ctx.cfg.device
        self.ctx, self.dir = ctx, ctx.path("timing_onnx")
        self.key = {**ctx.checkpoint_key(), "exporter": str(ctx.cfg.measure.exporter),
                    "precision": str(dev.precision), "batch": int(dev.batch)}
        key_path = self.dir / "key.json"
        if self.dir.is_dir() and not (key_path.is_file() and json.loads(key_path.read_text()) == self.key):
            stale = list(self.dir.glob("*.onnx"))
            for p in stale:
                p.unlink(missing_ok=True)
            if stale:
                log.info("timing files: the supernet or export setting changed; removed %d old files from %s",
                         len(stale), self.dir)
        if not key_path.is_file():
            from nas.rundir import write_json_atomic

            write_json_atomic(key_path, self.key)

    def path(self, arch: Any) -> Path:
        return self.dir / f"{file_stem(arch.to_string())}.onnx"

    def get(self, supernet: Any, arch: Any) -> Path:
        """The arch's timed ONNX file, exported (and quantised for int8) unless this run already has it."""
        import os

        path = self.path(arch)
        if path.is_file():
            return path
        ctx, dev = self.ctx, self.ctx.cfg.device
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.part.onnx")
        sub = ctx.space.extract(supernet, arch).eval()
        export_onnx(sub, ctx.space.input_shape(arch, dev.batch), tmp, exporter=ctx.cfg.measure.exporter)
        if dev.precision == "int8":
            q = tmp.with_name(tmp.stem + ".int8.onnx")
            quantize_qdq(tmp, q, calibration_batch(ctx, arch), dev.batch)
            os.replace(q, tmp)
        os.replace(tmp, path)
        return path


def measure_archs(ctx: RunContext, supernet: Any, archs: Sequence[Any], desc: str = "export for timing",
                  stage: str = "measure") -> list[Measurement]:
    """Export each subnet to ONNX (fast exporter; files this run already timed are reused, see
    :class:`TimingFiles`) and time them all together on the configured device.

    ``device.runtime=remote``: latencies come from ``device.csv`` files written by ``hwnas-measure``.
    """
    dev = ctx.cfg.device
    if dev.runtime == "remote":
        return _remote_measurements(ctx, supernet, archs, stage)
    if dev.runtime != "onnxruntime":
        raise ValueError(f"device.runtime={dev.runtime!r} is invalid; expected 'onnxruntime' or 'remote'")
    files = TimingFiles(ctx)
    todo = sum(not files.path(a).is_file() for a in archs)
    if todo < len(archs):
        log.info("%s: %d of %d subnets already exported in %s", stage, len(archs) - todo, len(archs), files.dir)
    paths = [files.get(supernet, a) for a in tqdm(archs, desc=desc, unit="subnet", leave=False)]
    settings = OrtSettings(dev.threads, dev.graph_optimization, dev.execution_mode, dev.spinning)
    # all models of the batch in one fresh process, interleaved rounds (see latency_luts.measure)
    rows = measure_in_fresh_process(
        [str(p) for p in paths], [a.to_string() for a in archs], warmup=dev.warmup, rounds=dev.rounds,
        seed=int(ctx.cfg.seed), settings=settings, batch=dev.batch, cv_threshold=dev.cv_threshold,
        max_extra_rounds=dev.max_extra_rounds, progress=True,
    )
    return [Measurement(**r) for r in rows]


def evaluate_archs(ctx: RunContext, supernet: Any, archs: Sequence[Any], splits: Sequence[str] = ("val",),
                   desc: str = "evaluate subnets", progress: bool = True, n_cal: int | None = None,
                   n_eval: int | None = None) -> dict[str, list[float]]:
    """Accuracy of each extracted subnet after BatchNorm recalibration (on the first ``n_cal`` training
    images, default ``predictor.calib_images``), on the requested splits (their first ``n_eval`` images, default
    all). With ``predictor.accuracy_source=imported`` every split's accuracy is the imported accuracy predictor's
    (``predictor.accuracy_from``): a run on a published supernet without labelled images."""
    if ctx.cfg.predictor.get("accuracy_source", "measured") == "imported":  # no labelled images: OFA's predictor
        pred = imported_accuracy(ctx.cfg).predict(list(archs))
        return {s: [float(v) for v in pred] for s in splits}
    data, calib = ctx.data, bn_calibration(ctx.cfg)
    n_cal = int(calib["calib_images"] if n_cal is None else n_cal)
    out: dict[str, list[float]] = {s: [] for s in splits}
    for arch in tqdm(archs, desc=desc, unit="subnet", leave=False, disable=not progress):
        r = ctx.space.resolution(arch)
        # channels-last: depthwise convs run 2-3x faster on CPU (oneDNN); results agree to float rounding
        sub = ctx.space.extract(supernet, arch).to(memory_format=torch.channels_last)
        recalibrate_bn(sub, data.at("train", r, n_cal), r, calib["calib_batch"], calib["calib_mode"])
        sub = fold_batchnorm(sub).to(memory_format=torch.channels_last)  # eval only from here: BN into the convs
        for s in splits:
            y = data.y_val if s == "val" else data.y_test
            out[s].append(evaluate(sub, data.at(s, r, n_eval), y[:n_eval], r, sub))
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
