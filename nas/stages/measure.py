"""Stage 2: sample subnets, prepare each on the run's device (the file it would deliver) and time them together
-> measurements.csv."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from nas.rundir import RunContext, write_csv_atomic
from nas.stages.common import measure_archs, positive_int, validate_device

log = logging.getLogger(__name__)


def validate(cfg: Any) -> None:
    n = positive_int(cfg, "measure.n_archs")
    if n < 5:
        raise ValueError(f"measure.n_archs={n} is too small; expected >= 5 to fit predictors")
    validate_device(cfg)



def reset(ctx: RunContext) -> None:
    """Nothing to remove before a forced rerun: the stage rewrites measurements.csv whole (atomically)."""


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    rng = np.random.default_rng([int(cfg.seed), 2])
    space = ctx.space
    n = int(cfg.measure.n_archs)
    # always include both extremes so the predictors see the whole latency range
    archs = [space.largest(), space.smallest()]
    archs += [a for a in space.sample_many(n + 2, rng) if a not in archs][: n - 2]
    supernet = ctx.load_supernet()
    ms = measure_archs(ctx, supernet, archs, desc="prepare sampled subnets")
    df = pd.DataFrame([m.as_dict() for m in ms]).rename(columns={"name": "arch"})
    df.insert(0, "space", space.name)
    df.insert(2, "device", ctx.device.name)
    for k, v in ctx.device_profile().items():
        if k not in df.columns:
            df[k] = v
    df["params"] = [space.params(a) for a in archs]
    df["macs"] = [space.macs(a) for a in archs]
    write_csv_atomic(ctx.path("measurements.csv"), df)
    lat = df.latency_ms.to_numpy()
    flagged = int((df["load"] != "ok").sum())
    other = float(df.other_cpus.median())
    log.info("measured %d subnets: %.3f..%.3f ms (x%.1f), median CV %.3f, other processes used %.1f CPUs, "
             "%d rows flagged in measurements.csv's load column", len(df), lat.min(), lat.max(),
             lat.max() / lat.min(), df.cv.median(), other, flagged)
    return {"n_measured": len(df), "latency_min_ms": float(lat.min()), "latency_max_ms": float(lat.max()),
            "median_cv": float(df.cv.median()), "other_cpus": None if np.isnan(other) else other,
            "load_flagged": flagged, "load_flags": sorted(set(df["load"]))}
