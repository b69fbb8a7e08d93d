"""The calibrate stage on real data: HELP's OFA GPU latencies -> a few-shot latency predictor adapted to a device.

The ImageNet-setting space is used (HELP's data is ImageNet-setting); the train stage is replaced by an
untrained supernet checkpoint (latency does not depend on the weights), and meta-training is shrunk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module
from scipy.stats import spearmanr

from latency_luts.interchange import latency_matrix, load_latency_table
from nas.bench.latency_fewshot import HELP_TRAIN
from nas.pipeline import run_pipeline
from nas.rundir import RunContext
from predictors.fewshot import FewShotLatencyPredictor

N_SLICE = 600
SMALL_META = [  # a shrunk meta-training grid: seconds instead of a minute
    "+calibrate.predictor.meta_tasks=1", "+calibrate.predictor.meta_pool=250", "+calibrate.predictor.meta_query=250",
    "+calibrate.predictor.impute=ridge", "+calibrate.predictor.proj_scales=[0.0,1.0,10.0]",
    "+calibrate.predictor.enc_scales=[0.0,0.3]", "+calibrate.predictor.phys_scales=[0.0,1.0]",
    "+calibrate.predictor.selections=[random,variance]", "+calibrate.predictor.prior_strengths=[0.0,100.0]",
]


def compose_cfg(run_dir: Path, *overrides: str):
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        return compose("config", overrides=["experiment=smoke", f"run_dir={run_dir}", *overrides])


@pytest.fixture(scope="module")
def help_ofa(shared_data: Path, tmp_path_factory):
    """A slice of HELP's OFA data: the 9 meta-train GPUs as source CSV; titan_rtx_64 kept aside as a target."""
    df = load_latency_table([shared_data / "latency" / "ofa_mbv3_help.csv.gz"], space="ofa_mbv3")
    keep = set(pd.unique(df["arch"])[:N_SLICE])
    df = df[df["arch"].isin(keep)]
    folder = tmp_path_factory.mktemp("help")
    src = folder / "help_gpus.csv"
    df[df["device"].isin(HELP_TRAIN["ofa_mbv3"])].to_csv(src, index=False)
    target = latency_matrix(df[df["device"] == "titan_rtx_64"])["titan_rtx_64"]
    return src, target


def untrained_supernet(cfg, run_dir: Path) -> None:
    """Stand-in for the train stage: latency depends on the architecture, not on the weights."""
    net = RunContext(cfg, run_dir).space.build_supernet()
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict()}, run_dir / "checkpoints" / "supernet.pt")
    (run_dir / "stages").mkdir(exist_ok=True)
    (run_dir / "stages" / "train.json").write_text(json.dumps({"untrained": True}))


def test_mismatched_sources_fail_before_anything_is_written(help_ofa, shared_data: Path, tmp_path: Path) -> None:
    src, _ = help_ofa
    nb201 = shared_data / "latency" / "nb201_help.csv.gz"
    cases = (
        # the README default run is the small (32x32) setting; HELP measured the ImageNet setting
        ([f"calibrate.source=[{src}]"], "does not fit this run's space ofa_mbv3 setting=small"),
        (["search_space=ofa_mbv3_imagenet", f"calibrate.source=[{nb201}]"], "holds space 'nb201' measurements"),
        (["search_space=ofa_mbv3_imagenet", "calibrate.source=[nowhere.csv]"], "'nowhere.csv' does not exist"),
        (["search_space=ofa_mbv3_imagenet", "calibrate.source=[]"], "calibrate.source is empty"),
        (["search_space=ofa_mbv3_imagenet", f"calibrate.source=[{src}]", "calibrate.budget=1"],
         "calibrate.budget=1 is invalid"),
        (["search_space=ofa_mbv3_imagenet", f"calibrate.source=[{src}]", "calibrate.selection=best"],
         "calibrate.selection='best' is invalid"),
    )
    # a saved meta-trained predictor carries its space and setting
    from predictors.arch_features import SpaceFeaturizer

    pkl = tmp_path / "meta.skops"
    table = latency_matrix(load_latency_table([src])).iloc[:200]
    FewShotLatencyPredictor(impute="ridge", meta_tasks=1, meta_pool=80, meta_query=80, selections=("random",),
                            prior_strengths=(0.0,), proj_scales=(0.0, 1.0), phys_scales=(0.0,), enc_scales=(0.0,)
                            ).meta_fit(table, featurizer=SpaceFeaturizer("ofa_mbv3", setting="imagenet")).save(pkl)
    cases += (([f"calibrate.source=[{pkl}]"],
               "was meta-trained for ofa_mbv3 setting=imagenet; this run's space is ofa_mbv3 setting=small"),
              (["search_space=ofa_mbv3_imagenet", f"calibrate.source=[{pkl},{src}]"], "mixes a saved predictor"))
    for i, (overrides, fragment) in enumerate(cases):
        run_dir = tmp_path / f"case{i}"
        with pytest.raises(ValueError, match=fragment) as e:
            run_pipeline(compose_cfg(run_dir, "calibrate.enabled=true", *overrides))
        assert "\n" not in str(e.value)
        assert not run_dir.exists()


