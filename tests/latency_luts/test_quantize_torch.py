"""int8 static QDQ variant and torch-eager timing, on a real extracted subnet."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from latency_luts.measure import OrtSettings, measure_onnx_models
from latency_luts.measure_torch import measure_torch_models
from latency_luts.onnx_export import export_onnx
from latency_luts.quantize import quantize_qdq
from nas.data import load_digits, resize
from nas.training import TrainConfig, train_supernet
from search_spaces import create_search_space


def test_qdq_int8_agrees_with_fp32_and_is_timed_like_it(tmp_path):
    data = load_digits()
    data.x_train, data.y_train = data.x_train[:256], data.y_train[:256]
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1, resolutions=[16])
    net = space.build_supernet()
    train_supernet(net, space, data, TrainConfig(epochs=1, batch_size=64, n_random=0, threads=1))
    arch = space.largest()
    sub = space.extract(net, arch).eval()
    fp32 = export_onnx(sub, space.input_shape(arch), tmp_path / "fp32.onnx", dynamic_batch=True)
    calib = resize(data.x_train[:64], arch.r).numpy()
    int8 = quantize_qdq(fp32, tmp_path / "int8.onnx", calib)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp32.onnx", "int8.onnx"]
    x = resize(data.x_test[:100], arch.r).numpy()
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (fp32, int8)]
    assert (outs[0].argmax(1) == outs[1].argmax(1)).mean() >= 0.9
    assert not np.allclose(outs[0], outs[1], atol=1e-6)  # it really is a different (quantized) graph
    ms = measure_onnx_models([fp32, int8], OrtSettings(threads=1), warmup=2, rounds=10, progress=False)
    assert all(m.latency_ms > 0 for m in ms)
    t = measure_torch_models([sub], [space.input_shape(arch)], threads=1, warmup=2, rounds=5, progress=False)
    assert t[0].latency_ms > 0 and t[0].runs == 5 and torch.get_num_threads() >= 1
