"""The real pipeline on real data (digits), shrunk: artifacts, Pareto validity, ONNX parity, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from nas.data import load_digits, resize
from nas.pareto import pareto_mask
from nas.pipeline import STAGES, run_pipeline
from nas.training import TrainConfig, train_supernet
from search_spaces import create_search_space


def compose_cfg(run_dir: Path, *overrides: str):
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        return compose("config", overrides=["experiment=smoke", f"run_dir={run_dir}", *overrides])


def reuse_trained_supernet(src: Path, dst: Path) -> None:
    """Start a new run directory from a finished train stage (checkpoint + stage marker)."""
    for part in ("checkpoints/supernet.pt", "stages/train.json"):
        (dst / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / part, dst / part)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    summary = run_pipeline(compose_cfg(run_dir))
    return run_dir, summary


@pytest.mark.slow
def test_artifacts_exist_and_parse(run):
    run_dir, summary = run
    for name in ("checkpoints/supernet.pt", "measurements.csv", "evaluations.csv", "candidates.csv", "pareto.csv",
                 "pareto.png", "summary.json", "predictors/latency.skops", "predictors/accuracy.skops"):
        assert (run_dir / name).is_file(), name
    s = json.loads((run_dir / "summary.json").read_text())
    assert set(s["seconds_per_stage"]) == set(STAGES) - {"calibrate"}  # calibrate is off by default
    assert all(v > 0 for v in s["seconds_per_stage"].values())
    assert s["hypervolume_ref"]["ref"] == [1.0, 1.1]
    assert s["versions"]["torch"] == torch.__version__ and s["device"]["threads"] == 1
    meas = pd.read_csv(run_dir / "measurements.csv")
    assert {"space", "arch", "device", "latency_ms", "median_ms", "p10_ms", "p90_ms", "cv", "other_cpus", "drift",
            "load"} <= set(meas.columns)
    assert len(meas) == 10 and (meas.latency_ms > 0).all()
    assert meas.load.str.fullmatch(r"ok|(busy|drift|noisy)(;(drift|noisy))*").all()
    assert all(isinstance(r["torch_threads"], int) and r["torch_threads"] >= 1 for r in s["stages"].values())
    assert (meas.latency_ms <= meas.median_ms + 1e-9).all()  # the estimate is the minimum over rounds
    png = (run_dir / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.slow
def test_pareto_rows_are_nondominated_among_measured_candidates(run):
    run_dir, _ = run
    cand = pd.read_csv(run_dir / "candidates.csv")
    pareto = pd.read_csv(run_dir / "pareto.csv")
    F = np.column_stack([1 - cand.val_accuracy, cand.latency_ms])
    expected = set(cand.arch[pareto_mask(F)])
    assert set(pareto.arch) == expected and len(pareto) >= 1
    for _, row in pareto.iterrows():
        better = (cand.val_accuracy >= row.val_accuracy) & (cand.latency_ms <= row.latency_ms)
        strictly = (cand.val_accuracy > row.val_accuracy) | (cand.latency_ms < row.latency_ms)
        assert not (better & strictly).any()
    assert {"predicted_latency_ms", "latency_ms", "predicted_accuracy", "val_accuracy", "test_accuracy", "params",
            "artefact_path"} <= set(pareto.columns)
    assert (cand.source == "search").any()  # the predicted front was evaluated for real


@pytest.mark.slow
def test_summary_figures_are_the_measured_front(run):
    """What the README promises: the default strategy ran; the hypervolume, latency span and best test accuracy
    of summary.json are those of pareto.csv's measured rows, and that accuracy is the subnet's real one."""
    from nas.pareto import hypervolume
    from nas.rundir import RunContext
    from nas.stages.common import evaluate_archs

    run_dir, s = run
    rec = s["stages"]["search"]
    assert rec["strategy_class"] == "nas.search.closed_loop.ClosedLoopSearch" and rec["strategy"] == "closed_loop"
    cand, pareto = pd.read_csv(run_dir / "candidates.csv"), pd.read_csv(run_dir / "pareto.csv")
    F = np.column_stack([1 - cand.val_accuracy, cand.latency_ms / cand.latency_ms.max()])
    assert s["hypervolume"] == pytest.approx(hypervolume(F[pareto_mask(F)], [1.0, 1.1]), rel=1e-9)
    assert rec["pareto_latency_span"] == pytest.approx(pareto.latency_ms.max() / pareto.latency_ms.min())
    assert rec["pareto_latency_span"] > 1.2  # the front spans subnets of different cost
    best = pareto.loc[pareto.test_accuracy.idxmax()]
    assert rec["best_test_accuracy"] == best.test_accuracy > 0.5  # 10 classes: far above chance after 1 epoch
    ctx = RunContext(compose_cfg(run_dir), run_dir)
    again = evaluate_archs(ctx, ctx.load_supernet(), [ctx.space.parse(best.arch)], ("test",))["test"][0]
    assert again == pytest.approx(best.test_accuracy, abs=1e-9)
    assert rec["n_search_picks"] == (cand.source == "search").sum() > 0
    # where each candidate came from: round 0 = the measure sample, then the journal's search batches
    journal = pd.read_csv(run_dir / "search_evaluations.csv")
    assert (cand.search_round[cand.source == "measure"] == 0).all()
    picks = cand[cand.source == "search"]
    assert dict(zip(picks.arch, picks.search_round)) == {a: r + 1 for a, r in zip(journal.arch, journal["round"])
                                                         if a in set(picks.arch)}
    hist = rec["hypervolume_history"]
    assert rec["hypervolume_measure_sample"] == hist[(cand.source == "measure").sum() - 1]
    assert rec["hypervolume_measure_sample"] <= s["hypervolume"] + 1e-9  # both kept to 9 decimals
    assert rec["predictor_evaluations"] > 0 and rec["inner_search_seconds"] > 0
    for key in ("hypervolume_measure_sample", "pareto_latency_span", "best_test_accuracy", "n_pareto"):
        assert s[key] == rec[key], key  # the headline figures sit at the top of summary.json too


@pytest.mark.slow
def test_exported_onnx_matches_torch(run):
    run_dir, _ = run
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert (pareto.parity_max_abs_diff <= 1e-4).all()
    # independent re-check of one file: rebuild the subnet from the checkpoint and compare on real images
    # (BatchNorm recalibrated on the first 512 training images, channels-last on one thread as the product does:
    # the statistics of a channels-last pass move with the memory format and thread count by ~1e-4 on the logits)
    from nas.rundir import RunContext
    from nas.training import recalibrate_bn

    ctx = RunContext(compose_cfg(run_dir), run_dir)
    row = pareto.iloc[-1]
    arch = ctx.space.parse(row.arch)
    sub = ctx.space.extract(ctx.load_supernet(), arch).to(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    recalibrate_bn(sub, ctx.data.x_train[:512], arch.r)
    torch.set_num_threads(threads)
    sub = sub.to(memory_format=torch.contiguous_format)
    x = resize(ctx.data.x_test[:16], arch.r).contiguous()
    with torch.no_grad():
        ref = sub.eval()(x).numpy()
    sess = ort.InferenceSession(str(run_dir / row.artefact_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(out - ref).max() <= 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_file_timed_for_pareto_is_the_delivered_file(run):
    """One protocol: each pareto.csv latency_ms was timed (in the search stage's joint pass) on exactly the
    bytes delivered in onnx/, and nothing rewrote the timed file after that pass."""
    from nas.rundir import file_stem

    run_dir, _ = run
    pareto, cand = pd.read_csv(run_dir / "pareto.csv"), pd.read_csv(run_dir / "candidates.csv")
    timed_at = (run_dir / "stages" / "search.json").stat().st_mtime_ns
    assert len(pareto) >= 1 and pareto.artefact_path.str.fullmatch(r"onnx/pareto_\d\d_r\d+\.onnx").all()
    for row in pareto.itertuples():
        timed, delivered = run_dir / "timing_onnx" / f"{file_stem(row.arch)}.onnx", run_dir / row.artefact_path
        assert _sha256(timed) == _sha256(delivered) == row.artefact_sha256, row.arch
        assert timed.stat().st_mtime_ns <= timed_at  # the file the pass timed, not one prepared afterwards
    assert (pareto.engine == "onnxruntime-cpu").all()
    assert dict(zip(pareto.arch, pareto.latency_ms)) == dict(zip(cand.arch[cand.pareto], cand.latency_ms[cand.pareto]))


@pytest.mark.slow
def test_rerun_skips_finished_stages_and_force_reruns(run):
    run_dir, summary = run
    before = {p: (run_dir / p).stat().st_mtime_ns for p in ("candidates.csv", "measurements.csv", "checkpoints/supernet.pt")}
    again = run_pipeline(compose_cfg(run_dir))
    assert again["seconds_per_stage"] == summary["seconds_per_stage"]
    assert all((run_dir / p).stat().st_mtime_ns == t for p, t in before.items())
    forced = run_pipeline(compose_cfg(run_dir, "force=[export]"))
    assert forced["seconds_per_stage"]["search"] == summary["seconds_per_stage"]["search"]
    assert (run_dir / "candidates.csv").stat().st_mtime_ns == before["candidates.csv"]
    assert len(pd.read_csv(run_dir / "pareto.csv")) == summary["n_pareto"]


@pytest.mark.slow
def test_training_resumes_after_interruption(tmp_path):
    data = load_digits()
    data.x_train, data.y_train = data.x_train[:128], data.y_train[:128]
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16])
    cfg = TrainConfig(epochs=2, batch_size=64, n_random=1, threads=1)
    ckpt = tmp_path / "ckpt.pt"

    def stop_after_first(epoch, record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_supernet(space.build_supernet(), space, data, cfg, checkpoint=ckpt, on_epoch=stop_after_first)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    res = train_supernet(space.build_supernet(), space, data, cfg, checkpoint=ckpt)
    assert [h["epoch"] for h in res["history"]] == [1, 2]
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2


def test_bad_config_values_fail_before_anything_is_written(tmp_path):
    for override, fragment in (("search.budget=-5", "search.budget=-5"), ("measure.n_archs=2", "measure.n_archs=2"),
                               ("stages=[train,fly]", "'fly'"), ("export.exporter=magic", "'magic'"),
                               ("device.precision=fp16", "device.precision='fp16'"),
                               ("device.warmup=-1", "device.warmup=-1"),
                               ("export.exporter=dynamo", "differs from measure.exporter='legacy'")):
        run_dir = tmp_path / override.split("=")[0]
        with pytest.raises(ValueError, match=fragment.replace("[", r"\[")) as e:
            run_pipeline(compose_cfg(run_dir, override))
        assert "\n" not in str(e.value)
        assert not run_dir.exists()


@pytest.mark.parametrize("overrides, fragment", [
    # the search rebuilds the predict stage's predictors from predictor.*: checked when only the search runs
    (("stages=[search]", "predictor.accuracy.kind=forest"), "unknown regressor kind 'forest'"),
    (("stages=[search]", "predictor.features=foo"), "predictor.features='foo' is invalid"),
    (("stages=[search]", "search.strategy.batch_size=0"), "batch_size=0 is invalid"),  # the strategy, built dry
    (("stages=[train]", "device.rounds=0"), "device.rounds=0 is invalid"),  # every run records its device
])
def test_everything_a_run_builds_is_validated_before_any_stage(tmp_path, overrides, fragment):
    """An earlier run's directory: a bad value of any object the run would build (space, data, device,
    predictors, strategy) is one line before any stage runs, and the directory is left as it was."""
    run_dir = tmp_path / "earlier"
    for rel, text in (("stages/train.json", "{}"), ("summary.json", '{"n_pareto": 3}'), ("pareto.csv", "arch\na\n")):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=fragment) as e:
        run_pipeline(compose_cfg(run_dir, *overrides))
    assert "\n" not in str(e.value)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


def test_a_bad_predictor_value_stops_the_command_before_training(tmp_path):
    """The issue's case: ``hwnas experiment=smoke predictor.accuracy.kind=forest`` trained for 31 s before it
    failed; now it exits 2 with one line, nothing written but Hydra's own files."""
    import subprocess
    import sys

    run_dir = tmp_path / "bad"
    done = subprocess.run([sys.executable, "-m", "nas.cli", f"hydra.run.dir={run_dir}", "experiment=smoke",
                           "predictor.accuracy.kind=forest"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "'forest'" in lines[0], done.stderr[-2000:]
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()) if run_dir.exists() else []
    assert all(p.startswith(".hydra") or p == "cli.log" for p in written), written  # no checkpoint, no marker


@pytest.mark.slow
def test_remote_device_round_trip_through_a_kit(run, tmp_path):
    """device=remote: hwnas writes a kit and stops; the agent times it; the rerun uses those timings."""
    from latency_luts.agent import main as agent_main
    from nas.stages.common import NeedsMeasurement

    reuse_trained_supernet(run[0], tmp_path)
    with pytest.raises(NeedsMeasurement, match="10 subnets need timing on my_device"):
        run_pipeline(compose_cfg(tmp_path, "device=remote", "stages=[train,measure]"))
    kit = tmp_path / "kits" / "measure"
    assert (kit / "manifest.json").is_file() and not (tmp_path / "measurements.csv").exists()
    csv = tmp_path / "measure.csv"
    assert agent_main([str(kit), "--device", "my_device", "--out", str(csv), "--rounds", "3", "--quiet"]) == 0
    run_pipeline(compose_cfg(tmp_path, "device=remote", "stages=[train,measure]", f"device.csv=[{csv}]"))
    got = pd.read_csv(tmp_path / "measurements.csv")
    sent = pd.read_csv(csv)
    assert dict(zip(got.arch, got.latency_ms)) == pytest.approx(dict(zip(sent.arch, sent.latency_ms)))


@pytest.mark.slow
def test_int8_precision_measures_and_exports_qdq_models(run, tmp_path):
    reuse_trained_supernet(run[0], tmp_path)
    run_pipeline(compose_cfg(tmp_path, "device.precision=int8", "measure.n_archs=6", "search.budget=2"))
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    assert pareto.artefact_path.str.endswith("_int8.onnx").all()
    assert (pareto.parity_max_abs_diff <= 1e-4).all()  # the fp32 file still matches torch
    from nas.rundir import file_stem

    for row in pareto.itertuples():  # the int8 file delivered is the int8 file timed
        assert _sha256(tmp_path / "timing_onnx" / f"{file_stem(row.arch)}.onnx") == _sha256(tmp_path / row.artefact_path)
        assert _sha256(tmp_path / row.fp32_artefact_path) != _sha256(tmp_path / row.artefact_path)
    assert (pareto.int8_top1_agreement >= 0.8).all()
    assert all((tmp_path / p).is_file() for p in pareto.artefact_path)


@pytest.mark.slow
def test_same_seed_and_replayed_timings_give_bitwise_identical_fronts(tmp_path):
    """Determinism: one run times its kits with hwnas-measure; a second run from scratch (training included)
    with the same seed, config and one thread replays those CSVs and writes byte-identical candidates.csv and
    pareto.csv. The second run needing a timing the first did not make would already fail (exit 3)."""
    from latency_luts.agent import main as agent_main
    from nas.stages.common import NeedsMeasurement

    over = ["device=remote", "threads=1", "measure.n_archs=6", "search.budget=3"]
    first, second = tmp_path / "first", tmp_path / "second"
    csvs: list[str] = []
    for _ in range(4):  # measure kit, search kit, then the finished run
        try:
            run_pipeline(compose_cfg(first, *over, f"device.csv=[{','.join(csvs)}]"))
            break
        except NeedsMeasurement:
            kit = sorted((first / "kits").iterdir(), key=lambda p: p.stat().st_mtime)[-1]
            csvs.append(str(tmp_path / f"{kit.name}.csv"))
            assert agent_main([str(kit), "--device", "my_device", "--out", csvs[-1], "--rounds", "3", "--quiet"]) == 0
    assert len(csvs) == 2 and (first / "pareto.csv").is_file(), csvs
    run_pipeline(compose_cfg(second, *over, f"device.csv=[{','.join(csvs)}]"))
    for name in ("candidates.csv", "pareto.csv", "evaluations.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # measurements.csv also records when each row was written
    m1, m2 = (pd.read_csv(d / "measurements.csv").drop(columns="date") for d in (first, second))
    pd.testing.assert_frame_equal(m1, m2, check_exact=True)
    w1, w2 = (torch.load(d / "checkpoints" / "supernet.pt", weights_only=False)["model"] for d in (first, second))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)  # training follows the seed
    assert len(pd.read_csv(second / "candidates.csv")) >= 6 + 3
