"""The run: stages in order over one run directory; each stage reads earlier stages' artifacts from disk.

Every stage is a :class:`nas.stages.base.Stage` (the table: :func:`nas.stages.stages`) with ``validate(cfg)``
(one-line errors before anything is written), ``run(ctx) -> record``, ``reset(ctx)`` (removes what a forced
rerun must not reuse), ``shared(ctx)`` (work several processes of one run directory may do at once: the
search's evaluations over a shared study) and ``help(ctx)`` (work while another process holds the stage); the
optional ones are no-ops by default. Before any stage runs, :func:`validate_config` builds (dry) the space,
checks the data and the device, and validates every stage that will run and those whose artefacts it rebuilds
objects from (the search's predictors). ``run`` holds the stage's lock (``stages/<name>.lock``): when several
processes share a run directory (search workers), each stage runs once and the others wait for its marker
(see ``nas.workers``).
A finished stage leaves its marker ``stages/<name>.json`` (its record for summary.json, see
``nas.rundir.StageMarkers``); rerunning the same command skips finished stages unless listed in ``force``.
A forced stage drops its marker and those of every later stage (their inputs change) before it starts, so a
forced run that is killed reruns cleanly without ``force``. ``summary.json`` is rewritten after each stage;
after the last one, a run that searched or exported writes ``report.html`` (``nas.report``; ``hwnas report RUN_DIR`` rebuilds it).
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nas.data import check_data_source
from nas.rundir import RunContext, build_space, write_json_atomic
from nas.stages import STAGES, calibrate, stages
from nas.stages.base import Stage
from nas.stages.common import check_threads, validate_device
from nas.training import apply_threads

log = logging.getLogger(__name__)
# stages whose artefacts a stage rebuilds objects from config with: validated whenever that stage runs
REBUILDS = {"search": ("predict", "calibrate")}


def wanted_stages(cfg: DictConfig) -> list[str]:
    """The stages this run executes, in order: ``stages`` plus calibrate when ``calibrate.enabled``."""
    wanted = set(cfg.stages) | ({"calibrate"} if calibrate.enabled(cfg) else set())
    return [name for name in STAGES if name in wanted]


def validated_stages(cfg: DictConfig) -> list[str]:
    """The stages whose config :func:`validate_config` checks, in order: those that run, and those whose
    artefacts they read through objects built from config (the search scores with the predict stage's
    predictors and the calibrate stage's, when enabled)."""
    wanted = wanted_stages(cfg)
    extra = {d for name in wanted for d in REBUILDS.get(name, ())}
    extra -= set() if calibrate.enabled(cfg) else {"calibrate"}
    return [name for name in STAGES if name in set(wanted) | extra]


def validate_config(cfg: DictConfig, table: dict[str, Stage] | None = None) -> None:
    """Fail fast, with one line naming the bad value, before anything is written: the run's own keys, the space
    (built dry), the data, the device, then each stage of :func:`validated_stages` checks its own (the predict
    and calibrate stages their predictors, the search its strategy, built dry)."""
    for key in ("stages", "force"):
        bad = [s for s in cfg[key] if s not in STAGES]
        if bad:
            raise ValueError(f"{key} contains {bad[0]!r}; expected names from {list(STAGES)}")
    seed = cfg.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} is invalid; expected an integer >= 0")
    worker = cfg.get("worker", 0)
    if not isinstance(worker, int) or isinstance(worker, bool) or worker < 0:
        raise ValueError(f"worker={worker!r} is invalid; expected an integer >= 0 (this process's index among "
                         "workers sharing the run directory)")
    check_threads(cfg, "threads")
    check_threads(cfg, "train.threads", zero=True)
    build_space(cfg.search_space, n_classes=10, in_channels=3)  # a bad space name or setting fails here, not mid-run
    check_data_source(cfg.data)  # missing files or a one-class folder fail here, not when a stage first reads them
    validate_device(cfg)  # every run records its device profile, and most stages time on it
    table = stages() if table is None else table
    for name in validated_stages(cfg):
        table[name].validate(cfg)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for mod, dist in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx"), ("numpy", "numpy"),
                      ("pandas", "pandas"), ("sklearn", "scikit-learn"), ("pymoo", "pymoo"), ("optuna", "optuna"),
                      ("hydra", "hydra-core")):
        try:
            out[mod] = version(dist)
        except PackageNotFoundError:
            out[mod] = "missing"
    if out["torch"] != "missing":
        import torch

        out["torch"] = torch.__version__  # the local build tag (+cpu) that the wheel metadata lacks
    return out


