"""ExecuTorch with the XNNPACK backend on this machine's CPU: ``.pte`` programs lowered from torch and run by
``executorch.runtime``, the route a PyTorch model takes to a phone.

The subnet is captured by ``torch.export`` at a static input shape (the device's batch), lowered to the edge
dialect with the XNNPACK partitioner and serialised to one ``.pte`` file. Scalar constants that decompositions
create (``hardsigmoid``'s 3 and 6) are folded before partitioning, so the suite's MobileNetV3-like subnets run as a
single XNNPACK delegate call with no operator left on ExecuTorch's portable kernels; where some op does stay
outside, the export says which in one log line (:func:`portable_ops` reads them from any ``.pte``).

Threads: XNNPACK runs on the process-wide ExecuTorch threadpool, which ``load`` resizes to the device's threads
before the method is loaded. A method keeps the pool it was loaded with, and resizing the pool under a loaded
method crashes the process; so a pool resize makes the methods loaded before it refuse to run (a ValueError
saying to load the file again) instead. The engine's notices (torchao's optional CUDA kernels, deprecations
inside the exporter, the runtime's cpuinfo lines) are captured and written back only when a step fails.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latency_luts.device.base import Device, Loaded
from latency_luts.device.quiet import quiet_engine
from latency_luts.files import write_bytes_atomic

log = logging.getLogger(__name__)

# python loggers that report, at WARNING, on optional CUDA kernels torchao cannot load on a CPU torch and on
# deprecations inside the exporter's dependencies: nothing a user of hwnas can act on
_CHATTY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.export", "torch._export", "torch._dynamo", "executorch")
_FLOAT32 = 6  # ExecuTorch's ScalarType::Float
# the process's ExecuTorch threadpool as this module last set it; ``generation`` counts the resizes
_POOL = {"threads": 0, "generation": 0}
_NOT_OPS = ("executorch_call_delegate", "getitem")


def _quiet(captured: list[str] | None = None) -> contextlib.AbstractContextManager[None]:
    """The engine capture (:func:`latency_luts.device.quiet.quiet_engine`), ``sys.stderr`` included: the
    runtime's pybindings redirect its C++ logs to python's stream."""
    return quiet_engine(_CHATTY_LOGGERS, log, captured, python_stderr=True)


def _fold_constants() -> Any:
    """An exported-program pass that folds constant subgraphs (a decomposition's scalar constants and their
    dtype casts) into constants, so the partitioner does not leave their casts on the portable kernels."""
    from executorch.exir.pass_base import ExportedProgramPassBase, ExportedProgramPassResult
    from executorch.exir.pass_manager import ExportedProgramPassManager
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    class FoldConstants(ExportedProgramPassBase):
        def call(self, exported_program: Any) -> Any:
            return ExportedProgramPassResult(constant_prop_pass(exported_program), True)

    return ExportedProgramPassManager([FoldConstants()])


def _outside_delegates(edge: Any) -> list[str]:
    """The ops of a lowered edge program that run outside every delegate (on the portable kernels)."""
    nodes = edge.exported_program().graph_module.graph.nodes
    names = [str(getattr(n.target, "__name__", n.target)) for n in nodes if n.op == "call_function"]
    return [n for n in names if not n.startswith(_NOT_OPS)]


def portable_ops(path: str | Path) -> list[str]:
    """The operators a ``.pte`` file runs outside its delegates (ExecuTorch's portable kernels), one entry per
    distinct operator; empty when the whole program is delegated."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(Path(path).read_bytes())
    program = getattr(pte, "program", pte)
    return sorted({op.name for plan in program.execution_plan for op in plan.operators})


def _set_threads(threads: int) -> int:
    """Resize the process's ExecuTorch threadpool to ``threads`` unless it is that size already; the pool's
    generation (methods loaded under an older one must not run)."""
    if _POOL["threads"] != threads:
        with _quiet():
            from executorch.extension.pybindings.portable_lib import (
                _threadpool_get_thread_count,
                _unsafe_reset_threadpool,
            )

            _unsafe_reset_threadpool(threads)
        got = int(_threadpool_get_thread_count())
        if got != threads:
            raise RuntimeError(f"the ExecuTorch threadpool has {got} threads after a reset to {threads}")
        _POOL["threads"] = threads
        _POOL["generation"] += 1
    return _POOL["generation"]


def _reason(error: BaseException, lines: list[str]) -> str:
    """One line: the runtime's own diagnostics (its C++ log lines, file:line prefixes dropped) and the error."""
    said = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in lines]
    said = [s for s in said if s and not s.lower().startswith(("reading file", "failed to open midr", "cpu info"))]
    return " ".join("; ".join([*said, str(error) or type(error).__name__]).split())


