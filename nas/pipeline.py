"""The run: stages in order over one run directory; each stage reads earlier stages' artifacts from disk.

A finished stage leaves ``stages/<name>.json`` (its record for summary.json); rerunning the same command
skips finished stages unless listed in ``force``. ``summary.json`` is rewritten atomically after each stage.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

STAGES = ("train", "measure", "calibrate", "predict", "search", "export")


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def write_csv_atomic(path: Path, df: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def _positive_int(cfg: DictConfig, key: str) -> None:
    val = OmegaConf.select(cfg, key)
    if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
        raise ValueError(f"{key}={val!r} is invalid; expected a positive integer")


def validate_config(cfg: DictConfig) -> None:
    """Fail fast, with one line naming the bad value, before anything is written."""
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad:
        raise ValueError(f"stages contains {bad[0]!r}; expected names from {list(STAGES)}")
    bad = [s for s in cfg.force if s not in STAGES]
    if bad:
        raise ValueError(f"force contains {bad[0]!r}; expected names from {list(STAGES)}")
    for key in ("train.epochs", "train.batch_size", "measure.n_archs", "search.budget", "search.pop_size",
                "search.generations", "device.rounds", "device.threads", "device.batch", "threads"):
        _positive_int(cfg, key)
    if cfg.measure.n_archs < 5:
        raise ValueError(f"measure.n_archs={cfg.measure.n_archs} is too small; expected >= 5 to fit predictors")
    if cfg.device.warmup < 0:
        raise ValueError(f"device.warmup={cfg.device.warmup} is invalid; expected >= 0")
    for key in ("measure.exporter", "export.exporter"):
        if OmegaConf.select(cfg, key) not in ("legacy", "dynamo"):
            raise ValueError(f"{key}={OmegaConf.select(cfg, key)!r} is invalid; expected 'legacy' or 'dynamo'")
    if cfg.device.get("runtime", "onnxruntime") not in ("onnxruntime", "remote"):
        raise ValueError(f"device.runtime={cfg.device.runtime!r} is invalid; expected 'onnxruntime' or 'remote'")
    if cfg.device.precision not in ("fp32", "int8"):
        raise ValueError(f"device.precision={cfg.device.precision!r} is invalid; expected 'fp32' or 'int8'")
    if OmegaConf.select(cfg, "calibrate") is not None:
        from nas.stages import calibrate

        if calibrate.enabled(cfg):
            calibrate.validate(cfg)
    if "search" in cfg.stages:
        from nas.stages import search

        search.validate(cfg)


@dataclass
class RunContext:
    """What stages share: the config, the run directory and lazily built objects (data, space, supernet)."""

    cfg: DictConfig
    run_dir: Path
    records: dict[str, Any] = field(default_factory=dict)
    dist: Any = None  # nas.distributed.DistContext of a torchrun job; None = one process

    @cached_property
    def data(self):  # noqa: ANN201
        from nas.data import load_data

        kw = {k: v for k, v in OmegaConf.to_container(self.cfg.data, resolve=True).items() if k not in ("_target_", "name")}
        return load_data(self.cfg.data.name, **kw)

    @cached_property
    def space(self):  # noqa: ANN201
        from search_spaces import create_search_space

        kw = {k: v for k, v in OmegaConf.to_container(self.cfg.search_space, resolve=True).items()
              if k not in ("_target_", "name")}
        if kw.get("n_classes") is None:
            kw["n_classes"] = self.data.n_classes
        if kw.get("in_channels") is None:
            kw["in_channels"] = self.data.channels
        if kw.get("resolutions") is None:
            kw.pop("resolutions", None)
        return create_search_space(self.cfg.search_space.name, **kw)

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "supernet.pt"

    def load_supernet(self):  # noqa: ANN201
        import torch

        if not self.checkpoint.exists():
            raise FileNotFoundError(f"no supernet checkpoint at {self.checkpoint}; run the train stage first")
        net = self.space.build_supernet()
        net.load_state_dict(torch.load(self.checkpoint, map_location="cpu", weights_only=False)["model"])
        return net.eval()

    def device_profile(self) -> dict[str, Any]:
        from latency_luts.profile import local_ort_profile

        d = self.cfg.device
        return local_ort_profile(d.threads, d.batch, d.precision, d.name).as_dict()

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("torch", "onnxruntime", "onnx", "numpy", "pandas", "sklearn", "pymoo", "optuna", "hydra"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - report what is there
            out[mod] = "missing"
    return out


def run_pipeline(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the configured stages; returns the summary dict also written to ``summary.json``."""
    validate_config(cfg)
    run_dir = Path(run_dir or cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg, run_dir)
    import torch

    torch.set_num_threads(int(cfg.threads))
    if _torchrun_world() > 1:
        worker = _join_torchrun(ctx)
        if worker is not None:
            return worker

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "space": cfg.search_space.name,
        "data": cfg.data.name,
        "device": ctx.device_profile(),
        "versions": _versions(),
        "stages": {},
    }
    stage_fns: dict[str, Callable[[RunContext], dict]] = {
        name: importlib.import_module(f"nas.stages.{name}").run for name in STAGES
    }
    wanted = set(cfg.stages) | ({"calibrate"} if OmegaConf.select(cfg, "calibrate.enabled", default=False) else set())
    for name in STAGES:
        marker = run_dir / "stages" / f"{name}.json"
        if name not in wanted:
            continue
        if marker.exists() and name not in cfg.force:
            ctx.records[name] = json.loads(marker.read_text())
            log.info("stage %s: already finished in %s, skipping (force=[%s] reruns it)", name, run_dir, name)
        else:
            log.info("stage %s: starting", name)
            t0 = time.perf_counter()
            record = stage_fns[name](ctx)
            record["seconds"] = round(time.perf_counter() - t0, 2)
            write_json_atomic(marker, record)
            ctx.records[name] = record
            log.info("stage %s: done in %.1f s", name, record["seconds"])
        summary["stages"][name] = ctx.records[name]
        write_json_atomic(run_dir / "summary.json", _finalise(summary))
    return _finalise(summary)


