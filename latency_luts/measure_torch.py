"""Torch-eager latency with the same interleaved-rounds protocol (and load record) as :mod:`latency_luts.measure`."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from latency_luts.load import LoadMeter
from latency_luts.measure import Measurement, _pass_drift, _progress, _stats


def measure_torch_models(
    modules: Sequence[nn.Module],
    input_shapes: Sequence[tuple[int, ...]],
    threads: int = 1,
    warmup: int = 5,
    rounds: int = 20,
    names: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[Measurement]:
    """Time eval-mode modules under ``torch.inference_mode`` in interleaved rounds; minimum is the estimate."""
    if not modules or len(modules) != len(input_shapes):
        raise ValueError(f"got {len(modules)} modules and {len(input_shapes)} input shapes; expected equal, >= 1")
    if int(threads) < 1 or rounds < 1 or warmup < 0:
        raise ValueError(f"threads={threads}, rounds={rounds}, warmup={warmup}; expected >= 1, >= 1, >= 0")
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    rng = np.random.default_rng(seed)
    names = list(names) if names is not None else [f"model_{i}" for i in range(len(modules))]
    xs = [torch.randn(*s) for s in input_shapes]
    mods = [m.eval() for m in modules]
    times: list[list[float]] = [[] for _ in mods]
    try:
        with torch.inference_mode():
            for m, x in zip(mods, xs):
                for _ in range(warmup):
                    m(x)
            meter = LoadMeter()  # the timed rounds only, as in latency_luts.measure
            for _ in _progress(range(rounds), f"measure {len(mods)} torch models", progress):
                for i in rng.permutation(len(mods)):
                    t0 = time.perf_counter_ns()
                    mods[i](xs[i])
                    times[i].append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        torch.set_num_threads(before)
    other, drift = meter.other_cpus(), _pass_drift(times, rounds)
    return [_stats(n, np.asarray(t), warmup, other, drift) for n, t in zip(names, times)]
