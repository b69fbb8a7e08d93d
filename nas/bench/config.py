"""Bench settings: the defaults live only in ``conf/bench/<name>.yaml``; callers outside hwnas-bench (tests,
notebooks) pass the keys they change and get the rest from there."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf


def bench_config(name: str, cfg: Any) -> DictConfig:
    """``conf/bench/<name>.yaml`` with ``cfg`` merged over it; an unknown key is a one-line error."""
    path = resources.files("nas.conf") / "bench" / f"{name}.yaml"
    defaults = OmegaConf.load(str(path))
    given = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    if not isinstance(given, Mapping):
        raise ValueError(f"bench config must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"bench.{unknown[0]} is unknown; expected keys of conf/bench/{name}.yaml {sorted(defaults)}")
    merged = OmegaConf.merge(defaults, dict(given))
    OmegaConf.set_struct(merged, True)
    return merged


def as_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object: the key of cached and journalled bench work."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_average() -> list[float]:
    """The machine's 1/5/15-minute load average, recorded beside timings so a figure from a busy machine says so."""
    import os

    return [round(v, 2) for v in os.getloadavg()]


def run_hwnas(run_dir: Any, overrides: Any = ()) -> str:
    """``hwnas hydra.run.dir=<run_dir> <overrides>`` in a fresh process, as a user runs it; returns the command
    as a user would type it. A failed run is a one-line error with the run's last stderr line."""
    import subprocess
    import sys

    args = [f"hydra.run.dir={run_dir}", *[str(o) for o in overrides]]
    proc = subprocess.run([sys.executable, "-m", "nas.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"hwnas {' '.join(args)} exited with {proc.returncode}: "
                         f"{proc.stderr.strip().splitlines()[-1:]}")
    return "hwnas " + " ".join(args)


def seed_run_dir(src: Any, dst: Any, stages: tuple[str, ...]) -> None:
    """A run directory holding ``src``'s finished ``stages`` (their outputs and markers), nothing later."""
    import shutil
    from pathlib import Path

    src, dst = Path(src), Path(dst)
    if dst.exists():
        return
    dst.mkdir(parents=True)
    keep = {"train": ["checkpoints", "train_history.json"],
            "measure": ["measurements.csv", "timing_onnx"], "predict": ["evaluations.csv", "predictors"]}
    for st in stages:
        for name in keep[st]:
            p = src / name
            if p.is_dir():
                shutil.copytree(p, dst / name)
            elif p.is_file():
                shutil.copy2(p, dst / name)
        (dst / "stages").mkdir(exist_ok=True)
        shutil.copy2(src / "stages" / f"{st}.json", dst / "stages" / f"{st}.json")


def limit_threads(n: int | None) -> None:
    """BLAS and torch threads of this process. One per process: a strategy is sequential, and on a busy
    2-core machine torch's default pool makes Optuna's GP sampler ~6x slower (3 s instead of 0.5 s a trial)."""
    if n is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(n))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; Optuna GP needs it anyway
        return
    torch.set_num_threads(int(n))
