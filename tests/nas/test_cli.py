"""The installed CLIs: config composition for every group option, one-line errors for bad overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module

from nas.cli import config_groups


def test_every_config_group_option_composes():
    groups = config_groups()
    assert {"search_space", "data", "device", "train", "predictor", "search", "experiment", "bench"} <= set(groups)
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        for group, options in groups.items():
            if group == "bench":
                for opt in options:
                    cfg = compose("bench_config", overrides=[f"bench={opt}"])
                    assert cfg.bench.name == opt
                continue
            for opt in options:
                cfg = compose("config", overrides=[f"{group}={opt}", "run_dir=/tmp/unused"])
                if group != "experiment":
                    assert cfg[group] is not None, (group, opt)
                assert cfg.stages == ["train", "measure", "predict", "search", "export"]


def _run(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.cli", f"hydra.run.dir={tmp_path}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "override, fragment",
    [("search_space=nope", "unknown search_space 'nope'"), ("search.budget=-5", "search.budget=-5"),
     ("search_space.name=nope", "unknown search space 'nope'")],
)
def test_bad_override_gives_one_line_error(override, fragment, tmp_path):
    proc = _run(override, tmp_path=tmp_path / "run")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert not (tmp_path / "run" / "summary.json").exists()
