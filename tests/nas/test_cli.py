"""The installed CLIs: config composition for every group option, --help (bad input: tests/test_bad_input.py)."""

from __future__ import annotations

import subprocess
import sys

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


def test_help_says_what_hwnas_does_and_lists_its_own_groups_only():
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip()
    out = proc.stdout
    assert out.startswith("hwnas: ") and "Hydra" not in out.splitlines()[0]
    assert "train -> measure -> calibrate -> predict -> search -> export" in out
    listed = {ln.split()[0] for ln in out.split("Config groups")[1].split("\n\n")[0].splitlines()[1:] if ln.strip()}
    assert listed == set(config_groups()) - {"bench", "hydra"}
