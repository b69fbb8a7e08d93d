"""Several hwnas workers on one Optuna study (SQLite, JournalFileBackend, PostgreSQL): nothing lost, nothing
evaluated twice, a killed worker's trial retried, a killed run resumed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from nas.bench import workers as bench

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory, smoke_through_predict: Path) -> Path:
    """Bench runs share one base run (smoke supernet through the predict stage): the session's smoke run
    (tests/conftest.py, the same config as bench.base_overrides), copied where the bench looks for its base."""
    import shutil

    root = tmp_path_factory.mktemp("workers")
    shutil.copytree(smoke_through_predict, root / "base")
    return root


def bench_run(root: Path, name: str, **settings) -> dict:
    return bench.run({"run_root": str(root), "out": str(root / f"{name}.json"), **settings})


def check_nothing_lost(res: dict, budget: int) -> None:
    assert res["exit_codes"].count(0) >= res["workers"] - int(res["kill_one"])
    assert res["completed"] == budget, res
    assert res["duplicates"] == 0, res
    assert res["lost"] == 0, res
    assert res["journal_rows"] == res["journal_unique_archs"] == budget, res
    assert res["front_written"]


@pytest.fixture(scope="module")
def shared(root: Path) -> dict[str, dict]:
    """3 workers x 3 trials on one study, per storage (the dashboard test reads the SQLite one)."""
    return {s: bench_run(root, f"share-{s}", storage=s, workers=3, trials=3) for s in ("sqlite", "journal")}


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_three_workers_share_one_study(shared: dict, storage: str) -> None:
    res = shared[storage]
    check_nothing_lost(res, 9)
    assert res["retried"] == 0


def test_the_study_opens_in_optuna_dashboard(shared: dict) -> None:
    """docs 'Scale out': optuna-dashboard, started on the workers' storage, serves the study and its trials."""
    import json
    import socket
    import subprocess
    import sys
    import urllib.request

    res = shared["sqlite"]
    url = f"sqlite:///{Path(res['run_dir']) / 'workers_study.db'}"
    exe = Path(sys.executable).with_name("optuna-dashboard")
    assert exe.is_file(), "optuna-dashboard is in the test extras (pip install -e '.[test]')"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(exe), url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        get = lambda path: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read())  # noqa: E731
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = get("/api/studies")["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr and proc.stderr.read()
                time.sleep(0.5)
        study = next(st for st in studies if st["study_name"].startswith("bench-workers-sqlite"))
        trials = get(f"/api/studies/{study['study_id']}")["trials"]
        assert len(trials) == res["study_trials"]
        attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
        # repeats answered from the journal are Complete too, marked duplicate: the evaluations are the others
        evaluated = {a["arch"] for t, a in zip(trials, attrs) if t["state"] == "Complete" and a.get("duplicate") != "True"}
        assert len(evaluated) == res["completed"] == 9
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_killed_workers_trial_is_retried_and_the_study_finishes(root: Path) -> None:
    res = bench_run(root, "kill", storage="sqlite", workers=3, trials=4, kill_one=True)
    assert res["killed_pid"] is not None, "worker 0 was never caught evaluating"
    check_nothing_lost(res, 12)
    # the killed worker's trial is enqueued again; its arch then completes once -- by the retry, or by another
    # worker that proposed the same arch first (the retry then yields to it): lost == 0 above either way
    assert res["retried"] >= 1, res


def _postgres_url() -> str | None:
    url = os.environ.get("HWNAS_POSTGRES_URL")
    if not url:
        return None
    try:
        from nas.search.optuna_search import open_storage

        open_storage(url)
    except ValueError:
        return None
    return url


def test_workers_on_postgresql(root: Path) -> None:
    url = _postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server reachable at HWNAS_POSTGRES_URL (.ci/run starts one from Debian's "
                    "packages; elsewhere: apt-get install postgresql, create a database, "
                    "export HWNAS_POSTGRES_URL=postgresql://user:password@localhost/db, pip install '.[postgres]')")
    res = bench_run(root, "postgres", storage="postgresql", postgres_url=url, workers=3, trials=3)
    check_nothing_lost(res, 9)


def test_sigkill_of_the_whole_run_then_the_same_command_resumes(root: Path) -> None:
    bench_run(root, "warmup-base", storage="sqlite", workers=1, trials=1)  # the base run exists from here on
    run_dir = root / "resume"
    bench.seed_run_dir(root / "base", run_dir, ("train", "measure", "predict"))
    storage = bench.storage_url("sqlite", run_dir, None)
    budget = 8
    overrides = ["experiment=smoke", "search=optuna", f"search.storage={storage}", "search.study_name=resume",
                 f"search.budget={budget}", "search.strategy.batch_size=1", "stages=[train,measure,predict,search]"]
    procs = bench.start_workers(run_dir, overrides, 2, run_dir / "logs1")
    deadline = time.time() + 300
    while time.time() < deadline:
        study = bench._study(storage, "resume")
        if study is not None and bench._progress(study, 0)[0] >= 3:
            break
        time.sleep(0.2)
    for p in procs:
        p.send_signal(signal.SIGKILL)
        p.wait()
    before = bench.study_report(storage, "resume")
    assert 3 <= before["completed"] < budget, before
    first = set(pd.read_csv(run_dir / "search_evaluations.csv").arch)

    procs = bench.start_workers(run_dir, overrides, 2, run_dir / "logs2")
    assert [p.wait(timeout=600) for p in procs] == [0, 0], (run_dir / "logs2" / "worker0.log").read_text()[-2000:]
    after = bench.study_report(storage, "resume")
    assert after["completed"] == budget and after["duplicates"] == 0 and after["lost"] == 0, after
    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    assert len(journal) == budget and journal.arch.is_unique
    assert first <= set(journal.arch), "an evaluation journalled before the kill is gone"
    assert (run_dir / "pareto.csv").is_file()


def test_closed_loop_batches_are_spread_over_the_waiting_workers(root: Path) -> None:
    """The default strategy (closed loop, not a shared study) on 3 processes of one run directory: one holds
    the search stage and proposes each batch, the others evaluate parts of it while they wait; every arch is
    evaluated once, by more than one worker, and the front is written once."""
    import json

    bench_run(root, "warmup-base", storage="sqlite", workers=1, trials=1)  # the base run exists from here on
    run_dir = root / "spread"
    bench.seed_run_dir(root / "base", run_dir, ("train", "measure", "predict"))
    budget = 8
    overrides = ["experiment=smoke", f"search.budget={budget}", "search.strategy.batch_size=4",
                 "stages=[train,measure,predict,search]"]
    procs = bench.start_workers(run_dir, overrides, 3, run_dir / "logs")
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0, 0], (run_dir / "logs" / "worker0.log").read_text()[-2000:]
    rows = [json.loads(p.read_text()) for p in (run_dir / "search_evaluations").glob("*.json")]
    assert len(rows) == budget and len({r["arch"] for r in rows}) == budget, rows
    assert not list((run_dir / "search_evaluations").glob("*.claim")) and not (run_dir / "search_batch.json").exists()
    assert len({r["worker"] for r in rows}) >= 2, "one process evaluated the whole budget"
    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    assert len(journal) == budget and journal.arch.is_unique and journal["round"].max() == budget // 4 - 1
    cand = pd.read_csv(run_dir / "candidates.csv")
    assert (cand.source == "search").sum() == budget and (run_dir / "pareto.csv").is_file()
    logs = "".join((run_dir / "logs" / f"worker{i}.log").read_text() for i in range(3))
    assert logs.count("measured Pareto front") == 1


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_a_hydra_multirun_starts_the_workers(root: Path, launcher: str) -> None:
    """docs 'Scale out': one multirun command sweeps ``worker`` and Hydra's launcher starts the workers on one
    run directory (``hydra.sweep.subdir=.``); they share the study, each in its own process, nothing lost or
    evaluated twice. (submitit_slurm is the same launcher on a cluster; submitit_local runs it here.)"""
    import subprocess
    import sys

    bench_run(root, "warmup-base", storage="sqlite", workers=1, trials=1)  # the base run exists from here on
    run_dir = root / f"multirun-{launcher}"
    bench.seed_run_dir(root / "base", run_dir, ("train", "measure", "predict"))
    budget = 6
    extra = ["hydra.launcher.n_jobs=3"] if launcher == "joblib" else []
    cmd = [sys.executable, "-m", "nas.cli", "-m", f"hydra/launcher={launcher}", *extra, "worker=range(3)",
           f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=.", "experiment=smoke", "search=optuna",
           "search.study_name=multirun", f"search.budget={budget}", "search.strategy.batch_size=1",
           "stages=[train,measure,predict,search]"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = bench.study_report(f"sqlite:///{run_dir / 'search_optuna.db'}", "multirun")
    assert report["completed"] == budget and report["duplicates"] == 0 and report["lost"] == 0, report
    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    assert len(journal) == budget and journal.arch.is_unique
    assert journal.worker.nunique() >= 2, "one process evaluated the whole budget: the launcher did not start 3"
    assert (run_dir / "pareto.csv").is_file() and (run_dir / "multirun.yaml").is_file()


def test_workers_of_one_study_draw_different_sampler_seeds() -> None:
    """``worker`` 0 keeps the run's seed (one process is unchanged); the others get distinct seeds of their own."""
    from nas.search.optuna_search import worker_seed

    assert worker_seed(7, 0) == 7
    seeds = {worker_seed(7, w) for w in range(1, 50)}
    assert len(seeds) == 49 and 7 not in seeds
    assert worker_seed(7, 3) == worker_seed(7, 3) != worker_seed(8, 3)


def _open_at_once(url: str, barrier, errors) -> None:  # noqa: ANN001 - multiprocessing objects
    from nas.search.optuna_search import open_storage

    barrier.wait()
    try:
        open_storage(url).get_all_studies()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        errors.put(str(e))


def test_workers_opening_a_fresh_sqlite_study_at_once_all_get_it(tmp_path: Path) -> None:
    """Workers a launcher starts together race to create a fresh database's schema (CI once lost a worker to
    'UNIQUE constraint failed: alembic_version'); every one of them must open it."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for rep in range(4):
        url = f"sqlite:///{tmp_path / f'race{rep}.db'}"
        barrier, errors = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(url, barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert all(p.exitcode == 0 for p in procs)
        assert errors.empty(), errors.get()
