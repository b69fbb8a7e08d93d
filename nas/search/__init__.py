"""Search strategies behind one ask/tell interface; all objectives are minimised inside."""

from nas.search.base import Strategy
from nas.search.nsga2 import PymooNSGA2

__all__ = ["PymooNSGA2", "Strategy"]
