"""bench=search_supernet: sample efficiency of the search on a real trained supernet (docs/benchmarks/search_supernet.md).

One supernet, trained once by the product's own command (``hwnas <bench.train_overrides> stages=[train]``,
Fashion-MNIST by default) or taken from ``bench.run_dir``. An evaluation of a subnet reveals two minimised
objectives:

* error = 1 - its supernet-inherited accuracy on a fixed validation subset (the first ``val_images``
  validation images) after BatchNorm recalibration on a fixed batch (the first ``calib_images`` training
  images), computed by the pipeline's own ``nas.stages.common.evaluate_archs``;
* latency (ms) on this CPU from a per-block LUT of the run's space built by ``latency_luts.build_lut``, with its
  residual (``predictors.LUTResidualPredictor``) fitted on ``lut_fit`` subnets timed whole-network; the estimate
  is checked against whole-network timing of ``lut_check`` other subnets stratified by MACs (Spearman, share
  within +-10%, the two timing passes' agreement), reported in the JSON.

Every evaluation is one small JSON file per arch in a keyed folder of the cache directory
(:class:`nas.workers.KeyedFiles`, the product's cache of evaluations; the folder is named after the checkpoint
and the evaluation settings): strategies and worker processes share evaluations, and a rerun (or a run interrupted and started again) repeats
none. Every strategy runs ``bench.seeds`` times with ``bench.budget`` evaluations through
``nas.search.run_budget``, built by ``nas.search.build_strategy``: "ours" is the pipeline's default strategy
node (``conf/search/closed_loop.yaml``) unchanged, the peers are those of ``nas.bench.search_peers`` (Optuna, random,
pymoo's NSGA-II, Ax, Syne Tune). Finished runs are journalled in ``<out>.jobs.jsonl`` and reused.

The reference front is the non-dominated set of the union of every run's evaluations and ``n_random`` random
subnets. Hypervolumes are normalised with its ideal and nadir, reference point (1.1, 1.1), and reported as a
ratio to its hypervolume: per strategy the median ratio after each of ``checkpoints`` evaluations and the
median number of evaluations to reach 98% (``budget + 1`` when never); per run the ratio after every
evaluation (``hv_curve``); and, since 98% of a front pooled from every run is rarely reached by one run, how
many evaluations ours needs to reach the HV ratio the best peer has at the end of its budget
(``ours_vs_best_peer_final_hv``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from nas.bench.config import as_dict, bench_config, digest, limit_threads, load_average, run_hwnas
from nas.bench.search_peers import check_strategies, describe, peer_config, versions
from nas.bench.supernet_ranking import sample_subnets
from nas.pareto import hv_history, hypervolume, normalize, pareto_mask
from nas.rundir import RunContext, write_csv_atomic, write_json_atomic
from nas.workers import KeyedFiles

log = logging.getLogger(__name__)
REF = np.array([1.1, 1.1])
TARGET_FRACTION = 0.98


def _config(cfg: Any) -> dict[str, Any]:
    c = {k: v for k, v in as_dict(bench_config("search_supernet", cfg)).items() if k != "name"}
    for key, lo in (("val_images", 50), ("calib_images", 16), ("lut_fit", 2), ("lut_check", 3),
                    ("timing_threads", 1), ("timing_rounds", 3), ("n_random", 0), ("budget", 2), ("seeds", 1),
                    ("batch_size", 1), ("pop_size", 4), ("threads", 1), ("workers", 1), ("seed", 0)):
        if not isinstance(c[key], int) or isinstance(c[key], bool) or c[key] < lo:
            raise ValueError(f"bench.{key}={c[key]!r} is invalid; expected an integer >= {lo}")
    check_strategies(c["strategies"])  # nas.bench.search_peers.STRATEGIES
    cps = c["checkpoints"]
    if not cps or any(not isinstance(k, int) or not 1 <= k <= c["budget"] for k in cps):
        raise ValueError(f"bench.checkpoints={cps!r} is invalid; expected evaluation counts within 1..bench.budget")
    if c["run_dir"] is not None and not (Path(c["run_dir"]) / "checkpoints" / "supernet.pt").is_file():
        raise ValueError(f"bench.run_dir={c['run_dir']!r} has no checkpoints/supernet.pt; expected a hwnas run "
                         "directory whose train stage finished (or null: train one)")
    c["cache_dir"] = str(Path(c["cache_dir"]))
    if c["out"] is None:
        c["out"] = str(Path(c["cache_dir"]) / "search_supernet.json")
    from nas.search.problem import strategy_config

    c["ours"] = strategy_config()  # the pipeline's default strategy node, unchanged
    return c


def _trained_run(c: dict[str, Any]) -> tuple[Path, str | None]:
    """The run directory whose supernet is searched; trains it once with the product's command when needed."""
    if c["run_dir"] is not None:
        return Path(c["run_dir"]), None
    run_dir = Path(c["cache_dir"]) / "supernet"
    if (run_dir / "stages" / "train.json").is_file():
        return run_dir, None
    log.info("search_supernet: training the supernet once in %s (hwnas %s stages=[train])", run_dir,
             " ".join(c["train_overrides"]))
    return run_dir, run_hwnas(run_dir, [*c["train_overrides"], "stages=[train]"])


