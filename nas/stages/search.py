"""Stage 5: search the accuracy-cost trade-off, evaluate the chosen subnets for real, re-time them together.

The strategy is the ``strategy`` node of ``conf/search/<name>.yaml``, built by ``nas.search.build_strategy``
for this run's :class:`~nas.search.SearchProblem`: the space, the objectives of ``search.objectives``
(minimised: ``1 - accuracy``, costs as they are), the run's models of each column (the predict stage's
accuracy predictor; latency from the calibrate stage's few-shot predictor ``predictors/latency_fewshot.pkl``
when the run has one, else the predict stage's regressor ``predictors/latency.pkl``; exact params/MACs;
other devices' saved predictors) and ``search.constraints``. The stage only drives it: the measure stage's
evaluated subnets are handed over (``warm_start``), then :func:`nas.search.run_budget` asks, evaluates what
is new for real and tells, ``search.budget`` real evaluations in all (see conf/search/*.yaml for what each
strategy does with them).

A real evaluation (subnet accuracy after BN recalibration, on val and test) is journalled to
``search_evaluations.csv`` as soon as its batch finishes: a killed search rerun with the same command repeats
none of them. All candidates (the measure stage's subnets plus the search's) are finally exported and timed
together in one interleaved measurement, so their latencies compare; the front is taken over the feasible
ones. Writes candidates.csv, pareto.csv, pareto.png, hv_history.png and the hypervolume of the measured front.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from nas.objectives import OTHER, Objectives
from nas.pareto import hv_history, hypervolume, pareto_mask
from nas.plots import plot_hv_history, plot_pareto
from nas.rundir import RunContext, file_stem, owner_gone, this_process, write_csv_atomic, write_json_atomic
from nas.search import build_strategy, run_budget, strategy_class
from nas.stages.common import evaluate_archs, measure_archs, positive_int, spearman, validate_device
from nas.stages.search_models import Models, dry_build, search_problem

log = logging.getLogger(__name__)


def validate(cfg: Any) -> Objectives:
    """One-line errors for search.* before anything is written; returns the parsed objectives."""
    positive_int(cfg, "search.budget")
    validate_device(cfg)
    if OmegaConf.select(cfg, "search.strategy._target_") is None:
        raise ValueError(f"search.strategy={OmegaConf.select(cfg, 'search.strategy')!r} is invalid; expected a "
                         "strategy node with a _target_ (search=closed_loop|nsga2|optuna|random)")
    storage = OmegaConf.select(cfg, "search.storage", default=None)
    if storage is not None:
        from nas.search.optuna_search import open_storage

        try:  # a URL that cannot connect fails here, in one line, not in the middle of the search
            open_storage(storage)
        except ValueError as e:
            raise ValueError(f"search.{e} (null = SQLite in the run directory)") from None
    name = OmegaConf.select(cfg, "search.study_name", default=None)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"search.study_name={name!r} is invalid; expected a non-empty string (null = derived from "
                         "the sampler and seed)")
    obj = Objectives.from_config(cfg.search)
    dry_build(cfg, obj)
    return obj


def reset(ctx: RunContext) -> None:
    """A forced search starts afresh: the journal of real evaluations and the run directory's own Optuna study
    are removed (a study in a user's ``search.storage`` is left alone; a new ``search.seed`` starts a new one)."""
    import shutil

    for name in ("search_evaluations.csv", "search_evaluations.json", "search_optuna.db", BATCH):
        p = ctx.path(name)
        if p.exists():
            p.unlink()
            log.info("search: removed %s (forced rerun)", p)
    if ctx.path(RealEvaluations.DIR).is_dir():
        shutil.rmtree(ctx.path(RealEvaluations.DIR))
        log.info("search: removed %s (forced rerun)", ctx.path(RealEvaluations.DIR))


class RealEvaluations:
    """Accuracy of subnets extracted from the supernet (BN recalibrated), journalled as they finish.

    Each evaluation is one small JSON file in ``search_evaluations/`` keyed by strategy and arch, written
    atomically: workers sharing the run directory never clobber each other, and an arch whose accuracy any of
    them recorded is never evaluated again. ``search_evaluations.csv`` is the journal's table, rewritten from
    those files after every batch. The journal belongs to one supernet checkpoint (``search_evaluations.json``):
    a retrained supernet starts a fresh one.
    """

    COLUMNS = ("arch", "strategy", "round", "val_accuracy", "test_accuracy", "worker")
    DIR = "search_evaluations"

    def __init__(self, ctx: RunContext, strategy: str) -> None:
        self.ctx, self.strategy = ctx, strategy
        self.path = ctx.path("search_evaluations.csv")
        self.meta_path = ctx.path("search_evaluations.json")
        self.dir = ctx.path(self.DIR)
        self.key = {**ctx.checkpoint_key(), "calib_images": int(ctx.cfg.predictor.calib_images)}
        same = self.meta_path.is_file() and json.loads(self.meta_path.read_text()) == self.key
        if not same and (self.dir.is_dir() or self.path.is_file()):
            log.info("search: the supernet changed since %s was written; starting a fresh journal", self.path)
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
            self.path.unlink(missing_ok=True)
        elif same and self.path.is_file() and not self.dir.is_dir():  # a journal written before the per-arch files
            for i, row in enumerate(pd.read_csv(self.path).to_dict("records")):
                self._write_row({**row, "t": float(i)})
        write_json_atomic(self.meta_path, self.key)
        self.acc: dict[str, tuple[float, float]] = {}
        self.rows: list[dict[str, Any]] = []
        self._read()
        if self.rows:
            log.info("search: %d real evaluations found in %s (none will be repeated)", len(self.rows), self.dir)
        self._supernet = None
        self._claims: list[Any] = []
        self.grace = float(OmegaConf.select(ctx.cfg, "search.strategy.grace_period", default=None) or 60.0)

    def _file(self, strategy: str, arch: str) -> Any:
        return self.dir / f"{file_stem(f'{strategy}|{arch}')}.json"

    def _write_row(self, row: dict[str, Any]) -> None:
        write_json_atomic(self._file(row["strategy"], row["arch"]), row)

    def _read(self) -> None:
        """Every worker's evaluations on disk, in the order they finished."""
        rows = []
        for p in self.dir.glob("*.json") if self.dir.is_dir() else ():
            try:
                rows.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # pragma: no cover - written atomically; only a foreign file lands here
                continue
        self.rows = sorted(rows, key=lambda r: (r["t"], r["arch"]))
        for r in self.rows:
            self.acc.setdefault(r["arch"], (float(r["val_accuracy"]), float(r["test_accuracy"])))

    def mine(self) -> list[str]:
        """Archs this strategy evaluated (any worker), in order."""
        return [r["arch"] for r in self.rows if r["strategy"] == self.strategy]

    def _claim(self, key: str) -> bool:
        """Take the arch for this process: ``<arch hash>.claim`` created with O_EXCL (atomic, also between
        machines on a shared filesystem). A claim whose process is dead (this host) or that was not touched for
        the grace period is taken over by one renamer. False: another live worker is evaluating it."""
        path = self.dir / f"{file_stem(key)}.claim"
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self._stale(path):
                    return False
                try:  # exactly one process wins the rename of a stale claim
                    os.rename(path, path.with_name(f"{path.name}.stale.{os.getpid()}"))
                except FileNotFoundError:
                    return False
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(this_process())
            self._read()  # a worker may have journalled it and dropped its claim since this process last looked
            if key in self.acc:
                path.unlink(missing_ok=True)
                return False
            self._claims.append(path)
            return True
        return False

    def _stale(self, path: Any) -> bool:
        try:
            owner, age = path.read_text().strip(), time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if owner == this_process():
            return path not in self._claims  # an earlier session of this very process left it
        gone = owner_gone(owner)
        return bool(gone) or age > self.grace  # dead on this host, or silent for the grace period

    def _touch_claims(self, stop: Any) -> None:
        while not stop.wait(max(1.0, self.grace / 6)):
            for p in list(self._claims):
                try:
                    os.utime(p)
                except FileNotFoundError:
                    pass

    def _evaluate_one(self, arch: Any, desc: str) -> None:
        """Evaluate an arch this process has claimed (the claim is touched meanwhile, given back on error)."""
        import threading

        if self._supernet is None:
            self._supernet = self.ctx.load_supernet()
        stop = threading.Event()
        toucher = threading.Thread(target=self._touch_claims, args=(stop,), daemon=True)
        toucher.start()
        try:
            res = evaluate_archs(self.ctx, self._supernet, [arch], ("val", "test"), desc=desc, progress=False)
        except BaseException:  # interrupted: give the archs back at once
            for p in self._claims:
                p.unlink(missing_ok=True)
            self._claims = []
            raise
        finally:
            stop.set()
        self.acc[arch.to_string()] = (float(res["val"][0]), float(res["test"][0]))

    def evaluate(self, archs: Sequence[Any], round_: int, desc: str, wait: bool = False) -> np.ndarray:
        """Validation accuracy of each arch; evaluates (and journals) only those nobody evaluated, claiming
        one arch at a time so that other workers can take the rest of the batch (:func:`help`). An arch another
        live worker is evaluating is waited for (``wait``: its journal row, or its claim going stale, which
        this process then takes over) or answered ``nan`` (not evaluated here; the strategy yields it)."""
        self._read()
        keys = [a.to_string() for a in archs]
        todo = list({k: a for a, k in zip(archs, keys, strict=True) if k not in self.acc}.values())
        with tqdm(total=len(todo), desc=desc, unit="subnet", leave=False) as bar:
            while True:
                mine = 0
                for a in todo:
                    if a.to_string() not in self.acc and self._claim(a.to_string()):
                        self._evaluate_one(a, desc)
                        mine += 1
                self._read()
                left = [a for a in todo if a.to_string() not in self.acc]
                bar.update(len(todo) - len(left) - bar.n)
                if not left or not wait:
                    break
                if not mine:
                    time.sleep(0.5)  # the rest is with other live workers: wait for their journal rows
        busy = {k for k in keys if k not in self.acc}
        if busy:
            log.info("search: %d of %d subnets are being evaluated by another worker; not repeated here",
                     len(busy), len(keys))
        self.journal([k for k in keys if k not in busy], round_)
        return np.array([self.acc[k][0] if k in self.acc else np.nan for k in keys])

    def journal(self, keys: Sequence[str], round_: int) -> None:
        """Journal each of these evaluated archs for this strategy, once (rows others wrote count), then give
        back this process's claims and rewrite the journal's table."""
        journalled = set(self.mine())
        now = time.time()
        for i, k in enumerate(keys):
            if k not in journalled:
                journalled.add(k)
                v, t = self.acc[k]
                row = {"arch": k, "strategy": self.strategy, "round": int(round_), "val_accuracy": v,
                       "test_accuracy": t, "worker": this_process(), "t": now + i * 1e-6}
                self._write_row(row)
                self.rows.append(row)
        self._read()
        for p in self._claims:  # the results are journalled: the claims have done their work
            p.unlink(missing_ok=True)
        self._claims = []
        write_csv_atomic(self.path, pd.DataFrame(self.rows, columns=list(self.COLUMNS)))


class SearchSetup:
    """The search of a run directory whose measure and predict stages finished: the objectives, the run's
    models, the measure stage's evaluated subnets and the configured strategy, warm-started with them. The
    search stage drives it; ``hwnas-bench bench=inner_search`` times its inner search."""

    def __init__(self, ctx: RunContext) -> None:
        cfg, space = ctx.cfg, ctx.space
        self.ctx = ctx
        self.obj = Objectives.from_config(cfg.search)  # validate(cfg) ran before the pipeline started
        self.models = Models(ctx, self.obj)
        self.seen = [space.parse(s) for s in pd.read_csv(ctx.path("measurements.csv")).arch]
        self.evals = pd.read_csv(ctx.path("evaluations.csv"))
        self.strategy = build_strategy(cfg.search.strategy, search_problem(ctx, self.models, self.obj))
        F0, G0 = self.scored(self.seen, self.evals.val_accuracy.to_numpy(float))
        self.strategy.warm_start(self.seen, F0, G0)
        # what the stage's drive of it adds up; the journal is opened by the first drive
        self.batches, self.seconds, self.real = [0], 0.0, None

    @cached_property
    def shared(self) -> bool:
        """Whether the strategy's budget is a study several workers share (see run_budget)."""
        return self.strategy.budget_state() is not None

    def scored(self, archs: Sequence[Any], acc: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Objective rows (minimised) and constraint rows of archs with real accuracies ``acc``."""
        vals = self.models.values(archs, acc)
        return self.obj.minimised(vals), (self.obj.violation(vals) if self.obj.n_constraints else None)


BATCH = "search_batch.json"  # the batch the search stage's holder is evaluating now, for other workers to share


def _journal(ctx: RunContext, setup: SearchSetup) -> RealEvaluations:
    """The setup's journal, opened once, knowing the measure stage's evaluations too."""
    if setup.real is None:
        setup.real = RealEvaluations(ctx, setup.strategy.label)
        for a, v, t in zip(setup.seen, setup.evals.val_accuracy, setup.evals.test_accuracy, strict=True):
            setup.real.acc.setdefault(a.to_string(), (float(v), float(t)))
    return setup.real


def _evaluate(ctx: RunContext, setup: SearchSetup) -> RealEvaluations:
    """Drive the strategy through ``search.budget`` real evaluations (resumed from the journal). A strategy
    that is not a shared study publishes each batch in ``search_batch.json`` and waits for all of it: other
    workers of the run directory evaluate part of it meanwhile (:func:`help`)."""
    cfg, strategy = ctx.cfg, setup.strategy
    label = strategy.label
    budget = int(cfg.search.budget)
    if setup.real is None:
        log.info("search: %s (%s), objectives %s, constraints: %s, budget %d real evaluations%s", label,
                 strategy_class(strategy), list(setup.obj.names), setup.obj.describe_constraints(), budget,
                 f", study shared by every worker of {cfg.search.storage}" if cfg.search.storage else "")
    real, batches = _journal(ctx, setup), setup.batches
    batch_path = ctx.path(BATCH)

    def objective(archs: list[Any]) -> Any:
        if not setup.shared:
            write_json_atomic(batch_path, {"strategy": label, "round": batches[0],
                                           "archs": [a.to_string() for a in archs]})
        acc = real.evaluate(archs, batches[0], desc=f"{label}: evaluate batch {batches[0] + 1}",
                            wait=not setup.shared)
        batches[0] += 1
        F, G = setup.scored(archs, acc)
        return F if G is None else (F, G)

    t0 = time.perf_counter()
    try:
        with tqdm(total=budget, initial=min(strategy.resumed_evaluations, budget),
                  desc=f"{label}: real evaluations", unit="subnet") as bar:
            run_budget(strategy, objective, budget, progress=bar.update)
    finally:
        batch_path.unlink(missing_ok=True)
    setup.seconds += time.perf_counter() - t0
    real._read()
    return real


def help(ctx: RunContext) -> bool:  # noqa: A001 - the pipeline's name for "work while another process holds the stage"
    """While another worker of this run directory holds the search stage with a strategy that is not a shared
    study (the closed loop, random search, NSGA-II on real evaluations): evaluate one arch of its current batch
    (``search_batch.json``) that nobody has claimed, and journal it; True if it did. The holder waits for the
    journal rows of the archs others took, so a batch is spread over every waiting worker."""
    setup = ctx.scratch.get("search")
    if setup is None or setup.shared:
        return False
    try:
        batch = json.loads(ctx.path(BATCH).read_text())
    except (OSError, ValueError):
        return False
    real = _journal(ctx, setup)
    if batch.get("strategy") != real.strategy:
        return False
    real._read()
    for key in batch["archs"]:
        if key not in real.acc and real._claim(key):
            arch = ctx.space.parse(key)
            desc = f"{real.strategy}: help with batch {int(batch['round']) + 1}"
            real._evaluate_one(arch, desc)
            real.journal([key], int(batch["round"]))
            log.info("search: evaluated %s of the holder's batch %d", key, int(batch["round"]) + 1)
            return True
    return False


def shared(ctx: RunContext) -> None:
    """The part of the stage that several workers of one run directory do at once: with a strategy over a
    shared study (Optuna; ``search.storage`` + ``search.study_name``), each worker asks, evaluates and tells
    until the study holds ``search.budget`` evaluations; the rest of the stage (timing every candidate, the
    front) then runs once, in :func:`run`, under the stage's lock. Other strategies run wholly in :func:`run`."""
    setup = SearchSetup(ctx)
    ctx.scratch["search"] = setup
    if setup.shared:
        _evaluate(ctx, setup)


def run(ctx: RunContext) -> dict:
    cfg, space = ctx.cfg, ctx.space
    setup = ctx.scratch.pop("search", None) or SearchSetup(ctx)
    obj, models, seen, strategy = setup.obj, setup.models, setup.seen, setup.strategy
    label = strategy.label
    real = _evaluate(ctx, setup)  # a shared study that is full already: returns at once
    info = {"rounds": setup.batches[0], "inner_search_seconds": round(strategy.inner_search_seconds, 3),
            "predictor_evaluations": strategy.predictor_evaluations}
    if setup.shared:  # dead workers' trials this worker re-enqueued
        info["optuna_retried_trials"] = int(strategy.retried)
    search_seconds = setup.seconds
    seen_set = set(seen)
    picks = [a for a in map(space.parse, real.mine()) if a not in seen_set]

    archs = seen + picks
    round_of = {r["arch"]: int(r["round"]) for r in real.rows if r["strategy"] == label}
    supernet = ctx.load_supernet()
    ms = measure_archs(ctx, supernet, archs, desc="export candidates", stage="search")
    # the predict stage's accuracy predictor (not the closed loop's refits): how good was it on what was found
    pred_acc, acc_std = models.acc.predict(archs, return_std=True)
    pred_lat, lat_std = models.lat.predict(archs, return_std=True)
    val = np.array([real.acc[a.to_string()][0] for a in archs])
    test = np.array([real.acc[a.to_string()][1] for a in archs])
    cand = pd.DataFrame({
        "arch": [a.to_string() for a in archs],
        "source": ["measure"] * len(seen) + ["search"] * len(picks),
        "search_round": [0] * len(seen) + [round_of[a.to_string()] + 1 for a in picks],  # 0 = the measure sample
        "eval_order": np.arange(len(archs)),
        "predicted_latency_ms": pred_lat, "predicted_latency_std": lat_std,
        "latency_ms": [m.latency_ms for m in ms], "latency_median_ms": [m.median_ms for m in ms],
        "latency_p10_ms": [m.p10_ms for m in ms], "latency_p90_ms": [m.p90_ms for m in ms],
        "latency_cv": [m.cv for m in ms],
        "predicted_accuracy": pred_acc, "predicted_accuracy_std": acc_std,
        "val_accuracy": val, "test_accuracy": test,
        "params": [space.params(a) for a in archs], "macs": [space.macs(a) for a in archs],
        "resolution": [ctx.space.resolution(a) for a in archs],
    })
    values = {"accuracy": val, "latency_ms": cand.latency_ms.to_numpy(float),
              "params": cand.params.to_numpy(float), "macs": cand.macs.to_numpy(float)}
    for k, m in models.other.items():
        values[f"{OTHER}{k}"] = cand[f"{OTHER}{k}"] = np.asarray(m.predict(archs), float)
    feasible = obj.feasible(values)
    cand["feasible"] = feasible
    Fm = obj.minimised(values)  # error = 1 - accuracy, in [0, 1]
    mask = np.zeros(len(cand), dtype=bool)
    if feasible.any():
        mask[np.flatnonzero(feasible)[pareto_mask(Fm[feasible])]] = True
    cand["pareto"] = mask
    write_csv_atomic(ctx.path("candidates.csv"), cand)
    if not feasible.any():
        raise ValueError(f"no candidate meets search.constraints ({obj.describe_constraints()}); the measured "
                         f"latencies range {cand.latency_ms.min():.3g}..{cand.latency_ms.max():.3g} ms and val accuracy "
                         f"{val.min():.3f}..{val.max():.3f} (candidates.csv); loosen the constraints")
    pareto = cand[cand.pareto].sort_values("latency_ms").drop(columns=["pareto", "feasible"]).reset_index(drop=True)
    pareto["onnx_path"] = ""
    write_csv_atomic(ctx.path("pareto.csv"), pareto)
    # hypervolume of the measured (feasible) front: error in [0, 1], each cost scaled by the largest candidate's,
    # reference point 1.0 for error and 1.1 for the costs
    scale = np.array([1.0 if n == "accuracy" else float(np.max(Fm[:, j])) for j, n in enumerate(obj.names)])
    ref = [1.0 if n == "accuracy" else 1.1 for n in obj.names]
    Fn = Fm / scale
    hv = hypervolume(Fn[feasible], ref)
    hist = hv_history(np.where(feasible[:, None], Fn, np.inf), ref)
    plot_pareto(cand, ctx.path("pareto.png"), title=f"{space.name} on {cfg.data.name}, {cfg.device.name}")
    plot_hv_history(hist, len(seen), ctx.path("hv_history.png"), title=f"{label}: measured-front hypervolume")
    span = float(pareto.latency_ms.max() / pareto.latency_ms.min())
    log.info("measured Pareto front: %d subnets (%d feasible candidates), latency %.3f..%.3f ms (x%.1f), best test "
             "accuracy %.4f", len(pareto), int(feasible.sum()), pareto.latency_ms.min(), pareto.latency_ms.max(), span,
             pareto.test_accuracy.max())
    return {
        "strategy": label, "strategy_class": strategy_class(strategy), "objectives": list(obj.names), "constraints": dict(obj.constraints),
        "n_candidates": len(cand), "n_feasible": int(feasible.sum()), "n_pareto": len(pareto),
        "n_search_picks": len(picks), "search_seconds": round(search_seconds, 2),
        "latency_predictor": "fewshot (calibrate stage)" if models.fewshot else "regressor (predict stage)",
        "latency_predictor_spearman": spearman(cand.predicted_latency_ms.to_numpy(), cand.latency_ms.to_numpy()),
        "accuracy_predictor_spearman": spearman(pred_acc, val),
        **info,
        "hypervolume": hv,
        "hypervolume_ref": {"objectives": [("1 - val_accuracy" if n == "accuracy" else f"{n} / max candidate {n}")
                                           for n in obj.names], "ref": ref,
                            "scale": dict(zip(obj.names, scale.tolist(), strict=True))},
        "hypervolume_history": [round(float(h), 9) for h in hist],
        "hypervolume_measure_sample": round(float(hist[len(seen) - 1]), 9) if seen else 0.0,  # before any search pick
        "pareto_latency_span": span, "best_test_accuracy": float(pareto.test_accuracy.max()),
    }