@pytest.mark.slow
def test_remote_device_calibrates_from_a_kit_and_predicts_unseen_archs(help_ofa, tmp_path: Path) -> None:
    """device=remote: the stage writes a kit of the chosen archs and stops; the 'device' (HELP's titan_rtx_64,
    never seen in meta-training) times them; the rerun adapts from the CSV and reuses the meta-trained model."""
    from nas.stages.common import NeedsMeasurement

    src, target = help_ofa
    over = ["search_space=ofa_mbv3_imagenet", "device=remote", "stages=[train]", "calibrate.enabled=true",
            f"calibrate.source=[{src}]", "calibrate.budget=8", *SMALL_META]
    untrained_supernet(compose_cfg(tmp_path, *over), tmp_path)
    with pytest.raises(NeedsMeasurement, match="8 subnets need timing on my_device"):
        run_pipeline(compose_cfg(tmp_path, *over))
    assert not (tmp_path / "predictors" / "latency_fewshot.skops").exists()
    manifest = json.loads((tmp_path / "kits" / "calibrate" / "manifest.json").read_text())
    chosen = [m["arch"] for m in manifest["models"]]
    assert len(chosen) == 8 and set(chosen) <= set(target.index)
    csv = tmp_path / "calibrate.csv"
    pd.DataFrame({"space": "ofa_mbv3", "arch": chosen, "device": "my_device",
                  "latency_ms": target[chosen].to_numpy()}).to_csv(csv, index=False)
    summary = run_pipeline(compose_cfg(tmp_path, *over, f"device.csv=[{csv}]"))
    rec = summary["stages"]["calibrate"]
    assert rec["budget"] == 8 and rec["meta_training"] == "cached" and rec["n_source_devices"] == 9
    report = json.loads((tmp_path / "predictors" / "calibration.json").read_text())
    assert report["chosen"] == chosen and report["chosen_latency_ms"] == pytest.approx(list(target[chosen]))
    model = FewShotLatencyPredictor.load(tmp_path / "predictors" / "latency_fewshot.skops")
    rest = [a for a in target.index if a not in set(chosen)]
    assert spearmanr(model.predict(rest), target[rest])[0] > 0.95
    # any arch of the space: random samples no source device measured
    space = RunContext(compose_cfg(tmp_path, *over), tmp_path).space
    fresh = [a.to_string() for a in space.sample_many(50, np.random.default_rng(7))]
    mean, std = model.predict(fresh, return_std=True)
    assert not set(fresh) & set(model.index_)
    assert np.isfinite(mean).all() and (mean > 0).all() and (std > 0).all()
    assert target.min() * 0.5 < mean.min() and mean.max() < target.max() * 2


@pytest.mark.slow
def test_local_calibration_is_scored_on_the_measure_stage_and_drives_the_search(help_ofa, tmp_path: Path) -> None:
    src, _ = help_ofa
    over = ["search_space=ofa_mbv3_imagenet", "search_space.resolutions=[128,160]", "calibrate.enabled=true",
            f"calibrate.source=[{src}]", "calibrate.budget=6", "measure.n_archs=8", "predictor.calib_images=32",
            "data.val_frac=0.05", "data.test_frac=0.05", "search.strategy.generations=3", "search.budget=1",
            "device.rounds=30",  # timing is cheap next to export; more rounds steady the minimum on a busy CPU
            "stages=[train,measure,predict,search]", *SMALL_META]
    untrained_supernet(compose_cfg(tmp_path, *over), tmp_path)
    summary = run_pipeline(compose_cfg(tmp_path, *over))
    assert list(summary["stages"]) == ["train", "measure", "calibrate", "predict", "search"]
    report = json.loads((tmp_path / "predictors" / "calibration.json").read_text())
    held = report["heldout"]
    assert held["n"] == 8 and held["share_in_source_table"] == 0.0  # random archs: all imputed
    # the 8 held-out subnets are timed again in the calibration pass: scored against times of that same pass
    assert held["spearman"] > 0.5 and held["mape"] < 0.5 and held["pass_ratio"] > 0, held
    cal = pd.read_csv(tmp_path / "predictors" / "calibration.csv")
    assert cal[cal.role == "heldout"].measure_stage_latency_ms.notna().all()
    assert (cal.role == "calibration").sum() == 6 and cal[cal.role == "calibration"].in_source_table.all()
    assert all(a.endswith(("r=128", "r=160")) for a in report["chosen"])  # chosen within the run's resolutions
    rec = summary["stages"]["search"]
    assert rec["latency_predictor"] == "fewshot (calibrate stage)"
    cand = pd.read_csv(tmp_path / "candidates.csv")
    model = FewShotLatencyPredictor.load(tmp_path / "predictors" / "latency_fewshot.skops")
    assert np.array_equal(model.predict(list(cand.arch)), cand.predicted_latency_ms.to_numpy())
    assert rec["latency_predictor_spearman"] > 0.5, rec
