"""Search strategies behind one ask/tell interface (all objectives minimised inside), built from config for a
:class:`SearchProblem` by :func:`build_strategy`; :func:`run_budget` drives any of them."""

from nas.search.base import Strategy
from nas.search.closed_loop import ClosedLoopSearch
from nas.search.loop import run_budget
from nas.search.nsga2 import PymooNSGA2
from nas.search.optuna_search import OptunaSearch
from nas.search.problem import SearchProblem, build_strategy, strategy_class
from nas.search.random_search import RandomSearch

__all__ = ["ClosedLoopSearch", "OptunaSearch", "PymooNSGA2", "RandomSearch", "SearchProblem", "Strategy",
           "build_strategy", "run_budget", "strategy_class"]
