"""bench=workers: several ``hwnas`` worker processes on one Optuna study, one of them killed on request.

The workers are the product's own command (how they share the run directory and the study: ``nas.workers``),
started N times on one run directory whose train, measure and predict stages finished (a base run of
``bench.base_overrides``, made once and copied)::

    hwnas hydra.run.dir=R search=optuna search.storage=URL search.study_name=NAME search.budget=N*T

Each worker asks, evaluates (supernet accuracy) and tells until the study holds ``N * T`` evaluations; one of
them then times every candidate and writes the front (the search stage's lock). ``bench.kill_one=true`` sends
SIGKILL to the first worker while it is evaluating a trial, once a quarter of the budget is done: its trial must
come back as a retry that another worker evaluates. The result is read from the study and the run directory:

* ``completed``: distinct architectures with a completed trial; ``duplicates``: architectures told more than once
  (evaluated twice); ``lost``: trials still running at the end, or failed by a dead worker and never
  completed; ``retried``: dead workers' trials enqueued again; ``yielded``: proposals dropped at ask because a
  lower-numbered live trial held the arch; ``unevaluated``: trials whose arch another worker had claimed in the
  journal (the race the ask-time filter misses); ``journal_rows``: rows of the run's journal.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from nas.bench.config import as_dict, bench_config, load_average, run_hwnas, seed_run_dir
from nas.rundir import write_json_atomic
from nas.workers import StudyWorkers

log = logging.getLogger(__name__)
STORAGES = ("sqlite", "journal", "postgresql")


def storage_url(kind: str, run_dir: Path, postgres_url: str | None) -> str:
    if kind == "sqlite":
        return f"sqlite:///{(run_dir / 'workers_study.db').resolve()}"
    if kind == "journal":
        return f"journal://{(run_dir / 'workers_study.log').resolve()}"
    if kind == "postgresql":
        if not postgres_url:
            raise ValueError("bench.storage=postgresql needs bench.postgres_url (or HWNAS_POSTGRES_URL); expected "
                             "a URL like postgresql://user:password@localhost/db")
        return str(postgres_url)
    raise ValueError(f"bench.storage={kind!r} is invalid; expected one of {list(STORAGES)}")


def _study(storage: str, study_name: str) -> Any:
    """The workers' study, or None while no worker has created it yet."""
    import optuna

    from nas.search.optuna_search import open_storage

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        return None


def study_report(storage: str, study_name: str) -> dict[str, int]:
    """What the study holds after the workers: completed, duplicates, lost, retried (see the module doc)."""
    import optuna

    study = _study(storage, study_name)
    if study is None:
        raise ValueError(f"study {study_name!r} is not in {storage}; expected the workers to have created it")
    TS = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    told = Counter(t.user_attrs["arch"] for t in trials
                   if t.state == TS.COMPLETE and "arch" in t.user_attrs and not t.user_attrs.get("duplicate"))
    dead = [t for t in trials if t.state == TS.FAIL and "arch" in t.user_attrs and not any(
        t.user_attrs.get(k) for k in ("yielded", "duplicate", "unevaluated"))]
    running = [t for t in trials if t.state in (TS.RUNNING, TS.WAITING)]
    return {
        "completed": len(told),
        "duplicates": sum(n - 1 for n in told.values()),
        "lost": len(running) + sum(t.user_attrs["arch"] not in told for t in dead),
        "retried": sum("retry_of" in t.user_attrs for t in trials),
        "retried_completed": sum("retry_of" in t.user_attrs and t.state == TS.COMPLETE for t in trials),
        "yielded": sum(bool(t.user_attrs.get("yielded")) for t in trials),  # repeats filtered at ask
        "unevaluated": sum(bool(t.user_attrs.get("unevaluated")) for t in trials),  # held by another worker
        "study_trials": len(trials),
    }


def _progress(study: Any, pid: int) -> tuple[int, bool]:
    """(distinct archs completed, whether the worker with ``pid`` is evaluating a trial now)."""
    import optuna

    TS = optuna.trial.TrialState
    done, busy = set(), False
    for t in study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.RUNNING)):
        if t.state == TS.COMPLETE and not t.user_attrs.get("duplicate"):
            done.add(t.user_attrs.get("arch"))
        elif t.state == TS.RUNNING and StudyWorkers.pid_of(t) == pid:
            busy = True
    return len(done), busy


