"""hwnas: hardware-aware NAS — pipeline, training, search, Pareto math, export, CLIs and benchmarks."""

__version__ = "0.1.0"
