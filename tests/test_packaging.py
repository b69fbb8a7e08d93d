"""The distribution: every package is listed, and a non-editable install finds its configs without the source tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_source_package_is_in_the_distribution():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for top in ("nas", "search_spaces", "predictors", "latency_luts"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    assert found - listed == set(), f"packages missing from pyproject: {sorted(found - listed)}"
    assert cfg["package-dir"]["nas.conf"] == "conf"


@pytest.mark.slow
def test_non_editable_install_finds_configs(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(target), str(REPO)], check=True, timeout=300)
    assert (target / "nas" / "conf" / "config.yaml").is_file()
    code = (
        "import nas, search_spaces, sys;"
        "from hydra import compose, initialize_config_module;"
        "assert nas.__file__.startswith(sys.argv[1]), nas.__file__;"
        "initialize_config_module(config_module='nas.conf', version_base='1.3').__enter__();"
        "c = compose('config', overrides=['search_space=ofa_mbv3_imagenet', 'run_dir=x']);"
        "print(c.search_space.setting, c.device.threads)"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["imagenet", "1"]
