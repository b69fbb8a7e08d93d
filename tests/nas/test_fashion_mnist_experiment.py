"""experiment=fashion_mnist, shrunk (3,000 training and 1,000 test images, one epoch): the recipe runs end to end
on the real Debian files and learns far above chance; the full run is the README's command."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from nas.data import FASHION_MNIST_ROOT, IDX_FILES
from nas.pipeline import run_pipeline

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not all((Path(FASHION_MNIST_ROOT) / f"{s}.gz").is_file() for s in IDX_FILES),
                       reason=f"Fashion-MNIST not found in {FASHION_MNIST_ROOT}: apt-get install dataset-fashion-mnist"),
]

SHRUNK = ["experiment=fashion_mnist", "data.limit=3000", "data.test_limit=1000", "train.epochs=1",
          "train.eval_every=0", "measure.n_archs=8", "search.budget=5", "predictor.calib_images=256",
          "export.exporter=legacy", "device.rounds=5", "device.warmup=2"]


def test_shrunk_fashion_mnist_experiment_runs_and_learns(tmp_path):
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*SHRUNK, f"run_dir={tmp_path}"])
    assert cfg.data.name == "fashion_mnist" and cfg.train.augment_flip and cfg.search_space.setting == "small"
    run_pipeline(cfg)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["data"] == "fashion_mnist"
    ev = pd.read_csv(tmp_path / "evaluations.csv")
    assert len(ev) == 8 and ev.val_accuracy.min() > 0.3  # 10 balanced classes: chance is 0.1
    pareto = pd.read_csv(tmp_path / "pareto.csv")
    rec = s["stages"]["search"]
    assert rec["best_test_accuracy"] == pareto.test_accuracy.max() > 0.5
    assert (tmp_path / "onnx").is_dir() and any((tmp_path / "onnx").glob("*.onnx"))
