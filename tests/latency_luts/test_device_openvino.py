"""OpenVINODevice on real ONNX -> IR conversions and real CPU-plugin compilations: the shipped Device contract suite
on the digits supernet's smallest and largest subnets at fp32 and bf16, the precision hint really applied (bf16
moves the outputs, fp32 does not), the config, one-line errors for a missing engine and broken IR files, and an
export that fails leaving no file behind."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="pip install -e '.[openvino]'")

import torch  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from latency_luts.device import OpenVINODevice, build_device  # noqa: E402
from latency_luts.device.testing import check_device  # noqa: E402
from nas.data import resize  # noqa: E402
from nas.testing import trained_digits_supernet  # noqa: E402


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The contract suite's facts at fp32, and the folder with the smallest (0.xml) and largest (1.xml) subnets."""
    trained = trained_digits_supernet()
    tmp = tmp_path_factory.mktemp("openvino")
    facts = check_device(OpenVINODevice(name="cpu_openvino"), tmp, trained)
    return facts, tmp / "prepared", trained


def test_device_contract_and_fp32_parity(suite):
    facts, folder, _ = suite
    assert facts["max_abs_diff"] <= 1e-4, facts
    assert len(facts["latency_ms"]) == 2 and all(0 < t < 1000 for t in facts["latency_ms"]), facts
    assert sorted(p.name for p in folder.iterdir()) == ["0.bin", "0.xml", "1.bin", "1.xml"]
    assert b"<net " in (folder / "1.xml").read_bytes()[:300]  # an IR, not some other XML


def test_bf16_contract_within_its_tolerance(tmp_path):
    dev = OpenVINODevice(name="cpu_openvino", precision="bf16")
    facts = check_device(dev, tmp_path, trained_digits_supernet(), time=False)
    assert dev.parity_atol(1e-4) == 0.25
    assert 0 < facts["max_abs_diff"] <= 0.25, facts
    folder = tmp_path / "prepared"  # the bf16 deliverable is the fp32 IR itself: the hint is set at compile time
    assert sorted(p.name for p in folder.iterdir()) == ["0.bin", "0.xml", "1.bin", "1.xml"]


def test_precision_hint_is_really_applied(suite):
    _, folder, trained = suite
    arch = trained.space.largest()
    sub = trained.subnet(arch)  # as the suite prepared it: BatchNorm recalibrated
    x = resize(trained.data.x_test[:4], arch.r).contiguous()
    with torch.no_grad():
        ref = sub(x).numpy()
    diffs = {}
    for precision in ("fp32", "bf16"):
        loaded = OpenVINODevice(name="cpu_openvino", precision=precision, batch=4).load(folder / "1.xml")
        assert loaded.input_shape == (4, 1, arch.r, arch.r)  # the dynamic-batch IR reshaped to the device's batch
        diffs[precision] = float(np.abs(loaded.run(x.numpy()) - ref).max())
    assert diffs["fp32"] <= 1e-4, diffs
    assert diffs["bf16"] > max(10 * diffs["fp32"], 1e-6), diffs  # bf16 arithmetic shows; fp32 was not bf16


def test_threads_are_set_and_a_count_the_plugin_caps_is_one_line(suite):
    _, folder, _ = suite
    loaded = OpenVINODevice(name="cpu_openvino", threads=min(2, os.cpu_count() or 1)).load(folder / "0.xml")
    assert loaded.run(np.zeros(loaded.input_shape, dtype=np.float32)).shape == (1, 10)
    too_many = (os.cpu_count() or 1) + 1  # the CPU plugin runs at most the machine's cores, whatever is asked
    with pytest.raises(ValueError) as e:
        OpenVINODevice(name="cpu_openvino", threads=too_many).load(folder / "0.xml")
    msg = str(e.value)
    assert "\n" not in msg and re.search(rf"INFERENCE_NUM_THREADS=\d+, not {too_many} ", msg), msg


def test_config_builds_the_openvino_device_with_its_settings():
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        node = compose("config", overrides=["device=openvino", "device.threads=2", "device.precision=bf16"]).device
    dev = build_device(node)
    assert type(dev) is OpenVINODevice
    assert (dev.name, dev.threads, dev.batch, dev.precision) == ("cpu_openvino", 2, 1, "bf16")
    assert (dev.warmup, dev.rounds, dev.cv_threshold, dev.max_extra_rounds) == (5, 20, 0.05, 40)
    dev.validate()
    assert build_device(dev.spec()) == dev
    assert dev.config() == {"INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "bf16",
                            "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    prof = dev.profile()
    assert (prof["runtime"], prof["threads"], prof["precision"]) == ("openvino-cpu", 2, "bf16")


@pytest.mark.parametrize(("key", "val", "want"), [("precision", "int8", "expected one of ['fp32', 'bf16']"),
                                                   ("threads", 0, "expected a positive integer")])
def test_a_bad_setting_is_one_line(key, val, want):
    dev = dataclasses.replace(OpenVINODevice(name="cpu_openvino"), **{key: val})
    with pytest.raises(ValueError, match=r"^device\." + key) as e:
        dev.validate()
    assert "\n" not in str(e.value) and want in str(e.value)


def test_engine_not_installed_names_the_extra():
    class Missing(OpenVINODevice):
        requires = ("no_such_engine_module",)

    with pytest.raises(ValueError) as e:
        Missing(name="cpu_openvino").validate()
    msg = str(e.value)
    assert "\n" not in msg and "'no_such_engine_module' is not installed" in msg, msg
    assert "pip install -e '.[openvino]'" in msg and "openvino-cpu" in msg, msg


def _broken(folder: Path, src: Path, kind: str) -> Path:
    path = folder / f"{kind}.xml"
    if kind == "not_ir":
        path.write_text('<?xml version="1.0"?><model name="x"/>')
    elif kind == "no_bin":
        shutil.copyfile(src, path)
    elif kind == "short_bin":
        shutil.copyfile(src, path)
        path.with_suffix(".bin").write_bytes(src.with_suffix(".bin").read_bytes()[:100])
    else:  # a truncated .xml
        text = src.read_text()
        path.write_text(text[: len(text) // 2])
        shutil.copyfile(src.with_suffix(".bin"), path.with_suffix(".bin"))
    return path


@pytest.mark.parametrize(("kind", "why"), [("not_ir", "not an IR <net>"), ("no_bin", "no_bin.bin is missing"),
                                           ("short_bin", "Incorrect weights in bin file"),
                                           ("truncated", "at offset")])
def test_a_broken_ir_is_a_one_line_error(suite, tmp_path, kind, why):
    _, folder, _ = suite
    path = _broken(tmp_path, folder / "1.xml", kind)
    with pytest.raises(ValueError) as e:
        OpenVINODevice(name="cpu_openvino").load(path)
    msg = str(e.value)
    assert "\n" not in msg and "does not load in openvino-cpu" in msg and path.name in msg and why in msg, msg


def test_a_failed_export_leaves_no_file(suite, tmp_path):
    _, _, trained = suite
    space, arch = trained.space, trained.space.smallest()
    sub = space.extract(trained.net, arch).eval()
    dev = OpenVINODevice(name="cpu_openvino")
    with pytest.raises(ValueError, match="unknown ONNX exporter"):
        dev.export(sub, space.input_shape(arch, 1), tmp_path / "a.xml", "nope")
    (tmp_path / "b.xml").mkdir()  # the .bin is renamed into place, then the .xml cannot be: the .bin goes again
    with pytest.raises(OSError):
        dev.export(sub, space.input_shape(arch, 1), tmp_path / "b.xml", "legacy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.xml"] and not any((tmp_path / "b.xml").iterdir())
