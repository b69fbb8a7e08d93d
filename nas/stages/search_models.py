"""The search stage's models of every metric its objectives and constraints name, and the problem it hands to
the strategy (the run's space, objectives, models and storage)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from nas.objectives import OTHER, Objectives
from nas.rundir import RunContext
from nas.search import SearchProblem, build_strategy
from nas.search.surrogates import FixedModel
from nas.stages.predict import accuracy_file
from predictors import load_predictor


def dry_build(cfg: Any, obj: Objectives) -> None:
    """Build the configured strategy once for a stand-in problem (the run's space, stand-in models, an
    in-memory study): a bad strategy parameter fails here in one line, before anything is written."""
    from nas.rundir import build_space

    def stand_in(archs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(archs)), np.zeros(len(archs))

    n = len(obj.names)
    problem = SearchProblem(space=build_space(cfg.search_space, 10, 3), n_objectives=n, seed=0,
                            n_constraints=obj.n_constraints, models=[FixedModel(stand_in)] * n,
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

    def predict(self, name: str, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of one metric (accuracy as accuracy, not error); exact costs have std 0."""
        archs = list(archs)
        if name == "accuracy":
            mean, std = self.acc.predict(archs, return_std=True)
        elif name == "latency_ms":
            mean, std = self.lat.predict(archs, return_std=True)
        elif name in ("params", "macs"):
            fn = self.space.params if name == "params" else self.space.macs
            mean, std = np.array([fn(a) for a in archs], float), np.zeros(len(archs))
        else:
            mean, std = self.other[name[len(OTHER):]].predict(archs, return_std=True)
        return np.asarray(mean, float), np.asarray(std, float)

    def column_model(self, name: str) -> FixedModel:
        """The run's model of one objective column, minimised (accuracy as error ``1 - accuracy``)."""
        if name == "accuracy":
            def err(archs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
                mean, std = self.predict("accuracy", archs)
                return 1.0 - mean, std

            return FixedModel(err, "1 - predicted accuracy (predict stage)")
        return FixedModel(lambda archs, n=name: self.predict(n, archs), f"predicted {name}")

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