def _torchrun_world() -> int:
    from nas.distributed import env_world_size

    return env_world_size()


def _join_torchrun(ctx: RunContext) -> dict[str, Any] | None:
    """Under torchrun: join the process group; ranks > 0 only help train and return their (empty) record.

    Rank 0 decides whether the train stage runs (its run directory holds the markers and checkpoints) and
    runs every other stage alone; the other ranks never write into a run directory.
    """
    import torch

    from nas.distributed import broadcast_object, init_from_env

    dev = str(ctx.cfg.train.get("device", "auto"))
    cuda = dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())
    ctx.dist = init_from_env("cuda" if cuda else "cpu")
    marker = ctx.run_dir / "stages" / "train.json"
    will_train = "train" in ctx.cfg.stages and (not marker.exists() or "train" in ctx.cfg.force)
    will_train, main_dir = broadcast_object((will_train, str(ctx.run_dir)), ctx.dist)
    if ctx.dist.is_main:
        log.info("torchrun job of %d processes; rank 0 writes %s", ctx.dist.world, ctx.run_dir)
        return None
    if will_train:
        importlib.import_module("nas.stages.train").run(ctx)
    return {"run_dir": main_dir, "rank": ctx.dist.rank, "stages": {}}


def _finalise(summary: dict[str, Any]) -> dict[str, Any]:
    out = dict(summary)
    out["seconds_per_stage"] = {k: v.get("seconds") for k, v in summary["stages"].items()}
    out["seconds_total"] = round(sum(v or 0 for v in out["seconds_per_stage"].values()), 2)
    for key in ("hypervolume", "hypervolume_ref", "n_pareto", "n_candidates"):
        for rec in summary["stages"].values():
            if key in rec:
                out[key] = rec[key]
    return out
