"""hwnas-measure: the remote agent runs with torch, hydra and pandas unimportable and writes the interchange format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from torch import nn

from latency_luts.interchange import load_latency_table
from latency_luts.kit import write_manifest
from latency_luts.onnx_export import export_onnx

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'hydra', 'omegaconf', 'pandas', 'sklearn'):
            raise ImportError(f'{name} is blocked on this simulated device')
sys.meta_path.insert(0, Block())
from latency_luts.agent import main
sys.exit(main(sys.argv[1:]))
"""


def make_kit(kit: Path, n: int = 3) -> list[str]:
    models, archs = [], []
    for i in range(n):
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32 * (i + 1)), nn.ReLU(), nn.Linear(32 * (i + 1), 10)).eval()
        export_onnx(net, (1, 1, 8, 8), kit / f"{i}.onnx")
        archs.append(f"toy-{i}")
        models.append({"file": f"{i}.onnx", "arch": archs[-1], "input_shape": [1, 1, 8, 8]})
    write_manifest(kit, "nb201", models)
    return archs


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=120)


def test_agent_measures_a_kit_without_torch(tmp_path):
    archs = make_kit(tmp_path / "kit")
    out = tmp_path / "dev.csv"
    proc = agent(str(tmp_path / "kit"), "--device", "pi5", "--out", str(out), "--rounds", "5", "--quiet")
    assert proc.returncode == 0, proc.stderr
    df = load_latency_table([out])
    assert list(df.arch) == archs and set(df.device) == {"pi5"} and set(df.space) == {"nb201"}
    raw = __import__("pandas").read_csv(out)
    assert (raw.latency_ms <= raw.median_ms).all() and (raw.threads == 1).all() and raw.cpu.notna().all()


def test_agent_refuses_a_bad_kit_in_one_line(tmp_path):
    (tmp_path / "kit").mkdir()
    proc = agent(str(tmp_path / "kit"), "--device", "x", "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no manifest.json" in proc.stderr
    make_kit(tmp_path / "kit2")
    (tmp_path / "kit2" / "1.onnx").unlink()
    proc = agent(str(tmp_path / "kit2"), "--device", "x", "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "'1.onnx'" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_manifest_requires_files(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        write_manifest(tmp_path, "nb201", [{"file": "nope.onnx", "arch": "a", "input_shape": [1, 1, 8, 8]}])
