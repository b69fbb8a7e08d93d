"""bench=latency_fewshot: few-shot latency prediction on devices the predictor never saw (docs/benchmarks/latency_fewshot.md).

Example::

    from nas.bench.latency_fewshot import run
    run({"data": ["../shared/data/latency/nb201_help.csv.gz"], "space": "nb201", "meta_train": None,
         "meta_test": None, "budget": 20, "protocol": "help", "seeds": 5, "out": "nb201.json"})

Per target device and seed, the method (and, in the same run, the ridge-on-source-latencies baseline) picks
``budget`` archs to "measure" from the allowed pool, adapts, and is scored on the query archs: Spearman, MAPE
(%) and the share of predictions within +-10 % of the measured latency.

The method's simulated tasks use the same budget (``meta_budget``) unless ``predictor.meta_budget`` says
otherwise. ``meta_seeds: K`` meta-trains the method K times (``random_state`` 0..K-1: the simulated tasks, pools and rule
choice it draws) and reports per device the mean over all K x ``seeds`` runs and ``spearman_worst`` (the
lowest per-meta-seed mean), overall ``mean_spearman_worst_meta_seed``. ``protocol``: ``help`` (HELP's split:
pool and query trimmed to the 10th-90th percentile of the target's own latencies), ``help_untrimmed`` (HELP's
query, but the method picks from the untrimmed pool, as on a new device), ``all`` (every arch of the device).

Both read architectures as the pipeline's calibrate stage does (:func:`featurizer`: the space's
:class:`SpaceFeaturizer`). ``meta_train: all`` meta-trains on every device of the data that is not a target, e.g.
HELP's devices when a further latency set (its own CSV in ``data``) holds the targets.

``prior`` is the unadapted prior on the same query: the typical source device (geometric mean of the source
latencies), its level set to the ridge's measurements; ``losses_to_ridge`` lists the devices where ours ranks
below ridge. Beside them, ``ceiling`` is a diagnostic, not a method: per target device, the Spearman on the same query of
models fitted to *every* pool arch (~36x the budget) on the same inputs (log source latencies + arch features):
ridge and boosted trees. It shows how much of a device's ranking is predictable at all from these inputs
(HELP's nb201 pixel2 and raspi4 stop near 0.83 and 0.96 even so).

``validate: true`` (optional key) never reads the meta-test devices: each hardware family of the meta-train
devices in turn (``1080ti_1/32/256`` together) is the target, meta-trained on the other families, with the same
protocol; the result has the usual keys over those held-out source devices. Use it to develop the predictor.
``validate: help_valid`` (fbnet) scores HELP's own meta-valid devices instead (titanx_1/32/64, gold_6240),
meta-trained on the meta-train split: fbnet's 12 meta-train families would take an hour to leave out in turn.

``peers: [help]`` (nb201, fbnet) adds HELP's released predictor, its code and checkpoint read from ``help_repo``,
on the same devices, pools, queries, budget and seeds, and HELP's own-protocol reproduction of its README figures
(:mod:`nas.bench.help_peer_bench`); the JSON's ``peers.help`` and a second table hold them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm import tqdm

from latency_luts.files import write_json_atomic
from latency_luts.interchange import latency_matrix, load_latency_table
from nas.bench.config import as_dict, bench_config
from nas.bench.help_peer_bench import check_peers, print_help, run_help
from predictors.arch_features import SpaceFeaturizer
from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline

SPACES = ("nb201", "fbnet", "ofa_mbv3")
PROTOCOLS = ("help", "help_untrimmed", "all")
HELP_POOL = {"nb201": 900, "fbnet": 4000, "ofa_mbv3": 4000}
HELP_QUERY = 1000
HELP_TEST = {
    "nb201": ["titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"],
    "fbnet": ["fpga", "raspi4", "eyeriss"],
    "ofa_mbv3": ["titan_rtx_64"],
}
HELP_VALID = {"nb201": [], "fbnet": ["titanx_1", "titanx_32", "titanx_64", "gold_6240"], "ofa_mbv3": []}
HELP_TRAIN = {
    "nb201": ["1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50", "pixel3",
              "essential_ph_1", "samsung_s7"],
    "fbnet": None,  # every device not in meta-test or meta-valid
    "ofa_mbv3": [f"{d}_{b}" for d in ("2080ti", "titan_xp", "v100") for b in (1, 32, 64)],
}
KEYS = ("data", "space", "meta_train", "meta_test", "budget", "protocol", "seeds", "meta_seeds", "out")


def _plain(cfg: Any) -> dict[str, Any]:
    """conf/bench/latency_fewshot.yaml with ``cfg`` over it, as a plain dict."""
    return as_dict(bench_config("latency_fewshot", cfg))


def _check(cfg: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in KEYS if k not in cfg]
    if missing:
        raise ValueError(f"bench config lacks key {missing[0]!r}; expected keys {list(KEYS)}")
    if cfg["data"] is None:
        raise ValueError("bench.data is null; expected a list of latency CSV paths (bench.data=[PATH,...])")
    if isinstance(cfg["data"], str):
        cfg["data"] = [cfg["data"]]
    if cfg["space"] not in SPACES:
        raise ValueError(f"bench.space={cfg['space']!r} is invalid; expected one of {list(SPACES)}")
    if cfg["protocol"] not in PROTOCOLS:
        raise ValueError(f"bench.protocol={cfg['protocol']!r} is invalid; expected one of {list(PROTOCOLS)}")
    if not isinstance(cfg["validate"], bool) and cfg["validate"] != "help_valid":
        raise ValueError(f"bench.validate={cfg['validate']!r} is invalid; expected true, false or help_valid")
    if cfg["validate"] == "help_valid" and not HELP_VALID[cfg["space"]]:
        raise ValueError(f"bench.validate=help_valid is invalid for space {cfg['space']!r}: HELP has no meta-valid "
                         f"devices there; expected one of {[k for k, v in HELP_VALID.items() if v]}")
    if isinstance(cfg["meta_train"], str) and cfg["meta_train"] != "all":
        raise ValueError(f"bench.meta_train={cfg['meta_train']!r} is invalid; expected a list of devices, 'all' or null")
    for key in ("budget", "seeds", "meta_seeds"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < (2 if key == "budget" else 1):
            raise ValueError(f"bench.{key}={cfg[key]!r} is invalid; expected an integer >= {2 if key == 'budget' else 1}")
    cfg["predictor"] = dict(cfg.get("predictor") or {})
    fewshot_predictor(cfg["predictor"], cfg["budget"])
    check_peers(cfg)
    return cfg


def fewshot_predictor(settings: dict[str, Any], budget: int, **over: Any) -> FewShotLatencyPredictor:
    """The method from ``bench.predictor`` settings (checked, one-line error); its simulated tasks get the
    bench's ``budget`` unless the settings give ``meta_budget``."""
    try:
        model = FewShotLatencyPredictor(**{"meta_budget": budget, **settings, **over})
    except TypeError as e:
        raise ValueError(f"bench.predictor={settings} is invalid ({e}); expected FewShotLatencyPredictor "
                         "settings") from None
    model._check_params()
    return model


