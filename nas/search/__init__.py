"""Search strategies behind one ask/tell interface; all objectives are minimised inside."""

from nas.search.base import Strategy
from nas.search.closed_loop import ClosedLoopSearch
from nas.search.loop import run_budget
from nas.search.nsga2 import PymooNSGA2
from nas.search.optuna_search import OptunaSearch
from nas.search.random_search import RandomSearch

__all__ = ["ClosedLoopSearch", "OptunaSearch", "PymooNSGA2", "RandomSearch", "Strategy", "run_budget"]
