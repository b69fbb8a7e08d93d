"""TorchDevice (eager PyTorch, the baseline) on real torch.export programs: the shipped Device contract suite on the
digits supernet's smallest and largest subnets, threads set by load, the config, one-line errors, and .pt2 archives
crafted to run code when torch.export.load reads them refused before torch reads them."""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from latency_luts.device import TorchDevice, build_device
from latency_luts.device.testing import check_device
from latency_luts.device.torch_eager import check_archive
from nas.testing import trained_digits_supernet


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The contract suite's facts, and the folder with the smallest (0.pt2) and largest (1.pt2) subnets."""
    trained = trained_digits_supernet()
    tmp = tmp_path_factory.mktemp("torch")
    facts = check_device(TorchDevice(name="cpu_torch"), tmp, trained)
    return facts, tmp / "prepared", trained


def test_device_contract_and_parity(suite):
    facts, folder, _ = suite
    assert facts["max_abs_diff"] <= 1e-5, facts  # the same ATen kernels as the module itself
    assert len(facts["latency_ms"]) == 2 and all(0 < t < 1000 for t in facts["latency_ms"]), facts
    assert sorted(p.name for p in folder.iterdir()) == ["0.pt2", "1.pt2"]
    check_archive(folder / "1.pt2")  # what this device exports passes its own archive check


def test_load_sets_the_threads_and_the_static_shape(suite):
    _, folder, trained = suite
    before = torch.get_num_threads()
    try:
        loaded = TorchDevice(name="cpu_torch", threads=2).load(folder / "1.pt2")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    r = trained.space.largest().r
    assert loaded.input_shape == (1, 1, r, r)


def test_config_builds_the_torch_device_with_its_settings():
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        node = compose("config", overrides=["device=torch", "device.threads=2"]).device
    dev = build_device(node)
    assert type(dev) is TorchDevice
    assert (dev.name, dev.threads, dev.batch, dev.precision) == ("cpu_torch", 2, 1, "fp32")
    assert (dev.warmup, dev.rounds, dev.cv_threshold, dev.max_extra_rounds) == (5, 20, 0.05, 40)
    dev.validate()
    assert build_device(dev.spec()) == dev
    prof = dev.profile()
    assert (prof["runtime"], prof["runtime_version"], prof["threads"]) == ("torch-cpu", torch.__version__, 2)


def test_a_bad_precision_is_one_line():
    with pytest.raises(ValueError, match=r"^device\.precision") as e:
        dataclasses.replace(TorchDevice(name="cpu_torch"), precision="int8").validate()
    assert "\n" not in str(e.value) and "expected one of ['fp32']" in str(e.value)


def test_engine_not_installed_says_how_to_install():
    class Missing(TorchDevice):
        requires = ("no_such_engine_module",)

    with pytest.raises(ValueError) as e:
        Missing(name="cpu_torch").validate()
    msg = str(e.value)
    assert "\n" not in msg and "'no_such_engine_module' is not installed" in msg, msg
    assert "pip install -e ." in msg and ".[]" not in msg, msg


def _rewrite(src: Path, dst: Path, edit) -> Path:  # noqa: ANN001 - edit(members: dict[str, bytes], root: str)
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    root = next(iter(members)).split("/", 1)[0] + "/"
    edit(members, root)
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return dst


def _edit_json(members: dict[str, bytes], name: str, change) -> None:  # noqa: ANN001
    doc = json.loads(members[name])
    change(doc)
    members[name] = json.dumps(doc).encode()


class _Touch:
    """Unpickling it creates a file: the code a crafted archive would run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (pathlib.Path.touch, (self.path,))


def _pickled_sample_inputs(marker: Path):  # noqa: ANN202
    def edit(members: dict[str, bytes], root: str) -> None:
        buf = io.BytesIO()
        torch.save(_Touch(marker), buf)
        members[f"{root}data/sample_inputs/model.pt"] = buf.getvalue()
    return edit


def _first_node(members: dict[str, bytes], root: str, key: str, value: object) -> None:
    _edit_json(members, f"{root}models/model.json",
               lambda d: d["graph_module"]["graph"]["nodes"][0].__setitem__(key, value))


CRAFTED = {
    "pickled weight": (lambda m, r: _edit_json(m, f"{r}data/weights/model_weights_config.json",
                                               lambda d: next(iter(d["config"].values())).__setitem__("use_pickle", True)),
                       "as a pickled object"),
    "os call": (lambda m, r: _first_node(m, r, "target", "torch.serialization.os.system"), "ATen operators only"),
    "symbolic shape": (lambda m, r: _first_node(m, r, "x", {"expr_str": "__import__('os').getpid()"}),
                       "symbolic expression"),
    "guard code": (lambda m, r: _edit_json(m, f"{r}models/model.json", lambda d: d.__setitem__("guards_code", ["1"])),
                   "has guards_code"),
    "compiled library": (lambda m, r: m.__setitem__(f"{r}data/aotinductor/model/x.so", b"\x7fELF"),
                         "unexpected member"),
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_crafted_archive_is_refused_in_one_line(suite, tmp_path, kind):
    _, folder, _ = suite
    edit, why = CRAFTED[kind]
    path = _rewrite(folder / "1.pt2", tmp_path / "crafted.pt2", edit)
    with pytest.raises(ValueError) as e:
        TorchDevice(name="cpu_torch").load(path)
    msg = str(e.value)
    assert "\n" not in msg and "does not load in torch-cpu" in msg and path.name in msg and why in msg, msg


def test_pickled_sample_inputs_run_no_code(suite, tmp_path):
    _, folder, _ = suite
    marker = tmp_path / "ran"
    path = _rewrite(folder / "1.pt2", tmp_path / "crafted.pt2", _pickled_sample_inputs(marker))
    with pytest.raises(ValueError, match="does not load in torch-cpu") as e:
        TorchDevice(name="cpu_torch").load(path)
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(Exception):  # noqa: B017, PT011 - torch alone falls back to a full unpickle: the code runs
        torch.export.load(str(path))
    assert marker.exists(), "torch.export.load no longer runs pickled sample inputs: the archive check may be relaxed"


def test_a_failed_export_leaves_no_file(tmp_path):
    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum() > 0 else x  # control flow on values: torch.export refuses it

    with pytest.raises(Exception):  # noqa: B017, PT011 - torch.export raises its own error types
        TorchDevice(name="cpu_torch").export(DataDependent(), (1, 1, 4, 4), tmp_path / "m.pt2", "legacy")
    assert list(tmp_path.iterdir()) == []
