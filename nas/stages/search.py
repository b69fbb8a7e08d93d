"""Stage 5: search the accuracy-cost trade-off, evaluate the chosen subnets for real, re-time them together.

Strategies (``search.strategy``):

- ``nsga2`` (default): pymoo NSGA-II over the predictors, then ``search.budget`` subnets spread along the
  predicted front are evaluated for real.
- ``closed_loop``: ``search.rounds`` rounds of: refit the accuracy predictor on every real evaluation so far,
  NSGA-II over the predictors, evaluate the batch whose optimistic accuracy (mean + ``search.beta`` std) adds
  the most hypervolume to the evaluated front (nas.search.acquisition).
- ``optuna_nsga2 | optuna_tpe | optuna_gp | random``: ask/tell strategies whose every proposal is evaluated
  for real (supernet accuracy; latency from the predictor), ``search.budget`` proposals in all, over a
  persistent Optuna study (``search.storage``, default SQLite in the run directory).

Objectives and constraints come from ``search.objectives`` / ``search.constraints`` (nas.objectives). A real
evaluation (subnet accuracy with BN recalibration, on val and test) is journalled to
``search_evaluations.csv`` as soon as its batch finishes: a killed search rerun with the same command repeats
none of them. All candidates (the measure stage's subnets plus the search's) are finally exported and timed
together in one interleaved measurement, so their latencies compare; the front is taken over the feasible
ones. Writes candidates.csv, pareto.csv, pareto.png, hv_history.png and the hypervolume of the measured front.
Latency comes from the calibrate stage's few-shot predictor (predictors/latency_fewshot.pkl) when the run has
one, else from the predict stage's regressor (predictors/latency.pkl).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from nas.objectives import OTHER, LatencyModel, Objectives
from nas.pareto import hv_history, hypervolume, pareto_mask
from nas.plots import plot_hv_history, plot_pareto
from nas.rundir import RunContext, write_csv_atomic, write_json_atomic
from nas.search import OptunaSearch, PymooNSGA2, RandomSearch
from nas.search.acquisition import select_batch
from nas.stages.common import evaluate_archs, measure_archs, positive_int, spearman, validate_device
from predictors import EnsembleRegressor, featurize
from predictors.fewshot import FewShotLatencyPredictor

log = logging.getLogger(__name__)

STRATEGIES = ("nsga2", "closed_loop", "optuna_nsga2", "optuna_tpe", "optuna_gp", "random")


def spread_pick(values: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` items spread evenly over the sorted ``values`` (both ends included)."""
    order = np.argsort(values, kind="stable")
    if k >= len(order):
        return order.tolist()
    pos = np.unique(np.round(np.linspace(0, len(order) - 1, k)).astype(int))
    return order[pos].tolist()


def validate(cfg: Any) -> Objectives:
    """One-line errors for search.* before anything is written; returns the parsed objectives."""
    strategy = OmegaConf.select(cfg, "search.strategy", default="nsga2")
    if strategy not in STRATEGIES:
        raise ValueError(f"search.strategy={strategy!r} is invalid; expected one of {list(STRATEGIES)}")
    for key in ("search.rounds", "search.batch_size"):
        val = OmegaConf.select(cfg, key, default=1)
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ValueError(f"{key}={val!r} is invalid; expected a positive integer")
    beta = OmegaConf.select(cfg, "search.beta", default=1.0)
    if not isinstance(beta, int | float) or isinstance(beta, bool) or not np.isfinite(beta) or beta < 0:
        raise ValueError(f"search.beta={beta!r} is invalid; expected a number >= 0")
    for key in ("search.budget", "search.pop_size", "search.generations"):
        positive_int(cfg, key)
    validate_device(cfg)
    storage = OmegaConf.select(cfg, "search.storage", default=None)
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        raise ValueError(f"search.storage={storage!r} is invalid; expected an Optuna storage URL like "
                         "'sqlite:///study.db' (null = SQLite in the run directory)")
    return Objectives.from_config(cfg.search)


def reset(ctx: RunContext) -> None:
    """A forced search starts afresh: the journal of real evaluations and the run directory's own Optuna study
    are removed (a study in a user's ``search.storage`` is left alone; a new ``search.seed`` starts a new one)."""
    for name in ("search_evaluations.csv", "search_evaluations.json", "search_optuna.db"):
        p = ctx.path(name)
        if p.exists():
            p.unlink()
            log.info("search: removed %s (forced rerun)", p)


