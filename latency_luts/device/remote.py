"""A device where torch cannot run (phone, Pi): its timings come from ``hwnas-measure`` CSVs (``csv``); the
models it lacks go out as a measurement kit (the prepared files themselves, so the file timed there is the file
delivered) and the run stops with :class:`NeedsMeasurement` until the CSV is given."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latency_luts.device.base import KitRequest, NeedsMeasurement
from latency_luts.device.ort import OnnxRuntimeDevice
from latency_luts.files import atomic_path
from latency_luts.measure import Measurement


@dataclass(kw_only=True)
class RemoteDevice(OnnxRuntimeDevice):
    """onnxruntime on another machine, timed there by ``hwnas-measure`` from a kit."""

    name: str = "my_device"
    csv: list[str] = field(default_factory=list)  # interchange CSVs written by hwnas-measure on the device

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.csv, list | tuple) or not all(isinstance(p, str) and p for p in self.csv):
            raise ValueError(f"device.csv={self.csv!r} is invalid; expected a list of CSV files written by "
                             "hwnas-measure")

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
                f"'hwnas-measure {kit.dir.name} --device {self.name} --out {stage}.csv', then rerun this command "
                f"with device.csv=[...,{stage}.csv]")
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
        """Copy each (artefact, arch, input shape) into ``kit.dir`` and write its manifest."""
        from latency_luts.kit import write_manifest

        entries = []
        for i, (src, arch, shape) in enumerate(models):
            name = f"{i:04d}{Path(src).suffix}"
            with atomic_path(kit.dir / name) as tmp:
                shutil.copyfile(src, tmp)
            entries.append({"file": name, "arch": arch, "input_shape": [int(d) for d in shape]})
        return write_manifest(kit.dir, kit.space, entries)


def _row_measurement(name: str, r: dict[str, Any]) -> Measurement:
    """A timing file's row as a Measurement; a column the file lacks (or leaves empty) takes its neutral value."""

    def get(k: str, default: Any) -> Any:
        v = r.get(k)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    lat = float(r["latency_ms"])
    return Measurement(name, lat, float(get("median_ms", lat)), float(get("p10_ms", lat)), float(get("p90_ms", lat)),
                       float(get("cv", 0.0)), int(get("runs", 0)), int(get("warmup", 0)),
                       float(get("other_cpus", float("nan"))), float(get("drift", 1.0)), str(get("load", "ok")))
