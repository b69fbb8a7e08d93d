"""bench=search_nb201: sample efficiency of multi-objective search on NB201 (docs/benchmarks/search_nb201.md).

Objectives (minimised): CIFAR-10 test error (%) from a NATS-style table and latency (ms) of one device from the
latency interchange file; one evaluation reveals both for one arch. Every strategy runs in this process with
the same budget; the HV ratio uses the TRUE front's ideal/nadir for normalisation and reference (1.1, 1.1).

Example::

    hwnas-bench bench=search_nb201 bench.data=../shared/data/latency/nb201_help.csv.gz \
        bench.accuracy=../shared/data/nb201/nats_bench_tss_test_acc_200ep.csv bench.devices=[raspi4] bench.seeds=2
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from latency_luts.files import write_json_atomic
from nas.bench.config import limit_threads
from nas.bench.search_peers import SLOW, check_strategies, peer_config, seeds_per_strategy, versions
from nas.pareto import hv_history, hypervolume, normalize, pareto_mask

HELP_TEST = ["titan_rtx_256", "gold_6226", "fpga", "pixel2", "raspi4", "eyeriss"]
HELP_TRAIN = ["1080ti_1", "1080ti_32", "1080ti_256", "silver_4114", "silver_4210r", "samsung_a50", "pixel3",
              "essential_ph_1", "samsung_s7"]
# "ours" is the pipeline's default strategy (conf/search/closed_loop.yaml) exactly as hwnas builds it
REF = np.array([1.1, 1.1])


def _plain(cfg: Any) -> dict[str, Any]:
    from nas.bench.config import as_dict, bench_config

    out = {k: v for k, v in as_dict(bench_config("search_nb201", cfg)).items() if k != "name"}
    for key in ("data", "accuracy"):
        if out[key] is None:
            raise ValueError(f"bench.{key} is null; expected a path (bench.{key}=PATH)")
        if not os.path.exists(str(out[key])):
            raise ValueError(f"bench.{key}={out[key]!r} does not exist; expected an existing file")
    for key, lo in (("budget", 2), ("seeds", 1), ("batch_size", 1), ("pop_size", 4), ("workers", 1)):
        if not isinstance(out[key], int) or out[key] < lo:
            raise ValueError(f"bench.{key}={out[key]!r} is invalid; expected an integer >= {lo}")
    if out["threads"] is not None and (not isinstance(out["threads"], int) or out["threads"] < 1):
        raise ValueError(f"bench.threads={out['threads']!r} is invalid; expected an integer >= 1 or null")
    check_strategies(out["strategies"])
    if out["gp_seeds"] is not None and (not isinstance(out["gp_seeds"], int) or out["gp_seeds"] < 1):
        raise ValueError(f"bench.gp_seeds={out['gp_seeds']!r} is invalid; expected an integer >= 1 or null")
    seeds_per_strategy(out["strategies"], out["seeds"], out["gp_seeds"], out["peer_seeds"])  # checks peer_seeds
    out["devices"] = list(out["devices"] or HELP_TEST)
    out["meta_train"] = list(out["meta_train"] or HELP_TRAIN)
    clash = sorted(set(out["devices"]) & set(out["meta_train"]))
    if clash:
        raise ValueError(f"device {clash[0]!r} is both a target and a meta-train device; expected disjoint lists")
    out["ours"] = _ours_config()
    out["ours_latency_model"] = _latency_settings()
    return out


def _ours_config() -> dict[str, Any]:
    """The pipeline's default strategy node (conf/search/<default>.yaml), unchanged."""
    from nas.search.problem import strategy_config

    return strategy_config()


def _latency_settings() -> dict[str, Any]:
    """The settings of the pipeline's calibrated latency model (the calibrate stage's ``calibrate.predictor`` of
    ``conf/config.yaml``, meta-budget included), recorded with the results."""
    from nas.stages.calibrate import pipeline_defaults, predictor_settings

    return predictor_settings(pipeline_defaults())


def latency_model(source: Any) -> Any:
    """The latency model the pipeline's closed loop uses on a device with source devices: the calibrate stage's
    few-shot predictor (:func:`nas.stages.calibrate.latency_predictor` of the pipeline's defaults), meta-trained
    by the stage's own :func:`~nas.stages.calibrate.meta_train` on ``source`` (archs x meta-train devices, ms)."""
    from nas.stages.calibrate import meta_train, pipeline_defaults
    from predictors.arch_features import SpaceFeaturizer

    return meta_train(pipeline_defaults(), source, SpaceFeaturizer("nb201"))