class RealEvaluations:
    """Accuracy of subnets extracted from the supernet (BN recalibrated), journalled to search_evaluations.csv.

    The journal belongs to one supernet checkpoint: a retrained supernet starts a fresh one.
    """

    COLUMNS = ("arch", "strategy", "round", "val_accuracy", "test_accuracy")

    def __init__(self, ctx: RunContext, strategy: str) -> None:
        self.ctx, self.strategy = ctx, strategy
        self.path = ctx.path("search_evaluations.csv")
        self.meta_path = ctx.path("search_evaluations.json")
        st = ctx.checkpoint.stat()
        self.key = {"checkpoint_size": st.st_size, "checkpoint_mtime_ns": st.st_mtime_ns,
                    "calib_images": int(ctx.cfg.predictor.calib_images)}
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file() and self.meta_path.is_file():
            if json.loads(self.meta_path.read_text()) == self.key:
                self.rows = pd.read_csv(self.path).to_dict("records")
                log.info("search: %d real evaluations found in %s (none will be repeated)", len(self.rows), self.path)
            else:
                log.info("search: the supernet changed since %s was written; starting a fresh journal", self.path)
        self.acc = {r["arch"]: (float(r["val_accuracy"]), float(r["test_accuracy"])) for r in self.rows}
        self._supernet = None

    def mine(self, round_: int | None = None) -> list[str]:
        """Archs this strategy evaluated, in order (optionally only rounds < ``round_``)."""
        return [r["arch"] for r in self.rows
                if r["strategy"] == self.strategy and (round_ is None or int(r["round"]) < round_)]

    def evaluate(self, archs: Sequence[Any], round_: int, desc: str) -> np.ndarray:
        """Validation accuracy of each arch; evaluates (and journals) only those never evaluated."""
        keys = [a.to_string() for a in archs]
        todo = list({k: a for a, k in zip(archs, keys, strict=True) if k not in self.acc}.values())
        if todo:
            if self._supernet is None:
                self._supernet = self.ctx.load_supernet()
            res = evaluate_archs(self.ctx, self._supernet, todo, ("val", "test"), desc=desc)
            for a, v, t in zip(todo, res["val"], res["test"], strict=True):
                self.acc[a.to_string()] = (float(v), float(t))
        journalled = set(self.mine())
        for k in keys:  # journal every arch this strategy asked for, once
            if k not in journalled:
                journalled.add(k)
                v, t = self.acc[k]
                self.rows.append({"arch": k, "strategy": self.strategy, "round": int(round_),
                                  "val_accuracy": v, "test_accuracy": t})
        write_json_atomic(self.meta_path, self.key)
        write_csv_atomic(self.path, pd.DataFrame(self.rows, columns=list(self.COLUMNS)))
        return np.array([self.acc[k][0] for k in keys])


