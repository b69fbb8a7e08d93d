"""The pipeline's search stage on a real (shrunk) run: strategies, constraints, objectives, resume."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from nas.objectives import Objectives
from nas.pareto import pareto_mask
from nas.pipeline import run_pipeline
from nas.rundir import RunContext
from nas.search import OptunaSearch, PymooNSGA2
from search_spaces import create_search_space

UPTO_PREDICT = "stages=[train,measure,predict]"
WITH_SEARCH = "stages=[train,measure,predict,search]"


def compose_cfg(run_dir: Path, *overrides: str):
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        return compose("config", overrides=["experiment=smoke", f"run_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def trained(smoke_through_predict: Path) -> Path:
    """A smoke run through the predict stage (the session's, tests/conftest.py); tests copy it and run only
    the search stage."""
    return smoke_through_predict


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def search(run_dir: Path, *overrides: str) -> dict:
    return run_pipeline(compose_cfg(run_dir, WITH_SEARCH, *overrides))["stages"]["search"]


# ---------------------------------------------------------------------------------------------- unit level
def test_objectives_negate_accuracy_and_scale_violations() -> None:
    obj = Objectives(("accuracy", "latency_ms", "params"), {"latency_ms": 2.0, "accuracy": 0.9})
    vals = {"accuracy": np.array([0.95, 0.8]), "latency_ms": np.array([1.0, 3.0]), "params": np.array([5.0, 6.0])}
    np.testing.assert_allclose(obj.minimised(vals), [[0.05, 1.0, 5.0], [0.2, 3.0, 6.0]])  # error = 1 - accuracy
    np.testing.assert_allclose(obj.violation(vals), [[-0.5, (0.9 - 0.95) / 0.9], [0.5, (0.9 - 0.8) / 0.9]])
    assert obj.feasible(vals).tolist() == [True, False]
    assert obj.describe_constraints() == "latency_ms <= 2, accuracy >= 0.9"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"names": ("latency_ms", "params")}, "lacks 'accuracy'"),
    ({"names": ("accuracy", "flops")}, "'flops'"),
    ({"names": ("accuracy", "latency_ms", "latency_ms")}, "repeats"),
    ({"names": ("accuracy", "latency_ms"), "constraints": {"latency_ms": -1}}, "latency_ms=-1"),
    ({"names": ("accuracy", "latency_ms"), "constraints": {"accuracy": 95}}, "accuracy=95"),
    ({"names": ("accuracy", "latency_ms_pi")}, "'latency_ms_pi'"),
    ({"names": ("accuracy", "latency_ms_pi"), "latency_predictors": {"pi": "/nope.pkl"}}, "/nope.pkl"),
])
def test_objectives_reject_bad_config_in_one_line(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")) as e:
        Objectives(**kwargs)
    assert "\n" not in str(e.value)


def _toy_problem():
    """OFA small space, objectives (-depth sum, MACs): constraint MACs <= median keeps the cheaper half."""
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1)
    rng = np.random.default_rng(0)
    bound = float(np.median([space.macs(space.sample(rng)) for _ in range(200)]))

    def rows(archs):
        macs = np.array([space.macs(a) for a in archs], float)
        F = np.column_stack([-np.array([sum(a.d) + space.resolution(a) / 8 for a in archs], float), macs])
        return F, ((macs - bound) / bound)[:, None]

    return space, bound, rows


def test_pymoo_nsga2_with_constraints_keeps_feasible_front() -> None:
    space, bound, rows = _toy_problem()
    nsga = PymooNSGA2(space=space, pop_size=16, seed=0, n_constraints=1)
    for _ in range(6):
        archs = nsga.ask()
        F, G = rows(archs)
        nsga.tell(archs, F, G)
    front, F = nsga.front()
    assert len(front) >= 2 and all(space.macs(a) <= bound for a in front)
    told = np.stack(list(nsga.history_.values()))
    assert (told[:, 1] > bound).any()  # infeasible archs were proposed, and the front left them out
    with pytest.raises(ValueError, match="G of shape"):
        archs = nsga.ask()
        nsga.tell(archs, rows(archs)[0], np.zeros((len(archs), 2)))


def test_optuna_constraints_are_stored_and_resumed(tmp_path: Path) -> None:
    space, bound, rows = _toy_problem()
    url = f"sqlite:///{tmp_path / 's.db'}"
    s = OptunaSearch(space=space, sampler="tpe", storage=url, study_name="c", batch_size=4, seed=0, n_constraints=1)
    for _ in range(5):
        archs = s.ask()
        F, G = rows(archs)
        s.tell(archs, F, G)
    study = optuna.load_study(study_name="c", storage=url)
    best = study.best_trials
    assert best and all(t.user_attrs["constraints"][0] <= 0 for t in best)  # Optuna ranks feasible first
    again = OptunaSearch(space=space, sampler="tpe", storage=url, study_name="c", batch_size=4, seed=1,
                         n_constraints=1)
    assert set(again.violation_) == set(s.cache_)
    archs = again.ask()
    assert not set(archs) & set(s.cache_)


# ---------------------------------------------------------------------------------------------- pipeline level
@pytest.mark.slow
def test_closed_loop_with_latency_constraint(trained: Path, tmp_path: Path) -> None:
    run_dir = copy_run(trained, tmp_path / "cl")
    lat = pd.read_csv(run_dir / "measurements.csv").latency_ms
    bound = float(np.quantile(lat, 0.6))
    rec = search(run_dir, "search=closed_loop", "search.budget=4", "search.strategy.batch_size=2",
                 f"search.constraints.latency_ms={bound:.4f}")
    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    assert len(journal) == 4 and sorted(set(journal["round"])) == [0, 1]
    assert (journal.strategy == "closed_loop").all() and journal.arch.is_unique
    cand = pd.read_csv(run_dir / "candidates.csv")
    assert cand.feasible.tolist() == (cand.latency_ms <= bound + 5e-5).tolist()
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert len(pareto) == rec["n_pareto"] >= 1 and (pareto.latency_ms <= bound + 5e-5).all()
    feas = cand[cand.feasible]
    F = np.column_stack([1 - feas.val_accuracy, feas.latency_ms])
    assert set(feas.arch[pareto_mask(F)]) == set(pareto.arch)
    assert rec["rounds"] == 2 and rec["constraints"] == {"latency_ms": pytest.approx(bound, abs=1e-4)}
    hist = rec["hypervolume_history"]
    assert len(hist) == len(cand) and np.all(np.diff(hist) >= -1e-12)
    assert hist[-1] == pytest.approx(rec["hypervolume"])
    assert (run_dir / "hv_history.png").stat().st_size > 1000


@pytest.mark.slow
def test_three_objectives_and_another_devices_predictor(trained: Path, tmp_path: Path) -> None:
    run_dir = copy_run(trained, tmp_path / "mo")
    twin = tmp_path / "twin_latency.skops"
    shutil.copy(run_dir / "predictors" / "latency.skops", twin)
    rec = search(run_dir, "search.objectives=[accuracy,latency_ms,params,latency_ms_twin]",
                 f"+search.latency_predictors.twin={twin}", "search.budget=3")
    cand = pd.read_csv(run_dir / "candidates.csv")
    # the "other device" is this run's own regressor: its column must equal the predicted latency
    np.testing.assert_allclose(cand.latency_ms_twin, cand.predicted_latency_ms, rtol=1e-9)
    F = np.column_stack([1 - cand.val_accuracy, cand.latency_ms, cand.params, cand.latency_ms_twin])
    assert cand.pareto.tolist() == pareto_mask(F).tolist()
    assert rec["objectives"] == ["accuracy", "latency_ms", "params", "latency_ms_twin"]
    assert len(rec["hypervolume_ref"]["ref"]) == 4


@pytest.mark.slow
def test_killed_optuna_search_repeats_no_evaluation_and_same_seed_repeats_itself(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas.stages.search_evaluations as stage

    run_dir = copy_run(trained, tmp_path / "opt")
    real_eval = stage.evaluate_archs
    evaluated: list[str] = []

    def counting(ctx, supernet, archs, splits, desc="", progress=True):
        if len(evaluated) >= 4:  # the third batch: killed while evaluating
            raise KeyboardInterrupt
        evaluated.extend(a.to_string() for a in archs)
        return real_eval(ctx, supernet, archs, splits, desc=desc, progress=progress)

    monkeypatch.setattr(stage, "evaluate_archs", counting)
    args = ("search=optuna", "search.strategy.sampler=tpe", "search.budget=7", "search.strategy.batch_size=2")
    with pytest.raises(KeyboardInterrupt):
        search(run_dir, *args)
    assert len(pd.read_csv(run_dir / "search_evaluations.csv")) == 4
    first = list(evaluated)
    evaluated.clear()
    rec = search(run_dir, *args)
    assert not set(evaluated) & set(first), "an evaluation finished before the kill was repeated"
    assert len(evaluated) == 3
    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    assert len(journal) == 7 and journal.arch.is_unique
    seen = set(pd.read_csv(run_dir / "measurements.csv").arch)
    assert rec["n_search_picks"] == len(set(journal.arch) - seen)
    study = optuna.load_study(study_name="hwnas-optuna_tpe-seed0", storage=f"sqlite:///{run_dir / 'search_optuna.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE" and not t.user_attrs.get("duplicate")]
    assert sorted(t.user_attrs["arch"] for t in done) == sorted(journal.arch)

    # same seed in a fresh run directory: the batches before the kill are proposed again, same accuracies
    monkeypatch.setattr(stage, "evaluate_archs", real_eval)
    other = copy_run(trained, tmp_path / "opt2")
    search(other, *args)
    j2 = pd.read_csv(other / "search_evaluations.csv")
    assert j2.arch.tolist()[:4] == first
    np.testing.assert_array_equal(j2.val_accuracy.to_numpy()[:4], journal.val_accuracy.to_numpy()[:4])


@pytest.mark.slow
def test_default_search_is_deterministic(trained: Path, tmp_path: Path) -> None:
    journals = []
    for name in ("a", "b"):
        run_dir = copy_run(trained, tmp_path / name)
        search(run_dir, "search.budget=4")
        journals.append(pd.read_csv(run_dir / "search_evaluations.csv"))
    pd.testing.assert_frame_equal(journals[0], journals[1])
    assert len(journals[0]) == 4


@pytest.mark.parametrize("override, fragment", [
    ("search.strategy=anneal", "search.strategy='anneal'"),
    ("search.objectives=[latency_ms,params]", "lacks 'accuracy'"),
    ("search.constraints.latency_ms=-2", "search.constraints.latency_ms=-2"),
    ("search.strategy.batch_size=0", "batch_size=0"),
    ("search.strategy.error_model.kernel=cosine", "kernel='cosine'"),
    ("search=optuna search.strategy.sampler=cmaes", "sampler='cmaes'"),
    ("search.storage=study.db", "search.storage='study.db'"),
    ("search=optuna search.storage=postgresql://nobody@127.0.0.1:1/none",
     "search.storage='postgresql://nobody@127.0.0.1:1/none' (needs a database driver|cannot be opened)"),
    ("search=optuna search.strategy.grace_period=1", "grace_period=1"),
])
def test_bad_search_config_fails_before_anything_is_written(tmp_path: Path, override: str, fragment: str) -> None:
    run_dir = tmp_path / "bad"
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")) as e:
        run_pipeline(compose_cfg(run_dir, *override.split()))
    assert "\n" not in str(e.value)
    assert not run_dir.exists()


@pytest.mark.slow
def test_sigkill_during_forced_search_then_plain_rerun_finishes_it(trained: Path, tmp_path: Path) -> None:
    """A forced stage drops its marker before it starts: killed mid-way, the same command without force reruns
    it (the old marker must not vouch for the wiped journal), keeping what the killed run evaluated."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    run_dir = copy_run(trained, tmp_path / "forced")
    search(run_dir, "search.budget=6", "search.strategy.batch_size=2")
    old_marker = json.loads((run_dir / "stages" / "search.json").read_text())
    assert old_marker["n_search_picks"] > 0
    cmd = [sys.executable, "-m", "nas.cli", f"hydra.run.dir={run_dir}", "experiment=smoke", WITH_SEARCH,
           "search.budget=6", "search.strategy.batch_size=2", "search.seed=1"]
    journal = run_dir / "search_evaluations.csv"
    proc = subprocess.Popen([*cmd, "force=[search]"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    try:  # wait for the forced run's first batch of real evaluations (its fresh journal), then kill it
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.is_file() and 0 < len(pd.read_csv(journal)) < 6 and not (run_dir / "stages" / "search.json").exists():
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the forced search ended before it could be killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (run_dir / "stages" / "search.json").exists(), "the killed forced run left the old marker"
    before = pd.read_csv(journal)
    assert 0 < len(before) < 6

    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:]
    assert "stage search: starting" in done.stdout and "search: already finished" not in done.stdout
    after = pd.read_csv(journal)
    assert after.arch.tolist()[: len(before)] == before.arch.tolist()  # nothing the killed run evaluated is redone
    assert len(after) == 6 and after.arch.is_unique
    rec = json.loads((run_dir / "stages" / "search.json").read_text())
    assert rec["n_search_picks"] == len(set(after.arch) - set(pd.read_csv(run_dir / "measurements.csv").arch))


@pytest.mark.slow
def test_bench_inner_search_times_the_runs_own_search(trained: Path, tmp_path: Path) -> None:
    """bench=inner_search sets the search up from a run directory as the search stage does and times it,
    leaving the run directory as it was."""
    from omegaconf import OmegaConf

    from nas.bench.inner_search import run as bench_run

    run = copy_run(trained, tmp_path / "run")
    (run / ".hydra").mkdir()
    OmegaConf.save(compose_cfg(run, UPTO_PREDICT), run / ".hydra" / "config.yaml")  # what hwnas leaves there
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    out = tmp_path / "inner.json"
    res = bench_run({"spaces": ["ofa_mbv3_small"], "run_dirs": {"ofa_mbv3_small": str(run)},
                     "candidates": [300, 1200], "repeats": 1, "out": str(out)})
    r = res["spaces"]["ofa_mbv3_small"]
    assert r["strategy_class"] == "nas.search.closed_loop.ClosedLoopSearch"
    assert [row["candidates"] for row in r["scoring"]] == [300, 1200]
    assert all(row["seconds"] > 0 and row["predict_stage_seconds"] > 0 for row in r["scoring"])
    # smoke config: pop 64 x 40 generations of NSGA-II plus the screened pool, all scored by predictors
    assert r["round"]["predictor_evaluations"] >= 40 * 64 * 0.9 and r["round"]["seconds"] > 0
    assert out.is_file() and sorted(p.relative_to(run) for p in run.rglob("*")) == before
    with pytest.raises(ValueError, match="no finished predict stage"):
        bench_run({"spaces": ["ofa_mbv3_small"], "run_dirs": {"ofa_mbv3_small": str(tmp_path)}, "out": str(out)})
    with pytest.raises(ValueError, match="search_space 'nope' is unknown"):
        bench_run({"spaces": ["nope"], "out": str(out)})


@pytest.mark.slow
def test_search_times_the_measure_stages_files_again_and_exports_only_its_picks(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import nas.stages.common as common
    from latency_luts.device import OnnxRuntimeDevice

    run_dir = copy_run(trained, tmp_path / "reuse")
    timing = run_dir / "timing_onnx"
    measured = pd.read_csv(run_dir / "measurements.csv").arch.tolist()
    assert len(list(timing.glob("*.onnx"))) == len(measured)  # the measure stage kept what it timed
    real_export = OnnxRuntimeDevice.export
    exported: list[str] = []

    def counting(self, model, shape, path, exporter):
        exported.append(model.arch_string)
        return real_export(self, model, shape, path, exporter)

    monkeypatch.setattr(OnnxRuntimeDevice, "export", counting)
    rec = search(run_dir, "search=random", "search.budget=4")
    cand = pd.read_csv(run_dir / "candidates.csv")
    picks = cand[cand.source == "search"].arch.tolist()
    assert rec["n_search_picks"] == len(picks) >= 1
    assert sorted(exported) == sorted(picks), "the search re-exported subnets the measure stage had timed"
    assert len(list(timing.glob("*.onnx"))) == len(cand) and not list(timing.glob("*.part*"))

    # a retrained supernet (new checkpoint) invalidates every kept file: all candidates are exported again
    ckpt = run_dir / "checkpoints" / "supernet.pt"
    st = ckpt.stat()
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    exported.clear()
    ctx = RunContext(cfg=compose_cfg(run_dir), run_dir=run_dir)
    common.measure_archs(ctx, ctx.load_supernet(), [ctx.space.parse(picks[0])])
    assert exported == picks[:1] and len(list(timing.glob("*.onnx"))) == 1


@pytest.mark.slow
def test_an_arch_claimed_by_a_live_worker_is_not_evaluated_and_a_dead_workers_claim_is_taken_over(
        trained: Path, tmp_path: Path) -> None:
    import hashlib
    import socket
    import subprocess
    import sys

    from nas.stages.search_evaluations import RealEvaluations

    run_dir = copy_run(trained, tmp_path / "claims")
    ctx = RunContext(cfg=compose_cfg(run_dir), run_dir=run_dir)
    rng = np.random.default_rng(5)
    a, b = ctx.space.sample_many(2, rng)
    real = RealEvaluations(ctx, "optuna_tpe")

    def claim_path(arch) -> Path:
        return real.dir / f"{hashlib.sha1(arch.to_string().encode()).hexdigest()[:24]}.claim"

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        real.dir.mkdir(parents=True, exist_ok=True)
        claim_path(a).write_text(f"{socket.gethostname()}:{live.pid}")
        claim_path(b).write_text(f"{socket.gethostname()}:{dead.pid}")
        acc = real.evaluate([a, b], 0, desc="claims")
    finally:
        live.kill()
    assert np.isnan(acc[0]), "an arch a live worker holds was evaluated again"
    assert 0.0 < acc[1] <= 1.0, "a dead worker's claim was not taken over"
    assert claim_path(a).is_file() and not claim_path(b).exists()  # the live claim stays; ours is released
    assert pd.read_csv(run_dir / "search_evaluations.csv").arch.tolist() == [b.to_string()]
