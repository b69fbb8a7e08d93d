"""bench=lut_accuracy: LUT-sum (+ residual) estimate against real whole-network measurement on this device.

``bench.n`` random subnets are measured whole-network twice, each pass in its own process (repeatability);
the LUT residual is fitted on ``bench.fit`` other subnets; the estimate is compared with the measurement
(elementwise minimum of the two passes, the protocol's estimator).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from latency_luts.build import build_lut
from latency_luts.lut import LatencyLUT
from nas.bench.config import bench_config
from nas.bench.timing import latency_scores, time_subnets_twice
from nas.rundir import write_json_atomic
from predictors.lut_residual import LUTResidualPredictor
from search_spaces import create_search_space

log = logging.getLogger(__name__)


def default_lut_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("latency_luts") / "data" / "ofa_mbv3_imagenet_ort_cpu_1thread.json"))


def run(cfg: Any) -> dict:
    cfg = bench_config("lut_accuracy", cfg)
    n, n_fit, seed = int(cfg.n), int(cfg.fit), int(cfg.seed)
    if n < 10 or n_fit < 2:
        raise ValueError(f"bench.n={n}, bench.fit={n_fit} are invalid; expected n >= 10 and fit >= 2")
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
    lut_path = Path(cfg.lut) if cfg.lut else default_lut_path()
    t_lut = None
    if lut_path.is_file():
        lut = LatencyLUT.load(lut_path, space="ofa_mbv3")
    elif cfg.build_lut:
        t0 = time.perf_counter()
        lut = build_lut(space, threads=int(cfg.threads), rounds=int(cfg.rounds), out=lut_path)
        t_lut = time.perf_counter() - t0
    else:
        raise ValueError(f"no LUT at {lut_path}; expected a LUT file or bench.build_lut=true")
    archs = space.sample_many(n + n_fit, np.random.default_rng(seed))
    timed = time_subnets_twice(space, archs, int(cfg.threads), int(cfg.rounds), seed)
    m1, m2 = timed.pass1.to_numpy(), timed.pass2.to_numpy()
    measured = timed.latency_ms.to_numpy()
    fit_idx, test_idx = np.arange(n, n + n_fit), np.arange(n)
    model = LUTResidualPredictor(lut, space).fit([archs[i] for i in fit_idx], measured[fit_idx])
    test = [archs[i] for i in test_idx]
    result = {
        "bench": "lut_accuracy", "n": n, "fit": n_fit, "threads": int(cfg.threads), "rounds": int(cfg.rounds),
        **latency_scores(model.predict(test), measured[test_idx]),
        "repeat_spearman": float(spearmanr(m1[test_idx], m2[test_idx]).statistic),
        "repeat_median_gap": float(np.median(np.abs(m1 - m2) / np.minimum(m1, m2))),
        "median_cv": float(timed.cv.median()),
        "lut_sum_only": latency_scores(model.estimate_lut_sum(test), measured[test_idx]),
        "latency_range_ms": [float(measured.min()), float(measured.max())],
        "lut": str(lut_path), "lut_blocks": len(lut.entries), "lut_build_seconds": t_lut,
        "lut_meta": lut.meta,
    }
    write_json_atomic(Path(cfg.out), result)
    return result
