"""Device profiles: what every latency number is stored with."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import asdict, dataclass, field


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class DeviceProfile:
    """Where and how a latency was measured."""

    device: str
    runtime: str
    runtime_version: str
    threads: int
    batch: int
    precision: str = "fp32"
    cpu: str = field(default_factory=cpu_model)
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    os: str = field(default_factory=lambda: f"{platform.system()} {platform.release()}")
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def as_dict(self) -> dict:
        return asdict(self)
