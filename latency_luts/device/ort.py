"""onnxruntime on this machine's CPU: ONNX artefacts (dynamic batch), int8 as static QDQ."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latency_luts.device.base import Device, Loaded
from latency_luts.measure import OrtSettings, make_session


@dataclass(kw_only=True)
class OnnxRuntimeDevice(Device):
    """onnxruntime's CPU execution provider with this device's session settings."""

    graph_optimization: str = "all"  # disable | basic | extended | all
    execution_mode: str = "sequential"  # sequential | parallel
    spinning: bool = False

    runtime: ClassVar[str] = "onnxruntime-cpu"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)
    extra: ClassVar[str] = "test"  # onnxruntime is a dependency of hwnas itself
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.spinning, bool):
            raise ValueError(f"device.spinning={self.spinning!r} is invalid; expected true or false")
        try:
            self.settings()
        except ValueError as e:
            raise ValueError(f"device.{e}") from None

    def settings(self) -> OrtSettings:
        """The session settings every onnxruntime session of this device is made with."""
        return OrtSettings(int(self.threads), self.graph_optimization, self.execution_mode, bool(self.spinning))

    def engine_version(self) -> str:
        import onnxruntime as ort

        return str(ort.__version__)

    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        from latency_luts.onnx_export import export_onnx

        export_onnx(module, input_shape, path, exporter=exporter, dynamic_batch=True)

    def quantize(self, fp32: Path, path: Path, calibration: np.ndarray) -> None:
        from latency_luts.quantize import quantize_qdq

        quantize_qdq(fp32, path, calibration, int(self.batch))

    def load(self, artefact: str | Path) -> Loaded:
        sess = make_session(artefact, self.settings())
        inp = sess.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else int(self.batch) for d in inp.shape)
        return Loaded(run=lambda x: sess.run(None, {inp.name: x})[0], input_shape=shape,
                      dynamic_batch=not isinstance(inp.shape[0], int))