@dataclass(kw_only=True)
class ExecuTorchDevice(Device):
    """ExecuTorch's runtime with the XNNPACK backend on this CPU, with ``threads`` threads."""

    runtime: ClassVar[str] = "executorch-xnnpack-cpu"
    requires: ClassVar[tuple[str, ...]] = ("executorch",)
    extra: ClassVar[str] = "executorch"
    suffix: ClassVar[str] = ".pte"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def engine_version(self) -> str:
        from executorch.version import __version__

        return str(__version__)

    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        """``torch.export`` at the static ``input_shape`` (NCHW, batch first), lowered with the XNNPACK
        partitioner; ``exporter`` names an ONNX exporter, which this route does not use."""
        import torch

        shape = tuple(int(d) for d in input_shape)
        with _quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            program = torch.export.export(module.eval(), (torch.randn(*shape),))
            edge = to_edge_transform_and_lower(program, transform_passes=_fold_constants(),
                                               partitioner=[XnnpackPartitioner()])
            outside = _outside_delegates(edge)
            buffer = edge.to_executorch().buffer
        if outside:
            log.info("%s: %d op(s) run outside XNNPACK on ExecuTorch's portable kernels: %s", Path(path).name,
                     len(outside), ", ".join(sorted(set(outside))))
        write_bytes_atomic(path, buffer)

    def load(self, artefact: str | Path) -> Loaded:
        path = Path(artefact)
        generation = _set_threads(int(self.threads))
        method = self._method(path)
        meta = method.metadata
        dtypes = [meta.input_tensor_meta(i).dtype() for i in range(meta.num_inputs())]
        if dtypes != [_FLOAT32] or meta.num_outputs() < 1:
            raise ValueError(f"{path.name} does not load in {self.runtime} as a classifier: its forward method "
                             f"has input dtypes {dtypes} and {meta.num_outputs()} outputs; expected one float32 "
                             "image input and a logits output")
        shape = tuple(int(d) for d in meta.input_tensor_meta(0).sizes())
        if shape[0] != int(self.batch):
            raise ValueError(f"{path.name} has a static batch of {shape[0]}; expected device.batch={self.batch} "
                             "(prepare the file with this device)")
        return Loaded(run=_runner(method, shape, path.name, generation, int(self.threads)), input_shape=shape)

    def _method(self, path: Path) -> Any:
        """The file's ``forward`` method, loaded (its XNNPACK delegate initialised on the current pool)."""
        lines: list[str] = []
        try:
            with _quiet(lines):
                from executorch.runtime import Runtime

                return Runtime.get().load_program(path).load_method("forward")
        except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError or ValueError by cause
            raise ValueError(f"{str(path)!r} does not load in {self.runtime} ({_reason(e, lines)}); expected a "
                             ".pte file written by this device (prepare it again, or copy the kit again)") from None


def _runner(method: Any, shape: tuple[int, ...], name: str, generation: int, threads: int
            ) -> Callable[[np.ndarray], np.ndarray]:
    """``run(x)``: execute the method on ``x`` (no copy in), the logits out (a fresh tensor per call). An input
    of k times the file's static batch runs in k calls (a parity check on more images than the timed batch)."""
    import torch

    execute, from_numpy = method.execute, torch.from_numpy

    def run(x: np.ndarray) -> np.ndarray:
        if _POOL["generation"] != generation:
            raise ValueError(f"{name} was loaded on a {threads}-thread ExecuTorch threadpool that has since been "
                             f"resized to {_POOL['threads']} threads by another device; expected it loaded again")
        if x.shape == shape:
            return execute([from_numpy(x)])[0].numpy()
        b = shape[0]
        if x.ndim != len(shape) or x.shape[1:] != shape[1:] or x.shape[0] % b:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit {name}'s static input {shape}; expected "
                             f"(k*{b}, {', '.join(map(str, shape[1:]))})")
        return np.concatenate([run(np.ascontiguousarray(x[i:i + b])) for i in range(0, x.shape[0], b)])

    return run
