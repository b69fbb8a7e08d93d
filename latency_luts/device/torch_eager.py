"""Eager PyTorch on this machine's CPU, the baseline every other engine is compared with: ``torch.export`` programs
(``.pt2``), run as the exported graph module under ``torch.inference_mode()``, fp32.

``torch.export.load`` is not a data-only loader (its own docs: never load a ``.pt2`` from an untrusted source):
pickled tensor subclasses and constants are read with ``torch.load(weights_only=False)`` or ``pickle.loads``,
sample inputs fall back to ``weights_only=False``, symbolic shapes are parsed by ``sympy.sympify`` (``eval``),
guard strings become code, and compiled AOTInductor libraries are loaded. :func:`check_archive` therefore admits
only what an export of a static subnet contains (raw tensor payloads, sample inputs that load ``weights_only``,
a graph of ATen operators without symbolic shapes or guards) and refuses everything else before torch reads it.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from latency_luts.device.base import Device, Loaded
from latency_luts.files import write_bytes_atomic

# what a .pt2 of a static subnet holds, below its archive's root folder
_MEMBERS = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
_PREFIXES = ("models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")
_TARGETS = ("torch.ops.aten.", "_operator.getitem")


def _refuse(path: Path, why: str) -> ValueError:
    return ValueError(f"torch program {str(path)!r} does not load in torch-cpu ({why}); expected a .pt2 this "
                      "project exported with torch.export.save (prepare it again, or copy the kit again)")


def _walk(obj: Any) -> Any:
    """Every dict and string in a parsed JSON document."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            yield o
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, str):
            yield o


def _check_program(path: Path, name: str, doc: Any) -> None:
    for key in ("guards_code", "range_constraints"):
        if doc.get(key):
            raise _refuse(path, f"{name} has {key}; expected a static program")
    for o in _walk(doc):
        if isinstance(o, str):
            if "\r" in o:
                raise _refuse(path, f"{name} has a carriage return in a string")
        elif "expr_str" in o:
            raise _refuse(path, f"{name} has a symbolic expression; expected static shapes")
        elif isinstance(o.get("target"), str) and "outputs" in o and not o["target"].startswith(_TARGETS):
            raise _refuse(path, f"{name} calls {o['target'][:60]!r}; expected ATen operators only")


def _check_payloads(path: Path, name: str, doc: Any) -> None:
    for fqn, meta in dict(doc.get("config", {})).items():
        if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
            raise _refuse(path, f"{name} stores {fqn!r} as a pickled object; expected raw tensors")


def check_archive(path: str | Path) -> None:
    """A one-line ValueError unless ``path`` is a ``.pt2`` torch can load without running code from the file."""
    import torch

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            root = names[0].split("/", 1)[0] + "/" if names else ""
            for n in names:
                rel = n[len(root):] if n.startswith(root) else None
                if rel is None or not (rel in _MEMBERS or rel.startswith(_PREFIXES)) or rel.endswith(".pkl"):
                    raise _refuse(path, f"unexpected member {n[:80]!r}")
                if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt"):
                    raise _refuse(path, f"{rel} is a legacy pickled payload")
                if rel.startswith("models/") and rel.endswith(".json"):
                    _check_program(path, rel, json.loads(z.read(n)))
                elif rel.endswith("_config.json"):
                    _check_payloads(path, rel, json.loads(z.read(n)))
                elif rel.startswith("data/sample_inputs/"):
                    torch.load(io.BytesIO(z.read(n)), weights_only=True)
            if f"{root}models/model.json" not in names:
                raise _refuse(path, "no models/model.json")
    except Exception as e:  # noqa: BLE001 - zipfile, json and the weights-only unpickler raise many types
        if isinstance(e, ValueError) and "does not load in torch-cpu" in str(e):
            raise
        raise _refuse(path, (str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from None


@dataclass(kw_only=True)
class TorchDevice(Device):
    """The exported subnet run by eager PyTorch with this device's intra-op threads."""

    runtime: ClassVar[str] = "torch-cpu"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    extra: ClassVar[str] = ""  # torch is a dependency of hwnas itself
    suffix: ClassVar[str] = ".pt2"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)

    def check_installed(self) -> None:
        import importlib.util

        for mod in self.requires:
            if importlib.util.find_spec(mod) is None:
                raise ValueError(f"device {self.name!r} runs on {self.runtime}, whose Python package {mod!r} is not "
                                 "installed; expected it installed with hwnas itself: install torch first (README "
                                 "'Install'), then pip install -e . (from the hwnas checkout)")

    def engine_version(self) -> str:
        import torch

        return str(torch.__version__)

    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        """``torch.export`` of ``module`` on an input of ``input_shape`` (static), saved atomically at ``path``."""
        import torch

        for name in ("torch.export", "torch._dynamo", "torch._export"):  # graph passes log at INFO
            logging.getLogger(name).setLevel(logging.WARNING)
        example = torch.randn(*input_shape)
        with torch.no_grad():
            program = torch.export.export(module.eval(), (example,))
        buf = io.BytesIO()
        torch.export.save(program, buf)
        write_bytes_atomic(path, buf.getvalue())

    def load(self, artefact: str | Path) -> Loaded:
        import torch

        check_archive(artefact)
        try:
            program = torch.export.load(str(artefact))
            module = program.module()
        except Exception as e:  # noqa: BLE001 - torch's deserializer raises many types
            raise _refuse(Path(artefact), (str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from None
        args = program.example_inputs[0] if program.example_inputs else ()
        if len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise _refuse(Path(artefact), f"{len(args)} example inputs; expected one image tensor")
        torch.set_num_threads(int(self.threads))

        def run(x: Any) -> Any:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).numpy()

        return Loaded(run=run, input_shape=tuple(args[0].shape))
