"""bench=latency_cpu_calibration: a predictor meta-trained on GPU devices, calibrated to THIS CPU in 20 timings.

Meta-training data: every device of the given interchange files (HELP's OFA-MobileNetV3 GPU latencies by
default). Target: this machine's CPU with onnxruntime (ImageNet setting, fp32, batch 1, ``threads``). A pool of
``n_pool`` archs from those files is exported and timed here twice (two fresh processes, interleaved rounds,
minimum); the pass-to-pass agreement is reported. Each method chooses ``budget`` archs of the pool to "measure",
adapts, and is scored on all the other pool archs. Ours and the ridge baseline run in the same process.
Ours sees the architectures as the pipeline's calibrate stage does (:class:`SpaceFeaturizer`: one-hot encoding
plus the space's analytic cost features, i.e. MACs per stage, params, resolution); nothing of this CPU but the
``budget`` timings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from latency_luts.interchange import latency_matrix, load_latency_table
from nas.bench.config import bench_config
from nas.bench.latency_fewshot import featurizer as help_featurizer
from nas.bench.latency_fewshot import fewshot_predictor
from nas.bench.timing import latency_scores, time_subnets_twice
from nas.rundir import write_csv_atomic, write_json_atomic
from predictors.fewshot import SourceRidgeBaseline
from search_spaces import create_search_space

log = logging.getLogger(__name__)


def run(cfg: Any) -> dict[str, Any]:
    cfg = bench_config("latency_cpu_calibration", cfg)
    if not cfg.data:
        raise ValueError("bench.data is empty; expected interchange CSVs of source devices, e.g. ofa_mbv3_help.csv.gz")
    n_pool, budget, seeds = int(cfg.n_pool), int(cfg.budget), int(cfg.seeds)
    if n_pool < budget + 200:
        raise ValueError(f"bench.n_pool={n_pool} is too small; expected >= budget + 200 = {budget + 200}")
    mat = latency_matrix(load_latency_table(list(cfg.data), space="ofa_mbv3")).dropna()
    archs = list(mat.index)
    pool = list(np.random.default_rng(int(cfg.seed)).choice(archs, n_pool, replace=False))
    cache = Path(cfg.measurements) if cfg.measurements else None
    if cache is not None and cache.is_file():
        meas = pd.read_csv(cache)
        if set(meas.arch) != set(pool):
            raise ValueError(f"{cache} holds other archs than this pool (seed/n_pool changed); expected a match")
        log.info("using cached CPU timings from %s", cache)
    else:
        space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
        meas = time_subnets_twice(space, [space.parse(a) for a in pool], int(cfg.threads), int(cfg.rounds),
                                  int(cfg.seed))
        if cache is not None:
            out = meas.assign(space="ofa_mbv3", device=f"local_cpu_ort_{int(cfg.threads)}t")
            write_csv_atomic(cache, out[["space", "arch", "device", "latency_ms", "pass1", "pass2", "cv"]])
    meas = meas.set_index("arch").loc[pool]
    y = meas.latency_ms.to_numpy()
    features = {k: pd.DataFrame(v, index=archs) for k, v in help_featurizer("ofa_mbv3")(archs).items()}
    ours = fewshot_predictor(OmegaConf.to_container(cfg.predictor, resolve=True), budget)
    models = {"ours": ours.meta_fit(mat, features),
              "baseline": SourceRidgeBaseline().meta_fit(mat)}
    res: dict[str, list[dict[str, float]]] = {k: [] for k in models}
    for seed in tqdm(range(seeds), desc="calibrate", unit="seed"):
        for name, model in models.items():
            picked = model.select(pool, budget, np.random.default_rng(seed))
            idx = [pool.index(a) for a in picked]
            model.adapt(picked, y[idx])
            taken = set(idx)
            rest = [i for i in range(n_pool) if i not in taken]
            res[name].append(latency_scores(model.predict([pool[i] for i in rest]), y[rest]))
    summary = {name: {f"{k}_mean": float(np.mean([r[k] for r in rs])) for k in ("spearman", "mape", "within10")}
               | {"spearman_std": float(np.std([r["spearman"] for r in rs]))} for name, rs in res.items()}
    result = {
        "bench": "latency_cpu_calibration", "budget": budget, "n_pool": n_pool, "n_eval": n_pool - budget,
        "seeds": seeds, "source_devices": list(mat.columns), "threads": int(cfg.threads),
        "repeat_spearman": float(spearmanr(meas.pass1, meas.pass2).statistic),
        "repeat_median_gap": float(np.median(np.abs(meas.pass1 - meas.pass2) / y)),
        "median_cv": float(np.median(meas.cv)), "latency_range_ms": [float(y.min()), float(y.max())],
        "ours": summary["ours"], "baseline": summary["baseline"],
    }
    write_json_atomic(Path(cfg.out), result)
    print(f"{'method':<10}{'spearman':>10}{'MAPE%':>8}{'w10':>7}")
    for name in ("ours", "baseline"):
        s = summary[name]
        print(f"{name:<10}{s['spearman_mean']:>10.4f}{100 * s['mape_mean']:>8.2f}{s['within10_mean']:>7.3f}")
    print(f"repeat Spearman {result['repeat_spearman']:.4f}, median CV {result['median_cv']:.3f}")
    return result