# the space each HELP latency set was measured in, as the pipeline's calibrate stage would build it
BENCH_SPACES = {"nb201": ("nb201", {}), "fbnet": ("fbnet", {"dataset": "cifar100"}),
                "ofa_mbv3": ("ofa_mbv3", {"setting": "imagenet", "n_classes": 1000})}


def featurizer(space: str) -> SpaceFeaturizer:
    """The pipeline's featurizer (:class:`SpaceFeaturizer`) of a HELP latency set's space: nb201's one-hot
    encoding; fbnet's op counts per layer shape and analytic costs in HW-NAS-Bench's CIFAR-100
    macro-architecture; ofa_mbv3's one-hot and costs in the ImageNet setting."""
    name, kwargs = BENCH_SPACES[space]
    return SpaceFeaturizer(name, **kwargs)


def _split(space: str, devices: list[str], meta_train: Any, meta_test: Any) -> tuple[list[str], list[str]]:
    test = list(meta_test) if meta_test is not None else HELP_TEST[space]
    if meta_train == "all":  # every device of the data that is not a target (HELP's meta-valid ones included)
        train = [d for d in devices if d not in test]
    elif meta_train is not None:
        train = list(meta_train)
    elif HELP_TRAIN[space] is not None:
        train = HELP_TRAIN[space]
    else:
        train = [d for d in devices if d not in test and d not in HELP_VALID[space]]
    for d in [*train, *test]:
        if d not in devices:
            raise ValueError(f"device {d!r} is not in the latency data; found {devices}")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise ValueError(f"device {overlap[0]!r} is both meta-train and meta-test; expected disjoint splits")
    if len(train) < 2:
        raise ValueError(f"meta_train has {len(train)} device(s); expected at least 2")
    return train, test


