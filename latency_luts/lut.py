"""Latency lookup tables: per-block times keyed by ``space.blocks(arch)``, stored as versioned JSON.

estimate(arch) = const_ms + sum of the LUT entries of the arch's blocks. Files carry a schema name and version,
the space, the device profile and the entries; a corrupt or mismatched file is refused with one line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latency_luts.files import write_json_atomic

SCHEMA = "hwnas-latency-lut"
VERSION = 1


@dataclass
class LatencyLUT:
    space: str
    device: str
    entries: dict[str, float]
    const_ms: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for k, v in self.entries.items():
            if not isinstance(v, int | float) or not math.isfinite(v):
                raise ValueError(f"LUT entry {k!r} is {v!r}; expected a finite number of milliseconds")
        if not math.isfinite(self.const_ms):
            raise ValueError(f"LUT const_ms={self.const_ms!r}; expected a finite number")
        if not self.meta.get("relative", False):
            bad = [k for k, v in self.entries.items() if v < 0]
            if bad or self.const_ms < 0:
                raise ValueError(f"LUT entry {bad[0] if bad else 'const_ms'!r} is negative; expected times >= 0 "
                                 "(only tables marked meta.relative may hold negative offsets)")

    def estimate(self, space: Any, archs: Sequence[Any]) -> np.ndarray:
        """LUT-sum latency (ms) of each arch; a block missing from the table is an error naming it."""
        if space.name != self.space:
            raise ValueError(f"LUT is for space {self.space!r}, not {space.name!r}")
        out = np.empty(len(archs))
        for i, a in enumerate(archs):
            total = self.const_ms
            for key in space.blocks(a):
                if key not in self.entries:
                    raise ValueError(f"block {key!r} of {a.to_string()!r} is missing from the {self.device} LUT")
                total += self.entries[key]
            out[i] = total
        return out

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(path, {"schema": SCHEMA, "version": VERSION, "space": self.space,
                                        "device": self.device, "const_ms": self.const_ms, "meta": self.meta,
                                        "entries": self.entries}, indent=1, default=None)

    @classmethod
    def load(cls, path: str | Path, space: str | None = None) -> LatencyLUT:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read LUT {path}: {e}; expected a {SCHEMA} JSON file") from e
        if not isinstance(d, dict) or d.get("schema") != SCHEMA or d.get("version") != VERSION:
            got = (d.get("schema"), d.get("version")) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{path} has schema {got}; expected ({SCHEMA!r}, {VERSION})")
        for key in ("space", "device", "entries", "const_ms"):
            if key not in d:
                raise ValueError(f"LUT {path} lacks the key {key!r}")
        if space is not None and d["space"] != space:
            raise ValueError(f"LUT {path} is for space {d['space']!r}; expected {space!r}")
        return cls(d["space"], d["device"], {k: float(v) if v is not None else math.nan for k, v in d["entries"].items()},
                   float(d["const_ms"]), d.get("meta", {}))


def lut_from_layer_table(space: Any, table: np.ndarray, const_ms: float, ops: Sequence[str], device: str,
                         meta: dict[str, Any] | None = None, atol: float = 1e-9) -> LatencyLUT:
    """Turn a per-(layer, op) table into a shape-keyed LUT via ``space.blocks``.

    Layers whose blocks have the same key must carry the same time; a conflict means the layer indexing or the
    op order is wrong, and is refused.
    """
    n_layers = table.shape[0]
    entries: dict[str, float] = {}
    for j, op in enumerate(ops):
        arch = space.parse(",".join([op] * n_layers))
        for layer, key in enumerate(space.blocks(arch)):
            v = float(table[layer, j])
            if key in entries and abs(entries[key] - v) > atol:
                raise ValueError(f"block {key!r} has {entries[key]} ms at one layer and {v} ms at layer {layer}; "
                                 "expected one time per block shape")
            entries[key] = v
    return LatencyLUT(space.name, device, entries, float(const_ms), meta or {})
