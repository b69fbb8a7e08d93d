"""The onnxruntime measurement harness on real ONNX files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latency_luts.measure import OrtSettings, measure_onnx_models
from latency_luts.onnx_export import export_onnx


def _mlp(width: int, depth: int) -> nn.Module:
    layers = [nn.Flatten(), nn.Linear(64, width)]
    for _ in range(depth):
        layers += [nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers, nn.Linear(width, 10)).eval()


def test_interleaved_measurement_orders_models_and_reports_spread(tmp_path):
    small = export_onnx(_mlp(16, 1), (1, 1, 8, 8), tmp_path / "small.onnx")
    big = export_onnx(_mlp(768, 6), (1, 1, 8, 8), tmp_path / "big.onnx")
    ms = measure_onnx_models([small, big], OrtSettings(threads=1), warmup=3, rounds=15, progress=False)
    s, b = ms
    assert s.name == "small" and b.name == "big"
    for m in ms:
        assert 0 < m.latency_ms <= m.p10_ms <= m.median_ms <= m.p90_ms
        assert m.runs >= 15 and m.cv >= 0
    assert b.latency_ms > 5 * s.latency_ms  # ~3.5M vs ~1.3k MACs


def test_export_is_atomic_and_validates(tmp_path):
    with pytest.raises(ValueError, match="unknown ONNX exporter 'fast'"):
        export_onnx(_mlp(8, 1), (1, 1, 8, 8), tmp_path / "m.onnx", exporter="fast")
    assert not list(tmp_path.iterdir())
    p = export_onnx(_mlp(8, 1), (1, 1, 8, 8), tmp_path / "m.onnx", dynamic_batch=True)
    assert [q.name for q in tmp_path.iterdir()] == ["m.onnx"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    assert sess.run(None, {"input": x})[0].shape == (4, 10)


@pytest.mark.slow
@pytest.mark.parametrize("space_kw", [dict(name="ofa_mbv3", setting="small", n_classes=10, in_channels=1),
                                      dict(name="fbnet", dataset="cifar100", n_classes=10, in_channels=1)])
def test_legacy_export_is_the_same_network_as_dynamo_export(tmp_path, space_kw):
    """Why the timed and delivered files default to the legacy exporter (measure.exporter, README): on our subnets both
    exporters write the same operators (up to constant folding, Flatten vs Reshape before the classifier and the
    TorchScript exporter's Identity nodes for FBNet's skips, which onnxruntime drops) and onnxruntime computes
    the same outputs from both files, at every batch size."""
    pytest.importorskip("onnxscript")
    from collections import Counter

    import onnx
    import onnxruntime as ort

    from latency_luts.device import OnnxRuntimeDevice
    from search_spaces import create_search_space

    kw = dict(space_kw)
    space = create_search_space(kw.pop("name"), **kw)
    net = space.build_supernet().eval()
    rng = np.random.default_rng(0)
    for p in net.parameters():  # non-trivial weights, so that the comparison can fail
        p.data = torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.1)
    arch = space.sample(rng)
    sub = space.extract(net, arch).eval()
    shape = space.input_shape(arch)
    x = torch.randn(4, *shape[1:])
    ops, outs = {}, {}
    for exporter in ("legacy", "dynamo"):
        path = tmp_path / f"{exporter}.onnx"
        device = OnnxRuntimeDevice()
        device.prepare(sub, shape, path, exporter=exporter)
        assert device.check_parity(sub, path, x) <= 1e-4
        ops[exporter] = Counter(n.op_type for n in onnx.load(str(path)).graph.node
                                if n.op_type not in ("Constant", "Flatten", "Reshape", "Identity"))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs[exporter] = [sess.run(None, {"input": xb})[0] for xb in (x[:1].numpy(), x.numpy())]
    assert ops["legacy"] == ops["dynamo"]
    assert not {"Shape", "Slice", "Concat"} & set(ops["legacy"])  # no shape arithmetic at run time
    for a, b in zip(outs["legacy"], outs["dynamo"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="threads=0"):
        OrtSettings(threads=0)
    with pytest.raises(ValueError, match="graph_optimization='max'"):
        OrtSettings(graph_optimization="max")
    with pytest.raises(ValueError, match="no ONNX models"):
        measure_onnx_models([])


def test_profile_records_what_was_measured():
    from latency_luts.device import OnnxRuntimeDevice

    p = OnnxRuntimeDevice(threads=1, batch=1).profile()
    assert p["runtime"] == "onnxruntime-cpu" and p["threads"] == 1 and p["cores"] >= 1 and p["cpu"]