def _trim(idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """HELP's outlier removal: keep the 10th-90th percentile (by rank) of ``y`` over ``idx``."""
    order = idx[np.argsort(y[idx], kind="stable")]
    return order[int(len(idx) * 0.1) : int(len(idx) * 0.9)]


def _metrics(pred: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    rel = np.abs(pred - true) / true
    return float(spearmanr(pred, true)[0]), float(100 * rel.mean()), float((rel <= 0.1).mean())


def _summary(per_dev: dict[str, list[tuple[int, float, float, float]]]) -> dict[str, Any]:
    """Per device the mean over every (meta-seed, selection seed) run, and ``spearman_worst``: the lowest of the
    per-meta-seed means; overall ``mean_spearman`` and ``mean_spearman_worst_meta_seed`` (the lowest, over
    meta-seeds, of the mean over devices)."""
    devices, by_meta = {}, {}
    for dev, vals in per_dev.items():
        a = np.asarray(vals, dtype=np.float64)
        metas = np.unique(a[:, 0])
        per_meta = {int(m): float(a[a[:, 0] == m, 1].mean()) for m in metas}
        for m, v in per_meta.items():
            by_meta.setdefault(m, []).append(v)
        devices[dev] = {
            "spearman_mean": float(a[:, 1].mean()),
            "spearman_std": float(a[:, 1].std()),
            "spearman_worst": min(per_meta.values()),
            "spearman_per_meta_seed": [per_meta[int(m)] for m in metas],
            "mape_mean": float(a[:, 2].mean()),
            "within10_mean": float(a[:, 3].mean()),
        }
    return {"devices": devices, "mean_spearman": float(np.mean([d["spearman_mean"] for d in devices.values()])),
            "mean_spearman_worst_meta_seed": float(min(np.mean(v) for v in by_meta.values()))}


def _ceiling(inputs: dict[str, np.ndarray], y: np.ndarray, pool: np.ndarray, query: np.ndarray) -> dict[str, Any]:
    """Spearman on ``query`` of ridge and boosted trees fitted on the whole ``pool`` (log latency target), for
    each input set (source latencies, arch features, both); ``best`` is the highest of them."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import RidgeCV

    out: dict[str, Any] = {"pool_size": int(len(pool))}
    for name, x in inputs.items():
        models = {"ridge": RidgeCV(alphas=np.logspace(-4, 3, 15)),
                  "boost": HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0)}
        for kind, model in models.items():
            model.fit(x[pool], np.log(y[pool]))
            out[f"{kind}_{name}"] = float(spearmanr(model.predict(x[query]), y[query])[0])
    out["best"] = max(v for k, v in out.items() if k != "pool_size")
    return out


def _ceiling_summary(devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"devices": devices, "mean_best": float(np.mean([c["best"] for c in devices.values()]))}


def _write_json(obj: dict[str, Any], path: str) -> None:
    write_json_atomic(path, obj, default=None)


def run(cfg: Any) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to ``cfg.out`` when set) the result dict."""
    cfg = _check(_plain(cfg))
    if cfg["validate"] is True:
        return _validate(cfg)
    space, budget, protocol = cfg["space"], int(cfg["budget"]), cfg["protocol"]
    mat = latency_matrix(load_latency_table(cfg["data"], space=space))
    train, test = _split(space, list(mat.columns), cfg["meta_train"], cfg["meta_test"])
    if cfg["validate"] == "help_valid":  # HELP's meta-valid devices, meta-trained on the meta-train split
        train, test = _split(space, list(mat.columns), train, HELP_VALID[space])
    src = mat[train].dropna()
    if len(src) < len(mat):
        raise ValueError(f"{len(mat) - len(src)} archs lack a latency on some meta-train device; expected complete rows")
    archs = list(mat.index)
    features = {k: pd.DataFrame(v, index=archs) for k, v in featurizer(space)(archs).items()}
    base = SourceRidgeBaseline().meta_fit(src)  # deterministic: meta-fitted once

    results: dict[str, dict[str, list]] = {"ours": {}, "baseline": {}, "prior": {}}
    log_src = np.log(src.to_numpy())
    log_src = (log_src - log_src.mean(0)) / log_src.std(0)
    prior_log = np.log(src.to_numpy()).mean(1)  # the unadapted prior: the typical source device
    arch_x = np.hstack([f.to_numpy() for f in features.values()])
    inputs = {"source": log_src, "arch": arch_x, "both": np.hstack([log_src, arch_x])}
    splits, ceiling = _device_splits(space, protocol, mat, test, inputs)
    meta_seeds = int(cfg["meta_seeds"])
    bar = tqdm(total=len(test) * cfg["seeds"] * meta_seeds, desc=f"latency_fewshot {space}", leave=False)
    configs = []
    for ms in range(meta_seeds):
        ours = fewshot_predictor(cfg["predictor"], budget, random_state=ms).meta_fit(src, features)
        configs.append({"meta_seed": ms, "selection": ours.selection_, "prior_strength": ours.prior_strength_,
                        "meta_budget": ours.meta_budget,
                        "geometry": [ours.geometry_[0], list(ours.geometry_[1])]})
        for dev, (y_all, have, pool_archs, query_fixed) in splits.items():
            for seed in range(cfg["seeds"]):
                for name, model in (("ours", ours), ("baseline", base)):
                    if name == "baseline" and ms > 0:
                        continue
                    rng = np.random.default_rng(seed)
                    picked = model.select(pool_archs, budget, rng)
                    rows = [mat.index.get_loc(a) for a in picked]
                    model.adapt(picked, y_all[rows])
                    query = query_fixed if query_fixed is not None else np.setdiff1d(have, rows)
                    pred = model.predict([archs[i] for i in query])
                    results[name].setdefault(dev, []).append((ms, *_metrics(pred, y_all[query])))
                    if name == "baseline":  # the prior, its level set to the same random measurements
                        level = np.mean(np.log(y_all[rows]) - prior_log[rows])
                        results["prior"].setdefault(dev, []).append(
                            (ms, *_metrics(np.exp(prior_log[query] + level), y_all[query])))
                bar.update(1)
    bar.close()
    out = {"space": space, "budget": budget, "protocol": protocol, "meta_seeds": meta_seeds, "predictor": cfg["predictor"],
           **({"validate": "help_valid"} if cfg["validate"] == "help_valid" else {}),
           **_summary(results["ours"]), "meta_fits": configs}
    out["baseline"] = {"space": space, "budget": budget, "protocol": protocol, **_summary(results["baseline"])}
    out["prior"] = {"space": space, "budget": budget, "protocol": protocol, **_summary(results["prior"])}
    out.update(_losses(out))
    if ceiling:
        out["ceiling"] = _ceiling_summary(ceiling)
    if "help" in cfg.get("peers", []):
        pool = HELP_POOL[space] if protocol != "all" else None
        out["peers"] = {"help": run_help(cfg, mat, splits, out, _metrics, pool)}
    _print_table(out)
    _print_meta_fits(configs, ours, len(train))
    if "peers" in out:
        print_help(out["peers"]["help"], budget)
    if cfg["out"]:
        _write_json(out, str(cfg["out"]))
    return out


def _device_splits(space: str, protocol: str, mat: pd.DataFrame, test: list[str], inputs: dict[str, np.ndarray]
                   ) -> tuple[dict[str, tuple], dict[str, dict[str, float]]]:
    """Per meta-test device: (latencies, rows that have one, pool archs, fixed query rows or None), and the
    ceiling of each device with a fixed query (HELP's protocols)."""
    archs = list(mat.index)
    ceiling: dict[str, dict[str, float]] = {}
    splits = {}
    for dev in test:
        y_all = mat[dev].to_numpy()
        have = np.flatnonzero(np.isfinite(y_all))
        if protocol in ("help", "help_untrimmed"):
            n_pool = HELP_POOL[space]
            if len(have) < n_pool + HELP_QUERY:
                raise ValueError(f"device {dev!r} has {len(have)} archs; protocol={protocol} needs {n_pool + HELP_QUERY}")
            # help_untrimmed: the method picks from the whole pool (a new device has no percentile trim), the
            # query stays HELP's so figures compare
            pool = _trim(have[:n_pool], y_all) if protocol == "help" else have[:n_pool]
            query_fixed = _trim(have[n_pool : n_pool + HELP_QUERY], y_all)
        else:
            pool, query_fixed = have, None
        splits[dev] = (y_all, have, [archs[i] for i in pool], query_fixed)
        if query_fixed is not None:
            ceiling[dev] = _ceiling(inputs, y_all, pool, query_fixed)
    return splits, ceiling


def _print_meta_fits(configs: list[dict[str, Any]], ours: Any, n_sources: int) -> None:
    """What each meta-training seed chose, and the best meta-training score of each selection rule."""
    for c in configs:
        strength = "averaged" if c["prior_strength"] is None else f"{c['prior_strength']:g}"
        print(f"meta-seed {c['meta_seed']}: selection={c['selection']} prior_strength={strength} "
              f"geometry={c['geometry'][0]} {c['geometry'][1]} "
              f"({len(ours.configs_)} configurations, {n_sources} source devices)")
    rules = {}
    for key, score in ours.meta_table_.items():  # "rule/geometry=g/kappa=k" -> meta-training Spearman
        rule = key.split("/")[0]
        rules[rule] = max(rules.get(rule, -1.0), score)
    print("meta-training score of the best geometry and prior strength per selection rule: "
          + ", ".join(f"{r} {v:.4f}" for r, v in sorted(rules.items(), key=lambda kv: -kv[1])))


def _losses(out: dict[str, Any]) -> dict[str, Any]:
    """The devices where ours ranks below the ridge baseline (mean Spearman over every run)."""
    lost = [d for d, m in out["devices"].items() if m["spearman_mean"] < out["baseline"]["devices"][d]["spearman_mean"]]
    return {"losses_to_ridge": lost, "n_losses_to_ridge": len(lost)}


def _validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Leave-one-family-out over the meta-train devices (the meta-test devices are never read)."""
    from predictors.fewshot import device_family

    mat = latency_matrix(load_latency_table(cfg["data"], space=cfg["space"]))
    train, _ = _split(cfg["space"], list(mat.columns), cfg["meta_train"], cfg["meta_test"])
    families: dict[str, list[str]] = {}
    for d in train:
        families.setdefault(device_family(d), []).append(d)
    if len(families) < 3:
        raise ValueError(f"bench.validate needs meta-train devices of >= 3 families, got {sorted(families)}")
    out: dict[str, Any] = {"space": cfg["space"], "budget": cfg["budget"], "protocol": cfg["protocol"],
                           "validate": True, "devices": {}, "baseline": {"devices": {}}, "prior": {"devices": {}}}
    ceiling: dict[str, dict[str, Any]] = {}
    for held in families.values():
        fold = {**cfg, "validate": False, "out": None, "meta_train": [d for d in train if d not in held],
                "meta_test": held}
        res = run(fold)
        out["devices"].update(res["devices"])
        out["baseline"]["devices"].update(res["baseline"]["devices"])
        out["prior"]["devices"].update(res["prior"]["devices"])
        ceiling.update(res.get("ceiling", {}).get("devices", {}))
    if ceiling:
        out["ceiling"] = _ceiling_summary(ceiling)
    for part in (out, out["baseline"], out["prior"]):
        part["mean_spearman"] = float(np.mean([m["spearman_mean"] for m in part["devices"].values()]))
        per_meta = np.array([m["spearman_per_meta_seed"] for m in part["devices"].values()])  # (devices, meta-seeds)
        part["mean_spearman_worst_meta_seed"] = float(per_meta.mean(0).min())
    out["meta_seeds"] = int(cfg["meta_seeds"])
    out.update(_losses(out))
    print("validation (leave one meta-train family out):")
    _print_table(out)
    if cfg["out"]:
        _write_json(out, str(cfg["out"]))
    return out


def _print_table(out: dict[str, Any]) -> None:
    print(f"latency_fewshot space={out['space']} protocol={out['protocol']} budget={out['budget']}")
    ceil = out.get("ceiling", {}).get("devices", {})
    print(f"{'device':<22}{'ours rho':>10}{'+-':>7}{'worst':>7}{'MAPE%':>8}{'w10':>7}   {'ridge rho':>10}{'MAPE%':>8}"
          f"{'w10':>7}   {'prior rho':>10}   {'ceiling rho (full pool)':>24}")
    for dev, m in out["devices"].items():
        b, pr = out["baseline"]["devices"][dev], out["prior"]["devices"][dev]
        c = f"{ceil[dev]['best']:>24.3f}" if dev in ceil else f"{'-':>24}"
        print(f"{dev:<22}{m['spearman_mean']:>10.3f}{m['spearman_std']:>7.3f}{m['spearman_worst']:>7.3f}"
              f"{m['mape_mean']:>8.2f}{m['within10_mean']:>7.2f}"
              f"   {b['spearman_mean']:>10.3f}{b['mape_mean']:>8.2f}{b['within10_mean']:>7.2f}   {pr['spearman_mean']:>10.3f}   {c}")
    c = f"{out['ceiling']['mean_best']:>24.3f}" if ceil else ""
    print(f"{'mean':<22}{out['mean_spearman']:>10.3f}{'':>7}{out['mean_spearman_worst_meta_seed']:>7.3f}{'':>15}"
          f"   {out['baseline']['mean_spearman']:>10.3f}{'':>15}   {out['prior']['mean_spearman']:>10.3f}   {c}")
    print(f"worst = lowest mean over the {out.get('meta_seeds', 1)} meta-training seed(s); ours below ridge on "
          f"{out['n_losses_to_ridge']} of {len(out['devices'])} devices {out['losses_to_ridge'] or ''}")
