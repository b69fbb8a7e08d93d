"""How busy the machine is with *other* processes: the CPUs they used over a window, and the CPUs left free.

Linux only (``/proc/stat``); elsewhere the numbers are ``None`` and callers fall back to their fixed settings.
The machine-wide busy time minus this process's own CPU time (all its threads) over the same wall-clock window
is what everything else used, so a process measuring itself is not counted as load. Steal time (a hypervisor
giving the CPU to another guest) counts as busy: the CPU was not there for us.

Used by the measurement protocol (:mod:`latency_luts.measure`: a timing pass records how many CPUs other
processes took while it ran, and flags the rows) and by ``threads=auto`` (:func:`nas.training.apply_threads`:
torch threads = CPUs free right now).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

# a pass is flagged "busy" when other processes used at least this many CPUs on average while it timed
BUSY_OTHER_CPUS = 0.5
# ... "drift" when the median model's second-half rounds differ from its first-half rounds by more than this
DRIFT = 0.10
# a row is flagged "noisy" when its CV over rounds exceeds this (idle here: median CV 0.11-0.14 on sub-ms models)
NOISY_CV = 0.25


def _busy_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks summed over all CPUs since boot, from /proc/stat's first line."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    v = [int(x) for x in fields[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    busy = sum(v[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user already)
    return busy, busy + idle


def _self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def machine_cpus() -> int:
    """CPUs /proc/stat counts (the whole machine)."""
    return os.cpu_count() or 1


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine_cpus()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


class LoadMeter:
    """CPUs used by other processes since construction."""

    def __init__(self) -> None:
        self._t, self._ticks, self._self = time.perf_counter(), _busy_ticks(), _self_cpu_s()

    def other_cpus(self) -> float | None:
        """Average number of CPUs busy with other processes over the window; None off Linux or for a window
        too short to count (< 2 clock ticks)."""
        now = _busy_ticks()
        wall = time.perf_counter() - self._t
        if now is None or self._ticks is None or wall <= 0:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        if wall * hz < 2:
            return None
        busy_s = (now[0] - self._ticks[0]) / hz
        other = (busy_s - (_self_cpu_s() - self._self)) / wall
        return float(min(max(other, 0.0), machine_cpus()))


def free_cpus(sample_s: float = 0.15) -> tuple[int, float | None]:
    """(CPUs free for this process right now, CPUs other processes used while we slept ``sample_s``).

    A CPU counts as free when at least three quarters of it is idle; at least one is always returned. Off
    Linux the answer is every usable CPU and ``None``."""
    meter = LoadMeter()
    time.sleep(sample_s)
    other = meter.other_cpus()
    usable = usable_cpus()
    if other is None:
        return usable, None
    free = min(usable, machine_cpus() - other)
    return max(1, min(usable, math.floor(free + 0.25))), other


def load_flags(other_cpus: float | None, drift: float | None, cv: float) -> str:
    """The ``load`` column of a timed row: ``ok`` or ``;``-joined ``busy`` (other processes used the CPU
    while the pass timed), ``drift`` (the pass's later rounds ran at another speed than its earlier ones),
    ``noisy`` (this model's rounds spread widely)."""
    flags = []
    if other_cpus is not None and other_cpus >= BUSY_OTHER_CPUS:
        flags.append("busy")
    if drift is not None and abs(drift - 1.0) > DRIFT:
        flags.append("drift")
    if cv > NOISY_CV:
        flags.append("noisy")
    return ";".join(flags) or "ok"
