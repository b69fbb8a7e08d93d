"""ExecuTorchDevice on real torch.export + XNNPACK lowerings and the real executorch runtime: the shipped Device
contract suite on the digits supernet's smallest and largest subnets (a user sees nothing of the lowering), the
config, every op of both files delegated to XNNPACK, the threadpool really resized, a method loaded before a
resize refusing to run, the static batch and one-line errors. The two subnet files are lowered once for the
module (a lowering takes 10-45 s on a shared 2-core machine)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import tempfile

import numpy as np
import pytest

if importlib.util.find_spec("executorch") is None:
    pytest.skip("pip install -e '.[executorch]'", allow_module_level=True)

from hydra import compose, initialize_config_module  # noqa: E402

from latency_luts.device import ExecuTorchDevice, build_device  # noqa: E402
from latency_luts.device.executorch import portable_ops  # noqa: E402
from latency_luts.device.testing import check_device  # noqa: E402
from nas.testing import trained_digits_supernet  # noqa: E402


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The contract suite's facts, what it wrote to stderr (fd 2 and python's stream) in this process, and the
    folder with the smallest (0.pte) and largest (1.pte) subnets."""
    trained = trained_digits_supernet()
    tmp = tmp_path_factory.mktemp("executorch")
    stream = io.StringIO()
    with tempfile.TemporaryFile() as cap:
        saved = os.dup(2)
        os.dup2(cap.fileno(), 2)
        try:
            with contextlib.redirect_stderr(stream):
                facts = check_device(ExecuTorchDevice(name="cpu_executorch"), tmp, trained)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        cap.seek(0)
        said = cap.read().decode("utf-8", "replace") + stream.getvalue()
    return facts, said, tmp / "prepared", trained


def test_executorch_passes_the_shipped_device_suite(suite):
    facts, said, _, _ = suite
    assert facts["max_abs_diff"] <= 1e-4 and len(facts["latency_ms"]) == 2
    assert all(ms > 0 for ms in facts["latency_ms"])
    # lowering and loading print nothing (torchao's CUDA kernels, exporter deprecations, cpuinfo lines, the
    # runtime's own line on the broken file, which is in the one-line error instead)
    assert said.strip() == "", said


def test_every_op_of_the_suite_subnets_runs_in_xnnpack(suite):
    """hardsigmoid's decomposition constants are folded, so no cast stays on the portable kernels."""
    _, _, folder, _ = suite
    for name in ("0.pte", "1.pte"):
        assert portable_ops(folder / name) == [], name


def test_the_config_builds_the_class_with_its_settings():
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        node = compose("config", overrides=["device=executorch", "device.threads=2", "device.batch=3"]).device
    dev = build_device(node)
    assert type(dev) is ExecuTorchDevice
    assert (dev.name, dev.threads, dev.batch, dev.precision, dev.warmup, dev.rounds) == (
        "cpu_executorch", 2, 3, "fp32", 5, 20)
    dev.validate()
    assert dev.profile()["runtime"] == "executorch-xnnpack-cpu"
    with initialize_config_module(config_module="nas.conf", version_base="1.3"), pytest.raises(Exception, match="threads"):
        compose("config", overrides=["device=executorch", "device.threads=two"])


def test_threads_resize_the_pool_and_stale_methods_refuse_to_run(suite):
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    _, _, folder, trained = suite
    arch = trained.space.smallest()
    x = np.ascontiguousarray(trained.inputs(arch, 1).numpy(), dtype=np.float32)
    one = ExecuTorchDevice(name="a", threads=1).load(folder / "0.pte")
    assert _threadpool_get_thread_count() == 1
    ref = one.run(x)
    two = ExecuTorchDevice(name="b", threads=2).load(folder / "0.pte")
    assert _threadpool_get_thread_count() == 2
    np.testing.assert_allclose(two.run(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match=r"1-thread ExecuTorch threadpool .* resized to 2 threads") as err:
        one.run(x)
    assert "\n" not in str(err.value) and "0.pte" in str(err.value)
    assert ExecuTorchDevice(name="c", threads=2).load(folder / "1.pte").run(
        np.zeros((1, *trained.space.input_shape(trained.space.largest(), 1)[1:]), dtype=np.float32)).shape == (1, 10)


def test_static_batch_and_input_shape_are_one_line_errors(suite):
    _, _, folder, trained = suite
    with pytest.raises(ValueError, match=r"static batch of 1; expected device.batch=4"):
        ExecuTorchDevice(name="x", batch=4).load(folder / "0.pte")
    loaded = ExecuTorchDevice(name="x").load(folder / "0.pte")
    shape = loaded.input_shape
    assert loaded.run(np.zeros((3, *shape[1:]), dtype=np.float32)).shape == (3, 10)  # k times the batch
    with pytest.raises(ValueError, match=r"does not fit 0.pte's static input"):
        loaded.run(np.zeros((1, shape[1], shape[2] + 1, shape[3]), dtype=np.float32))


def test_a_truncated_file_is_one_line_naming_it_and_the_runtime_reason(suite, tmp_path):
    _, _, folder, _ = suite
    cut = tmp_path / "cut.pte"
    cut.write_bytes((folder / "0.pte").read_bytes()[:100_000])
    with pytest.raises(ValueError) as err:
        ExecuTorchDevice(name="x").load(cut)
    msg = str(err.value)
    assert "\n" not in msg and "cut.pte" in msg and "does not load in executorch-xnnpack-cpu" in msg
    assert "file size is too small" in msg.lower(), msg  # the runtime's own reason, not only its error code
