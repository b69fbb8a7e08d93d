"""Stage 3: adapt a meta-trained few-shot latency predictor to the target device from ``calibrate.budget`` timings.

``calibrate.source`` is either interchange-format CSVs of source devices measured in *this run's* space and
setting (meta-trained here, e.g. HELP's ofa_mbv3 GPU latencies for ``search_space=ofa_mbv3_imagenet``) or one
saved :class:`~predictors.fewshot.FewShotLatencyPredictor` file. The stage chooses ``budget`` architectures of
the source table (by default with the predictor's selection rule: half by greedy max prior variance, half at
random, or the rule meta-training picked when given several), measures them on the device (locally in one
fresh process, or through a kit and ``hwnas-measure`` CSV with ``device=remote``), adapts, and writes

* ``predictors/latency_fewshot.skops`` - the calibrated predictor; the search stage uses it for latency,
* ``predictors/latency_fewshot_meta.skops`` - the meta-trained predictor (reused on reruns with the same source),
* ``predictors/calibration.json`` / ``calibration.csv`` - chosen archs, measured vs predicted, and the
  held-out score on the measure stage's subnets (random archs of the space, absent from the source table).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from nas.rundir import RunContext, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

SELECTIONS = ("meta", "random", "kmeans", "variance", "mixed")
SETTING_KEYS = ("setting", "dataset", "input_size")  # what makes the same arch string a different network
SAVED = (".skops", ".pkl")  # a saved predictor (.pkl: an older version's pickle, refused with how to convert it)


def enabled(cfg: DictConfig) -> bool:
    """The stage runs when ``calibrate.enabled`` or when ``stages`` names it."""
    return "calibrate" in cfg.stages or bool(OmegaConf.select(cfg, "calibrate.enabled", default=False))


def _sources(cfg: DictConfig) -> list[Path]:
    src = OmegaConf.select(cfg, "calibrate.source")
    paths = [src] if isinstance(src, str) else list(src or [])
    if not paths:
        raise ValueError("calibrate.source is empty; expected interchange CSVs of source devices or a saved "
                         "predictor .skops (calibrate.source=[PATH,...])")
    out = [Path(p) for p in paths]
    for p in out:
        if not p.is_file():
            raise ValueError(f"calibrate.source file {str(p)!r} does not exist")
    pkl = [p for p in out if p.suffix in SAVED]
    if pkl and len(out) > 1:
        raise ValueError(f"calibrate.source mixes a saved predictor {str(pkl[0])!r} with other files; expected "
                         "one saved predictor or only CSVs")
    return out


def _space_kwargs(cfg: DictConfig, space: Any = None) -> dict[str, Any]:
    """Constructor arguments of the run's space *setting* (head size and channels from the built space). The
    run's resolution subset is left out: source archs at any resolution of the setting are valid data."""
    kw = {k: v for k, v in OmegaConf.to_container(cfg.search_space, resolve=True).items()
          if k not in ("_target_", "name", "dropout", "resolutions") and v is not None}
    from search_spaces.base import WeightSharingSpace

    if isinstance(space, WeightSharingSpace):  # the data's head size and channels, as the space was built
        kw["n_classes"], kw["in_channels"] = space.n_classes, space.input_shape(space.largest())[1]
    return kw


def _describe(name: str, kw: dict[str, Any]) -> str:
    return " ".join([name] + [f"{k}={kw[k]}" for k in SETTING_KEYS if k in kw])


def _check_predictor(model: Any, path: Path, name: str, kw: dict[str, Any]) -> None:
    from predictors.arch_features import SpaceFeaturizer

    feat = model.featurizer_
    if not isinstance(feat, SpaceFeaturizer):
        raise ValueError(f"calibrate.source {str(path)!r} was meta-trained without a SpaceFeaturizer; expected a "
                         "predictor saved by the calibrate stage (predictors/latency_fewshot_meta.skops)")
    got = feat.describe()
    if got.get("name") != name or any(got.get(k) != kw.get(k) for k in SETTING_KEYS):
        raise ValueError(f"calibrate.source {str(path)!r} was meta-trained for {_describe(got['name'], got)}; this "
                         f"run's space is {_describe(name, kw)}; expected the same space and setting")


def _source_table(paths: list[Path], cfg: DictConfig, space: Any) -> pd.DataFrame:
    """archs x source devices (ms) of the CSVs, every arch checked to belong to ``space`` (the run's space and
    setting, all resolutions of the setting)."""
    from latency_luts.interchange import latency_matrix, load_latency_table

    devices = OmegaConf.select(cfg, "calibrate.devices")
    df = load_latency_table([str(p) for p in paths], devices=list(devices) if devices else None)
    other = sorted(set(df["space"]) - {space.name})
    if other:
        raise ValueError(f"calibrate.source holds space {other[0]!r} measurements; this run's space is "
                         f"{space.name!r}; expected the same space")
    mat = latency_matrix(df).dropna()
    kw = _space_kwargs(cfg)
    for arch in mat.index:
        try:
            space.parse(arch)
        except ValueError as e:
            raise ValueError(f"calibrate.source does not fit this run's space {_describe(space.name, kw)}: {e}; "
                             "expected a source measured in the same space and setting") from None
    if mat.shape[1] < 2:
        raise ValueError(f"calibrate.source has devices {list(mat.columns)}; expected >= 2 source devices")
    return mat


