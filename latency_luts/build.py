"""Build per-block latency LUTs of a weight-sharing space by timing every distinct block alone.

The blocks come from the space's declared ``block_catalogue()`` (key -> static module and input shape), keyed
like ``space.blocks(arch)`` (shape, kernel, expand, stride, SE, activation), so one entry serves every subnet
that contains it. Blocks are prepared and timed by a :class:`~latency_luts.device.Device` (its interleaved-rounds protocol),
in chunks, each chunk in a fresh process (limits drift and memory).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from latency_luts.device import Device, OnnxRuntimeDevice
from latency_luts.lut import LatencyLUT

log = logging.getLogger(__name__)


def timing_device(name: str = "local_cpu", threads: int = 1, rounds: int = 20) -> OnnxRuntimeDevice:
    """The onnxruntime device LUT builds and latency benchmarks time with: the run's protocol (interleaved
    rounds, minimum, spread, load flags, a fresh process per pass) with 3 warm-up rounds and no extra rounds."""
    dev = OnnxRuntimeDevice(name=name, threads=int(threads), rounds=int(rounds), warmup=3, max_extra_rounds=0)
    dev.validate()
    return dev


def build_lut(space: Any, device: str | Device = "local_cpu", threads: int = 1, rounds: int = 20, chunk: int = 400,
              out: str | Path | None = None) -> LatencyLUT:
    """Measure every distinct block of a weight-sharing ``space`` (its ``block_catalogue()``) and the parts
    every subnet shares (``fixed_blocks()``, summed into the LUT's constant); return (and optionally save) it.
    ``device``: the Device that prepares and times the blocks, or a name for :func:`timing_device` with
    ``threads`` and ``rounds``."""
    from search_spaces import WeightSharingSpace

    if not isinstance(space, WeightSharingSpace):
        raise ValueError(f"space {getattr(space, 'name', space)!r} has no supernet blocks; expected a weight-sharing "
                         "space (ofa_mbv3, fbnet)")
    dev = device if isinstance(device, Device) else timing_device(device, threads, rounds)
    t0 = time.perf_counter()
    cat = space.block_catalogue()
    entries: dict[str, float] = {k: 0.0 for k, (mod, _) in cat.items() if mod is None}  # identity: no work
    work = {k: v for k, v in cat.items() if v[0] is not None}
    fixed = {f"fixed{i}": v for i, v in enumerate(space.fixed_blocks())}
    keys = list(work) + list(fixed)
    spread: dict[str, float] = {}
    timed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hwnas-lut-") as tmp:
        bar = tqdm(total=len(keys), desc=f"LUT: export+time {len(keys)} blocks", unit="block")
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            paths = []
            for i, key in enumerate(part):
                mod, shape = work[key] if key in work else fixed[key]
                paths.append(str(dev.prepare(mod.eval(), shape, Path(tmp) / f"{start + i}{dev.suffix}")))
                bar.update(0.5)
            for m in dev.measure(paths, part, seed=start):
                timed[m.name] = m.latency_ms
                spread[m.name] = m.cv
            bar.update(len(part) / 2)
            for p in paths:
                os.remove(p)
        bar.close()
    entries.update({k: timed[k] for k in work})
    const_ms = float(sum(timed[k] for k in fixed))
    cvs = sorted(spread.values())
    meta = {"profile": dev.profile(), "space_settings": space.describe(), "rounds": int(dev.rounds), "estimator": "min over interleaved rounds", "median_cv": cvs[len(cvs) // 2],
            "build_seconds": round(time.perf_counter() - t0, 1), "n_blocks": len(entries),
            "n_fixed_blocks": len(fixed)}
    lut = LatencyLUT(space.name, dev.name, entries, const_ms, meta)
    if out is not None:
        lut.save(out)
    log.info("LUT with %d blocks (+%d fixed parts, %.3f ms) built in %.0f s (median CV %.3f)", len(entries),
             len(fixed), const_ms, meta["build_seconds"], meta["median_cv"])
    return lut
