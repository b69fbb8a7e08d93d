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