def validate(cfg: DictConfig) -> None:
    """One-line errors before anything is written: budget, selection, source files, space/setting match."""
    from search_spaces import create_search_space

    c = cfg.calibrate
    if not isinstance(c.budget, int) or isinstance(c.budget, bool) or c.budget < 2:
        raise ValueError(f"calibrate.budget={c.budget!r} is invalid; expected an integer >= 2")
    if c.selection not in SELECTIONS:
        raise ValueError(f"calibrate.selection={c.selection!r} is invalid; expected one of {list(SELECTIONS)}")
    latency_predictor(cfg)  # dry-built: a bad setting fails here
    paths = _sources(cfg)
    kw = _space_kwargs(cfg)
    space = create_search_space(cfg.search_space.name, **kw)  # the setting with all its resolutions
    if paths[0].suffix in SAVED:
        from predictors.fewshot import FewShotLatencyPredictor

        _check_predictor(FewShotLatencyPredictor.load(paths[0]), paths[0], space.name, kw)
    else:
        _source_table(paths, cfg, space)


def predictor_settings(cfg: DictConfig) -> dict[str, Any]:
    """``calibrate.predictor`` with the simulated tasks' budget (``meta_budget``) set to ``calibrate.budget``
    unless it is given: the prior is meta-learned for the number of timings the device will get."""
    settings = OmegaConf.to_container(cfg.calibrate.predictor, resolve=True)
    settings.setdefault("meta_budget", int(cfg.calibrate.budget))
    return settings


def latency_predictor(cfg: DictConfig) -> Any:
    """The unfitted few-shot latency predictor of ``calibrate.predictor`` (``meta_fit`` on source devices, then
    ``fit(archs, latencies)`` on the target): what the search's latency column uses on a calibrated device."""
    from predictors.build import instantiate_node

    return instantiate_node(predictor_settings(cfg), "calibrate.predictor")


def meta_train(cfg: DictConfig, table: pd.DataFrame, featurizer: Any) -> Any:
    """The stage's meta-training: :func:`latency_predictor` meta-fitted on ``table`` (archs x source devices, ms)
    with the space's ``featurizer``; ``fit(archs, latencies)`` then calibrates it to the target device.
    ``hwnas-bench bench=search_nb201`` builds its latency model through here too."""
    return latency_predictor(cfg).meta_fit(table, featurizer=featurizer)


def pipeline_defaults() -> DictConfig:
    """``conf/config.yaml`` as shipped (the pipeline's default ``calibrate`` node), for callers outside a Hydra
    run that build what the stage builds (benchmarks, tests)."""
    from importlib import resources

    return OmegaConf.load(str(resources.files("nas.conf") / "config.yaml"))


def _fingerprint(cfg: DictConfig, paths: list[Path]) -> str:
    blob = {"files": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths],
            "devices": OmegaConf.to_container(cfg.calibrate, resolve=True).get("devices"),
            "predictor": predictor_settings(cfg),
            "space": _space_kwargs(cfg)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _meta_trained(ctx: RunContext, paths: list[Path]) -> tuple[Any, str]:
    """The meta-trained predictor: loaded from a saved-predictor source, from this run's cache, or meta-fitted now."""
    from predictors.arch_features import SpaceFeaturizer
    from predictors.fewshot import FewShotLatencyPredictor
    from search_spaces import create_search_space

    cfg, space = ctx.cfg, ctx.space
    kw = _space_kwargs(cfg, space)
    if paths[0].suffix in SAVED:
        model = FewShotLatencyPredictor.load(paths[0])
        _check_predictor(model, paths[0], space.name, kw)
        return model, "loaded"
    cache, stamp = ctx.path("predictors", "latency_fewshot_meta.skops"), ctx.path("predictors", "latency_fewshot_meta.json")
    key = _fingerprint(cfg, paths)
    if cache.is_file() and stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == key:
        return FewShotLatencyPredictor.load(cache), "cached"
    table = _source_table(paths, cfg, create_search_space(space.name, **kw))
    log.info("meta-training the few-shot latency predictor on %d archs x %d source devices", *table.shape)
    model = meta_train(cfg, table, SpaceFeaturizer(space.name, **kw))
    model.save(cache)
    write_json_atomic(stamp, {"fingerprint": key, "source": [str(p) for p in paths],
                              "source_devices": model.source_devices_, "n_archs": len(table)})
    return model, "meta-fitted"