def start_workers(run_dir: Path, overrides: list[str], n: int, log_dir: Path) -> list[subprocess.Popen]:
    """``n`` hwnas processes on one run directory, each with its own log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        with open(log_dir / f"worker{i}.log", "w") as fh:  # the child keeps its own copy of the handle
            procs.append(subprocess.Popen([sys.executable, "-m", "nas.cli", f"hydra.run.dir={run_dir}", *overrides],
                                          stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"}))
    return procs


def run(cfg: Any) -> dict:
    cfg = bench_config("workers", cfg)
    for key in ("workers", "trials"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"bench.{key}={cfg[key]!r} is invalid; expected a positive integer")
    if cfg.out is None:
        raise ValueError("bench.out is null; expected the path of the result JSON")
    out = Path(cfg.out)
    root = Path(cfg.run_root) if cfg.run_root else out.parent / "workers_runs"
    base = root / "base"
    if not (base / "stages" / "predict.json").is_file():
        log.info("workers: training the base run once in %s", base)
        run_hwnas(base, [*cfg.base_overrides, "stages=[train,measure,predict]"])
    tag = f"{cfg.storage}-{cfg.workers}x{cfg.trials}{'-kill' if cfg.kill_one else ''}-{int(time.time())}"
    run_dir = root / tag
    seed_run_dir(base, run_dir, ("train", "measure", "predict"))
    storage = storage_url(str(cfg.storage), run_dir, cfg.postgres_url)
    study_name = f"bench-workers-{tag}"
    budget = int(cfg.workers) * int(cfg.trials)
    overrides = [*cfg.base_overrides, "search=optuna", f"search.storage={storage}", f"search.study_name={study_name}",
                 f"search.budget={budget}", f"search.strategy.sampler={cfg.sampler}", "search.strategy.batch_size=1",
                 "stages=[train,measure,predict,search]"]
    load_before = load_average()
    t0 = time.perf_counter()
    procs = start_workers(run_dir, overrides, int(cfg.workers), run_dir / "worker_logs")
    killed = None
    with tqdm(total=budget, desc=f"workers: {cfg.workers} on {cfg.storage}", unit="trial") as bar:
        study = None
        while any(p.poll() is None for p in procs):
            study = study or _study(storage, study_name)  # opened once, as soon as a worker has created it
            done, busy = _progress(study, procs[0].pid) if study is not None else (0, False)
            bar.update(done - bar.n)
            if cfg.kill_one and killed is None and done >= budget // 4 and procs[0].poll() is None and busy:
                procs[0].send_signal(signal.SIGKILL)
                killed = procs[0].pid
                log.info("workers: SIGKILL to worker 0 (pid %d) while it evaluates a trial, %d of %d done",
                         killed, done, budget)
            time.sleep(0.2)
    seconds = time.perf_counter() - t0
    codes = [p.returncode for p in procs]
    bad = [i for i, c in enumerate(codes) if c != 0 and procs[i].pid != killed]
    if bad:
        tail = (run_dir / "worker_logs" / f"worker{bad[0]}.log").read_text().strip().splitlines()[-1:]
        raise ValueError(f"worker {bad[0]} exited with {codes[bad[0]]}: {tail}")
    report = study_report(storage, study_name)
    import pandas as pd

    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    result = {
        "bench": "workers", "storage": str(cfg.storage), "workers": int(cfg.workers), "trials": int(cfg.trials),
        "budget": budget, "kill_one": bool(cfg.kill_one), "killed_pid": killed, **report,
        "journal_rows": len(journal), "journal_unique_archs": int(journal.arch.nunique()),
        "front_written": (run_dir / "pareto.csv").is_file(), "seconds": round(seconds, 1),
        "exit_codes": codes, "load_before": load_before, "load_after": load_average(),
        "command": f"hwnas hydra.run.dir=<run> {' '.join(overrides)}  (x{cfg.workers}, at once)",
        "run_dir": str(run_dir), "config": as_dict(cfg),
    }
    write_json_atomic(out, result)
    return result