def _drop_forced(ctx: RunContext, order: list[str], table: dict[str, Stage]) -> None:
    """Before anything runs: a forced stage loses its marker (and what its ``reset`` names), and so does
    every later stage, whose inputs the forced one rewrites."""
    forced = [n for n in order if n in ctx.cfg.force]
    if not forced:
        return
    first = order.index(forced[0])
    for name in order[first:]:
        dropped = ctx.markers.drop(name)
        if name in ctx.cfg.force:
            table[name].reset(ctx)
        if dropped:
            why = "forced" if name in ctx.cfg.force else f"after forced stage {forced[0]}"
            log.info("stage %s: finished marker removed (%s); it will run again", name, why)


def run_pipeline(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the configured stages; returns the summary dict also written to ``summary.json``."""
    table = stages()  # this run's stage objects
    validate_config(cfg, table)
    run_dir = Path(run_dir or cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg, run_dir)
    order = wanted_stages(cfg)
    if _torchrun_world() > 1:
        worker = _join_torchrun(ctx, order, table)
        if worker is not None:
            return worker
    else:
        _drop_forced(ctx, order, table)

    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "space": cfg.search_space.name,
        "data": cfg.data.name,
        "device": ctx.device_profile(),
        "versions": _versions(),
        "stages": {},
    }
    for name in order:
        if ctx.markers.done(name):
            ctx.records[name] = ctx.markers.read(name)
            log.info("stage %s: already finished in %s, skipping (force=[%s] reruns it)", name, run_dir, name)
        else:
            stage = table[name]
            threads = apply_threads(cfg.threads)  # auto: chosen again per stage, the load may have changed
            log.info("stage %s: starting", name)
            t0 = time.perf_counter()
            stage.shared(ctx)
            with ctx.markers.lock(name, lambda s=stage: s.help(ctx)):
                if ctx.markers.done(name):
                    ctx.records[name] = ctx.markers.read(name)
                    log.info("stage %s: finished by another process of %s", name, run_dir)
                else:
                    record = stage.run(ctx)
                    record["seconds"] = round(time.perf_counter() - t0, 2)
                    record.setdefault("torch_threads", threads)
                    ctx.markers.write(name, record)
                    ctx.records[name] = record
                    log.info("stage %s: done in %.1f s", name, record["seconds"])
        summary["stages"][name] = ctx.records[name]
        write_json_atomic(run_dir / "summary.json", _finalise(summary))
    if {"search", "export"} & set(order) and (run_dir / "candidates.csv").is_file():  # not after a prefix of stages
        from nas.report import write_report

        log.info("run report: %s", write_report(run_dir))
    return _finalise(summary)


def _torchrun_world() -> int:
    from nas.distributed import env_world_size

    return env_world_size()


def _join_torchrun(ctx: RunContext, order: list[str], table: dict[str, Stage]) -> dict[str, Any] | None:
    """Under torchrun: join the process group; ranks > 0 only help train and return their (empty) record.

    Rank 0 drops forced markers, decides whether the train stage runs (its run directory holds the markers and
    checkpoints) and runs every other stage alone; the other ranks never write into a run directory.
    """
    import torch

    from nas.distributed import broadcast_object, init_from_env

    dev = str(ctx.cfg.train.get("device", "auto"))
    cuda = dev.startswith("cuda") or (dev == "auto" and torch.cuda.is_available())
    ctx.dist = init_from_env("cuda" if cuda else "cpu")
    if ctx.dist.is_main:
        _drop_forced(ctx, order, table)
    will_train = "train" in order and not ctx.markers.done("train")
    will_train, main_dir = broadcast_object((will_train, str(ctx.run_dir)), ctx.dist)
    if ctx.dist.is_main:
        log.info("torchrun job of %d processes; rank 0 writes %s", ctx.dist.world, ctx.run_dir)
        return None
    if will_train:
        table["train"].run(ctx)
    return {"run_dir": main_dir, "rank": ctx.dist.rank, "stages": {}}


def _finalise(summary: dict[str, Any]) -> dict[str, Any]:
    out = dict(summary)
    out["seconds_per_stage"] = {k: v.get("seconds") for k, v in summary["stages"].items()}
    out["seconds_total"] = round(sum(v or 0 for v in out["seconds_per_stage"].values()), 2)
    for key in ("hypervolume", "hypervolume_ref", "hypervolume_measure_sample", "n_pareto", "n_candidates",
                "pareto_latency_span", "best_test_accuracy"):  # the search's headline figures, at the top
        for rec in summary["stages"].values():
            if key in rec:
                out[key] = rec[key]
    return out