def _choose(model: Any, ctx: RunContext) -> list[str]:
    c = ctx.cfg.calibrate
    rng = np.random.default_rng([int(c.seed), 3])
    candidates = []
    for a in model.index_:  # source-table archs within this run's space (e.g. its resolutions)
        try:
            candidates.append(ctx.space.parse(a).to_string())
        except ValueError:
            continue
    if len(candidates) < 2 * int(c.budget):
        candidates += [a.to_string() for a in ctx.space.sample_many(4 * int(c.budget), rng)]
    if c.selection == "random":
        return [candidates[int(i)] for i in rng.choice(len(candidates), int(c.budget), replace=False)]
    rule = model.selection_
    try:
        if c.selection != "meta":
            model.selection_ = c.selection
        return model.select(candidates, int(c.budget), rng)
    finally:
        model.selection_ = rule


def _scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from nas.stages.common import spearman

    rel = np.abs(pred - y) / y
    return {"n": len(y), "spearman": spearman(pred, y), "mape": float(rel.mean()), "within10": float((rel <= 0.1).mean())}


def reset(ctx: RunContext) -> None:
    """Nothing to remove before a forced rerun: the stage rewrites its predictor and report whole."""


def run(ctx: RunContext) -> dict:
    from nas.stages.common import measure_archs

    cfg, space = ctx.cfg, ctx.space
    paths = _sources(cfg)
    model, how = _meta_trained(ctx, paths)
    chosen = _choose(model, ctx)
    calibration = set(chosen)
    meas_path = ctx.path("measurements.csv")
    meas = pd.read_csv(meas_path) if meas_path.is_file() else None  # the measure stage's random subnets
    held = [] if meas is None else [a for a in meas.arch if a not in calibration]
    # the held-out subnets are timed again in the calibration's own pass: on a shared CPU the load, and with it
    # every latency, moves between passes, and a score against another pass's times would measure that drift
    archs = [space.parse(a) for a in chosen + held]
    ms = measure_archs(ctx, ctx.load_supernet(), archs, desc="export calibration subnets", stage="calibrate")
    y = np.array([m.latency_ms for m in ms[:len(chosen)]])
    model.adapt(chosen, y)
    fitted, fitted_std = model.predict(chosen, return_std=True)
    rows = [pd.DataFrame({"arch": chosen, "role": "calibration", "latency_ms": y, "predicted_ms": fitted,
                          "predicted_std_ms": fitted_std, "in_source_table": [a in model.index_ for a in chosen]})]
    report: dict[str, Any] = {
        "source": [str(p) for p in paths], "meta_training": how, "source_devices": model.source_devices_,
        "n_source_archs": len(model.index_), "space": _space_kwargs(cfg, space) | {"name": space.name},
        "device": cfg.device.name, "budget": len(chosen), "selection": cfg.calibrate.selection,
        "selection_rule": model.selection_ if cfg.calibrate.selection == "meta" else cfg.calibrate.selection,
        "prior_strength": model.prior_strength_, "prior_strength_used": model.kappa_, "chosen": chosen,
        "chosen_latency_ms": y.tolist(), "chosen_fitted_ms": fitted.tolist(),
    }
    if held:  # never used to adapt
        pred, std = model.predict(held, return_std=True)
        y_h = np.array([m.latency_ms for m in ms[len(chosen):]])
        y_m = meas.set_index("arch").latency_ms.loc[held].to_numpy(dtype=float)
        report["heldout"] = _scores(pred, y_h) | {
            "source": "measurements.csv (measure stage), timed again in the calibration pass",
            "within_2std": float((np.abs(pred - y_h) <= 2 * std).mean()),
            "share_in_source_table": float(np.mean([a in model.index_ for a in held])),
            "pass_ratio": float(np.median(y_h / y_m)),  # this pass's times over the measure stage's
        }
        rows.append(pd.DataFrame({"arch": held, "role": "heldout", "latency_ms": y_h, "predicted_ms": pred,
                                  "predicted_std_ms": std, "in_source_table": [a in model.index_ for a in held],
                                  "measure_stage_latency_ms": y_m}))
    model.save(ctx.path("predictors", "latency_fewshot.skops"))
    write_csv_atomic(ctx.path("predictors", "calibration.csv"), pd.concat(rows, ignore_index=True))
    write_json_atomic(ctx.path("predictors", "calibration.json"), report)
    held = report.get("heldout")
    if held:
        log.info("calibrated on %d measurements: held-out Spearman %.3f, MAPE %.3f, within +-10%% %.2f (%d subnets "
                 "of the measure stage, timed again beside the calibration subnets: %.2fx their measure-stage times)",
                 len(y), held["spearman"], held["mape"], held["within10"], held["n"], held["pass_ratio"])
    record = {"budget": len(chosen), "meta_training": how, "n_source_devices": len(model.source_devices_),
              "selection_rule": report["selection_rule"]}
    if held:
        record |= {f"heldout_{k}": held[k] for k in ("spearman", "mape", "within10")}
    return record