class SupernetObjective:
    """Error and latency of subnets of one trained supernet, every evaluation cached on disk per arch."""

    def __init__(self, c: dict[str, Any], run_dir: Path) -> None:
        self.c = c
        self.ctx = RunContext.open(run_dir)
        self.space = self.ctx.space
        key = {**self.ctx.checkpoint_key(), "run_dir": str(run_dir.resolve()), "val_images": c["val_images"],
               "calib_images": c["calib_images"]}
        self.files = KeyedFiles(Path(c["cache_dir"]) / "evaluations" / digest(key), key)  # shared by the workers
        self.dir = self.files.dir
        self.acc: dict[str, float] = {}
        self.reload()
        self._supernet = None
        self.latency, self.lut_check = self._latency_model()

    def reload(self) -> None:
        """Every evaluation on disk (this process's and other workers')."""
        for row in self.files.rows():
            self.acc[row["arch"]] = float(row["val_accuracy"])

    # ------------------------------------------------------------------ latency
    def _latency_model(self) -> tuple[Any, dict[str, Any]]:
        """LUT of the run's space on this CPU + residual fitted on whole-network timings, and its check."""
        from latency_luts.build import build_lut
        from latency_luts.lut import LatencyLUT
        from nas.bench.timing import latency_scores, time_subnets_twice
        from predictors.lut_residual import LUTResidualPredictor

        c, space = self.c, self.space
        tkey = digest({"space": as_dict(self.ctx.cfg.search_space), "classes": self.ctx.data.n_classes,
                        "channels": self.ctx.data.channels, "threads": c["timing_threads"],
                        "rounds": c["timing_rounds"]})
        cache = Path(c["cache_dir"])
        lut_path = cache / f"lut_{tkey}.json"
        if lut_path.is_file():
            lut = LatencyLUT.load(lut_path, space=space.name)
        else:
            lut = build_lut(space, threads=c["timing_threads"], rounds=c["timing_rounds"], out=lut_path)
        rng = np.random.default_rng(c["seed"] + 7)
        fit = space.sample_many(c["lut_fit"], rng)
        check = sample_subnets(space, c["lut_check"], "stratified", rng)
        timing_path = cache / f"lut_timing_{tkey}_{c['seed']}_{c['lut_fit']}_{c['lut_check']}.csv"
        if timing_path.is_file():
            import pandas as pd

            timed = pd.read_csv(timing_path)
        else:
            timed = time_subnets_twice(space, [*fit, *check], c["timing_threads"], c["timing_rounds"], c["seed"])
            write_csv_atomic(timing_path, timed)
        measured = timed.latency_ms.to_numpy(dtype=float)
        n_fit = len(fit)
        model = LUTResidualPredictor(lut, space).fit(fit, measured[:n_fit])
        from scipy.stats import spearmanr

        scores = latency_scores(model.predict(check), measured[n_fit:])
        record = {"n_fit": n_fit, "n_check": len(check), **scores,
                  "lut_sum_spearman": float(spearmanr(model.estimate_lut_sum(check), measured[n_fit:]).statistic),
                  "repeat_spearman": float(spearmanr(timed.pass1[n_fit:], timed.pass2[n_fit:]).statistic),
                  "median_cv": float(np.median(timed.cv[n_fit:])),
                  "measured_ms_range": [float(measured[n_fit:].min()), float(measured[n_fit:].max())],
                  "lut": str(lut_path), "timings": str(timing_path)}
        log.info("search_supernet: LUT + residual vs whole-network timing of %d subnets: Spearman %.3f, "
                 "within 10%% %.2f", len(check), record["spearman"], record["within10"])
        return model, record

    def latency_ms(self, archs: list[Any]) -> np.ndarray:
        return np.asarray(self.latency.predict(archs), dtype=float)

    # ------------------------------------------------------------------ accuracy
    def accuracy(self, archs: list[Any], progress: Any = None) -> np.ndarray:
        """Validation accuracy of each arch; evaluates (and caches) only archs not evaluated before."""
        from nas.stages.common import evaluate_archs

        keys = [a.to_string() for a in archs]
        for a, k in zip(archs, keys, strict=True):
            if k in self.acc:
                continue
            row = self.files.read_json(k)
            if row is not None:  # evaluated meanwhile by another worker
                self.acc[k] = float(row["val_accuracy"])
                continue
            if self._supernet is None:
                self._supernet = self.ctx.load_supernet()
            acc = evaluate_archs(self.ctx, self._supernet, [a], ("val",), progress=False,
                                 n_cal=self.c["calib_images"], n_eval=self.c["val_images"])["val"][0]
            self.acc[k] = float(acc)
            self.files.write_json(k, {"arch": k, "val_accuracy": float(acc)})
            if progress is not None:
                progress(1)
        return np.array([self.acc[k] for k in keys])

    def F(self, archs: list[Any], progress: Any = None) -> np.ndarray:
        """Objective rows (error, latency ms), both minimised."""
        return np.c_[1.0 - self.accuracy(archs, progress), self.latency_ms(archs)]


