"""Export of static torch modules to single-file ONNX, written atomically (:mod:`latency_luts.files`).

Two exporters: ``legacy`` (TorchScript-based, < 1 s a model: used for mass measurement) and ``dynamo``
(torch.export-based, the maintained path, 5-8 s a model, needs onnxscript: used for final deliverables).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from latency_luts.files import atomic_path

EXPORTERS = ("legacy", "dynamo")
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo")
# the dynamo exporter warns on every call that torchvision's detection ops cannot be registered; subnets use
# none of them and torchvision does not install beside the CPU torch, so the warning is nothing to act on
_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


def _not_torchvision_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("torchvision is not installed")


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    exporter: str = "legacy",
    opset: int = 18,
    dynamic_batch: bool = False,
) -> Path:
    """Write ``model`` (eval mode) as one self-contained ONNX file at ``path`` and return the path."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; expected one of {list(EXPORTERS)}")
    path = Path(path)
    model = model.eval()
    x = torch.randn(*input_shape)
    # a temporary name unique to this process and call: concurrent writers never collide
    with atomic_path(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            dyn = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                              opset_version=opset, dynamic_axes=dyn, dynamo=False)
        else:
            try:
                import onnxscript  # noqa: F401
            except ImportError as e:  # pragma: no cover - depends on the install
                raise RuntimeError("exporter 'dynamo' needs onnxscript: pip install 'hwnas[export]'") from e
            dyn = ({"x": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None)
            for name in _CHATTY_LOGGERS:  # the dynamo path logs every graph pass at INFO
                logging.getLogger(name).setLevel(logging.WARNING)
            reg = logging.getLogger(_REGISTRATION_LOGGER)
            if _not_torchvision_notice not in reg.filters:
                reg.addFilter(_not_torchvision_notice)
            prog = torch.onnx.export(model, (x,), input_names=["input"], output_names=["logits"],
                                     opset_version=opset, dynamic_shapes=dyn, dynamo=True, verbose=False)
            prog.save(str(tmp), external_data=False)
    return path
