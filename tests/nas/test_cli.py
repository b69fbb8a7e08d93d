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
     ("search_space.name=nope", "unknown search space 'nope'"), ("seed=1.5", "seed=1.5 is invalid; expected an integer"),
     ("data.val_fraction=1.5", "'val_fraction' is not a key of data"),
     ("train.epochs=ten", "train.epochs=ten is invalid; expected an integer"),  # the typed schema
     ("search.constraints.latency_ms=fast", "search.constraints.latency_ms=fast is invalid; expected a number"),
     ("train.progressive=maybe", "train.progressive=maybe is invalid; expected true or false"),
     ("calibrate.source=[/etc/passwd]", "latency file '/etc/passwd' is not readable as CSV"),
     ("stages=[train", "hwnas: error:")],
)
def test_bad_override_gives_one_line_error(override, fragment, tmp_path):
    extra = ("calibrate.enabled=true",) if override.startswith("calibrate.") else ()
    proc = _run(override, *extra, tmp_path=tmp_path / "run")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_help_says_what_hwnas_does_and_lists_its_own_groups_only():
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip()
    out = proc.stdout
    assert out.startswith("hwnas: ") and "Hydra" not in out.splitlines()[0]
    assert "train -> measure -> calibrate -> predict -> search -> export" in out
    listed = {ln.split()[0] for ln in out.split("Config groups")[1].split("\n\n")[0].splitlines()[1:] if ln.strip()}
    assert listed == set(config_groups()) - {"bench", "hydra"}
