"""``bench=latency_fewshot`` with ``bench.peers=[help]``: HELP's released predictor beside ours, same run.

HELP (:class:`nas.bench.help_peer.HelpPeer`: its code and checkpoint from ``bench.help_repo``) is scored on the
same target devices, pools and queries as ours, at the same measurement budget: HELP's 10 reference archs (its
hardware embedding needs the target's latency of each) count against it, so of a budget B it adapts on B - 10
random archs of the same pool ours picks from (at B = 20 this is HELP's own protocol: 10 samples + 10 reference
archs). Its targets are scaled by the min/max of those B - 10 measurements; ``spearman_mean_pool_scale`` is the
diagnostic with HELP's meta-test scaling instead (the min/max of the device's trimmed pool, i.e. knowledge of
hundreds of measurements; HELP's protocols only). A target device without latencies of HELP's 10 reference archs
(other campaigns' devices) cannot be embedded: it is listed under ``not_applicable`` with the reason.

The result (``out["peers"]["help"]``) holds per device HELP's Spearman beside ours per meta-seed
(``ours_ge_help_every_meta_seed``), and ``reproduction``: HELP's own meta-test (its code path, its devices, 10
samples + 10 reference archs, seeds 1-10) beside the figures of its README.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from nas.bench.help_peer import README_ARGS, HelpPeer, check_repo, help_commit

PEERS = ("help",)
N_REFERENCE = 10
REPRODUCE_SEEDS = list(range(1, 11))


def check_peers(cfg: dict[str, Any]) -> None:
    """``bench.peers`` and ``bench.help_repo`` checked in place (one-line errors)."""
    peers = cfg.get("peers") or []
    peers = [peers] if isinstance(peers, str) else list(peers)
    bad = [p for p in peers if p not in PEERS]
    if bad:
        raise ValueError(f"bench.peers={peers} is invalid: unknown peer {bad[0]!r}; expected a list of {list(PEERS)}")
    cfg["peers"] = peers
    if "help" not in peers:
        return
    check_repo(cfg.get("help_repo"), cfg["space"])
    if cfg["validate"] is not False:
        raise ValueError(f"bench.validate={cfg['validate']!r} is invalid with bench.peers=[help]: HELP's checkpoint was "
                         "meta-trained and selected on those devices; expected validate=false")
    if cfg["budget"] < N_REFERENCE + 2:
        raise ValueError(f"bench.budget={cfg['budget']} is invalid with bench.peers=[help]: HELP's {N_REFERENCE} "
                         f"reference archs count against the budget; expected >= {N_REFERENCE + 2}")


def _help_scale(y: np.ndarray, have: np.ndarray, n_pool: int | None) -> tuple[float, float] | None:
    """HELP's meta-test scaling of a device: min and max of its trimmed pool (10th-90th percentile of the first
    ``n_pool`` measured archs); None where the protocol has no HELP pool."""
    if n_pool is None:
        return None
    pool = np.sort(y[have[:n_pool]])
    kept = pool[int(n_pool * 0.1) : int(n_pool * 0.9)]
    return float(kept.min()), float(kept.max())


def _device(peer: HelpPeer, x_all: Any, y: np.ndarray, split: tuple, refs: list[int], index: dict[str, int],
            cfg: dict[str, Any], n_pool: int | None, metrics: Callable) -> dict[str, Any]:
    """HELP on one target device over the selection seeds."""
    _, have, pool_archs, query_fixed = split
    ref_set = set(refs)
    cand = [index[a] for a in pool_archs if index[a] not in ref_set]
    scale = _help_scale(y, have, n_pool)
    runs, pool_scale = [], []
    for seed in range(cfg["seeds"]):
        rng = np.random.default_rng(seed)
        rows = [cand[i] for i in rng.choice(len(cand), cfg["budget"] - N_REFERENCE, replace=False)]
        query = query_fixed if query_fixed is not None else np.setdiff1d(have, [*refs, *rows])
        xs, xq = peer.take(x_all, rows), peer.take(x_all, query)
        pred = peer.predict(y[refs], xs, y[rows], xq, seed)
        runs.append(metrics(pred, y[query]))
        if scale is not None:
            pool_scale.append(metrics(peer.predict(y[refs], xs, y[rows], xq, seed, scale=scale), y[query])[0])
    a = np.asarray(runs)
    out = {"spearman_mean": float(a[:, 0].mean()), "spearman_std": float(a[:, 0].std()),
           "spearman_per_seed": [float(v) for v in a[:, 0]], "mape_mean": float(a[:, 1].mean()),
           "within10_mean": float(a[:, 2].mean())}
    if pool_scale:
        out["spearman_mean_pool_scale"] = float(np.mean(pool_scale))
    return out


def run_help(cfg: dict[str, Any], mat: pd.DataFrame, splits: dict[str, tuple], ours: dict[str, Any],
             metrics: Callable, n_pool: int | None) -> dict[str, Any]:
    """HELP on every target of ``splits`` (same pools, queries, budget and seeds as ours), compared per device
    with ours' per-meta-seed means (``ours["devices"]``), plus HELP's own-protocol reproduction."""
    peer = HelpPeer(cfg["help_repo"], cfg["space"])
    index = {a: i for i, a in enumerate(mat.index)}
    refs = [index.get(a) for a in peer.reference_archs]
    x_all = peer.batch(list(mat.index))
    devices: dict[str, Any] = {}
    not_applicable: dict[str, str] = {}
    bar = tqdm(total=len(splits), desc="HELP's predictor", leave=False)
    for dev, split in splits.items():
        y = split[0]
        if None in refs or not np.all(np.isfinite(y[[r for r in refs if r is not None]])):
            n = sum(r is not None and bool(np.isfinite(y[r])) for r in refs)
            not_applicable[dev] = (f"the target has latencies of {n} of HELP's {N_REFERENCE} reference archs; HELP's "
                                   "hardware embedding needs all of them")
        else:
            devices[dev] = _device(peer, x_all, y, split, refs, index, cfg, n_pool, metrics)
            per_meta = ours["devices"][dev]["spearman_per_meta_seed"]
            devices[dev]["ours_spearman_mean"] = ours["devices"][dev]["spearman_mean"]
            devices[dev]["ours_spearman_per_meta_seed"] = per_meta
            devices[dev]["ours_ge_help_every_meta_seed"] = bool(min(per_meta) >= devices[dev]["spearman_mean"])
        bar.update(1)
    bar.close()
    help_train = README_ARGS[cfg["space"]][README_ARGS[cfg["space"]].index("--meta_train_devices") + 1].split(",")
    below = [d for d, m in devices.items() if not m["ours_ge_help_every_meta_seed"]]
    return {
        "devices": devices, "not_applicable": not_applicable,
        "mean_spearman": float(np.mean([m["spearman_mean"] for m in devices.values()])) if devices else None,
        "ours_mean_spearman_same_devices": (float(np.mean([m["ours_spearman_mean"] for m in devices.values()]))
                                            if devices else None),
        "devices_ours_below_help_at_some_meta_seed": below, "ours_ge_help_everywhere": not below and bool(devices),
        "targets_in_help_meta_training": [d for d in splits if d in help_train],
        "budget_split": {"reference_archs": N_REFERENCE, "random_pool_archs": cfg["budget"] - N_REFERENCE},
        "reproduction": peer.reproduce(REPRODUCE_SEEDS),
        "help_repo": str(peer.repo), "help_commit": help_commit(peer.repo),
    }


def print_help(res: dict[str, Any], budget: int) -> None:
    """HELP's rows beside ours, and its own-protocol reproduction."""
    rep = res["reproduction"]
    print(f"HELP's own meta-test (its code and checkpoint, 10 samples + 10 reference archs, seeds "
          f"{rep['seeds'][0]}-{rep['seeds'][-1]}): mean {rep['mean_spearman']:.3f}, README {rep['readme_mean']:.3f} "
          f"(diff {rep['diff']:+.3f}); " + ", ".join(f"{d} {m['spearman_mean']:.3f}/{m['readme']:.3f}"
                                                   for d, m in rep["devices"].items()))
    print(f"HELP's released predictor at the same budget ({budget} = {N_REFERENCE} reference archs + "
          f"{budget - N_REFERENCE} random pool archs), same pools, queries and seeds:")
    print(f"{'device':<22}{'ours rho':>10}{'ours per meta-seed':>26}{'HELP rho':>10}{'+-':>7}{'MAPE%':>8}"
          f"{'HELP pool-scale':>17}{'ours>=HELP all meta-seeds':>27}")
    for dev, m in res["devices"].items():
        per = " ".join(f"{v:.3f}" for v in m["ours_spearman_per_meta_seed"])
        ps = f"{m['spearman_mean_pool_scale']:>17.3f}" if "spearman_mean_pool_scale" in m else f"{'-':>17}"
        print(f"{dev:<22}{m['ours_spearman_mean']:>10.3f}{per:>26}{m['spearman_mean']:>10.3f}{m['spearman_std']:>7.3f}"
              f"{m['mape_mean']:>8.2f}{ps}{'yes' if m['ours_ge_help_every_meta_seed'] else 'NO':>27}")
    if res["devices"]:
        print(f"{'mean':<22}{res['ours_mean_spearman_same_devices']:>10.3f}{'':>26}{res['mean_spearman']:>10.3f}")
    for dev, why in res["not_applicable"].items():
        print(f"{dev:<22}HELP not applicable: {why}")
    if res["targets_in_help_meta_training"]:
        print(f"note: HELP's checkpoint was meta-trained on {res['targets_in_help_meta_training']}")
