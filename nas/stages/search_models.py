"""The search stage's models of every metric its objectives and constraints name, and the problem it hands to
the strategy (the run's space, objectives, models and storage). Every column model is a predictor on the one
face (``fit(archs, y)``, ``predict(archs, return_std=False)``): the predict stage's accuracy predictor, the
run's latency predictor (the calibrate stage's few-shot one when the run has it, else the predict stage's),
exact params/MACs (:class:`predictors.ExactCost`), the user's other latency predictors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from nas.objectives import OTHER, Objectives
from nas.rundir import RunContext
from nas.search import SearchProblem, build_strategy
from nas.stages.predict import accuracy_file
from predictors import ExactCost, load_predictor


def dry_build(cfg: Any, obj: Objectives) -> None:
    """Build the configured strategy once for a stand-in problem (the run's space, stand-in models, an
    in-memory study): a bad strategy parameter fails here in one line, before anything is written."""
    from nas.rundir import build_space

    n = len(obj.names)
    space = build_space(cfg.search_space, 10, 3)
    problem = SearchProblem(space=space, n_objectives=n, seed=0,
                            n_constraints=obj.n_constraints, models=[ExactCost(space, "params")] * n,
                            constraint_model=(lambda archs, F: np.zeros((len(F), obj.n_constraints))),
                            accuracy_column=obj.names.index("accuracy"), storage=None, study_name="validate")
    build_strategy(cfg.search.strategy, problem)


class Models:
    """The run's predictors of every metric the objectives and constraints name, as the search sees them."""

    def __init__(self, ctx: RunContext, obj: Objectives) -> None:
        self.ctx, self.obj, self.space = ctx, obj, ctx.space
        self.acc = load_predictor(accuracy_file(ctx))  # the predict stage's
        fewshot_path = ctx.path("predictors", "latency_fewshot.skops")
        self.fewshot = fewshot_path.is_file()
        self.lat = load_predictor(fewshot_path if self.fewshot else ctx.path("predictors", "latency.skops"))
        self.other = {k: load_predictor(p) for k, p in obj.latency_predictors.items()}

    def column_model(self, name: str) -> Any:
        """The run's fitted model of one metric (accuracy predicts accuracy: the strategy's column is its
        error), on the one face."""
        if name == "accuracy":
            return self.acc
        if name == "latency_ms":
            return self.lat
        if name in ("params", "macs"):
            return ExactCost(self.space, name)
        return self.other[name[len(OTHER):]]

    def predict(self, name: str, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of one metric (accuracy as accuracy, not error); exact costs have std 0."""
        mean, std = self.column_model(name).predict(list(archs), return_std=True)
        return np.asarray(mean, float), np.asarray(std, float)

    def record(self) -> dict[str, str]:
        """What summary.json says about the models: the latency model's class (dotted path)."""
        cls = type(self.lat)
        return {"latency_model_class": f"{cls.__module__}.{cls.__qualname__}"}

    def values(self, archs: Sequence[Any], accuracy: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every metric the objectives and constraints need; accuracy predicted unless given (real)."""
        archs = list(archs)
        return {n: (np.asarray(accuracy, float) if n == "accuracy" and accuracy is not None
                    else self.predict(n, archs)[0]) for n in self.obj.needed}

    def constraint_model(self, archs: Sequence[Any], F_mean: np.ndarray) -> np.ndarray:
        """Predicted constraint rows from a strategy's predicted objective rows (constrained-only metrics from
        the run's predictors)."""
        vals = {}
        for j, n in enumerate(self.obj.names):
            vals[n] = 1.0 - F_mean[:, j] if n == "accuracy" else F_mean[:, j]
        for n in self.obj.needed[len(self.obj.names):]:
            vals[n] = self.predict(n, archs)[0]
        return self.obj.violation(vals)


def search_problem(ctx: RunContext, models: Models, obj: Objectives) -> SearchProblem:
    cfg = ctx.cfg
    seed = int(cfg.search.seed)
    storage = cfg.search.storage or f"sqlite:///{ctx.path('search_optuna.db').resolve()}"
    return SearchProblem(
        space=ctx.space, n_objectives=len(obj.names), seed=seed, worker=int(cfg.get("worker", 0)),
        n_constraints=obj.n_constraints, models=[models.column_model(n) for n in obj.names],
        constraint_model=models.constraint_model if obj.n_constraints else None,
        accuracy_column=obj.names.index("accuracy"), storage=storage,
        study_name=OmegaConf.select(cfg, "search.study_name", default=None),
    )
