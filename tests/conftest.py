"""Shared fixtures. Data under ../shared/data is read in place (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    env = os.environ.get("HWNAS_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (or $HWNAS_SHARED_DATA); skips where a fresh clone lacks it."""
    d = _shared_data_dir()
    if not (d / "latency").is_dir():
        pytest.skip(f"public measurement data not found at {d}: these tests need ../shared/data (present in CI)")
    return d


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def smoke_through_predict(tmp_path_factory) -> Path:
    """One ``experiment=smoke`` run through the predict stage (trained supernet, measurements, predictors),
    made once per session; modules that only need a finished predict stage copy it instead of training again."""
    from hydra import compose, initialize_config_module

    from nas.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("smoke_predict")
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"run_dir={run_dir}", "stages=[train,measure,predict]"])
    run_pipeline(cfg)
    return run_dir
