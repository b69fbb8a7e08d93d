"""LiteRTDevice on real litert-torch conversions and real ai-edge-litert interpreters: the shipped Device contract
suite on the digits supernet's smallest and largest subnets, the config, threads and the XNNPACK switch really set
in the interpreter, the static batch, one-line errors, and a conversion a user sees nothing of. The two subnet
files are converted once for the module (a conversion takes 10-20 s)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

if any(importlib.util.find_spec(m) is None for m in ("litert_torch", "ai_edge_litert")):
    pytest.skip("pip install -e '.[litert]'", allow_module_level=True)

import torch  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from latency_luts.device import LiteRTDevice, build_device  # noqa: E402
from latency_luts.device.testing import check_device  # noqa: E402
from nas.data import resize  # noqa: E402
from nas.subnet_eval import recalibrate_bn  # noqa: E402
from nas.testing import trained_digits_supernet  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The contract suite's facts, and the folder with the smallest (0.tflite) and largest (1.tflite) subnets."""
    trained = trained_digits_supernet()
    tmp = tmp_path_factory.mktemp("litert")
    facts = check_device(LiteRTDevice(name="cpu_litert"), tmp, trained)
    return facts, tmp / "prepared", trained


@pytest.fixture(scope="module")
def recalibrated(suite, tmp_path_factory):
    """The largest subnet with its BatchNorm statistics recalibrated on training images (as the pipeline times
    and delivers it: without, one short epoch leaves outputs that hardly depend on the image), prepared."""
    _, _, trained = suite
    arch = trained.space.largest()
    sub = trained.space.extract(trained.net, arch).eval()
    recalibrate_bn(sub, torch.as_tensor(trained.data.x_train), arch.r)
    sub.eval()
    path = LiteRTDevice(name="cpu_litert").prepare(sub, trained.space.input_shape(arch, 1),
                                                   tmp_path_factory.mktemp("recal") / "large.tflite")
    x = resize(trained.data.x_test[:64], arch.r).contiguous()
    return sub, path, x


def test_device_contract_and_fp32_parity(suite):
    facts, folder, _ = suite
    assert facts["max_abs_diff"] <= 1e-4, facts
    assert len(facts["latency_ms"]) == 2 and all(0 < t < 1000 for t in facts["latency_ms"]), facts
    assert sorted(p.name for p in folder.iterdir()) == ["0.tflite", "1.tflite"]
    assert (folder / "1.tflite").read_bytes()[4:8] == b"TFL3"  # a TFLite flatbuffer, not some other format


def test_config_builds_the_litert_device_with_its_settings():
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        node = compose("config", overrides=["device=litert", "device.threads=2", "device.xnnpack=false"]).device
    dev = build_device(node)
    assert type(dev) is LiteRTDevice
    assert (dev.name, dev.threads, dev.batch, dev.precision, dev.xnnpack) == ("cpu_litert", 2, 1, "fp32", False)
    assert (dev.warmup, dev.rounds, dev.cv_threshold, dev.max_extra_rounds) == (5, 20, 0.05, 40)
    dev.validate()
    assert build_device(dev.spec()) == dev
    assert dev.profile()["runtime"] == "litert-cpu" and dev.profile()["threads"] == 2


@pytest.mark.parametrize(("key", "val", "want"), [("xnnpack", "yes", "expected true (XNNPACK delegate) or false"),
                                                   ("precision", "fp16", "expected one of ['fp32', 'int8']"),
                                                   ("threads", 0, "expected a positive integer")])
def test_a_bad_setting_is_one_line(key, val, want):
    dev = dataclasses.replace(LiteRTDevice(name="cpu_litert"), **{key: val})
    with pytest.raises(ValueError, match=r"^device\." + key) as e:
        dev.validate()
    assert "\n" not in str(e.value) and want in str(e.value)


def test_fp32_parity_and_agreement_on_a_recalibrated_subnet(recalibrated):
    sub, path, x = recalibrated
    dev = LiteRTDevice(name="cpu_litert")
    with torch.no_grad():
        ref = sub(x).numpy()
    assert ref.std(0).mean() > 0.05 and len(set(ref.argmax(1))) >= 5  # outputs that depend on the image
    assert dev.check_parity(sub, path, x) <= 1e-4
    assert dev.agreement(sub, path, x) == 1.0


