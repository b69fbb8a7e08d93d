"""Where a benchmark figure came from: the ``provenance`` block ``hwnas-bench`` adds to every JSON it writes.

The command line, the UTC start and end, the git commit of the checkout the bench ran from (``None`` outside a
git checkout, e.g. installed from a wheel; ``dirty`` when tracked files differ from it), the machine (platform,
CPU model, cores) and the load: the 1-minute load average before and after, and the CPUs that other processes
used on average while it ran (:class:`latency_luts.load.LoadMeter`, less the CPU time of this process's own
finished child processes, so a bench's worker processes do not count as load). ``hwnas-bench report``
(:mod:`nas.bench.report`) prefers this block to the registry's hand-written provenance.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from latency_luts.files import write_json_atomic
from latency_luts.load import LoadMeter

REPO = Path(__file__).resolve().parents[2]


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _children_cpu_s() -> float:
    t = os.times()
    return t.children_user + t.children_system


def git_commit(repo: Path = REPO) -> tuple[str | None, bool | None]:
    """(short commit, dirty) of the checkout at ``repo``; (None, None) when it is not a git checkout."""
    if not (repo / ".git").exists():
        return None, None
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head or None, bool(status.strip())


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Recorder:
    """Started before a bench runs; :meth:`block` is the provenance of what it wrote."""

    def __init__(self, argv: list[str] | None = None) -> None:
        self.command = "hwnas-bench " + shlex.join(sys.argv[1:] if argv is None else argv)
        self.started = datetime.now(UTC)
        self.load_before = _loadavg()
        self._meter = LoadMeter()
        self._children = _children_cpu_s()

    def block(self) -> dict[str, Any]:
        wall = (datetime.now(UTC) - self.started).total_seconds()
        other = self._meter.other_cpus()
        if other is not None and wall > 0:
            other = round(max(other - (_children_cpu_s() - self._children) / wall, 0.0), 3)
        commit, dirty = git_commit()
        return {
            "command": self.command,
            "date": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit,
            "dirty": dirty,
            "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count()},
            "load": {"load_1min_before": self.load_before, "load_1min_after": _loadavg(),
                     "other_processes_cpus": other},
        }

    def stamp(self, out: str | Path) -> bool:
        """Add the block to the JSON object at ``out`` (atomically); False when there is no such object."""
        path = Path(out)
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if not isinstance(obj, dict):
            return False
        obj["provenance"] = self.block()
        write_json_atomic(path, obj, default=None)
        return True
