"""Stage 5: search the accuracy-cost trade-off, evaluate the chosen subnets for real, re-time them together.

The strategy is the ``strategy`` node of ``conf/search/<name>.yaml``, built by ``nas.search.build_strategy``
for this run's :class:`~nas.search.SearchProblem`: the space, the objectives of ``search.objectives``
(minimised: ``1 - accuracy``, costs as they are), the run's models of each column (the predict stage's
accuracy predictor; latency from the calibrate stage's few-shot predictor ``predictors/latency_fewshot.skops``
when the run has one, else the predict stage's regressor ``predictors/latency.skops``; exact params/MACs;
other devices' saved predictors) and ``search.constraints``. The stage only drives it: the measure stage's
evaluated subnets are handed over (``warm_start``), then :func:`nas.search.run_budget` asks, evaluates what
is new for real and tells, ``search.budget`` real evaluations in all (see conf/search/*.yaml for what each
strategy does with them).

A real evaluation (subnet accuracy after BN recalibration, on val and test) is journalled to
``search_evaluations.csv`` as soon as its batch finishes: a killed search rerun with the same command repeats
none of them. All candidates (the measure stage's subnets plus the search's) are finally exported and timed
together in one interleaved measurement, so their latencies compare; the front is taken over the feasible
ones. Writes candidates.csv, pareto.csv, pareto.png, hv_history.png and the hypervolume of the measured front.

Where the parts live: the models and the problem in ``search_models``, the real evaluations (over the workers'
evaluation journal, ``nas.workers``) in ``search_evaluations``, the candidates and the front in
``search_front``; this module sets the search up and drives it (:class:`SearchStage`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from nas.objectives import Objectives
from nas.rundir import RunContext
from nas.search import build_strategy, run_budget, strategy_class
from nas.stages.base import Stage
from nas.stages.common import positive_int, validate_device
from nas.stages.search_evaluations import BATCH, RealEvaluations
from nas.stages.search_front import front_record
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
        # whether the budget is a study several workers share (see nas.workers.StudyBudget)
        self.plan = self.strategy.budget(int(cfg.search.budget))
        self.shared = self.plan.shared
        self.batches, self.seconds = 0, 0.0  # what the stage's drives of it add up
        self._real: RealEvaluations | None = None

    @property
    def real(self) -> RealEvaluations:
        """The journal of real evaluations, opened once, knowing the measure stage's evaluations too."""
        if self._real is None:
            self._real = RealEvaluations(self.ctx, self.strategy.label)
            for a, v, t in zip(self.seen, self.evals.val_accuracy, self.evals.test_accuracy, strict=True):
                self._real.acc.setdefault(a.to_string(), (float(v), float(t)))
        return self._real

    def scored(self, archs: Sequence[Any], acc: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Objective rows (minimised) and constraint rows of archs with real accuracies ``acc``."""
        vals = self.models.values(archs, acc)
        return self.obj.minimised(vals), (self.obj.violation(vals) if self.obj.n_constraints else None)

    def drive(self) -> RealEvaluations:
        """Drive the strategy through ``search.budget`` real evaluations (resumed from the journal). A strategy
        that is not a shared study publishes each batch in ``search_batch.json`` and waits for all of it: other
        workers of the run directory evaluate part of it meanwhile (:meth:`SearchStage.help`)."""
        cfg, strategy = self.ctx.cfg, self.strategy
        label, budget = strategy.label, int(cfg.search.budget)
        if self._real is None:
            log.info("search: %s (%s), objectives %s, constraints: %s, budget %d real evaluations%s", label,
                     strategy_class(strategy), list(self.obj.names), self.obj.describe_constraints(), budget,
                     f", study shared by every worker of {cfg.search.storage}" if cfg.search.storage else "")
        real = self.real

        def objective(archs: list[Any]) -> Any:
            if not self.shared:
                real.publish(self.batches, archs)
            acc = real.evaluate(archs, self.batches, desc=f"{label}: evaluate batch {self.batches + 1}",
                                wait=not self.shared)
            self.batches += 1
            F, G = self.scored(archs, acc)
            return F if G is None else (F, G)

        t0 = time.perf_counter()
        try:
            with tqdm(total=budget, initial=strategy.budget(budget).spent(), desc=f"{label}: real evaluations",
                      unit="subnet") as bar:
                run_budget(strategy, objective, budget, progress=bar.update)
        finally:
            self.ctx.path(BATCH).unlink(missing_ok=True)
        self.seconds += time.perf_counter() - t0
        real.read()
        return real


class SearchStage(Stage):
    """Stage 5 (see the module doc). One object per pipeline run: the setup built by :meth:`shared` serves
    :meth:`help` and :meth:`run` of the same run."""

    name = "search"

    def __init__(self) -> None:
        self.setup: SearchSetup | None = None

    def validate(self, cfg: Any) -> None:
        validate(cfg)

    def reset(self, ctx: RunContext) -> None:
        """A forced search starts afresh: the journal of real evaluations and the run directory's own Optuna
        study are removed (a study in a user's ``search.storage`` is left alone; a new ``search.seed`` starts
        a new one)."""
        import shutil

        for name in ("search_evaluations.csv", "search_evaluations.json", "search_optuna.db", BATCH):
            p = ctx.path(name)
            if p.exists():
                p.unlink()
                log.info("search: removed %s (forced rerun)", p)
        if ctx.path(RealEvaluations.DIR).is_dir():
            shutil.rmtree(ctx.path(RealEvaluations.DIR))
            log.info("search: removed %s (forced rerun)", ctx.path(RealEvaluations.DIR))

    def shared(self, ctx: RunContext) -> None:
        """The part of the stage that several workers of one run directory do at once: with a strategy over a
        shared study (Optuna; ``search.storage`` + ``search.study_name``), each worker asks, evaluates and
        tells until the study holds ``search.budget`` evaluations; the rest of the stage (timing every
        candidate, the front) then runs once, in :meth:`run`, under the stage's lock. Other strategies run
        wholly in :meth:`run`."""
        self.setup = SearchSetup(ctx)
        if self.setup.shared:
            self.setup.drive()

    def help(self, ctx: RunContext) -> bool:
        """While another worker of this run directory holds the stage with a strategy that is not a shared
        study (the closed loop, random search, NSGA-II on real evaluations): evaluate one arch of its current
        batch that nobody has claimed, and journal it; True if it did. The holder waits for the journal rows
        of the archs others took, so a batch is spread over every waiting worker."""
        if self.setup is None or self.setup.shared:
            return False
        return self.setup.real.help_with()

    def run(self, ctx: RunContext) -> dict:
        setup = self.setup or SearchSetup(ctx)
        self.setup = None
        strategy, label = setup.strategy, setup.strategy.label
        real = setup.drive()  # a shared study that is full already: returns at once
        seen_set = set(setup.seen)
        picks = [a for a in map(ctx.space.parse, real.mine()) if a not in seen_set]
        round_of = {r["arch"]: int(r["round"]) for r in real.rows if r["strategy"] == label}
        front = front_record(ctx, setup, picks, real.acc, round_of)
        info = {"rounds": setup.batches, "inner_search_seconds": round(strategy.inner_search_seconds, 3),
                "predictor_evaluations": strategy.predictor_evaluations}
        if setup.shared:  # dead workers' trials this worker re-enqueued
            info["optuna_retried_trials"] = int(setup.plan.retried)
        return {"strategy": label, "strategy_class": strategy_class(strategy), "objectives": list(setup.obj.names),
                "constraints": dict(setup.obj.constraints), "search_seconds": round(setup.seconds, 2),
                **front, **info, **setup.models.record()}
