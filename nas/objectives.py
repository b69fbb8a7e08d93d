"""Search objectives and constraints as configured (``search.objectives``, ``search.constraints``).

Names: ``accuracy`` (validation accuracy, maximised; minimised as the error ``1 - accuracy``), ``latency_ms`` (the run's device), ``params``, ``macs``
and ``latency_ms_<name>`` (another device, predicted by ``search.latency_predictors.<name>``: a saved few-shot
predictor of a calibrate stage, or a regressor of a predict stage). Everything inside the search is minimised:
accuracy becomes the error ``1 - accuracy`` here, at the boundary, and nowhere else (positive, so the
closed loop's GP can model its logarithm).

Constraints are bounds on the same names, whether or not they are objectives: an upper bound for costs
(``search.constraints.latency_ms=5``), a lower bound for accuracy (``search.constraints.accuracy=0.95``).
:meth:`Objectives.violation` returns them in pymoo's convention (``<= 0`` is feasible), scaled by the bound so
that different units compare.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BASE = ("accuracy", "latency_ms", "params", "macs")
MAXIMISED = frozenset({"accuracy"})
OTHER = "latency_ms_"  # prefix of another device's predicted latency: latency_ms_<key of search.latency_predictors>


def _is_name(name: str, extra: Mapping[str, Any]) -> bool:
    if name in BASE:
        return True
    return name.startswith(OTHER) and name[len(OTHER):] in extra


@dataclass(frozen=True)
class Objectives:
    """Objective names (order kept), constraint bounds, and the other devices' latency predictor files."""

    names: tuple[str, ...]
    constraints: dict[str, float] = field(default_factory=dict)
    latency_predictors: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = list(self.names)
        expected = f"names from {list(BASE)} or latency_ms_<key of search.latency_predictors>"
        if len(names) < 2:
            raise ValueError(f"search.objectives={names} is invalid; expected at least two {expected}")
        for n in names:
            if not isinstance(n, str) or not _is_name(n, self.latency_predictors):
                raise ValueError(f"search.objectives contains {n!r}; expected {expected}")
        if len(set(names)) != len(names):
            raise ValueError(f"search.objectives={names} repeats a name; expected distinct objectives")
        if "accuracy" not in names:
            raise ValueError(f"search.objectives={names} lacks 'accuracy'; expected accuracy and at least one cost")
        for key, bound in self.constraints.items():
            if not _is_name(key, self.latency_predictors):
                raise ValueError(f"search.constraints has key {key!r}; expected {expected}")
            if not isinstance(bound, int | float) or isinstance(bound, bool) or not np.isfinite(bound) or bound <= 0:
                raise ValueError(f"search.constraints.{key}={bound!r} is invalid; expected a positive number")
            if key == "accuracy" and bound > 1:
                raise ValueError(f"search.constraints.accuracy={bound} is invalid; expected a fraction in (0, 1]")
        for key, path in self.latency_predictors.items():
            if not isinstance(key, str) or not key:
                raise ValueError(f"search.latency_predictors has key {key!r}; expected a plain device name")
            if not Path(str(path)).is_file():
                raise ValueError(f"search.latency_predictors.{key}={path!r} is not a file; expected a saved "
                                 "predictor (.skops of a calibrate or predict stage)")
            from predictors.arch_predictor import load_predictor

            try:
                load_predictor(path)  # read now (data only, never unpickled): a bad file stops the run here
            except ValueError as e:
                raise ValueError(f"search.latency_predictors.{key}: {e}") from None

    @classmethod
    def from_config(cls, search_cfg: Any) -> Objectives:
        from omegaconf import OmegaConf

        def plain(key: str) -> Any:
            val = OmegaConf.select(search_cfg, key, default=None)
            return OmegaConf.to_container(val, resolve=True) if OmegaConf.is_config(val) else val

        names = plain("objectives") or ["accuracy", "latency_ms"]
        cons = plain("constraints") or {}
        preds = plain("latency_predictors") or {}
        if not isinstance(cons, dict):
            raise ValueError(f"search.constraints={cons!r} is invalid; expected a mapping like {{latency_ms: 5}}")
        if not isinstance(preds, dict):
            raise ValueError(f"search.latency_predictors={preds!r} is invalid; expected a mapping name -> .skops path")
        return cls(tuple(names), {str(k): v for k, v in cons.items() if v is not None},
                   {str(k): str(v) for k, v in preds.items()})

    # ------------------------------------------------------------------ what has to be computed
    @property
    def needed(self) -> tuple[str, ...]:
        """Every metric an evaluation must provide: the objectives, then constrained-only names."""
        return self.names + tuple(k for k in self.constraints if k not in self.names)

    @property
    def n_constraints(self) -> int:
        return len(self.constraints)

    def minimised(self, values: Mapping[str, Any]) -> np.ndarray:
        """(n, len(names)) matrix of objectives to minimise: accuracy as error ``1 - accuracy``, the rest as
        they are."""
        cols = [np.asarray(values[n], dtype=np.float64).reshape(-1) for n in self.names]
        return np.column_stack([1.0 - c if n in MAXIMISED else c for n, c in zip(self.names, cols, strict=True)])

    def violation(self, values: Mapping[str, Any]) -> np.ndarray:
        """(n, n_constraints) relative violations, ``<= 0`` feasible: ``(v - bound) / bound`` for costs,
        ``(bound - v) / bound`` for accuracy."""
        n = len(np.asarray(values[self.needed[0]]).reshape(-1))
        if not self.constraints:
            return np.zeros((n, 0))
        cols = []
        for key, bound in self.constraints.items():
            v = np.asarray(values[key], dtype=np.float64).reshape(-1)
            cols.append((bound - v) / bound if key in MAXIMISED else (v - bound) / bound)
        return np.column_stack(cols)

    def feasible(self, values: Mapping[str, Any]) -> np.ndarray:
        return np.all(self.violation(values) <= 0, axis=1)

    def describe_constraints(self) -> str:
        return ", ".join(f"{k} {'>=' if k in MAXIMISED else '<='} {v:g}" for k, v in self.constraints.items()) or "none"