class Problem:
    """The tabular NB201 problem: candidates, objective rows per arch, meta-train latencies and the latency
    model meta-trained on them (once; every run calibrates its own copy)."""

    def __init__(self, accuracy_csv: str, latency_csv: str, devices: list[str], meta_train: list[str]) -> None:
        from latency_luts.interchange import latency_matrix, load_latency_table
        from search_spaces import create_search_space
        from search_spaces.nb201.tabular import NB201Tabular

        self.table = NB201Tabular(accuracy_csv)
        self.space = create_search_space("nb201")
        self.archs = [self.space.parse(s) for s in self.table.archs]
        self.row = {a: i for i, a in enumerate(self.archs)}
        mat = latency_matrix(load_latency_table(latency_csv, space="nb201", devices=[*devices, *meta_train]))
        missing = [a for a in self.table.archs if a not in mat.index]
        if missing:
            raise ValueError(f"arch {missing[0]!r} has no latency rows in {latency_csv!r}; expected all 15625")
        mat = mat.loc[self.table.archs]
        self.latency = {d: mat[d].to_numpy(dtype=float) for d in devices}
        self.error = 100.0 - self.table.acc
        self.latency_model = latency_model(mat[meta_train])  # meta-train devices only

    def F(self, device: str) -> np.ndarray:
        return np.c_[self.error, self.latency[device]]


def make_problem(problem: Problem, seed: int, cfg: dict[str, Any]) -> Any:
    """The tabular problem as every strategy sees it: the 15,625 cells as candidates; the latency column's
    model is what the pipeline gives a device with source devices (the calibrate stage's few-shot predictor,
    meta-trained on the meta-train devices), calibrated on the target's evaluated archs at every refit
    (``refit``); the error column is learned by the strategy itself."""
    import copy

    from nas.search import SearchProblem

    return SearchProblem(space=problem.space, n_objectives=2, seed=seed, candidates=problem.archs,
                         models=[None, copy.deepcopy(problem.latency_model)], refit=[False, True],
                         accuracy_column=0, storage=None, study_name=f"nb201-{seed}")


def make_strategy(name: str, problem: Problem, seed: int, cfg: dict[str, Any]) -> Any:
    from nas.search import build_strategy

    node = cfg["ours"] if name == "ours" else peer_config(name, cfg)
    return build_strategy(node, make_problem(problem, seed, cfg))


def _true_front(F: np.ndarray) -> dict[str, Any]:
    mask = pareto_mask(F)
    T = F[mask]
    ideal, nadir = T.min(0), T.max(0)
    return {"ideal": ideal, "nadir": nadir, "rows": np.flatnonzero(mask), "hv": hypervolume(normalize(T, ideal, nadir), REF)}


