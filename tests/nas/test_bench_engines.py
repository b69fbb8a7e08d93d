"""bench=engines on a real trained supernet (the session's smoke run, digits): the same subnets prepared by
onnxruntime, OpenVINO and eager torch, timed interleaved in one process per pass, compared as rankings, fronts
and few-shot targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from nas.bench import engines as bench

pytest.importorskip("openvino", reason="pip install -e '.[openvino]'")
pytestmark = pytest.mark.slow

ENGINES = ["onnxruntime", "openvino", "torch"]  # the quick converters; LiteRT/ExecuTorch run in bench=engines itself
SMALL = {"engines": ENGINES, "n_subnets": 14, "rounds": 5, "fewshot_budget": 4, "fewshot_seeds": 2}


@pytest.fixture(scope="module")
def result(tmp_path_factory, smoke_through_predict: Path) -> tuple[dict, Path]:
    run = tmp_path_factory.mktemp("engines") / "run"
    shutil.copytree(smoke_through_predict, run)
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"run_dir={run}"])
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    cache = run.parent / "cache"
    return bench.run({**SMALL, "run_dir": str(run), "cache_dir": str(cache), "out": str(cache / "r.json")}), cache


def test_every_engine_times_the_same_subnets_and_matches_torch(result) -> None:
    r, cache = result
    assert list(r["engines"]) == ENGINES and r["n_subnets"] == 14
    for e, g in r["engines"].items():
        assert g["worst_parity_max_abs_diff"] <= 1e-4, (e, g)
        assert 0 < g["latency_ms_min"] <= g["latency_ms_median"] <= g["latency_ms_max"], (e, g)
        assert -1 <= g["repeat_spearman"] <= 1 and len(r["subnets"]["latency_ms"][e]) == 14
    assert [g["suffix"] for g in r["engines"].values()] == [".onnx", ".xml", ".pt2"]
    assert json.loads((cache / "r.json").read_text())["spearman"] == r["spearman"]
    assert (cache / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rankings_and_fronts_are_compared_between_engines(result) -> None:
    r, _ = result
    rho = np.array([[r["spearman"][a][b] for b in ENGINES] for a in ENGINES])
    assert np.allclose(np.diag(rho), 1.0) and np.allclose(rho, rho.T)
    assert (rho[0, 1:] > 0).all()  # bigger subnets are slower on every engine
    for e in ENGINES:
        f = r["fronts"][e]
        assert 1 <= f["size"] == len(r["members"][e]) and 0 <= f["shared_with_onnxruntime"] <= f["size"]
        assert r["hv_transfer"][e][e] == pytest.approx(1.0)
        assert all(0 < r["hv_transfer"][e][o] <= 1 + 1e-9 for o in ENGINES)  # a front is optimal on its own engine
    assert r["fronts"]["onnxruntime"]["shared_with_onnxruntime"] == r["fronts"]["onnxruntime"]["size"]


def test_the_fewshot_predictor_is_scored_per_held_out_engine(result) -> None:
    r, _ = result
    assert set(r["fewshot"]) == set(ENGINES)
    for scores in r["fewshot"].values():
        assert set(scores) == {"ours", "source_ridge", "feature_ridge"}
        assert all(-1 <= s["spearman_min"] <= s["spearman_mean"] <= 1 for s in scores.values())


def test_a_rerun_reuses_the_prepared_files(result, tmp_path: Path) -> None:
    r, cache = result
    files = sorted(p for p in (cache / "files").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    again = bench.run({**SMALL, "run_dir": r["run_dir"], "cache_dir": str(cache), "out": str(tmp_path / "r.json"),
                       "passes": 2, "fewshot_seeds": 1})
    assert again["subnets"]["arch"] == r["subnets"]["arch"]
    assert [p.stat().st_mtime_ns for p in files] == stamps  # nothing prepared again


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"engine 'tensorrt' is unknown; expected one of"):
        bench.run({"engines": ["onnxruntime", "tensorrt"], "cache_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"expected onnxruntime and at least one other engine"):
        bench.run({"engines": ["openvino"], "cache_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"bench.fewshot_budget=55 is too large"):
        bench.run({"fewshot_budget": 55, "cache_dir": str(tmp_path)})
    with pytest.raises(ValueError, match=r"bench.passes=1 is invalid"):
        bench.run({"passes": 1, "cache_dir": str(tmp_path)})