class Models:
    """The predictors the search scores subnets with, and the metric values of a list of archs."""

    def __init__(self, ctx: RunContext, obj: Objectives) -> None:
        self.ctx, self.obj, self.space = ctx, obj, ctx.space
        self.feats = ctx.cfg.predictor.features
        self.acc = self.acc_stage = EnsembleRegressor.load(ctx.path("predictors", "accuracy.pkl"))  # refits replace .acc
        fewshot_path = ctx.path("predictors", "latency_fewshot.pkl")
        self.fewshot = fewshot_path.is_file()
        lat = (FewShotLatencyPredictor.load(fewshot_path) if self.fewshot
               else EnsembleRegressor.load(ctx.path("predictors", "latency.pkl")))
        self.lat = LatencyModel(lat, ctx.space, self.feats)
        self.other = {k: LatencyModel.load(p, ctx.space, self.feats) for k, p in obj.latency_predictors.items()}

    def X(self, archs: Sequence[Any]) -> np.ndarray:
        return featurize(self.space, list(archs), self.feats)

    def refit_accuracy(self, archs: Sequence[Any], val_acc: np.ndarray) -> None:
        self.acc = instantiate(self.ctx.cfg.predictor.accuracy).fit(self.X(archs), np.asarray(val_acc))

    def values(self, archs: Sequence[Any], accuracy: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every metric the objectives and constraints need; accuracy predicted unless given (real)."""
        out: dict[str, np.ndarray] = {}
        archs = list(archs)
        X = self.X(archs) if accuracy is None or self.lat.kind == "regressor" else None
        for name in self.obj.needed:
            if name == "accuracy":
                out[name] = self.acc.predict(X) if accuracy is None else np.asarray(accuracy, float)
            elif name == "latency_ms":
                out[name] = np.asarray(self.lat.predict(archs, X=X), float)
            elif name == "params":
                out[name] = np.array([self.space.params(a) for a in archs], float)
            elif name == "macs":
                out[name] = np.array([self.space.macs(a) for a in archs], float)
            else:
                out[name] = np.asarray(self.other[name[len(OTHER):]].predict(archs, X=X), float)
        return out


def _predictor_nsga2(models: Models, obj: Objectives, cfg: Any, seed: int, initial: list[Any]
                     ) -> tuple[list[Any], np.ndarray, float, PymooNSGA2]:
    """NSGA-II over the predictors (constraints included); the predicted front, its rows, seconds, the run."""
    t0 = time.perf_counter()
    nsga = PymooNSGA2(space=models.space, n_objectives=len(obj.names), pop_size=int(cfg.search.pop_size),
                      seed=seed, initial=initial, n_constraints=obj.n_constraints)
    for _ in tqdm(range(int(cfg.search.generations)), desc="NSGA-II on predictors", unit="gen", leave=False):
        archs = nsga.ask()
        vals = models.values(archs)
        nsga.tell(archs, obj.minimised(vals), obj.violation(vals) if obj.n_constraints else None)
    front, F = nsga.front()
    return front, F, time.perf_counter() - t0, nsga


def _cost_column(obj: Objectives) -> int:
    """The objective the acquisition and the spread use beside accuracy: the first cost."""
    return next(i for i, n in enumerate(obj.names) if n != "accuracy")


def _search_predicted(ctx: RunContext, models: Models, obj: Objectives, real: RealEvaluations,
                      seen: list[Any], strategy: str) -> dict[str, Any]:
    """nsga2 (one round, picks spread along the predicted front) and closed_loop (refit, acquire, repeat)."""
    cfg = ctx.cfg
    budget = int(cfg.search.budget)
    rounds = 1 if strategy == "nsga2" else min(int(cfg.search.rounds), budget)
    sizes = [budget // rounds + (r < budget % rounds) for r in range(rounds)]
    seen_acc = np.array([real.acc[a.to_string()][0] for a in seen])
    c = _cost_column(obj)
    a_col = obj.names.index("accuracy")
    seconds, n_pred = [], 0
    for r in range(rounds):
        done = [ctx.space.parse(s) for s in real.mine(round_=r)]
        evaluated = seen + done
        ev_acc = np.r_[seen_acc, [real.acc[a.to_string()][0] for a in done]]
        if strategy == "closed_loop" and done:
            models.refit_accuracy(evaluated, ev_acc)
        front, F, sec, nsga = _predictor_nsga2(models, obj, cfg, int(cfg.search.seed) + r, evaluated)
        seconds.append(sec)
        n_pred += len(nsga.history_)
        known = set(evaluated)
        new = [i for i, a in enumerate(front) if a not in known]
        if strategy == "nsga2":
            if not new:
                log.info("the predicted front holds no unevaluated subnet")
                continue
            picks = [front[new[i]] for i in spread_pick(F[new, c], sizes[r])]
        else:
            # pool: every (predicted-feasible) subnet NSGA-II scored and nobody evaluated; the acquisition
            # prefers those whose optimistic accuracy would add most hypervolume to the evaluated front
            cand = [a for a in nsga.history_ if a not in known and
                    (not obj.n_constraints or np.all(nsga.violation_[a] <= 0))]
            if not cand:
                log.info("round %d: no unevaluated feasible subnet among the predictions", r)
                continue
            Fc = np.stack([nsga.history_[a] for a in cand])
            mean, std = models.acc.predict(models.X(cand), return_std=True)
            opt = np.column_stack([-(mean + float(cfg.search.beta) * std), Fc[:, c]])
            ev_vals = models.values(evaluated, ev_acc)
            ok = obj.feasible(ev_vals)
            ev = obj.minimised(ev_vals)[:, [a_col, c]][ok] if ok.any() else np.empty((0, 2))
            ev = ev[pareto_mask(ev)] if len(ev) else ev
            both = np.vstack([ev, opt[pareto_mask(opt)]])
            idx = select_batch(opt, ev if len(ev) else opt[:1], sizes[r], bounds=(both.min(0), both.max(0)))
            picks = [cand[i] for i in idx]
        real.evaluate(picks, r, desc=f"round {r + 1}/{rounds}: evaluate {len(picks)} picks")
        log.info("round %d/%d: predicted front of %d subnets (%d new), %d evaluated for real (NSGA-II %.1f s)",
                 r + 1, rounds, len(front), len(new), len(picks), sec)
    return {"rounds": rounds, "inner_search_seconds": round(float(np.sum(seconds)), 3),
            "predictor_evaluations": n_pred}


def _search_ask_tell(ctx: RunContext, models: Models, obj: Objectives, real: RealEvaluations,
                     strategy: str) -> dict[str, Any]:
    """Optuna samplers and random search: every proposal evaluated for real, ``search.budget`` in all."""
    cfg = ctx.cfg
    budget, batch, seed = int(cfg.search.budget), int(cfg.search.batch_size), int(cfg.search.seed)
    if strategy == "random":
        strat: Any = RandomSearch(space=ctx.space, batch_size=batch, seed=seed)
    else:
        storage = cfg.search.storage or f"sqlite:///{ctx.path('search_optuna.db').resolve()}"
        strat = OptunaSearch(space=ctx.space, sampler=strategy.removeprefix("optuna_"), storage=storage,
                             study_name=f"hwnas-{strategy}-seed{seed}", n_objectives=len(obj.names),
                             batch_size=batch, seed=seed, n_constraints=obj.n_constraints)
        log.info("Optuna study %s in %s (%d completed trials)", f"hwnas-{strategy}-seed{seed}", storage,
                 len(strat.history_))
    n_done = len(strat.history_)  # a resumed Optuna study's completed trials
    stall, r = 0, 0
    bar = tqdm(total=budget, initial=min(n_done, budget), desc=f"{strategy}: real evaluations", unit="subnet")
    while n_done < budget and stall < 50:
        strat.batch_size = min(batch, budget - n_done)  # the last batch is trimmed to the budget
        archs = strat.ask()
        if not archs:
            stall += 1
            continue
        acc = real.evaluate(archs, r, desc=f"{strategy}: evaluate batch {r + 1}")
        vals = models.values(archs, acc)
        strat.tell(archs, obj.minimised(vals), obj.violation(vals) if obj.n_constraints else None)
        n_done += len(archs)
        bar.update(len(archs))
        r += 1
    bar.close()
    return {"rounds": r, "inner_search_seconds": 0.0, "predictor_evaluations": 0}


def run(ctx: RunContext) -> dict:
    cfg, space = ctx.cfg, ctx.space
    obj = validate(cfg)
    strategy = str(cfg.search.get("strategy", "nsga2"))
    models = Models(ctx, obj)
    meas = pd.read_csv(ctx.path("measurements.csv"))
    seen = [space.parse(s) for s in meas.arch]
    evals = pd.read_csv(ctx.path("evaluations.csv"))
    real = RealEvaluations(ctx, strategy)
    for a, v, t in zip(seen, evals.val_accuracy, evals.test_accuracy, strict=True):
        real.acc.setdefault(a.to_string(), (float(v), float(t)))
    log.info("search: strategy %s, objectives %s, constraints: %s, budget %d real evaluations", strategy,
             list(obj.names), obj.describe_constraints(), int(cfg.search.budget))

    t0 = time.perf_counter()
    if strategy in ("nsga2", "closed_loop"):
        info = _search_predicted(ctx, models, obj, real, seen, strategy)
    else:
        info = _search_ask_tell(ctx, models, obj, real, strategy)
    search_seconds = time.perf_counter() - t0
    seen_set = set(seen)
    picks = [a for a in map(space.parse, real.mine()) if a not in seen_set]

    archs = seen + picks
    supernet = ctx.load_supernet()
    ms = measure_archs(ctx, supernet, archs, desc="export candidates", stage="search")
    X = models.X(archs)
    # the predict stage's accuracy predictor (not the closed loop's refits): how good was it on what was found
    pred_acc, acc_std = models.acc_stage.predict(X, return_std=True)
    pred_lat, lat_std = models.lat.predict(archs, return_std=True, X=X)
    val = np.array([real.acc[a.to_string()][0] for a in archs])
    test = np.array([real.acc[a.to_string()][1] for a in archs])
    cand = pd.DataFrame({
        "arch": [a.to_string() for a in archs],
        "source": ["measure"] * len(seen) + ["search"] * len(picks),
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
    Fm = obj.minimised(values)
    Fm[:, obj.names.index("accuracy")] += 1.0  # error = 1 - accuracy, in [0, 1]
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
    plot_hv_history(hist, len(seen), ctx.path("hv_history.png"), title=f"{strategy}: measured-front hypervolume")
    span = float(pareto.latency_ms.max() / pareto.latency_ms.min())
    log.info("measured Pareto front: %d subnets (%d feasible candidates), latency %.3f..%.3f ms (x%.1f), best test "
             "accuracy %.4f", len(pareto), int(feasible.sum()), pareto.latency_ms.min(), pareto.latency_ms.max(), span,
             pareto.test_accuracy.max())
    return {
        "strategy": strategy, "objectives": list(obj.names), "constraints": dict(obj.constraints),
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
        "hypervolume_history": [round(float(h), 6) for h in hist],
        "pareto_latency_span": span, "best_test_accuracy": float(pareto.test_accuracy.max()),
    }
