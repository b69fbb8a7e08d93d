"""A device where torch cannot run (phone, Pi): its timings come from ``hwnas-measure`` CSVs (``csv``); the
models it lacks go out as a measurement kit (the prepared files themselves, so the file timed there is the file
delivered) and the run stops with :class:`NeedsMeasurement` until the CSV is given. ``engine`` is the inference
engine on the device (onnxruntime by default; openvino, litert, executorch, torch): the kit holds that engine's
artefacts, prepared here by its Device class, and ``hwnas-measure KIT --engine NAME`` times them there."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latency_luts.device.base import Device, KitRequest, Loaded, NeedsMeasurement, engine_class
from latency_luts.device.ort import OnnxRuntimeDevice
from latency_luts.files import atomic_path
from latency_luts.measure import Measurement


@dataclass(kw_only=True)
class RemoteDevice(OnnxRuntimeDevice):
    """An inference engine on another machine, timed there by ``hwnas-measure`` from a kit. The onnxruntime
    settings it inherits apply when ``engine`` is onnxruntime; the others take threads, batch and precision."""

    name: str = "my_device"
    engine: str = "onnxruntime"  # the engine on the device: a key of latency_luts.device.base.ENGINES
    csv: list[str] = field(default_factory=list)  # interchange CSVs written by hwnas-measure on the device

    def validate(self) -> None:
        engine_class(self.engine)  # an unknown engine is one line before anything else
        super().validate()
        if not isinstance(self.csv, list | tuple) or not all(isinstance(p, str) and p for p in self.csv):
            raise ValueError(f"device.csv={self.csv!r} is invalid; expected a list of CSV files written by "
                             "hwnas-measure")

    def local(self) -> Device:
        """The engine's own Device with this device's settings: what prepares (and, on the device, times) the kit."""
        cls = engine_class(self.engine)
        if cls is OnnxRuntimeDevice:
            return OnnxRuntimeDevice(name=self.name, threads=self.threads, batch=self.batch, precision=self.precision,
                                     warmup=self.warmup, rounds=self.rounds, cv_threshold=self.cv_threshold,
                                     max_extra_rounds=self.max_extra_rounds, graph_optimization=self.graph_optimization,
                                     execution_mode=self.execution_mode, spinning=self.spinning)
        return cls(name=self.name, threads=self.threads, batch=self.batch, precision=self.precision,
                   warmup=self.warmup, rounds=self.rounds, cv_threshold=self.cv_threshold,
                   max_extra_rounds=self.max_extra_rounds)

    # the engine's class-level facts and hooks are the local engine's
    runtime = property(lambda self: engine_class(self.engine).runtime)  # type: ignore[assignment]
    precisions = property(lambda self: engine_class(self.engine).precisions)  # type: ignore[assignment]
    quantized = property(lambda self: engine_class(self.engine).quantized)  # type: ignore[assignment]
    suffix = property(lambda self: engine_class(self.engine).suffix)  # type: ignore[assignment]
    requires = property(lambda self: engine_class(self.engine).requires)  # type: ignore[assignment]
    extra = property(lambda self: engine_class(self.engine).extra)  # type: ignore[assignment]
    tolerances = property(lambda self: engine_class(self.engine).tolerances)  # type: ignore[assignment]

    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        self.local().export(module, input_shape, path, exporter)

    def quantize(self, fp32: Path, path: Path, calibration: np.ndarray) -> None:
        self.local().quantize(fp32, path, calibration)

    def load(self, artefact: str | Path) -> Loaded:
        return self.local().load(artefact)

    def artefact_files(self, path: str | Path) -> list[Path]:
        return self.local().artefact_files(path)

    def measurement_files(self) -> list[str]:
        return [str(p) for p in self.csv]

    def engine_version(self) -> str:
        """The version the device's CSVs record (``runtime_version``), else unknown: it runs elsewhere."""
        import pandas as pd

        versions: set[str] = set()
        for path in self.csv:
            try:
                col = pd.read_csv(path, usecols=lambda c: c == "runtime_version")
            except (OSError, ValueError):
                continue
            versions.update(str(v) for v in col.get("runtime_version", []))
        return ",".join(sorted(versions)) or "unknown (timed on the device)"

    def measure(self, artefacts: Sequence[str | Path], names: Sequence[str] | None = None, *, seed: int = 0,
                progress: bool = False, kit: KitRequest | None = None) -> list[Measurement]:
        """The rows of ``csv`` for ``names``; when some are missing, their artefacts are written as a kit to
        ``kit.dir`` and :class:`NeedsMeasurement` says how to time it."""
        from latency_luts.interchange import load_latency_table

        if kit is None:
            raise ValueError(f"device {self.name!r} times elsewhere; expected a kit request saying where to write "
                             "the kit")
        names = list(names) if names is not None else [Path(p).stem for p in artefacts]
        known: dict[Any, dict[str, Any]] = {}
        if self.csv:
            table = load_latency_table([str(p) for p in self.csv], space=kit.space, devices=[self.name])
            spread = self._spread(kit)
            known = {k: {**spread.get(k, {}), **row} for row in table.to_dict("records") if (k := kit.key(row["arch"]))}
        keys = [kit.key(n) for n in names]
        missing = [i for i, k in enumerate(keys) if k not in known]
        if missing:
            self.write_kit(kit, [(artefacts[i], names[i], kit.input_shapes[i]) for i in missing])
            stage = kit.dir.name
            raise NeedsMeasurement(
                f"{len(missing)} subnets need timing on {self.name}: copy {kit.dir} to the device, run "
                f"'hwnas-measure {kit.dir.name} --engine {self.engine} --device {self.name} --out {stage}.csv' "
                f"(it needs only {self.engine} and numpy there), then rerun this command with "
                f"device.csv=[...,{stage}.csv]")
        return [_row_measurement(n, known[k]) for n, k in zip(names, keys, strict=True)]

    def _spread(self, kit: KitRequest) -> dict[Any, dict[str, Any]]:
        """The spread and load columns hwnas-measure writes beside each latency (median, p10, p90, cv, runs, ...)."""
        import pandas as pd

        out: dict[Any, dict[str, Any]] = {}
        for path in self.csv:
            df = pd.read_csv(path)
            if {"arch", "device"} <= set(df.columns):
                for row in df[df["device"].astype(str) == self.name].to_dict("records"):
                    out[kit.key(str(row["arch"]))] = row
        return out

    def write_kit(self, kit: KitRequest, models: Sequence[tuple[str | Path, str, tuple[int, ...]]]) -> Path:
        """Copy each (artefact (all its files), arch, input shape) into ``kit.dir`` and write its manifest."""
        from latency_luts.kit import write_manifest

        entries = []
        for i, (src, arch, shape) in enumerate(models):
            dst = kit.dir / f"{i:04d}{self.suffix}"
            for a, b in zip(self.artefact_files(src), self.artefact_files(dst), strict=True):
                with atomic_path(b) as tmp:
                    shutil.copyfile(a, tmp)
            entries.append({"file": dst.name, "arch": arch, "input_shape": [int(d) for d in shape]})
        return write_manifest(kit.dir, kit.space, entries, engine=self.engine)


def _row_measurement(name: str, r: dict[str, Any]) -> Measurement:
    """A timing file's row as a Measurement; a column the file lacks (or leaves empty) takes its neutral value."""

    def get(k: str, default: Any) -> Any:
        v = r.get(k)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    lat = float(r["latency_ms"])
    return Measurement(name, lat, float(get("median_ms", lat)), float(get("p10_ms", lat)), float(get("p90_ms", lat)),
                       float(get("cv", 0.0)), int(get("runs", 0)), int(get("warmup", 0)),
                       float(get("other_cpus", float("nan"))), float(get("drift", 1.0)), str(get("load", "ok")))
