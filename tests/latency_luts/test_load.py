"""How busy the machine is with other processes (latency_luts.load), and what the measurement and the thread
policy do with it: real busy-loop processes beside a real onnxruntime timing pass and real torch threads."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import pytest
from torch import nn

from latency_luts.load import LoadMeter, free_cpus, load_flags, usable_cpus
from latency_luts.measure import OrtSettings, describe_load, measure_onnx_models
from latency_luts.onnx_export import export_onnx

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="load is read from Linux /proc/stat")


@contextlib.contextmanager
def busy_loops(n: int):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # started and spinning
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _other_over(seconds: float, burn_self: bool = False) -> float:
    meter = LoadMeter()
    end = time.perf_counter() + seconds
    while burn_self and time.perf_counter() < end:
        pass
    time.sleep(max(0.0, end - time.perf_counter()))
    other = meter.other_cpus()
    assert other is not None
    return other


def test_other_processes_count_as_load_and_this_one_does_not():
    base = _other_over(1.0)
    self_busy = _other_over(1.0, burn_self=True)
    assert self_busy - base < 0.3, (base, self_busy)  # our own CPU time is subtracted
    with busy_loops(1):
        one = _other_over(1.0)
    assert one - base > 0.7, (base, one)


def test_free_cpus_leaves_out_the_cpus_other_processes_hold():
    n = usable_cpus()
    if n < 2:
        pytest.skip(f"{n} usable CPU: nothing to leave out")
    with busy_loops(n - 1):
        free, other = free_cpus(0.5)
    assert free == 1 and other is not None and other > n - 1.5, (free, other)
    from nas.training import apply_threads

    with busy_loops(n - 1):
        assert apply_threads("auto") == 1
    assert apply_threads(2) == 2


def test_load_flags():
    assert load_flags(0.05, 1.02, 0.1) == "ok"
    assert load_flags(None, None, 0.1) == "ok"
    assert load_flags(1.0, 1.3, 0.4) == "busy;drift;noisy"
    assert load_flags(0.2, 0.85, 0.1) == "drift"


def test_a_timing_pass_beside_busy_processes_is_flagged(tmp_path):
    """Every CPU busy with another process while the pass times: each row says busy, other_cpus says how many
    CPUs the others held, and describe_load gives the warning the pipeline logs. Timed again without them:
    other_cpus drops by the CPUs the busy loops held, and (on a machine otherwise idle, as CI's) no row is busy."""
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(64, w), *[m for _ in range(4) for m in (nn.ReLU(), nn.Linear(w, w))],
                          nn.Linear(w, 10)).eval() for w in (512, 1024)]  # ~1-4 ms a run: each pass lasts > 1 s
    paths = [export_onnx(m, (1, 1, 8, 8), tmp_path / f"m{i}.onnx") for i, m in enumerate(nets)]
    n = usable_cpus()
    kw = dict(warmup=3, rounds=300, max_extra_rounds=0, progress=False)
    with busy_loops(n):
        loaded = measure_onnx_models(paths, OrtSettings(threads=1), **kw)
    base = _other_over(0.5)
    idle = measure_onnx_models(paths, OrtSettings(threads=1), **kw)
    assert all("busy" in m.load.split(";") for m in loaded), [m.load for m in loaded]
    assert all(m.other_cpus > 0.5 for m in loaded)
    note = describe_load(loaded, 1)
    assert note is not None and "loaded machine" in note and "'load' column" in note
    assert all(m.other_cpus < loaded[0].other_cpus - 0.5 for m in idle), (loaded[0].other_cpus, idle[0].other_cpus)
    if base < 0.3:
        assert all("busy" not in m.load.split(";") for m in idle), [(m.load, m.other_cpus) for m in idle]
