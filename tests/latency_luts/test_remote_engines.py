"""A remote device per engine: the kit carries that engine's artefacts (all their files), ``hwnas-measure KIT
--engine NAME`` times them with only the engine and numpy importable (torch blocked), a kit of another engine is
refused in one line, and an engine benchmark tool's CSV converts into measurements."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from latency_luts.device import KitRequest, NeedsMeasurement, RemoteDevice, build_device
from nas.testing import trained_digits_supernet

pytest.importorskip("openvino", reason="pip install -e '.[openvino]'")

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'hydra', 'omegaconf', 'pandas', 'sklearn', 'onnxruntime'):
            raise ImportError(f'{name} is blocked on this simulated device')
sys.meta_path.insert(0, Block())
from latency_luts.agent import main
sys.exit(main(sys.argv[1:]))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def openvino_kit(tmp_path_factory):
    """Two subnets prepared as OpenVINO IR by a remote device, sent out as a kit."""
    tmp = tmp_path_factory.mktemp("ov_remote")
    t = trained_digits_supernet()
    archs = [t.space.smallest(), t.space.largest()]
    dev = RemoteDevice(name="nuc", engine="openvino")
    dev.validate()
    paths = [dev.prepare(t.space.extract(t.net, a).eval(), t.space.input_shape(a), tmp / f"{i}{dev.suffix}")
             for i, a in enumerate(archs)]
    names = [a.to_string() for a in archs]
    kit = KitRequest(tmp / "kits" / "measure", t.space.name, [t.space.input_shape(a) for a in archs], t.space.parse)
    with pytest.raises(NeedsMeasurement, match="--engine openvino --device nuc --out measure.csv"):
        dev.measure(paths, names, kit=kit)
    return dev, paths, names, kit


def test_the_kit_holds_the_engines_files_byte_for_byte(openvino_kit):
    dev, paths, names, kit = openvino_kit
    assert dev.suffix == ".xml" and dev.runtime == "openvino-cpu" and dev.profile()["runtime"] == "openvino-cpu"
    man = json.loads((kit.dir / "manifest.json").read_text())
    assert man["engine"] == "openvino" and [m["arch"] for m in man["models"]] == names
    for m, p in zip(man["models"], paths, strict=True):
        sent = dev.artefact_files(kit.dir / m["file"])
        assert [f.suffix for f in sent] == [".xml", ".bin"]
        assert [_sha(f) for f in sent] == [_sha(f) for f in dev.artefact_files(p)]


def test_the_agent_times_the_kit_with_only_the_engine_and_the_run_reads_it(openvino_kit, tmp_path):
    dev, paths, names, kit = openvino_kit
    out = tmp_path / "measure.csv"
    proc = agent(str(kit.dir), "--engine", "openvino", "--device", "nuc", "--out", str(out), "--rounds", "4",
                 "--warmup", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = pd.read_csv(out)
    assert list(sent.arch) == names and set(sent.runtime) == {"openvino-cpu"} and (sent.runs >= 4).all()
    back = build_device({**dev.spec(), "csv": [str(out)]})
    back.validate()
    ms = back.measure(paths, names, kit=kit)
    assert [m.latency_ms for m in ms] == pytest.approx(list(sent.set_index("arch").latency_ms.loc[names]))
    assert back.profile()["runtime"] == "openvino-cpu" and back.engine_version() == str(sent.runtime_version[0])


def test_a_kit_of_another_engine_is_refused_in_one_line(openvino_kit, tmp_path):
    _, _, _, kit = openvino_kit
    proc = agent(str(kit.dir), "--engine", "onnxruntime", "--device", "nuc", "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "holds openvino files (0000.xml, ...), not onnxruntime's; expected --engine openvino" in proc.stderr
    proc = agent(str(kit.dir), "--engine", "tensorrt", "--device", "nuc", "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "engine 'tensorrt' is unknown; expected one of" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_an_unknown_remote_engine_is_one_line():
    with pytest.raises(ValueError, match=r"engine 'tensorrt' is unknown; expected one of \['executorch'"):
        RemoteDevice(name="x", engine="tensorrt").validate()


def test_an_engine_benchmark_tools_csv_converts_into_measurements(openvino_kit, tmp_path):
    """A CSV of the engine's own tool (file, avg_us), e.g. benchmark_model's 'Inference (avg)' per kit file."""
    dev, paths, names, kit = openvino_kit
    bench = tmp_path / "bench.csv"
    bench.write_text("file,avg_us,runs\n0001.xml,2500.5,50\n0000.xml,812.25,50\n")
    out = tmp_path / "from_tool.csv"
    proc = agent(str(kit.dir), "--device", "nuc", "--out", str(out), "--from-benchmark", str(bench))
    assert proc.returncode == 0, proc.stderr[-2000:]
    back = RemoteDevice(name="nuc", engine="openvino", csv=[str(out)])
    ms = back.measure(paths, names, kit=kit)
    assert [m.latency_ms for m in ms] == pytest.approx([0.81225, 2.5005])
    assert [m.runs for m in ms] == [50, 50] and {m.load for m in ms} == {"unknown"}
    bench.write_text("file,avg_us\n0000.xml,812.25\n")
    proc = agent(str(kit.dir), "--device", "nuc", "--out", str(tmp_path / "o.csv"), "--from-benchmark", str(bench))
    assert proc.returncode == 2 and "has no row for kit file '0001.xml'" in proc.stderr
    bench.write_text("model,mean\n0000.xml,1\n")
    proc = agent(str(kit.dir), "--device", "nuc", "--out", str(tmp_path / "o.csv"), "--from-benchmark", str(bench))
    assert proc.returncode == 2 and "expected 'file' and one of latency_ms, avg_ms, avg_us" in proc.stderr