def make_problem(obj: SupernetObjective, seed: int, name: str) -> Any:
    """The problem every strategy sees: the run's space, no finite candidate list, the latency column's model
    the LUT estimate itself (exact: it is the objective), the error column learned by the strategy."""
    from nas.search import SearchProblem

    return SearchProblem(space=obj.space, n_objectives=2, seed=seed, models=[None, obj.latency], accuracy_column=0,
                         storage=None, study_name=f"search_supernet-{name}-{seed}")


def _one_run(name: str, seed: int, obj: SupernetObjective, c: dict[str, Any],
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    from nas.search import build_strategy, run_budget, strategy_class

    node = c["ours"] if name == "ours" else peer_config(name, c)
    strategy = build_strategy(node, make_problem(obj, seed, name))
    t0 = time.perf_counter()
    order, _ = run_budget(strategy, lambda archs: obj.F(list(archs)), c["budget"], progress=progress)
    return {"archs": [a.to_string() for a in order], "seconds": round(time.perf_counter() - t0, 2),
            "strategy_class": strategy_class(strategy), "library": describe(strategy)}


def _score(run: dict[str, Any], F_of: dict[str, np.ndarray], ref: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    F = np.stack([F_of[a] for a in run["archs"]])
    hv = hv_history(normalize(F, ref["ideal"], ref["nadir"]), REF) / ref["hv"]
    return {"hv_ratio_at": {str(k): float(hv[min(k, len(hv)) - 1]) for k in c["checkpoints"]},
            "evals_to_98pct": _first_reaching(hv, TARGET_FRACTION, c["budget"]),
            "n_evaluated": len(run["archs"]), "distinct": len(set(run["archs"])) == len(run["archs"]),
            "seconds": run["seconds"], "hv_curve": [round(float(v), 6) for v in hv]}  # after each evaluation


def _first_reaching(curve: list[float], level: float, budget: int) -> int:
    """Evaluations until an HV curve first reaches ``level`` (``budget + 1`` when it never does)."""
    hit = np.flatnonzero(np.asarray(curve) >= level)
    return int(hit[0]) + 1 if len(hit) else budget + 1


_STATE: dict[str, Any] = {}  # a worker process's objective (bench.workers > 1)


def _init_worker(c: dict[str, Any], run_dir: str) -> None:
    limit_threads(c["threads"])
    _STATE["c"], _STATE["obj"] = c, SupernetObjective(c, Path(run_dir))  # LUT and timings: the main process's cache


def _evaluate_chunk(archs: list[str]) -> int:
    obj = _STATE["obj"]
    obj.accuracy([obj.space.parse(s) for s in archs])
    return len(archs)


def _run_job(name: str, seed: int) -> dict[str, Any]:
    return _one_run(name, seed, _STATE["obj"], _STATE["c"])


class JobJournal:
    """Finished (strategy, seed) runs in ``<out>.jobs.jsonl``, reused while their ``fingerprint`` holds: the
    strategies' settings, the evaluations and the latency objective."""

    def __init__(self, c: dict[str, Any], obj: SupernetObjective) -> None:
        latency = hashlib.sha256(b"".join(Path(obj.lut_check[k]).read_bytes() for k in ("lut", "timings"))).hexdigest()
        self.fingerprint = digest({k: c[k] for k in ("budget", "batch_size", "pop_size", "ours")}
                                  | {"evaluations": obj.dir.name, "latency": latency[:16]})
        self.path = Path(f"{c['out']}.jobs.jsonl")
        self.done: dict[tuple[str, int], dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                rec = json.loads(line)
                if rec.get("fingerprint") == self.fingerprint:
                    self.done[rec["strategy"], rec["seed"]] = rec["run"]
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, job: tuple[str, int], out: dict[str, Any]) -> None:
        self.done[job] = out
        with open(self.path, "a") as f:
            f.write(json.dumps({"fingerprint": self.fingerprint, "strategy": job[0], "seed": job[1], "run": out}) + "\n")


def _evaluate(c: dict[str, Any], obj: SupernetObjective, run_dir: Path, new_randoms: list[Any],
              todo: list[tuple[str, int]], jobs: JobJournal) -> None:
    """Evaluate the new random reference subnets and run every job not journalled yet, in this process or in
    ``bench.workers`` processes sharing the evaluation cache."""
    bars = (tqdm(total=len(new_randoms), desc="search_supernet: random reference subnets", unit="subnet"),
            tqdm(total=len(todo) * c["budget"], desc="search_supernet: strategies", unit="eval"))
    if c["workers"] == 1:
        obj.accuracy(new_randoms, progress=bars[0].update)
        for job in todo:
            bars[1].set_postfix_str(f"{job[0]} seed {job[1]}")
            n0 = bars[1].n
            jobs.record(job, _one_run(*job, obj, c, bars[1].update))
            bars[1].update(c["budget"] - (bars[1].n - n0))
    elif new_randoms or todo:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        chunks = [list(ch) for ch in np.array_split([a.to_string() for a in new_randoms], 4 * c["workers"]) if len(ch)]
        with ProcessPoolExecutor(c["workers"], mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                 initargs=(c, str(run_dir))) as pool:
            for fut in as_completed([pool.submit(_evaluate_chunk, ch) for ch in chunks]):
                bars[0].update(fut.result())
            futures = {pool.submit(_run_job, *job): job for job in todo}
            for fut in as_completed(futures):
                jobs.record(futures[fut], fut.result())
                bars[1].update(c["budget"])
        obj.reload()
    for bar in bars:
        bar.close()


def run(cfg: Any) -> dict[str, Any]:
    c = _config(cfg)
    limit_threads(c["threads"])
    t_start, load_start = time.perf_counter(), load_average()
    run_dir, train_command = _trained_run(c)
    obj = SupernetObjective(c, run_dir)
    space = obj.space
    journal = JobJournal(c, obj)
    done = journal.done
    jobs = [(n, s) for s in range(c["seeds"]) for n in c["strategies"]]  # seed-major: an interrupted run holds
    # whole seeds of every strategy, and a rerun with fewer bench.seeds reuses them
    todo = [j for j in jobs if j not in done]
    randoms = space.sample_many(c["n_random"], np.random.default_rng(c["seed"])) if c["n_random"] else []
    n_cached = len(obj.acc)
    _evaluate(c, obj, run_dir, [a for a in randoms if a.to_string() not in obj.acc], todo, journal)
    rand_csv = Path(c["out"]).with_name(f"{Path(c['out']).stem}_random_evaluations.csv")
    if randoms:  # for bench=accuracy_predictor bench.evaluations=<this file> bench.run_dir=<run_dir>
        import pandas as pd

        write_csv_atomic(rand_csv, pd.DataFrame({"arch": [a.to_string() for a in randoms],
                                                 "val_accuracy": obj.accuracy(randoms),
                                                 "latency_ms": obj.latency_ms(randoms)}))
    union = sorted({*(a.to_string() for a in randoms), *(a for j in jobs for a in done[j]["archs"])})
    archs = [space.parse(s) for s in union]
    F_all = obj.F(archs)
    F_of = dict(zip(union, F_all, strict=True))
    mask = pareto_mask(F_all)
    T = F_all[mask]
    ref = {"ideal": T.min(0), "nadir": T.max(0)}
    ref["hv"] = hypervolume(normalize(T, ref["ideal"], ref["nadir"]), REF)
    result: dict[str, Any] = {
        "bench": "search_supernet", "run_dir": str(run_dir), "train_command": train_command,
        "budget": c["budget"], "seeds": c["seeds"], "checkpoints": c["checkpoints"],
        "val_images": c["val_images"], "calib_images": c["calib_images"], "ours_strategy": c["ours"],
        "latency_check": obj.lut_check,
        "reference": {"n_random": len(randoms), "n_evaluated": len(union), "front_size": int(mask.sum()),
                      "ideal": ref["ideal"].tolist(), "nadir": ref["nadir"].tolist(),
                      "val_accuracy_range": [float(1 - F_all[:, 0].max()), float(1 - F_all[:, 0].min())],
                      "latency_ms_range": [float(F_all[:, 1].min()), float(F_all[:, 1].max())]},
        "random_evaluations_csv": str(rand_csv) if randoms else None,
        "front_members_from_random": len({a.to_string() for a in randoms}.intersection(np.array(union)[mask])),
        "strategies": {}, "runs_reused": len(jobs) - len(todo), "evaluated_this_invocation": len(obj.acc) - n_cached,
        "fingerprint": journal.fingerprint, "versions": versions(),
    }
    _score_strategies(result, done, F_of, ref, c)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    result["load_before"], result["load_after"] = load_start, load_average()
    result["config"] = {k: v for k, v in c.items() if k != "ours"}
    write_json_atomic(Path(c["out"]), result)
    _print(result)
    return result


def _score_strategies(result: dict[str, Any], done: dict[tuple[str, int], dict[str, Any]], F_of: dict[str, np.ndarray],
                      ref: dict[str, Any], c: dict[str, Any]) -> None:
    """Per strategy: median HV ratios at the checkpoints and evaluations to 98%; ours against the best peer."""
    for name in c["strategies"]:
        per = [_score(done[name, s], F_of, ref, c) for s in range(c["seeds"])]
        result["strategies"][name] = {
            "strategy_class": done[name, 0]["strategy_class"], "library": done[name, 0].get("library"),
            "hv_ratio_median": {str(k): float(np.median([p["hv_ratio_at"][str(k)] for p in per]))
                                for k in c["checkpoints"]},
            "evals_to_98pct_median": float(np.median([p["evals_to_98pct"] for p in per])),
            "evals_to_98pct": [p["evals_to_98pct"] for p in per],
            "no_repeats": all(p["distinct"] for p in per),
            "seconds_per_run_median": float(np.median([p["seconds"] for p in per])),
            "per_seed": per,
        }
    peers = [v["evals_to_98pct_median"] for k, v in result["strategies"].items() if k != "ours"]
    if "ours" in result["strategies"] and peers:
        ours, best = result["strategies"]["ours"]["evals_to_98pct_median"], min(peers)
        result["ours_evals_to_98pct"], result["best_peer_evals_to_98pct"] = ours, best
        result["target_met"] = bool(ours <= c["budget"] and ours <= best / 3)  # at most a third of the best peer's
        # when nobody reaches 98% within the budget: how soon ours reaches what the best peer has at the end
        final = {k: v["hv_ratio_median"][str(c["checkpoints"][-1])] for k, v in result["strategies"].items()
                 if k != "ours"}
        peer = max(final, key=final.get)
        evals = [_first_reaching(p["hv_curve"], final[peer], c["budget"])
                 for p in result["strategies"]["ours"]["per_seed"]]
        result["ours_vs_best_peer_final_hv"] = {
            "best_peer": peer, "its_median_hv_ratio": final[peer], "at_evaluations": c["checkpoints"][-1],
            "ours_evals_to_reach_it": evals, "ours_evals_to_reach_it_median": float(np.median(evals))}


def _print(result: dict[str, Any]) -> None:
    lc = result["latency_check"]
    print(f"LUT + residual vs whole-network ({lc['n_check']} subnets): Spearman {lc['spearman']:.3f}, "
          f"within 10% {lc['within10']:.2f}, timing repeat Spearman {lc['repeat_spearman']:.3f}")
    ref = result["reference"]
    print(f"reference front: {ref['front_size']} of {ref['n_evaluated']} evaluated subnets "
          f"({ref['n_random']} random); val accuracy {ref['val_accuracy_range'][0]:.3f}..{ref['val_accuracy_range'][1]:.3f}")
    cps = result["checkpoints"]
    print(f"{'strategy':<14}" + "".join(f"{'hv@' + str(k):>9}" for k in cps) + f"{'evals to 98%':>14}")
    for name, s in result["strategies"].items():
        print(f"{name:<14}" + "".join(f"{s['hv_ratio_median'][str(k)]:>9.4f}" for k in cps)
              + f"{s['evals_to_98pct_median']:>14.0f}")
    vs = result.get("ours_vs_best_peer_final_hv")
    if vs:
        print(f"ours reaches {vs['best_peer']}'s median HV ratio after {vs['at_evaluations']} evaluations "
              f"({vs['its_median_hv_ratio']:.4f}) after {vs['ours_evals_to_reach_it_median']:.0f} (median)")
