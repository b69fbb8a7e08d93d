"""OpenVINO on this machine's CPU: IR artefacts (``.xml`` + ``.bin``) converted from the ONNX export, fp32 or bf16.

The precision is a compile-time hint, set explicitly either way: OpenVINO's CPU plugin otherwise runs fp32 IR in
bf16 on CPUs with AVX-512-BF16/AMX (about 1% of the logits' scale off torch instead of ~1e-7). The IR itself stays
fp32 (``compress_to_fp16=False``): at bf16 the device runs (and delivers) that same IR with the bf16 hint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from latency_luts.device.base import Device, Loaded
from latency_luts.files import temp_beside

# the CPU plugin's INFERENCE_PRECISION_HINT for each precision of this device
_HINTS = {"fp32": "f32", "bf16": "bf16"}


def _first_line(e: BaseException) -> str:
    """The line of an OpenVINO error that says what is wrong (it opens with where it was raised)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return (said or lines or [type(e).__name__])[-1 if said else 0][:200]


def _check_ir(path: Path) -> None:
    """Raise unless ``path`` is XML whose root is an IR ``<net>`` with its ``.bin`` beside it: checked before
    OpenVINO reads it, as ``read_model`` tries every frontend on a file it cannot parse and each writes to
    stderr."""
    from xml.etree.ElementTree import iterparse

    for _, elem in iterparse(path, events=("start",)):
        if elem.tag != "net":
            raise ValueError(f"its root element is <{elem.tag[:40]}>, not an IR <net>")
        break
    if not path.with_suffix(".bin").is_file():
        raise ValueError(f"{path.with_suffix('.bin').name} is missing")


def _replace_together(moves: list[tuple[Path, Path]]) -> None:
    """Rename each written temporary ``(tmp, final)`` of an IR over its final name, the ``.bin`` before the
    ``.xml`` (a reader that finds the new ``.xml`` finds its weights); on a failure the files already renamed
    are removed, so the pair appears together or not at all."""
    placed: list[Path] = []
    try:
        for tmp, final in sorted(moves, key=lambda m: m[1].suffix != ".bin"):
            os.replace(tmp, final)
            placed.append(final)
    except BaseException:
        for p in placed:
            p.unlink(missing_ok=True)
        raise


@dataclass(kw_only=True)
class OpenVINODevice(Device):
    """OpenVINO's CPU plugin: latency mode, one stream, this device's threads and precision hint."""

    runtime: ClassVar[str] = "openvino-cpu"
    requires: ClassVar[tuple[str, ...]] = ("openvino",)
    extra: ClassVar[str] = "openvino"
    suffix: ClassVar[str] = ".xml"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16")
    quantized: ClassVar[tuple[str, ...]] = ()  # bf16 is a hint on the fp32 IR, not a file of its own
    # bf16's error is about 1% of the logits' scale (8 mantissa bits through ~20 layers): worst max abs diff vs
    # torch measured 1.2e-4 on the conformance suite's one-epoch digits subnets (logits < 0.05), 1.4e-1 on a
    # six-epoch one whose logits reach 16; 0.25 passes trained classifiers' logits (|z| <= ~20) and still
    # fails a wrong graph, whose error is of the logits' own size
    tolerances: ClassVar[dict[str, float]] = {"bf16": 0.25}

    def validate(self) -> None:
        super().validate()
        if self.precision == "bf16":
            import openvino as ov

            caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in caps:
                raise ValueError(f"device.precision='bf16' is invalid on this CPU (OpenVINO reports {list(caps)}); "
                                 "expected fp32, or a CPU with bf16 support (AVX-512-BF16 or AMX)")

    def engine_version(self) -> str:
        import openvino as ov

        return str(ov.__version__)

    def config(self) -> dict[str, Any]:
        """The CPU plugin properties every compiled model of this device is made with."""
        return {"INFERENCE_NUM_THREADS": int(self.threads), "INFERENCE_PRECISION_HINT": _HINTS[self.precision],
                "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}

    def artefact_files(self, path: str | Path) -> list[Path]:
        path = Path(path)
        return [path, path.with_suffix(".bin")]

    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        """ONNX (dynamic batch) -> OpenVINO IR; the ``.xml`` and its ``.bin`` both appear, or neither does."""
        import openvino as ov

        from latency_luts.onnx_export import export_onnx

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx_tmp = temp_beside(path, ".onnx")
        xml_tmp = temp_beside(path, ".xml")
        try:
            export_onnx(module, input_shape, onnx_tmp, exporter=exporter, dynamic_batch=True)
            # the ONNX frontend directly: convert_model would also start usage telemetry (forked processes that
            # try the network) on every call
            model = ov.Core().read_model(str(onnx_tmp))
            ov.save_model(model, str(xml_tmp), compress_to_fp16=False)
            _replace_together([(xml_tmp, path), (xml_tmp.with_suffix(".bin"), path.with_suffix(".bin"))])
        finally:
            for p in (onnx_tmp, xml_tmp, xml_tmp.with_suffix(".bin")):
                p.unlink(missing_ok=True)

    def load(self, artefact: str | Path) -> Loaded:
        import openvino as ov

        core = ov.Core()
        try:
            _check_ir(Path(artefact))
            model = core.read_model(str(artefact))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError or its own types, message multi-line
            raise ValueError(f"OpenVINO IR {str(artefact)!r} does not load in {self.runtime} ({_first_line(e)}); "
                             "expected an .xml with its .bin beside it (prepare it again, or copy the kit again)"
                             ) from None
        if len(model.inputs) != 1:
            raise ValueError(f"OpenVINO IR {str(artefact)!r} has {len(model.inputs)} inputs; expected one image input")
        pshape = model.input(0).get_partial_shape()
        shape = tuple(d.get_length() if d.is_static else int(self.batch) for d in pshape)
        model.reshape(list(shape))
        compiled = core.compile_model(model, "CPU", self.config())
        for key, want in self.config().items():  # the plugin may drop a setting it cannot honour: say so
            got = compiled.get_property(key)
            got = str(got.get_type_name() if hasattr(got, "get_type_name") else got)
            if got != str(want):
                hint = (f"device.threads at most this machine's {os.cpu_count()} CPUs" if key.endswith("THREADS")
                        else f"a CPU that runs device.precision={self.precision!r}")
                raise ValueError(f"OpenVINO compiled {Path(artefact).name} with {key}={got}, not {want} as the "
                                 f"device asks; expected {hint}")
        request = compiled.create_infer_request()

        def run(x: Any) -> Any:
            request.infer([x], share_inputs=True)
            return request.get_output_tensor(0).data.copy()

        return Loaded(run=run, input_shape=shape)
