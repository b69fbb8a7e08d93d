"""Build per-block latency LUTs of a weight-sharing space by timing every distinct block alone.

The blocks come from the space's declared ``block_catalogue()`` (key -> static module and input shape), keyed
like ``space.blocks(arch)`` (shape, kernel, expand, stride, SE, activation), so one entry serves every subnet
that contains it. Blocks are exported to ONNX and timed with the interleaved-rounds protocol of
:mod:`latency_luts.measure`, in chunks, each chunk in a fresh process (limits drift and memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from latency_luts.lut import LatencyLUT
from latency_luts.measure import Measurement, OrtSettings, describe_load
from latency_luts.onnx_export import export_onnx
from latency_luts.profile import local_ort_profile

log = logging.getLogger(__name__)


_WORKER = """
import json, sys
from latency_luts.measure import OrtSettings, measure_onnx_models
job = json.load(open(sys.argv[1]))
ms = measure_onnx_models(job["paths"], OrtSettings(**job["settings"]), warmup=job["warmup"], rounds=job["rounds"],
                         batch=job["batch"], cv_threshold=job["cv_threshold"], max_extra_rounds=job["max_extra_rounds"],
                         names=job["names"], seed=job["seed"], progress=job["progress"])
json.dump([m.as_dict() for m in ms], open(sys.argv[2], "w"))
"""


def measure_in_fresh_process(paths: list[str], names: list[str], threads: int = 1, warmup: int = 3, rounds: int = 20,
                             seed: int = 0, settings: OrtSettings | None = None, batch: int = 1,
                             cv_threshold: float = 0.05, max_extra_rounds: int = 0,
                             progress: bool = False) -> list[dict[str, Any]]:
    """Time ONNX files with the interleaved protocol in a separate Python process (limits drift and memory
    growth across batches); one dict per model, as :class:`latency_luts.measure.Measurement` fields. A pass
    timed on a loaded machine is logged as a warning (and flagged in each row's ``load``)."""
    settings = settings or OrtSettings(threads=threads)
    with tempfile.TemporaryDirectory(prefix="hwnas-job-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"paths": [str(p) for p in paths], "names": list(names),
                                   "settings": dataclasses.asdict(settings), "warmup": warmup, "rounds": rounds,
                                   "batch": batch, "cv_threshold": cv_threshold, "max_extra_rounds": max_extra_rounds,
                                   "seed": seed, "progress": progress}))
        proc = subprocess.run([sys.executable, "-c", _WORKER, str(job), str(out)], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=None if progress else subprocess.PIPE, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or "").strip().splitlines()[-1:]
            raise RuntimeError(f"measurement worker failed with exit code {proc.returncode}: {tail}")
        rows = json.loads(out.read_text())
    note = describe_load([Measurement(**r) for r in rows], int(settings.threads))
    if note:
        log.warning(note)
    return rows


def build_lut(space: Any, device: str = "local_cpu", threads: int = 1, rounds: int = 20, chunk: int = 400,
              out: str | Path | None = None) -> LatencyLUT:
    """Measure every distinct block of a weight-sharing ``space`` (its ``block_catalogue()``) and the parts
    every subnet shares (``fixed_blocks()``, summed into the LUT's constant); return (and optionally save) it."""
    from search_spaces import WeightSharingSpace

    if not isinstance(space, WeightSharingSpace):
        raise ValueError(f"space {getattr(space, 'name', space)!r} has no supernet blocks; expected a weight-sharing "
                         "space (ofa_mbv3, fbnet)")
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
                paths.append(str(export_onnx(mod.eval(), shape, Path(tmp) / f"{start + i}.onnx")))
                bar.update(0.5)
            res = measure_in_fresh_process(paths, part, threads=threads, rounds=rounds, seed=start)
            for r in res:
                timed[r["name"]] = r["latency_ms"]
                spread[r["name"]] = r["cv"]
            bar.update(len(part) / 2)
            for p in paths:
                os.remove(p)
        bar.close()
    entries.update({k: timed[k] for k in work})
    const_ms = float(sum(timed[k] for k in fixed))
    cvs = sorted(spread.values())
    meta = {"profile": local_ort_profile(threads, 1, "fp32", device).as_dict(), "space_settings": space.describe(),
            "rounds": rounds, "estimator": "min over interleaved rounds", "median_cv": cvs[len(cvs) // 2],
            "build_seconds": round(time.perf_counter() - t0, 1), "n_blocks": len(entries),
            "n_fixed_blocks": len(fixed)}
    lut = LatencyLUT(space.name, device, entries, const_ms, meta)
    if out is not None:
        lut.save(out)
    log.info("LUT with %d blocks (+%d fixed parts, %.3f ms) built in %.0f s (median CV %.3f)", len(entries),
             len(fixed), const_ms, meta["build_seconds"], meta["median_cv"])
    return lut
