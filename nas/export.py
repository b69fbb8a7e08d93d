"""Export of chosen subnets: standalone module -> ONNX -> onnxruntime parity check."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latency_luts.measure import OrtSettings, make_session
from latency_luts.onnx_export import export_onnx

log = logging.getLogger(__name__)


def onnx_parity(module: torch.nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Max abs difference between torch (eval) and onnxruntime outputs on ``x``."""
    module.eval()
    with torch.no_grad():
        ref = module(x).numpy()
    sess = make_session(path, OrtSettings(threads=1))
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    if out.shape != ref.shape:
        raise ValueError(f"ONNX output shape {out.shape} differs from torch's {ref.shape} for {path}")
    return float(np.abs(out - ref).max())


def export_subnet(module: torch.nn.Module, input_shape: tuple[int, ...], path: str | Path, x_check: torch.Tensor,
                  exporter: str = "dynamo", fallback_to_legacy: bool = True) -> dict[str, Any]:
    """Export with dynamic batch, check parity on ``x_check``; falls back to the legacy exporter on failure."""
    used = exporter
    try:
        export_onnx(module, input_shape, path, exporter=exporter, dynamic_batch=True)
    except Exception as e:  # noqa: BLE001 - the exporter's own error types vary between torch releases
        if exporter == "legacy" or not fallback_to_legacy:
            raise
        log.warning("exporter %s failed for %s (%s); using the legacy exporter", exporter, path, str(e).splitlines()[0])
        used = "legacy"
        export_onnx(module, input_shape, path, exporter="legacy", dynamic_batch=True)
    diff = onnx_parity(module, path, x_check)
    return {"onnx_path": str(path), "exporter": used, "onnx_max_abs_diff": diff}


def int8_agreement(module: torch.nn.Module, int8_path: str | Path, x: torch.Tensor) -> float:
    """Share of inputs on which the int8 ONNX model and the fp32 torch module predict the same class."""
    module.eval()
    with torch.no_grad():
        ref = module(x).argmax(1).numpy()
    sess = make_session(int8_path, OrtSettings(threads=1))
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    return float((out.argmax(1) == ref).mean())
