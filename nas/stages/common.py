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

from latency_luts.device import NeedsMeasurement  # noqa: F401 - re-exported: the CLI and tests catch it here
from latency_luts.measure import Measurement
from nas.rundir import RunContext
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
    """The run's device built dry from ``cfg.device`` (its ``_target_`` class and keys) and validated, before any
    stage runs; a device that reads timings made elsewhere has every file read and checked too."""
    from latency_luts.device import build_device

    device = build_device(cfg.device)
    device.validate()
    check_choice(cfg, "measure.exporter", ("legacy", "dynamo"))
    if device.measurement_files():
        validate_device_csv(cfg, device.measurement_files(), device.name)


def validate_device_csv(cfg: Any, csvs: Sequence[str], device: str) -> None:
    """Every timing file of the device (``device.csv``) read and checked before any stage runs (not when the
    measure stage first needs it, after training): interchange columns, finite positive latencies, no
    conflicting duplicates, rows of the run's device, and only architectures of the run's space and setting."""
    import pandas as pd

    from latency_luts.interchange import load_latency_table, select_rows
    from nas.rundir import build_space

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
    select_rows(pd.concat(tables, ignore_index=True), space.name, [str(device)])  # the device's; no repeated pair


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


def recalibrated_subnet(ctx: RunContext, supernet: Any, arch: Any) -> torch.nn.Module:
    """The extracted subnet with BatchNorm recalibrated as the accuracy evaluation does it
    (``predictor.calib_*``), in eval mode: what the run delivers. Recalibrated channels-last (depthwise convs
    run 2-3x faster on CPU) on one thread: a channels-last pass's statistics move with the thread count (about
    1e-4 on the logits), so one thread makes every stage's copy of a subnet, the timed file and the export
    stage's parity reference, the same to the bit. Returned in the default memory format for export."""
    r, calib = ctx.space.resolution(arch), bn_calibration(ctx.cfg)
    sub = ctx.space.extract(supernet, arch).to(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recalibrate_bn(sub, ctx.data.at("train", r, calib["calib_images"]), r, calib["calib_batch"],
                       calib["calib_mode"])
    finally:
        torch.set_num_threads(threads)
    return sub.to(memory_format=torch.contiguous_format).eval()


class TimingFiles:
    """The files a run timed, kept in ``timing_onnx/`` and keyed by arch. Each is what the run's device prepares
    as the deliverable (:meth:`latency_luts.device.Device.prepare`: BatchNorm recalibrated as for the accuracy
    evaluation, exported by ``measure.exporter``, int8-quantised for ``device.precision=int8``), so the file
    timed is the file the export stage delivers, byte for byte. The search stage's joint re-timing of all
    candidates reuses the measure stage's files instead of preparing them again.

    The files belong to one supernet checkpoint and one preparation setting (engine, exporter, precision, batch,
    BatchNorm recalibration); when any of them changes, the folder is emptied and refilled. Each file is written
    under a unique temporary name and renamed, so concurrent writers never see or leave half a file.
    """

    def __init__(self, ctx: RunContext) -> None:
        from nas.workers import KeyedFiles

        dev = ctx.device
        self.ctx = ctx
        self.key = {**ctx.checkpoint_key(), "deliverable": True, "engine": dev.runtime,
                    "exporter": str(ctx.cfg.measure.exporter), "precision": str(dev.precision),
                    "batch": int(dev.batch), "bn_calibration": bn_calibration(ctx.cfg)}
        self.files = KeyedFiles(ctx.path("timing_onnx"), self.key)  # the workers' keyed folder (key.json)
        self.dir = self.files.dir

    def path(self, arch: Any) -> Path:
        return self.files.path(arch.to_string(), self.ctx.device.suffix)

    def get(self, supernet: Any, arch: Any) -> Path:
        """The arch's timed file, prepared by the run's device unless this run already has it."""
        path = self.path(arch)
        if path.is_file():
            return path
        ctx, dev = self.ctx, self.ctx.device
        sub = recalibrated_subnet(ctx, supernet, arch)
        fallback = "legacy" if bool(ctx.cfg.export.get("fallback_to_legacy", True)) else None
        return dev.prepare(sub, ctx.space.input_shape(arch, dev.batch), path,
                           exporter=str(ctx.cfg.measure.exporter), fallback=fallback,
                           calibration=calibration_batch(ctx, arch) if dev.precision in dev.quantized else None)


def measure_archs(ctx: RunContext, supernet: Any, archs: Sequence[Any], desc: str = "prepare for timing",
                  stage: str = "measure") -> list[Measurement]:
    """Prepare each subnet's deliverable on the run's device (files this run already prepared are reused, see
    :class:`TimingFiles`) and time them all together in one pass of the device's protocol.

    A device that times elsewhere (``device=remote``) reads its ``device.csv`` files instead; subnets they lack
    go out as a kit in ``kits/<stage>/`` and the run stops with :class:`NeedsMeasurement`.
    """
    from latency_luts.device import KitRequest

    dev = ctx.device
    files = TimingFiles(ctx)
    todo = sum(not files.path(a).is_file() for a in archs)
    if todo < len(archs):
        log.info("%s: %d of %d subnets already prepared in %s", stage, len(archs) - todo, len(archs), files.dir)
    paths = [files.get(supernet, a) for a in tqdm(archs, desc=desc, unit="subnet", leave=False)]
    kit = KitRequest(ctx.path("kits", stage), ctx.space.name, [ctx.space.input_shape(a, dev.batch) for a in archs],
                     key=ctx.space.parse)
    return dev.measure(paths, [a.to_string() for a in archs], seed=int(ctx.cfg.seed), progress=True, kit=kit)


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
