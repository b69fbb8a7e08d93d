"""Measurement kits: an engine's artefacts + ``manifest.json`` that ``hwnas-measure`` times on a remote device.

Kept free of torch and pandas so the agent side imports only the engine + numpy.

manifest.json (``engine`` is a key of latency_luts.device.base.ENGINES; a kit without it is onnxruntime's)::

    {"format": "hwnas-measurement-kit", "version": 1, "space": "ofa_mbv3", "engine": "onnxruntime",
     "models": [{"file": "000.onnx", "arch": "ks=...;e=...;d=...;r=160", "input_shape": [1, 3, 160, 160]}, ...]}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latency_luts.files import write_csv_atomic, write_json_atomic

KIT_FORMAT = "hwnas-measurement-kit"
KIT_VERSION = 1
CSV_COLUMNS = ("space", "arch", "device", "latency_ms", "median_ms", "p10_ms", "p90_ms", "cv", "runs", "warmup",
               "other_cpus", "drift", "load")


def write_manifest(kit_dir: str | Path, space: str, models: Sequence[dict[str, Any]],
                   engine: str = "onnxruntime") -> Path:
    """Write the manifest of a kit whose ``engine`` artefacts are already in ``kit_dir``."""
    kit_dir = Path(kit_dir)
    for m in models:
        if not (kit_dir / m["file"]).is_file():
            raise ValueError(f"kit model file {m['file']!r} is missing from {kit_dir}")
    return write_json_atomic(kit_dir / "manifest.json",
                             {"format": KIT_FORMAT, "version": KIT_VERSION, "space": space, "engine": engine,
                              "models": list(models)},
                             indent=1)


def read_manifest(kit_dir: str | Path) -> dict[str, Any]:
    kit_dir = Path(kit_dir)
    path = kit_dir / "manifest.json"
    if not path.is_file():
        raise ValueError(f"{kit_dir} has no manifest.json; expected a kit written by hwnas (measure.kit_dir=...)")
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); expected a kit manifest") from e
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not valid JSON (binary data, not UTF-8 text); expected a kit manifest") from None
    if not isinstance(man, dict):
        raise ValueError(f"{path} holds a JSON {type(man).__name__}; expected a kit manifest object")
    if man.get("format") != KIT_FORMAT or man.get("version") != KIT_VERSION:
        raise ValueError(f"{path} has format {man.get('format')!r} v{man.get('version')}; "
                         f"expected {KIT_FORMAT!r} v{KIT_VERSION}")
    if not man.get("models"):
        raise ValueError(f"{path} lists no models; expected at least one")
    man.setdefault("engine", "onnxruntime")  # kits written before engines were named
    for m in man["models"]:
        if not (kit_dir / m["file"]).is_file():
            raise ValueError(f"kit model file {m['file']!r} listed in {path} is missing")
    return man


def write_interchange_csv(path: str | Path, rows: Sequence[dict[str, Any]], extra: dict[str, Any]) -> Path:
    """Rows in the interchange format (+ spread and device profile columns), written atomically."""
    cols = list(CSV_COLUMNS) + [k for k in extra if k not in CSV_COLUMNS]
    return write_csv_atomic(path, [{**extra, **r} for r in rows], cols)


def read_benchmark_csv(path: str | Path, models: Sequence[dict[str, Any]]) -> list[Any]:
    """Timings an engine's own benchmark tool took of a kit's files, as Measurements named by arch: a CSV with
    ``file`` and one of ``latency_ms``, ``avg_ms``, ``avg_us`` (optionally ``runs``); every kit file must have
    a row. Its spread columns are unknown (NaN) and ``load`` is ``unknown``: the tool does not report them."""
    import csv

    from latency_luts.measure import Measurement

    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is not readable as a CSV ({type(e).__name__}); expected benchmark timings") from None
    cols = set(rows[0]) if rows else set()
    unit = next(((c, s) for c, s in (("latency_ms", 1.0), ("avg_ms", 1.0), ("avg_us", 1e-3)) if c in cols), None)
    if "file" not in cols or unit is None:
        raise ValueError(f"{path} has columns {sorted(cols)}; expected 'file' and one of latency_ms, avg_ms, avg_us")
    by_file: dict[str, dict[str, str]] = {Path(r["file"]).name: r for r in rows}
    out = []
    for m in models:
        r = by_file.get(m["file"])
        if r is None:
            raise ValueError(f"{path} has no row for kit file {m['file']!r}; expected one row per kit file")
        try:
            lat = float(r[unit[0]]) * unit[1]
        except ValueError:
            lat = float("nan")
        if not lat > 0:
            raise ValueError(f"{path}: {unit[0]}={r[unit[0]]!r} for {m['file']} is invalid; expected a positive number")
        runs = int(float(r["runs"])) if r.get("runs") else 0
        nan = float("nan")
        out.append(Measurement(m["arch"], lat, lat, nan, nan, nan, runs, 0, nan, nan, "unknown"))
    return out
