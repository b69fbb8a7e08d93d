"""What a search strategy is told about the problem it runs on, and how a configured strategy is built for it.

The pipeline's search stage and ``hwnas-bench bench=search_nb201`` describe their problem the same way (a
:class:`SearchProblem`) and build the strategy of ``conf/search/<name>.yaml`` with :func:`build_strategy`, so
the benchmark measures the very class and defaults that ``hwnas`` runs; only the objective differs (real
supernet evaluations there, a tabular lookup here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.search.base import Strategy
from search_spaces.base import Architecture, SearchSpace


@dataclass
class SearchProblem:
    """The problem a strategy searches (all objectives minimised).

    Attributes:
        space: the search space (sample, mutate, genome, ``surrogate_features``).
        n_objectives: objective columns of every ``tell``.
        seed: seed of the strategy's own randomness.
        worker: index of this process among workers sharing the problem's study (``worker`` of the run
            config); a shared study's sampler draws its own seed from ``(seed, worker)``, see ``worker_seed``.
        n_constraints: constraint columns (``<= 0`` feasible) of every ``tell``.
        candidates: a finite list of every architecture that may be proposed (a tabular space); ``None`` = the
            whole space (strategies then sample it or search it with NSGA-II).
        models: per objective column, a model the problem has, on the face every predictor shares
            (``fit(archs, y) -> self``, ``predict(archs, return_std=False)``): the run's fitted predictors, exact
            costs (:class:`predictors.ExactCost`); ``None`` where it has none. The accuracy column's model
            predicts accuracy (the column holds its error); the others predict their column.
        refit: per objective column, whether a strategy that learns from its evaluations refits that model on
            them (``None``: no column; the models are fitted already). E.g. a device's latency model that is
            calibrated on the evaluated architectures themselves.
        constraint_model: predicted constraint rows of archs from their predicted objective rows
            (``(archs, F_mean) -> G``); needed when ``n_constraints > 0`` by strategies that predict.
        accuracy_column: the objective column that is ``1 - accuracy`` (error), learned by the strategy.
        storage, study_name: where a strategy keeps a persistent study (Optuna; ``storage=None`` keeps it in
            memory; ``study_name=None``: ``hwnas-optuna_<sampler>-seed<seed>``).
    """

    space: SearchSpace
    n_objectives: int = 2
    seed: int = 0
    worker: int = 0
    n_constraints: int = 0
    candidates: Sequence[Architecture] | None = None
    models: Sequence[Any] | None = None
    refit: Sequence[bool] | None = None
    constraint_model: Callable[[Sequence[Architecture], np.ndarray], np.ndarray] | None = None
    accuracy_column: int = 0
    storage: str | None = None
    study_name: str | None = None

    def __post_init__(self) -> None:
        if int(self.n_objectives) < 2:
            raise ValueError(f"n_objectives={self.n_objectives} is invalid; expected >= 2")
        if self.models is not None and len(self.models) != self.n_objectives:
            raise ValueError(f"got {len(self.models)} models; expected one per objective ({self.n_objectives}), "
                             "None where the problem has none")
        if not 0 <= int(self.accuracy_column) < self.n_objectives:
            raise ValueError(f"accuracy_column={self.accuracy_column} is invalid; expected a column < {self.n_objectives}")
        if self.refit is not None and len(self.refit) != self.n_objectives:
            raise ValueError(f"refit has {len(self.refit)} entries; expected one per objective ({self.n_objectives})")


def strategy_config(name: str | None = None) -> dict[str, Any]:
    """The ``strategy`` node of ``conf/search/<name>.yaml`` as the pipeline composes it (``name=None``: the
    pipeline's default search, from ``conf/config.yaml``'s defaults list), for callers outside a Hydra run
    (benchmarks, notebooks, tests)."""
    from importlib import resources

    from omegaconf import OmegaConf

    from nas.rundir import group_option

    if name is None:
        defaults = OmegaConf.to_container(OmegaConf.load(str(resources.files("nas.conf") / "config.yaml")))["defaults"]
        name = next(d["search"] for d in defaults if isinstance(d, dict) and "search" in d)
    try:
        node = group_option("search", name)
    except ValueError:
        raise ValueError(f"search strategy config {name!r} does not exist; expected a file conf/search/<name>.yaml") from None
    return node["strategy"]


def build_strategy(node: Any, problem: SearchProblem) -> Any:
    """The strategy of a ``conf/search/<name>.yaml`` ``strategy`` node (its ``_target_`` and parameters, nested
    ``_target_`` nodes built by ``hydra.utils.instantiate``), made for ``problem`` by its ``from_problem``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    target = OmegaConf.select(node, "_target_") if OmegaConf.is_config(node) else dict(node).get("_target_")
    if target is None:
        raise ValueError("search.strategy has no _target_; expected e.g. {_target_: nas.search.ClosedLoopSearch}")
    try:
        partial = instantiate(node, _partial_=True, _convert_="all")
    except InstantiationException as e:
        why = " ".join(str(e.__cause__ or e).split())  # Hydra's report spans lines
        raise ValueError(f"search.strategy._target_={target!r} cannot be built: {why}") from None
    cls = partial.func
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"search.strategy._target_={target!r} is not a search strategy; expected a class of nas.search")
    return cls.from_problem(problem, **partial.keywords)


def strategy_class(strategy: Any) -> str:
    """Dotted path of a strategy's class, as recorded in summary.json and benchmark JSON."""
    cls = type(strategy)
    return f"{cls.__module__}.{cls.__qualname__}"
