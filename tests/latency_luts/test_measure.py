"""The onnxruntime measurement harness on real ONNX files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latency_luts.measure import OrtSettings, measure_onnx_models
from latency_luts.onnx_export import export_onnx
from latency_luts.profile import local_ort_profile


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
def test_dynamo_and_legacy_exports_agree_with_torch(tmp_path):
    pytest.importorskip("onnxscript")
    from nas.export import export_subnet
    from search_spaces import create_search_space

    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1)
    net = space.build_supernet().eval()
    arch = space.sample(np.random.default_rng(0))
    sub = space.extract(net, arch).eval()
    x = torch.randn(4, 1, arch.r, arch.r)
    for exporter in ("legacy", "dynamo"):
        res = export_subnet(sub, space.input_shape(arch), tmp_path / f"{exporter}.onnx", x, exporter, False)
        assert res["exporter"] == exporter and res["onnx_max_abs_diff"] <= 1e-4


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="threads=0"):
        OrtSettings(threads=0)
    with pytest.raises(ValueError, match="graph_optimization='max'"):
        OrtSettings(graph_optimization="max")
    with pytest.raises(ValueError, match="no ONNX models"):
        measure_onnx_models([])


def test_profile_records_what_was_measured():
    p = local_ort_profile(threads=1, batch=1).as_dict()
    assert p["runtime"] == "onnxruntime-cpu" and p["threads"] == 1 and p["cores"] >= 1 and p["cpu"]