def _threads_after_load(dev: LiteRTDevice, path: Path) -> tuple[np.ndarray, int]:
    """The output on one input and how many OS threads loading (and a first run) added to this process."""
    before = len(os.listdir("/proc/self/task"))
    loaded = dev.load(path)
    out = loaded.run(np.zeros(loaded.input_shape, dtype=np.float32))
    return out, len(os.listdir("/proc/self/task")) - before


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc (Linux)")
def test_threads_and_xnnpack_are_set_in_the_interpreter(recalibrated):
    sub, path, x = recalibrated
    xs = np.ascontiguousarray(x[:16].numpy())
    one, two = LiteRTDevice(name="cpu_litert"), LiteRTDevice(name="cpu_litert", threads=2)
    _, added1 = _threads_after_load(one, path)
    _, added2 = _threads_after_load(two, path)
    assert added1 == 0, "a 1-thread interpreter started threads"
    assert added2 >= 1, "a 2-thread interpreter started no worker thread: threads not set in the engine"
    outs = [d.load(path).run(xs) for d in (one, two, dataclasses.replace(one, xnnpack=False))]
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-5)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-5)  # builtin kernels agree with XNNPACK's
    with torch.no_grad():
        np.testing.assert_allclose(outs[2], sub(x[:16]).numpy(), atol=1e-4)


def test_static_batch_runs_k_batches_and_refuses_other_shapes(recalibrated):
    _, path, x = recalibrated
    loaded = LiteRTDevice(name="cpu_litert").load(path)
    assert loaded.input_shape == (1, 1, 24, 24)  # NCHW, as torch's
    xs = np.ascontiguousarray(x[:3].numpy())
    many = loaded.run(xs)
    assert many.shape == (3, 10) and np.abs(many[0] - many[1]).max() > 1e-3
    np.testing.assert_array_equal(many, np.concatenate([loaded.run(xs[i:i + 1]) for i in range(3)]))
    with pytest.raises(ValueError, match=r"^input of shape \(1, 1, 16, 16\) does not fit large.tflite") as e:
        loaded.run(np.zeros((1, 1, 16, 16), dtype=np.float32))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"^large.tflite has a static batch of 1; expected device.batch=2") as e:
        LiteRTDevice(name="cpu_litert", batch=2).load(path)
    assert "\n" not in str(e.value)


def test_int8_quantization_agrees_with_torch_and_is_timed(recalibrated, suite, tmp_path):
    sub, fp32, x = recalibrated
    _, _, trained = suite
    dev = LiteRTDevice(name="cpu_litert", precision="int8")
    dev.validate()
    path = tmp_path / "large.tflite"
    dev.quantize(fp32, path, resize(trained.data.x_train[:64], 24).numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["large.tflite"]
    assert path.stat().st_size < fp32.stat().st_size / 3  # int8 weights
    assert dev.load(path).input_shape == (1, 1, 24, 24)  # float32 in (load refuses other inputs), as fp32's
    assert dev.agreement(sub, path, x) >= 0.8
    assert dev.check_parity(sub, path, x) > 1e-3  # quantised, not a copy of the fp32 file
    quick = dataclasses.replace(dev, warmup=1, rounds=3, cv_threshold=10.0, max_extra_rounds=0)
    ms = quick.measure([fp32, path], ["fp32", "int8"])
    assert [m.name for m in ms] == ["fp32", "int8"] and all(m.latency_ms > 0 and m.runs == 3 for m in ms)
    with pytest.raises(ValueError, match=r"^calibration has shape \(24, 24\); expected \(N, C, H, W\)") as e:
        dev.quantize(fp32, tmp_path / "bad.tflite", np.zeros((24, 24), dtype=np.float32))
    assert "\n" not in str(e.value) and not (tmp_path / "bad.tflite").exists()


@pytest.mark.parametrize("kind", ["truncated", "missing"])
def test_a_file_that_does_not_load_is_one_line(suite, tmp_path, kind):
    _, folder, _ = suite
    bad = tmp_path / f"{kind}.tflite"
    if kind == "truncated":
        bad.write_bytes((folder / "0.tflite").read_bytes()[:4096])
    with pytest.raises(ValueError, match="does not load in litert-cpu") as e:
        LiteRTDevice(name="cpu_litert").load(bad)
    assert "\n" not in str(e.value) and bad.name in str(e.value)


class _Fails(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("this module does not run")


def test_a_failed_conversion_leaves_the_old_file_and_nothing_else(suite, tmp_path):
    _, folder, _ = suite
    path = tmp_path / "m.tflite"
    path.write_bytes((folder / "0.tflite").read_bytes())
    with pytest.raises(Exception, match="this module does not run"):
        LiteRTDevice(name="cpu_litert").prepare(_Fails(), (1, 1, 16, 16), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
    assert path.read_bytes() == (folder / "0.tflite").read_bytes()


def test_a_conversion_in_a_fresh_process_prints_nothing(tmp_path):
    """What a user sees: the first import of the converter and the runtime, a conversion and a load, silent."""
    code = textwrap.dedent("""
        import sys, torch
        from pathlib import Path
        from latency_luts.device import LiteRTDevice
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3)).eval()
        dev = LiteRTDevice(name="t")
        p = dev.prepare(m, (1, 1, 8, 8), Path(sys.argv[1]) / "m.tflite")
        assert dev.check_parity(m, p, torch.randn(1, 1, 8, 8)) <= 1e-5
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (proc.stdout, proc.stderr) == ("", ""), (proc.stdout[-1000:], proc.stderr[-2000:])
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
