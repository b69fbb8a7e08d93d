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
