"""Search strategies behind one ask/tell interface (all objectives minimised inside), built from config for a
:class:`SearchProblem` by :func:`build_strategy`; :func:`run_budget` drives any of them."""

from typing import Any

from nas.search.base import Strategy
from nas.search.closed_loop import ClosedLoopSearch
from nas.search.loop import run_budget
from nas.search.nsga2 import PymooNSGA2
from nas.search.optuna_search import OptunaSearch
from nas.search.problem import SearchProblem, build_strategy, strategy_class
from nas.search.random_search import RandomSearch

__all__ = ["AxSearch", "ClosedLoopSearch", "OptunaSearch", "PymooNSGA2", "RandomSearch", "SearchProblem", "Strategy",
           "SyneTuneSearch", "build_strategy", "run_budget", "strategy_class"]

# peers over outside libraries (pip install -e '.[peers]'), imported on first use so hwnas runs without them
_LAZY = {"AxSearch": "nas.search.ax_search", "SyneTuneSearch": "nas.search.syne_tune_search"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
