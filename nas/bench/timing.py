"""Shared by latency benchmarks: time OFA subnets twice in fresh processes, and score latency predictions."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from latency_luts.build import timing_device

log = logging.getLogger(__name__)


def time_subnets_twice(space, archs: Sequence, threads: int, rounds: int, seed: int) -> pd.DataFrame:  # noqa: ANN001
    """Export each subnet of ``space`` (random supernet weights) and time all of them in two passes, each pass
    in a fresh process with interleaved rounds. Columns: arch, pass1, pass2, cv (of pass 1), latency_ms (min)."""
    names = [a.to_string() for a in archs]
    net, dev = space.build_supernet().eval(), timing_device(threads=threads, rounds=rounds)
    with tempfile.TemporaryDirectory(prefix="hwnas-timing-") as tmp:
        paths = [str(dev.prepare(space.extract(net, a).eval(), space.input_shape(a), Path(tmp) / f"{i}{dev.suffix}"))
                 for i, a in enumerate(tqdm(archs, desc="export subnets", unit="subnet"))]
        passes = []
        for p in range(2):
            log.info("whole-network pass %d/2 over %d subnets (fresh process)", p + 1, len(paths))
            passes.append([m.as_dict() for m in dev.measure(paths, names, seed=seed + p)])
    df = pd.DataFrame({"arch": names, "pass1": [r["latency_ms"] for r in passes[0]],
                       "pass2": [r["latency_ms"] for r in passes[1]], "cv": [r["cv"] for r in passes[0]]})
    df["latency_ms"] = np.minimum(df.pass1, df.pass2)
    return df


def latency_scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman, MAPE and share within +-10% of predicted vs measured latency (ms)."""
    rel = np.abs(pred - y) / y
    return {"spearman": float(spearmanr(pred, y).statistic), "mape": float(rel.mean()),
            "within10": float((rel <= 0.10).mean())}
