"""LiteRT (TFLite) on this machine's CPU: ``.tflite`` artefacts converted from torch by litert-torch and run by
ai-edge-litert's ``Interpreter``, with the XNNPACK delegate (the interpreter's default) unless ``xnnpack: false``.

The file keeps torch's NCHW input (the converter inserts the layout transposes inside the graph) and its batch is
static: the device's batch, fixed at conversion. int8 is ai-edge-quantizer's static int8 of the fp32 file
(float32 input and output kept). The converter and the runtime's native libraries write notices
straight to the process's stderr (absl/TF logging, the converter's progress lines, oneDNN and XNNPACK notices);
they are captured while a file is converted or loaded and written back only when that step fails.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latency_luts.device.base import Device, Loaded
from latency_luts.device.quiet import quiet_engine
from latency_luts.files import atomic_path

log = logging.getLogger(__name__)

# set unless the user set them: TF/absl C++ logging at WARNING and up only, no converter progress lines
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "LITERT_TORCH_SHOW_PROGRESS": "n"}
# python loggers that report, at WARNING, on optional CUDA kernels torchao cannot load on a CPU torch and on
# deprecations inside the converter's dependencies: nothing a user of hwnas can act on
_CHATTY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.export", "torch._dynamo", "jax", "absl")


@contextmanager
def _quiet() -> Iterator[None]:
    """The converter's and runtime's notices captured (:func:`latency_luts.device.quiet.quiet_engine`), with
    the environment settings that turn the converter's own progress output off (unless the user set them)."""
    for key, val in _QUIET_ENV.items():
        os.environ.setdefault(key, val)
    with quiet_engine(_CHATTY_LOGGERS, log):
        yield


@dataclass(kw_only=True)
class LiteRTDevice(Device):
    """ai-edge-litert's Interpreter on this CPU with ``threads`` threads; ``xnnpack``: apply the XNNPACK delegate
    (the interpreter's default op resolver) or run LiteRT's builtin kernels only."""

    xnnpack: bool = True

    runtime: ClassVar[str] = "litert-cpu"
    # convert here (litert-torch, with ai-edge-quantizer for int8), and time (ai-edge-litert)
    requires: ClassVar[tuple[str, ...]] = ("litert_torch", "ai_edge_litert")
    extra: ClassVar[str] = "litert"
    suffix: ClassVar[str] = ".tflite"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.xnnpack, bool):
            raise ValueError(f"device.xnnpack={self.xnnpack!r} is invalid; expected true (XNNPACK delegate) or "
                             "false (LiteRT's builtin kernels)")

    def engine_version(self) -> str:
        import ai_edge_litert

        return str(ai_edge_litert.__version__)

    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        """Convert with litert-torch at the static ``input_shape`` (NCHW, batch first); ``exporter`` names an
        ONNX exporter, which this route does not use."""
        import torch

        shape = tuple(int(d) for d in input_shape)
        with _quiet():
            import litert_torch

            edge = litert_torch.convert(module.eval(), (torch.randn(*shape),))
            with atomic_path(path) as tmp:
                edge.export(str(tmp))

    def quantize(self, fp32: Path, path: Path, calibration: np.ndarray) -> None:
        """Static int8 (int8 weights per channel, int8 activations calibrated on ``calibration`` in batches of
        the file's static batch) by ai-edge-quantizer; the input and output stay float32 like the fp32 file's."""
        calibration = np.ascontiguousarray(calibration, dtype=np.float32)
        b = int(self.batch)
        if calibration.ndim != 4 or len(calibration) < b:
            raise ValueError(f"calibration has shape {calibration.shape}; expected (N, C, H, W) with N >= "
                             f"device.batch={b}")
        with _quiet():
            from ai_edge_litert.interpreter import Interpreter
            from ai_edge_quantizer import quantizer, recipe
            from ai_edge_quantizer.algorithm_manager import AlgorithmName
            from ai_edge_quantizer.qtyping import TFLOperationName

            (key, sig), = Interpreter(model_path=str(fp32)).get_signature_list().items()
            q = quantizer.Quantizer(str(fp32), recipe.static_wi8_ai8())
            for io in (TFLOperationName.INPUT, TFLOperationName.OUTPUT):  # float in and out: the app feeds images
                q.update_quantization_recipe(".*", io, None, AlgorithmName.NO_QUANTIZE)
            batches = [{sig["inputs"][0]: calibration[i:i + b]} for i in range(0, len(calibration) - b + 1, b)]
            qsv = q.calibrate({key: batches}, num_threads=int(self.threads))
            result = q.quantize(qsv, enable_progress_bar=False, enable_progress_report=False)
            with atomic_path(path) as tmp:
                tmp.write_bytes(bytes(result.quantized_model))

    def load(self, artefact: str | Path) -> Loaded:
        path = Path(artefact)
        it = self._interpreter(path)
        inputs, outputs = it.get_input_details(), it.get_output_details()
        if len(inputs) != 1 or not outputs or inputs[0]["dtype"] != np.float32:
            raise ValueError(f"{path.name} does not load in {self.runtime} as a classifier: it has inputs "
                             f"{[(d['name'], d['dtype'].__name__) for d in inputs]}; expected one float32 image input")
        shape = tuple(int(d) for d in inputs[0]["shape"])
        if shape[0] != int(self.batch):
            raise ValueError(f"{path.name} has a static batch of {shape[0]}; expected device.batch={self.batch} "
                             "(prepare the file with this device)")
        return Loaded(run=_runner(it, inputs[0]["index"], outputs[0]["index"], shape, path.name), input_shape=shape)

    def _interpreter(self, path: Path) -> Any:
        """The file's interpreter with this device's threads and op resolver, its tensors allocated."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if self.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with _quiet():
                it = Interpreter(model_path=str(path), num_threads=int(self.threads),
                                 experimental_op_resolver_type=resolver)
                it.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError or RuntimeError by cause
            reason = " ".join(str(e).split()) or type(e).__name__
            raise ValueError(f"{str(path)!r} does not load in {self.runtime} ({reason}); expected a .tflite file "
                             "written by this device (prepare it again, or copy the kit again)") from None
        return it


def _runner(it: Any, idx_in: int, idx_out: int, shape: tuple[int, ...], name: str
            ) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x)``: set the input, invoke, copy the output out. An input of k times the file's static batch runs
    in k invocations (a parity check on more images than the timed batch)."""
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape == shape:
            set_tensor(idx_in, x)
            invoke()
            return get_tensor(idx_out)  # a copy: the next invoke does not change it
        b = shape[0]
        if x.ndim != len(shape) or x.shape[1:] != shape[1:] or x.shape[0] % b:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit {name}'s static input {shape}; expected "
                             f"(k*{b}, {', '.join(map(str, shape[1:]))})")
        return np.concatenate([run(np.ascontiguousarray(x[i:i + b])) for i in range(0, x.shape[0], b)])

    return run