def _one_run(strategy: Any, problem: Problem, F: np.ndarray, true: dict[str, Any], budget: int,
             max_seconds: float | None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    from nas.search.loop import run_budget

    t0 = time.perf_counter()
    deadline = None if max_seconds is None else t0 + float(max_seconds)

    def objective(archs: list[Any]) -> np.ndarray:
        if deadline is not None and time.perf_counter() > deadline:
            raise TimeoutError
        return F[[problem.row[a] for a in archs]]

    cache: dict[Any, np.ndarray] = {}
    truncated = False
    try:
        order, Fe = run_budget(strategy, objective, budget, cache=cache, progress=progress)
    except TimeoutError:
        truncated = True
        order = list(cache)
        Fe = np.stack([cache[a] for a in order])
    seconds = time.perf_counter() - t0
    rows = np.array([problem.row[a] for a in order])
    hv = hv_history(normalize(Fe, true["ideal"], true["nadir"]), REF) / true["hv"]
    hit = np.flatnonzero(hv >= 0.99)
    return {"hv_ratio": float(hv[-1]), "evals_to_99pct": int(hit[0]) + 1 if len(hit) else budget + 1,
            "front_recall": float(np.isin(true["rows"], rows).mean()), "n_evaluated": len(rows),
            "distinct": len(set(rows.tolist())) == len(rows), "seconds": seconds,
            "seconds_per_eval": seconds / max(len(rows), 1), "truncated": truncated}


# one process's problem and config: loaded once per worker (or once in-process when bench.workers=1)
_STATE: dict[str, Any] = {}


def _init_state(c: dict[str, Any], problem: Problem | None = None) -> None:
    limit_threads(c["threads"])
    _STATE["c"] = c
    _STATE["problem"] = problem or Problem(str(c["accuracy"]), str(c["data"]), c["devices"], c["meta_train"])
    _STATE["true"] = {}


def _job(dev: str, name: str, seed: int, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One (device, strategy, seed) run; ours' seed 0 also times one inner search (refit + scoring of every
    unevaluated cell, as each of its asks does)."""
    c, problem = _STATE["c"], _STATE["problem"]
    F = problem.F(dev)
    if dev not in _STATE["true"]:
        _STATE["true"][dev] = _true_front(F)
    st = make_strategy(name, problem, seed, c)
    out = _one_run(st, problem, F, _STATE["true"][dev], c["budget"], c["max_seconds_per_run"], progress)
    if name == "ours" and seed == 0:
        inner = st.inner_search()  # refit + score every unevaluated cell, as each of its asks does
        out["inner_search_seconds"], out["inner_search_candidates"] = inner["seconds"], inner["n_scored"]
    from nas.bench.search_peers import describe
    from nas.search import strategy_class

    out["strategy_class"] = strategy_class(st)
    if describe(st) is not None:
        out["library"] = describe(st)  # e.g. Ax's generation nodes and acquisition function
    return out


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _write_atomic(path: str, obj: dict[str, Any]) -> None:
    write_json_atomic(path, obj, default=None)


# settings that change no single run's result (which runs, how many processes, where results go)
_NOT_IN_FINGERPRINT = ("out", "workers", "threads", "seeds", "gp_seeds", "peer_seeds", "strategies", "devices")


def _fingerprint(c: dict[str, Any]) -> str:
    keep = {k: v for k, v in sorted(c.items()) if k not in _NOT_IN_FINGERPRINT}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_journal(path: str | None, fingerprint: str) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Completed (device, strategy, seed) runs recorded by an earlier invocation with the same settings."""
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if path is None or not os.path.exists(path):
        return done
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a kill
                continue
            if isinstance(rec, dict) and rec.get("fingerprint") == fingerprint:
                done[rec["device"], rec["strategy"], int(rec["seed"])] = rec["run"]
    return done


def run(cfg: Any) -> dict[str, Any]:
    """Every (device, strategy, seed) run, then medians per device and strategy.

    Each finished run is appended to ``<out>.jobs.jsonl``; rerunning the same command (same ``bench.out``)
    reuses the runs recorded there with the same settings and runs only the missing ones.
    """
    c = _plain(cfg)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    problem = Problem(str(c["accuracy"]), str(c["data"]), c["devices"], c["meta_train"])
    seeds = seeds_per_strategy(c["strategies"], c["seeds"], c["gp_seeds"], c["peer_seeds"])
    # the slow Bayesian peers last and seed by seed, so an interrupted invocation has finished the rest and whole
    # seeds of them on every device; results depend neither on the order nor on the worker count
    jobs = sorted(((d, n, s) for d in c["devices"] for n in c["strategies"] for s in range(seeds[n])),
                  key=lambda j: (j[1] in SLOW, j[2], SLOW.index(j[1])) if j[1] in SLOW else (False, 0, 0))
    fingerprint = _fingerprint(c)
    journal = f"{c['out']}.jobs.jsonl" if c["out"] else None
    recorded = _load_journal(journal, fingerprint)
    done = {j: recorded[j] for j in jobs if j in recorded}
    todo = [j for j in jobs if j not in done]
    if journal:
        os.makedirs(os.path.dirname(os.path.abspath(journal)), exist_ok=True)

    def record(job: tuple[str, str, int], out: dict[str, Any]) -> None:
        done[job] = out
        if journal:
            with open(journal, "a") as f:
                f.write(json.dumps({"fingerprint": fingerprint, "device": job[0], "strategy": job[1],
                                    "seed": job[2], "run": out}) + "\n")

    with tqdm(total=len(jobs) * c["budget"], initial=len(done) * c["budget"], desc="search_nb201", unit="eval") as bar:
        if c["workers"] == 1:
            _init_state(c, problem)
            for job in todo:
                bar.set_postfix_str(" ".join(map(str, job)))
                record(job, _job(*job, progress=bar.update))
                bar.update(c["budget"] - done[job]["n_evaluated"])
        elif todo:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(c["workers"], mp_context=mp.get_context("spawn"), initializer=_init_state,
                                     initargs=(c,)) as pool:
                futures = {pool.submit(_job, *job): job for job in todo}
                for fut in as_completed(futures):
                    record(futures[fut], fut.result())
                    bar.update(c["budget"])
    result = _summarise(c, problem, done, seeds, fingerprint, runs_reused=len(jobs) - len(todo))
    result["seconds"] = time.perf_counter() - t_start
    result["loadavg_1min_start_end"] = [load_start[0], os.getloadavg()[0]]  # other work on the machine
    if c["out"]:
        _write_atomic(str(c["out"]), result)
    _print(result)
    return result


TARGET_EVALS = 150  # ours reaches 99% of the true front's hypervolume within this many evaluations (median)


def _summarise(c: dict[str, Any], problem: Any, done: dict[tuple[str, str, int], dict[str, Any]],
               seeds: dict[str, int], fingerprint: str, runs_reused: int) -> dict[str, Any]:
    """Medians per device and strategy over the recorded runs, and whether ours meets the targets."""
    result: dict[str, Any] = {"bench": "search_nb201", "budget": c["budget"], "seeds": c["seeds"],
                              "ours_strategy": c["ours"], "ours_latency_model": c["ours_latency_model"],
                              "latency_model_class": _class_path(problem.latency_model),
                              "strategies": c["strategies"], "meta_train": c["meta_train"], "workers": c["workers"],
                              "threads": c["threads"], "fingerprint": fingerprint, "runs_reused": runs_reused,
                              "seeds_run": seeds, "gp_seeds": c["gp_seeds"], "peer_seeds": c["peer_seeds"],
                              "versions": versions(), "devices": {}}
    for dev in c["devices"]:
        per: dict[str, Any] = {"true_front_size": len(_true_front(problem.F(dev))["rows"])}
        for name in c["strategies"]:
            runs = [done[dev, name, s] for s in range(seeds[name])]
            if name == "ours":
                per["inner_search_seconds"] = runs[0]["inner_search_seconds"]
                per["inner_search_candidates"] = runs[0].get("inner_search_candidates")
            per[name] = {
                "strategy_class": runs[0].get("strategy_class"), "library": runs[0].get("library"),
                "hv_ratio_median": float(np.median([r["hv_ratio"] for r in runs])),
                "evals_to_99pct_median": float(np.median([r["evals_to_99pct"] for r in runs])),
                "front_recall_median": float(np.median([r["front_recall"] for r in runs])),
                "seeds_run": len(runs),
                "seconds_per_run_median": float(np.median([r["seconds"] for r in runs])),
                "seconds_per_eval_median": float(np.median([r["seconds_per_eval"] for r in runs])),
                "no_repeats": all(r["distinct"] for r in runs),
                "truncated_runs": sum(r["truncated"] for r in runs),
                "per_seed": runs,
            }
        result["devices"][dev] = per
    ours = [p["ours"]["evals_to_99pct_median"] for p in result["devices"].values() if "ours" in p]
    result["ours_max_evals_to_99pct"] = max(ours) if ours else None
    # "never reached" is recorded as budget + 1, so the target needs a median strictly within the budget
    result["target_met"] = bool(ours) and max(ours) <= min(TARGET_EVALS, int(c["budget"])) and all(
        p["inner_search_seconds"] <= 2 for p in result["devices"].values())
    return result


def _print(result: dict[str, Any]) -> None:
    names = result["strategies"]
    print("seeds: " + ", ".join(f"{n} {k}" for n, k in result["seeds_run"].items()) + "; versions: "
          + ", ".join(f"{d} {v}" for d, v in result["versions"].items() if v))
    print(f"{'device':<14}" + "".join(f"{n + ' e99/hv':>24}" for n in names) + f"{'inner_s':>9}")
    for dev, per in result["devices"].items():
        cells = "".join(f"{per[n]['evals_to_99pct_median']:>14.0f} / {per[n]['hv_ratio_median']:.4f}" for n in names)
        print(f"{dev:<14}{cells}{per.get('inner_search_seconds', float('nan')):>9.2f}")
