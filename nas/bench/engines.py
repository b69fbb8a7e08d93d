"""bench=engines: does the engine change the answer? The same subnets of one trained supernet on every engine.

``n_subnets`` subnets, one per MACs bin of a random pool, of a supernet trained by the product's own command
(the default experiment, digits, or ``bench.run_dir``), are prepared by each installed engine's Device exactly as a run
prepares its deliverables (BatchNorm recalibrated, the engine's artefact, parity-checked against torch), then
timed in ``passes`` fresh processes, every engine's files interleaved in the same rounds
(:func:`latency_luts.device.base.measure_together`, the product's protocol: minimum over rounds, spread, load
flags). Validation accuracy comes from the pipeline's own evaluation (``nas.stages.common.evaluate_archs``).

Reported: per engine the parity, the latency range and the pass-to-pass Spearman (repeatability); the
engine-to-engine Spearman matrix of the latencies; the measured Pareto front (validation error vs the engine's
latency) of each engine, its members shared with onnxruntime's front, and the hypervolume each engine's front
keeps when its members are deployed on another engine (``hv_transfer[a][b]``: HV of engine a's front under
engine b's latencies over HV of b's own front; 1 = choosing with a loses nothing on b). And the few-shot
question across engines: for each held-out engine, the pipeline's few-shot latency predictor meta-trained on the
other engines' latencies (``nas.stages.calibrate.meta_train``, the calibrate stage's defaults) adapts with
``fewshot_budget`` timings of the held-out engine and is scored (Spearman) on the rest, beside a ridge on the
source latencies (:class:`SourceRidgeBaseline`) and a ridge on the architecture features alone, both given
the same timings.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from latency_luts.device.base import ENGINES, Device, engine_class, measure_together
from latency_luts.files import write_json_atomic
from nas.bench.config import bench_config, digest, run_hwnas
from nas.pareto import hypervolume, pareto_mask
from nas.rundir import RunContext

log = logging.getLogger(__name__)


def installed_engines() -> list[str]:
    """The engines of :data:`ENGINES` whose Python packages are importable here."""
    out = []
    for key in ENGINES:
        try:
            ok = all(importlib.util.find_spec(m) is not None for m in engine_class(key).requires)
        except (ImportError, ValueError):
            ok = False
        if ok:
            out.append(key)
    return out


def _engines(cfg: Any) -> list[str]:
    if cfg.engines == "auto":
        names = installed_engines()
    elif isinstance(cfg.engines, str):
        raise ValueError(f"bench.engines={cfg.engines!r} is invalid; expected auto or a list of {sorted(ENGINES)}")
    else:
        names = [str(e) for e in cfg.engines]
        for e in names:
            engine_class(e)(name=f"cpu_{e}").check_installed()  # unknown or absent: one line
    if "onnxruntime" not in names or len(names) < 2:
        raise ValueError(f"bench.engines={names} is invalid; expected onnxruntime and at least one other engine")
    return names


def _check(cfg: Any) -> None:
    for key, lo in (("n_subnets", 10), ("passes", 2), ("threads", 1), ("rounds", 1), ("fewshot_budget", 3),
                    ("fewshot_seeds", 1)):
        if int(cfg[key]) < lo:
            raise ValueError(f"bench.{key}={cfg[key]} is invalid; expected an integer >= {lo}")
    if int(cfg.fewshot_budget) > int(cfg.n_subnets) - 10:
        raise ValueError(f"bench.fewshot_budget={cfg.fewshot_budget} is too large; expected <= n_subnets - 10 "
                         f"= {int(cfg.n_subnets) - 10} (the rest score the predictors)")


def _trained_run(cfg: Any) -> tuple[Path, str | None]:
    if cfg.run_dir is not None:
        return Path(cfg.run_dir), None
    run_dir = Path(cfg.cache_dir) / "supernet"
    if (run_dir / "stages" / "train.json").is_file():
        return run_dir, None
    log.info("engines: training the supernet once in %s", run_dir)
    return run_dir, run_hwnas(run_dir, [*cfg.train_overrides, "stages=[train]"])


def _devices(names: list[str], cfg: Any) -> dict[str, Device]:
    devs = {e: engine_class(e)(name=f"cpu_{e}", threads=int(cfg.threads), rounds=int(cfg.rounds)) for e in names}
    for d in devs.values():
        d.validate()
    return devs


def _prepare(ctx: RunContext, supernet: Any, archs: list[Any], devs: dict[str, Device],
             folder: Path) -> tuple[dict[str, list[Path]], dict[str, float]]:
    """Every subnet's deliverable per engine (reused when present) and each engine's worst parity vs torch."""
    from nas.stages.common import recalibrated_subnet

    paths: dict[str, list[Path]] = {e: [] for e in devs}
    worst = dict.fromkeys(devs, 0.0)
    for i, arch in enumerate(tqdm(archs, desc="prepare subnets for every engine", unit="subnet")):
        sub = recalibrated_subnet(ctx, supernet, arch)
        shape = ctx.space.input_shape(arch, 1)
        x = ctx.data.at("test", ctx.space.resolution(arch), 1).contiguous()
        for e, dev in devs.items():
            path = folder / e / f"{i:03d}{dev.suffix}"
            if not all(p.is_file() for p in dev.artefact_files(path)):
                dev.prepare(sub, shape, path, exporter=str(ctx.cfg.measure.exporter))
            worst[e] = max(worst[e], dev.check_parity(sub, path, x))
            paths[e].append(path)
    return paths, worst


def _fronts(err: np.ndarray, lat: pd.DataFrame) -> dict[str, Any]:
    """Each engine's measured front, its overlap with onnxruntime's, and the HV it keeps on the other engines."""
    fronts = {e: set(np.flatnonzero(pareto_mask(np.column_stack([err, lat[e]])))) for e in lat}
    ref = np.array([1.0, 1.1])

    def hv(members: set[int], e: str) -> float:
        idx = sorted(members)
        return hypervolume(np.column_stack([err[idx], lat[e].to_numpy()[idx] / lat[e].max()]), ref)

    base = fronts["onnxruntime"]
    out = {e: {"size": len(f), "shared_with_onnxruntime": len(f & base),
               "jaccard_onnxruntime": len(f & base) / len(f | base)} for e, f in fronts.items()}
    transfer = {a: {b: hv(fronts[a], b) / hv(fronts[b], b) for b in lat} for a in lat}
    return {"fronts": out, "hv_transfer": transfer, "members": {e: sorted(int(i) for i in f) for e, f in fronts.items()}}


def _fewshot(ctx: RunContext, archs: list[str], lat: pd.DataFrame, cfg: Any) -> dict[str, Any]:
    """Leave-one-engine-out: the calibrate stage's predictor meta-trained on the other engines, adapted with
    ``fewshot_budget`` timings of the held-out engine, against two ridges given the same timings."""
    from omegaconf import OmegaConf
    from sklearn.linear_model import RidgeCV

    from nas.stages.calibrate import _space_kwargs, meta_train, pipeline_defaults
    from predictors.arch_features import SpaceFeaturizer
    from predictors.fewshot import SourceRidgeBaseline

    budget, defaults = int(cfg.fewshot_budget), pipeline_defaults()
    OmegaConf.update(defaults, "calibrate.budget", budget)
    feat = SpaceFeaturizer(ctx.space.name, **_space_kwargs(ctx.cfg, ctx.space))
    X = np.hstack([np.asarray(v, dtype=float) for v in feat(archs).values()])
    table = lat.set_index(pd.Index(archs))
    out: dict[str, Any] = {}
    for held in tqdm(list(lat.columns), desc="few-shot per held-out engine", unit="engine"):
        src = table.drop(columns=[held])
        y = table[held]
        models = {"ours": meta_train(defaults, src, feat), "source_ridge": SourceRidgeBaseline().meta_fit(src)}
        scores: dict[str, list[float]] = {"ours": [], "source_ridge": [], "feature_ridge": []}
        for seed in range(int(cfg.fewshot_seeds)):
            picked = models["ours"].select(archs, budget, np.random.default_rng([seed, 29]))
            rest = [a for a in archs if a not in set(picked)]
            for name, model in models.items():
                model.adapt(picked, y.loc[picked].to_numpy())
                scores[name].append(float(spearmanr(model.predict(rest), y.loc[rest]).statistic))
            idx, ridx = [archs.index(a) for a in picked], [archs.index(a) for a in rest]
            ridge = RidgeCV(alphas=np.logspace(-4, 3, 15)).fit(X[idx], np.log(y.loc[picked].to_numpy()))
            scores["feature_ridge"].append(float(spearmanr(ridge.predict(X[ridx]), y.loc[rest]).statistic))
        out[held] = {k: {"spearman_mean": float(np.mean(v)), "spearman_min": float(np.min(v))} for k, v in scores.items()}
    return out


def run(cfg: Any) -> dict[str, Any]:
    cfg = bench_config("engines", cfg)
    _check(cfg)
    names = _engines(cfg)
    devs = _devices(names, cfg)
    run_dir, trained_with = _trained_run(cfg)
    ctx = RunContext.open(run_dir)
    from nas.bench.supernet_ranking import sample_subnets
    from nas.stages.common import evaluate_archs

    archs = sample_subnets(ctx.space, int(cfg.n_subnets), "stratified", np.random.default_rng(int(cfg.seed)))
    strings = [a.to_string() for a in archs]
    supernet = ctx.load_supernet()
    acc = np.asarray(evaluate_archs(ctx, supernet, archs, ("val",), desc="evaluate subnets")["val"])
    key = {**ctx.checkpoint_key(), "archs": strings, "exporter": str(ctx.cfg.measure.exporter),
           "settings": {e: d.spec() for e, d in devs.items()}}
    paths, parity = _prepare(ctx, supernet, archs, devs, Path(cfg.cache_dir) / "files" / digest(key))
    passes = []
    for p in range(int(cfg.passes)):
        log.info("timing pass %d/%d: %d subnets x %d engines interleaved (fresh process)", p + 1, int(cfg.passes),
                 len(archs), len(devs))
        groups = [(devs[e], paths[e], strings) for e in names]
        passes.append(measure_together(groups, seed=int(cfg.seed) + p, progress=True))
    per_pass = [pd.DataFrame({e: [m.latency_ms for m in ms] for e, ms in zip(names, pm, strict=True)}) for pm in passes]
    lat = pd.concat(per_pass).groupby(level=0).min()  # minimum over passes, per subnet and engine
    loads = {e: sorted({m.load for pm in passes for m in pm[i]}) for i, e in enumerate(names)}
    engines = {e: {"runtime": devs[e].runtime, "version": devs[e].engine_version(), "suffix": devs[e].suffix,
                   "worst_parity_max_abs_diff": parity[e], "latency_ms_min": float(lat[e].min()),
                   "latency_ms_median": float(lat[e].median()), "latency_ms_max": float(lat[e].max()),
                   "repeat_spearman": float(spearmanr(per_pass[0][e], per_pass[1][e]).statistic),
                   "load_flags": loads[e]} for e in names}
    rho = {a: {b: float(spearmanr(lat[a], lat[b]).statistic) for b in names} for a in names}
    err = 1.0 - acc
    result = {"bench": "engines", "run_dir": str(run_dir), "trained_with": trained_with, "space": ctx.space.name,
              "n_subnets": len(archs), "passes": int(cfg.passes), "threads": int(cfg.threads),
              "rounds": int(cfg.rounds), "engines": engines, "spearman": rho, **_fronts(err, lat),
              "fewshot_budget": int(cfg.fewshot_budget), "fewshot_seeds": int(cfg.fewshot_seeds),
              "fewshot": _fewshot(ctx, strings, lat, cfg),
              "subnets": {"arch": strings, "val_accuracy": acc.tolist(), "macs": [ctx.space.macs(a) for a in archs],
                          "latency_ms": {e: lat[e].tolist() for e in names}}}
    out = Path(cfg.out) if cfg.out else Path(cfg.cache_dir) / "engines.json"
    write_json_atomic(out, result, indent=1)
    _plot(result, Path(cfg.plot) if cfg.plot else out.with_suffix(".png"))
    _print(result)
    return result


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["engines"])
    sub = r["subnets"]
    acc = np.asarray(sub["val_accuracy"])
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.8))
    base = np.asarray(sub["latency_ms"]["onnxruntime"])
    for e in names:
        lat = np.asarray(sub["latency_ms"][e])
        ax[0].scatter(base, lat, s=12, label=f"{e} (rho {r['spearman']['onnxruntime'][e]:.2f})")
        idx = r["members"][e]
        order = np.argsort(lat[idx])
        ax[1].plot(lat[idx][order] / np.median(lat), acc[idx][order],
                   marker="o", ms=4, label=f"{e}: {r['fronts'][e]['shared_with_onnxruntime']}/{len(idx)} shared")
    ax[0].set(xscale="log", yscale="log", xlabel="onnxruntime latency (ms)", ylabel="engine latency (ms)",
              title=f"{len(base)} subnets, every engine, one CPU")
    ax[1].set(xlabel="latency / the engine's median", ylabel="validation accuracy",
              title="measured Pareto front per engine")
    for a in ax:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print(r: dict[str, Any]) -> None:
    names = list(r["engines"])
    print(f"{'engine':<12}{'version':>14}{'parity':>10}{'median ms':>11}{'repeat rho':>12}{'front':>7}{'shared':>8}"
          f"{'ours rho':>10}{'src ridge':>10}{'feat ridge':>11}")
    for e in names:
        g, f, fs = r["engines"][e], r["fronts"][e], r["fewshot"][e]
        print(f"{e:<12}{g['version']:>14}{g['worst_parity_max_abs_diff']:>10.1e}{g['latency_ms_median']:>11.3f}"
              f"{g['repeat_spearman']:>12.3f}{f['size']:>7}{f['shared_with_onnxruntime']:>8}"
              f"{fs['ours']['spearman_mean']:>10.3f}{fs['source_ridge']['spearman_mean']:>10.3f}"
              f"{fs['feature_ridge']['spearman_mean']:>11.3f}")
    print("Spearman between engines:")
    print(" " * 12 + "".join(f"{b:>12}" for b in names))
    for a in names:
        print(f"{a:<12}" + "".join(f"{r['spearman'][a][b]:>12.3f}" for b in names))
