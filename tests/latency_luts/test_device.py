"""The Device objects on real onnxruntime sessions and real extracted subnets: built from the shipped configs by
``_target_``, validated in one line, preparing the deliverable, checking it against torch, timing with the
interleaved protocol (in a fresh process) and, for the remote device, going out as a kit and coming back as CSV."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_module

from latency_luts.device import (
    KitRequest,
    NeedsMeasurement,
    OnnxRuntimeDevice,
    RemoteDevice,
    build_device,
    device_class,
)
from nas.data import resize

ROOT = Path(__file__).resolve().parents[2]


def _device_cfg(option: str, *overrides: str):
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        return compose("config", overrides=[f"device={option}", *overrides]).device


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained():
    """A supernet trained one short epoch on digits (so argmax agreement means something) and its space."""
    from nas.testing import trained_digits_supernet

    t = trained_digits_supernet()
    return t.space, t.net, t.data


@pytest.mark.parametrize(("option", "cls"), [("local_cpu", OnnxRuntimeDevice), ("remote", RemoteDevice)])
def test_each_device_config_builds_its_class_with_its_settings(option, cls):
    node = _device_cfg(option, "device.threads=2", "device.batch=3")
    dev = build_device(node)
    assert type(dev) is cls and device_class(node._target_) is cls
    dev.validate()
    assert (dev.threads, dev.batch, dev.rounds, dev.warmup, dev.precision) == (2, 3, 20, 5, "fp32")
    assert dev.name == ("local_cpu" if option == "local_cpu" else "my_device")
    prof = dev.profile()
    assert prof["device"] == dev.name and prof["runtime"] == "onnxruntime-cpu"
    assert (prof["threads"], prof["batch"], prof["precision"]) == (2, 3, "fp32")
    if option == "local_cpu":
        assert prof["runtime_version"] == ort.__version__ and prof["cores"] >= 1 and prof["cpu"]
    assert build_device(dev.spec()) == dev  # the spec the timing process rebuilds it from


@pytest.mark.parametrize(("setting", "fragment"), [
    ({"precision": "fp16"}, "device.precision='fp16' is invalid; expected one of ['fp32', 'int8']"),
    ({"batch": 2.5}, "device.batch=2.5 is invalid; expected a positive integer"),
    ({"rounds": 0}, "device.rounds=0 is invalid; expected a positive integer"),
    ({"warmup": -1}, "device.warmup=-1 is invalid; expected an integer >= 0"),
    ({"cv_threshold": "low"}, "device.cv_threshold='low' is invalid; expected a number >= 0"),
    ({"graph_optimization": "max"}, "device.graph_optimization='max' is invalid; expected disable|basic|extended|all"),
    ({"spinning": "yes"}, "device.spinning='yes' is invalid; expected true or false"),
    ({"_target_": "latency_luts.device.Nope"}, "device._target_='latency_luts.device.Nope' is invalid"),
    ({"_target_": "os.system"}, "device._target_='os.system' is invalid: it is not a concrete Device class"),
    ({"_target_": "latency_luts.device.Device"}, "it is not a concrete Device class"),
    ({"runtime": "remote"}, "device.runtime='remote' is no longer a setting"),
    ({"colour": "red"}, "device.colour is not a setting of OnnxRuntimeDevice"),
])
def test_a_bad_setting_is_one_line_naming_it(setting, fragment):
    node = {"_target_": "latency_luts.device.OnnxRuntimeDevice", "name": "cpu", **setting}
    with pytest.raises(ValueError) as e:
        build_device(node).validate()
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_prepared_subnets_match_torch_and_time_with_the_protocol(trained, tmp_path):
    space, net, data = trained
    dev = OnnxRuntimeDevice(name="cpu", warmup=2, rounds=6, cv_threshold=10.0, max_extra_rounds=4)
    archs = [space.smallest(), space.largest()]
    paths = []
    for i, arch in enumerate(archs):
        sub = space.extract(net, arch).eval()
        paths.append(dev.prepare(sub, space.input_shape(arch, 1), tmp_path / f"{i}.onnx"))
        x = resize(data.x_test[:5], arch.r).contiguous()  # batch 5: the file has a dynamic batch axis
        assert dev.check_parity(sub, paths[-1], x) <= 1e-4
        assert dev.agreement(sub, paths[-1], x) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.onnx", "1.onnx"]  # nothing half-written beside them
    names = [a.to_string() for a in archs]
    ms = dev.measure(paths, names, seed=3)
    assert [m.name for m in ms] == names
    for m in ms:
        assert 0 < m.latency_ms <= m.p10_ms <= m.median_ms <= m.p90_ms
        assert m.runs == 6 and m.warmup == 2  # cv_threshold 10: no extra rounds
        assert m.load == "ok" or set(m.load.split(";")) <= {"busy", "drift", "noisy"}
    assert ms[1].latency_ms > ms[0].latency_ms  # the largest subnet is slower than the smallest
    noisy = OnnxRuntimeDevice(name="cpu", warmup=1, rounds=4, cv_threshold=0.0, max_extra_rounds=3)
    assert [m.runs for m in noisy.measure(paths, names)] == [7, 7]  # CV > 0: every model gets the extra rounds


def test_a_file_that_does_not_load_is_one_line_from_the_timing_process(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="does not load in onnxruntime") as e:
        OnnxRuntimeDevice().measure([bad])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no artefacts given"):
        OnnxRuntimeDevice().measure([])


def test_int8_prepares_a_qdq_file_beside_its_fp32_source(trained, tmp_path):
    space, net, data = trained
    arch = space.largest()
    sub = space.extract(net, arch).eval()
    dev = OnnxRuntimeDevice(name="cpu", precision="int8")
    with pytest.raises(ValueError, match="needs calibration images"):
        dev.prepare(sub, space.input_shape(arch), tmp_path / "q.onnx")
    path = dev.prepare(sub, space.input_shape(arch), tmp_path / "q.onnx",
                       calibration=resize(data.x_train[:64], arch.r).numpy())
    fp32 = dev.fp32_companion(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.fp32.onnx", "q.onnx"]
    x = resize(data.x_test[:100], arch.r).contiguous()
    assert dev.check_parity(sub, fp32, x) <= 1e-4
    assert dev.check_parity(sub, path, x) > 1e-4  # really quantised
    assert dev.agreement(sub, path, x) >= 0.8
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_remote_device_sends_the_prepared_files_and_reads_their_timings(trained, tmp_path):
    from latency_luts.agent import main as agent_main

    space, net, _ = trained
    archs = [space.smallest(), space.largest()]
    dev = RemoteDevice(name="pi5")
    paths = [dev.prepare(space.extract(net, a).eval(), space.input_shape(a), tmp_path / f"{i}.onnx")
             for i, a in enumerate(archs)]
    names = [a.to_string() for a in archs]
    kit = KitRequest(tmp_path / "kits" / "measure", space.name, [space.input_shape(a) for a in archs], space.parse)
    with pytest.raises(NeedsMeasurement, match="2 subnets need timing on pi5: copy .* --out measure.csv"):
        dev.measure(paths, names, kit=kit)
    man = json.loads((kit.dir / "manifest.json").read_text())
    assert [m["arch"] for m in man["models"]] == names and man["space"] == space.name
    # the kit carries the prepared files themselves: what is timed there is what is delivered
    assert [_sha(kit.dir / m["file"]) for m in man["models"]] == [_sha(p) for p in paths]
    csv = tmp_path / "measure.csv"
    assert agent_main([str(kit.dir), "--device", "pi5", "--out", str(csv), "--rounds", "3", "--quiet"]) == 0
    back = RemoteDevice(name="pi5", csv=[str(csv)])
    back.validate()
    ms = back.measure(paths, names, kit=kit)
    sent = pd.read_csv(csv).set_index("arch")
    assert [m.latency_ms for m in ms] == pytest.approx(list(sent.latency_ms.loc[names]))
    assert [m.runs for m in ms] == list(sent.runs.loc[names]) and all(m.runs >= 3 for m in ms)  # spread kept
    assert [m.median_ms for m in ms] == pytest.approx(list(sent.median_ms.loc[names]))
    assert back.profile()["runtime_version"] == ort.__version__  # recorded from the device's CSV
    assert back.measurement_files() == [str(csv)] and OnnxRuntimeDevice().measurement_files() == []
    with pytest.raises(ValueError, match="expected a kit request"):
        back.measure(paths, names)
    other = RemoteDevice(name="pixel7", csv=[str(csv)])
    with pytest.raises(ValueError, match="device 'pixel7' has no rows"):
        other.measure(paths, names, kit=kit)


def test_measure_here_and_the_agent_time_with_one_protocol(tmp_path):
    """The fresh-process path and the kit agent run the same code: same seed and settings, same row fields."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    dev = OnnxRuntimeDevice(name="cpu", warmup=1, rounds=5, cv_threshold=10.0)
    path = dev.prepare(model.eval(), (1, 1, 8, 8), tmp_path / "m.onnx")
    here = dev.measure_here([path], ["m"])
    there = dev.measure([path], ["m"])
    assert here[0].as_dict().keys() == there[0].as_dict().keys()
    assert (here[0].runs, there[0].runs, here[0].warmup) == (5, 5, 1)
    assert np.isfinite(here[0].latency_ms) and here[0].latency_ms > 0


def test_onnxruntime_passes_the_shipped_device_suite(tmp_path):
    from latency_luts.device.testing import check_device
    from nas.testing import trained_digits_supernet

    facts = check_device(OnnxRuntimeDevice(name="cpu"), tmp_path, trained_digits_supernet())
    assert facts["max_abs_diff"] <= 1e-4 and len(facts["latency_ms"]) == 2


def test_the_device_suite_fails_a_device_whose_file_differs_from_torch(tmp_path):
    """The suite can fail: a device that exports another network than it was given does not pass it."""
    from dataclasses import dataclass

    from latency_luts.device.testing import check_device
    from nas.testing import trained_digits_supernet

    @dataclass(kw_only=True)
    class Scrambling(OnnxRuntimeDevice):
        def export(self, module, input_shape, path, exporter):
            module = copy.deepcopy(module)
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            super().export(module, input_shape, path, exporter)

    with pytest.raises(AssertionError, match="exceeds"):
        check_device(Scrambling(name="cpu"), tmp_path, trained_digits_supernet(), time=False)
