"""The Device: one target whose latencies a run measures, built from ``conf/device/<name>.yaml`` by ``_target_``.

A device is an inference engine on a machine (or a kit timed elsewhere). What differs between engines lives in
four hooks of a subclass: :meth:`Device.export` (a torch module -> the engine's artefact file),
:meth:`Device.quantize` (int8, where the engine has it), :meth:`Device.load` (an artefact -> a callable) and
:meth:`Device.engine_version`. What is the same for every engine lives here, once: preparing the deliverable
(:meth:`prepare`), checking it against torch (:meth:`check_parity`, :meth:`agreement`), timing with the
interleaved-rounds protocol of :func:`latency_luts.measure.time_interleaved` in a fresh process
(:meth:`measure`: minimum, spread, load flags, warm-up), and the profile recorded with every number
(:meth:`profile`). The file :meth:`prepare` writes is the file that is timed and the file that is delivered.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from latency_luts.measure import Measurement, describe_load, time_interleaved
from latency_luts.profile import DeviceProfile

log = logging.getLogger(__name__)

_WORKER = "import sys; from latency_luts.device.base import run_job; run_job(sys.argv[1], sys.argv[2])"


class NeedsMeasurement(Exception):
    """A device that times elsewhere needs a kit timed before the pipeline can go on (the stage is left
    unfinished; the message says what to run where)."""


@dataclass(frozen=True)
class Loaded:
    """An artefact loaded into the engine: ``run(x)`` returns the first output for input ``x``;
    ``input_shape`` is the input the device times it on (dynamic axes filled with the device's batch)."""

    run: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, ...]
    dynamic_batch: bool = False  # run() takes any batch size (else exactly input_shape[0] images)


@dataclass(frozen=True)
class KitRequest:
    """Where and how a device that times elsewhere writes the kit of the models it lacks timings for:
    the kit folder, the space name its rows carry, each model's input shape, and ``key`` (an arch string ->
    the value rows of a timing file are matched on, e.g. the space's parsed architecture)."""

    dir: Path
    space: str
    input_shapes: Sequence[tuple[int, ...]]
    key: Callable[[str], Any] = str


def _check_int(key: str, val: Any, lo: int) -> None:
    if not isinstance(val, int) or isinstance(val, bool) or val < lo:
        want = "a positive integer" if lo == 1 else f"an integer >= {lo}"
        raise ValueError(f"device.{key}={val!r} is invalid; expected {want}")


@dataclass(kw_only=True)
class Device(ABC):
    """Settings every device has; a subclass adds its engine's settings as further fields."""

    name: str = "local_cpu"
    threads: int = 1
    batch: int = 1
    precision: str = "fp32"
    warmup: int = 5
    rounds: int = 20
    cv_threshold: float = 0.05
    max_extra_rounds: int = 40

    runtime: ClassVar[str] = ""  # the engine, recorded in the profile, e.g. onnxruntime-cpu
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    quantized: ClassVar[tuple[str, ...]] = ("int8",)  # precisions whose artefact is its own (quantised) file;
    # the others (fp32, an engine's bf16 hint) run the fp32 artefact
    suffix: ClassVar[str] = ".onnx"  # the artefact's file name suffix (the main file, see artefact_files)
    requires: ClassVar[tuple[str, ...]] = ()  # Python modules the engine needs on the machine that prepares/times
    extra: ClassVar[str] = ""  # the pip extra that installs them: pip install -e '.[<extra>]'
    # parity tolerance (max abs diff vs fp32 torch) at a reduced precision the engine runs at; fp32 uses
    # export.parity_atol. int8 is checked by top-1 agreement of its fp32 source instead.
    tolerances: ClassVar[dict[str, float]] = {}

    # -- the engine's hooks ------------------------------------------------------------------------------
    @abstractmethod
    def engine_version(self) -> str:
        """The engine's version on the machine that times."""

    @abstractmethod
    def export(self, module: Any, input_shape: tuple[int, ...], path: Path, exporter: str) -> None:
        """Write ``module`` (a static torch module in eval mode) as the engine's fp32 artefact at ``path``."""

    @abstractmethod
    def load(self, artefact: str | Path) -> Loaded:
        """The artefact loaded into the engine with this device's settings."""

    def quantize(self, fp32: Path, path: Path, calibration: np.ndarray) -> None:
        """Write the int8 artefact of ``fp32`` at ``path``, calibrated on ``calibration`` (N, C, H, W)."""
        raise ValueError(f"device.precision=int8 is not available for engine {self.runtime}; expected one of "
                         f"{list(self.precisions)}")

    # -- what every device shares ------------------------------------------------------------------------
    def artefact_files(self, path: str | Path) -> list[Path]:
        """Every file that makes up the artefact at ``path`` (the main file first): what is copied, delivered
        and sent in a kit together. One file by default; OpenVINO's IR is ``.xml`` + ``.bin``."""
        return [Path(path)]

    def parity_atol(self, fp32_atol: float) -> float:
        """The max abs difference vs torch a delivered file may have at this device's precision."""
        return float(self.tolerances.get(self.precision, fp32_atol))

    def check_installed(self) -> None:
        """One-line ValueError naming the extra to install when the engine's Python package is absent."""
        import importlib.util

        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise ValueError(f"device {self.name!r} runs on {self.runtime}, whose Python package {mod!r} is not "
                                 f"installed; expected it installed: pip install -e '.[{self.extra}]' (from the "
                                 "hwnas checkout)")

    def validate(self) -> None:
        """One-line ValueError naming the first bad setting and what was expected."""
        self.check_installed()
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"device.name={self.name!r} is invalid; expected a non-empty device name")
        for key, lo in (("threads", 1), ("batch", 1), ("rounds", 1), ("warmup", 0), ("max_extra_rounds", 0)):
            _check_int(key, getattr(self, key), lo)
        cv = self.cv_threshold
        if isinstance(cv, bool) or not isinstance(cv, int | float) or not cv >= 0:
            raise ValueError(f"device.cv_threshold={cv!r} is invalid; expected a number >= 0")
        if self.precision not in self.precisions:
            raise ValueError(f"device.precision={self.precision!r} is invalid; expected one of "
                             f"{list(self.precisions)} ({self.runtime})")

    def spec(self) -> dict[str, Any]:
        """``_target_`` and settings: what rebuilds this device (in the timing process, or from a config)."""
        return {"_target_": f"{type(self).__module__}.{type(self).__qualname__}", **dataclasses.asdict(self)}

    def measurement_files(self) -> list[str]:
        """Timing files made elsewhere that this device reads instead of timing here (none by default)."""
        return []

    def profile(self) -> dict[str, Any]:
        """Where and how this device's numbers are measured: recorded with every number."""
        return DeviceProfile(self.name, self.runtime, self.engine_version(), int(self.threads), int(self.batch),
                             self.precision).as_dict()

    def fp32_companion(self, path: str | Path) -> Path:
        """Where :meth:`prepare` keeps the fp32 artefact an int8 one was quantised from."""
        path = Path(path)
        return path.with_name(f"{path.stem}.fp32{path.suffix}")

    def prepare(self, module: Any, input_shape: tuple[int, ...], path: str | Path, *, exporter: str = "legacy",
                fallback: str | None = None, calibration: np.ndarray | None = None) -> Path:
        """The deliverable artefact of ``module`` at ``path``: the file this device times and a run delivers.
        int8 precision quantises the fp32 export (kept at :meth:`fp32_companion`) on ``calibration`` images.
        ``fallback``: an exporter to retry with when ``exporter`` fails."""
        path = Path(path)
        quantized = self.precision in self.quantized
        if quantized and calibration is None:
            raise ValueError(f"device.precision={self.precision} needs calibration images; expected an (N, C, H, W) "
                             "array")
        fp32 = self.fp32_companion(path) if quantized else path
        try:
            self.export(module, input_shape, fp32, exporter)
        except Exception as e:  # noqa: BLE001 - exporters raise their own types, which vary between releases
            if fallback is None or fallback == exporter:
                raise
            log.warning("exporter %s failed for %s (%s); using %s", exporter, path.name,
                        (str(e).strip().splitlines() or [type(e).__name__])[0], fallback)
            self.export(module, input_shape, fp32, fallback)
        if quantized:
            self.quantize(fp32, path, np.asarray(calibration, dtype=np.float32))
        return path

    def check_parity(self, module: Any, artefact: str | Path, x: Any) -> float:
        """Max abs difference between torch (eval) and this device's engine on input tensor ``x``."""
        ref, out = self._outputs(module, artefact, x)
        return float(np.abs(out - ref).max())

    def agreement(self, module: Any, artefact: str | Path, x: Any) -> float:
        """Share of inputs on which the artefact and the torch module predict the same class."""
        ref, out = self._outputs(module, artefact, x)
        return float((out.argmax(1) == ref.argmax(1)).mean())

    def _outputs(self, module: Any, artefact: str | Path, x: Any) -> tuple[np.ndarray, np.ndarray]:
        import torch

        module.eval()
        with torch.no_grad():
            ref = module(x).numpy()
        loaded = self.load(artefact)
        xs, b = np.ascontiguousarray(x.numpy(), dtype=np.float32), int(loaded.input_shape[0])
        if loaded.dynamic_batch or len(xs) == b:
            out = loaded.run(xs)
        else:  # a static-batch artefact (the device's batch) runs the images b at a time, the last chunk padded
            pad = (-len(xs)) % b
            xp = np.concatenate([xs, np.zeros((pad, *xs.shape[1:]), dtype=np.float32)]) if pad else xs
            out = np.concatenate([loaded.run(np.ascontiguousarray(xp[i:i + b])) for i in range(0, len(xp), b)])
            out = out[:len(xs)]
        if out.shape != ref.shape:
            raise ValueError(f"{self.runtime} output shape {out.shape} differs from torch's {ref.shape} for {artefact}")
        return ref, out

    def measure(self, artefacts: Sequence[str | Path], names: Sequence[str] | None = None, *, seed: int = 0,
                progress: bool = False, kit: KitRequest | None = None) -> list[Measurement]:
        """Time every artefact together with the interleaved-rounds protocol, in a fresh process (limits drift
        and memory growth between passes); one Measurement each, named by ``names`` (default: file stems).
        A pass on a loaded machine is logged as a warning and flagged in each row's ``load``. ``kit`` is for
        devices that time elsewhere; a local device does not need it."""
        paths = [str(p) for p in artefacts]
        if not paths:
            raise ValueError("no artefacts given to measure; expected at least one file")
        names = list(names) if names is not None else [Path(p).stem for p in paths]
        return measure_together([(self, paths, names)], seed=seed, progress=progress)[0]

    def measure_here(self, artefacts: Sequence[str | Path], names: Sequence[str], seed: int = 0,
                     progress: bool = False) -> list[Measurement]:
        """:meth:`measure` in this process (what the fresh process runs)."""
        rng = np.random.default_rng(seed)
        loaded = [self.load(p) for p in artefacts]
        feeds = [rng.standard_normal(m.input_shape).astype(np.float32) for m in loaded]
        runs = [functools.partial(m.run, f) for m, f in zip(loaded, feeds, strict=True)]
        return time_interleaved(runs, list(names), rng, warmup=int(self.warmup), rounds=int(self.rounds),
                                cv_threshold=float(self.cv_threshold), max_extra_rounds=int(self.max_extra_rounds),
                                progress=progress)


# The engines a device can run on, by the name a user gives (device.engine of device=remote, hwnas-measure
# --engine, a kit's manifest): the Device class that prepares, loads and times its artefacts.
ENGINES: dict[str, str] = {
    "onnxruntime": "latency_luts.device.ort.OnnxRuntimeDevice",
    "openvino": "latency_luts.device.openvino.OpenVINODevice",
    "litert": "latency_luts.device.litert.LiteRTDevice",
    "executorch": "latency_luts.device.executorch.ExecuTorchDevice",
    "torch": "latency_luts.device.torch_eager.TorchDevice",
}


def engine_class(engine: Any) -> type[Device]:
    """The Device class of engine ``engine`` (a key of :data:`ENGINES`), or a one-line ValueError."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"engine {engine!r} is unknown; expected one of {sorted(ENGINES)}")
    return device_class(ENGINES[engine])


def engine_of(cls: type[Device]) -> str:
    """The :data:`ENGINES` name of a Device class (or of the engine class it derives from)."""
    for key in ENGINES:
        if issubclass(cls, engine_class(key)):
            return key
    raise ValueError(f"{cls.__name__} is not one of the engines {sorted(ENGINES)}")


def device_class(target: Any) -> type[Device]:
    """The Device subclass ``target`` (a dotted name) names, or a one-line ValueError."""
    want = "expected a Device class such as latency_luts.device.OnnxRuntimeDevice"
    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"device._target_={target!r} is invalid; {want}")
    module, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"device._target_={target!r} is invalid ({type(e).__name__}: {e}); {want}") from None
    if not (isinstance(cls, type) and issubclass(cls, Device)) or inspect.isabstract(cls):
        raise ValueError(f"device._target_={target!r} is invalid: it is not a concrete Device class; {want}")
    return cls


def measure_together(groups: Sequence[tuple[Device, Sequence[str | Path], Sequence[str]]], *, seed: int = 0,
                     progress: bool = False) -> list[list[Measurement]]:
    """Time the artefacts of several devices (e.g. one per engine) in one fresh process, interleaved in the same
    rounds with the first device's protocol settings, so that their latencies are comparable; one list of
    Measurements per group, in order. What :meth:`Device.measure` runs with one group."""
    if not groups or any(not paths for _, paths, _ in groups):
        raise ValueError("no artefacts given to measure; expected at least one file per device")
    with tempfile.TemporaryDirectory(prefix="hwnas-job-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"groups": [{"device": dev.spec(), "artefacts": [str(p) for p in paths],
                                               "names": list(names)} for dev, paths, names in groups],
                                   "seed": int(seed), "progress": bool(progress)}))
        proc = subprocess.run([sys.executable, "-c", _WORKER, str(job), str(out)], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=None if progress else subprocess.PIPE, text=True)
        result = json.loads(out.read_text()) if out.is_file() else None
        if isinstance(result, dict):  # the timing process refused an input: its one-line error
            raise ValueError(result["error"])
        if proc.returncode != 0 or result is None:
            tail = (proc.stderr or "").strip().splitlines()[-1:]
            raise RuntimeError(f"measurement worker failed with exit code {proc.returncode}: {tail}")
    out_ms = [[Measurement(**r) for r in rows] for rows in result]
    first = groups[0][0]
    note = describe_load([m for ms in out_ms for m in ms], int(first.threads))
    if note:
        log.warning(note)
    return out_ms


def _time_groups(groups: list[tuple[Device, list[str], list[str]]], seed: int, progress: bool) -> list[list[Measurement]]:
    """The timing process's work: load every group's artefacts with its device, time them all together."""
    if len(groups) == 1:
        dev, paths, names = groups[0]
        return [dev.measure_here(paths, names, seed=seed, progress=progress)]
    rng = np.random.default_rng(seed)
    runs, keys, sizes = [], [], []
    for g, (dev, paths, names) in enumerate(groups):
        loaded = [dev.load(p) for p in paths]
        feeds = [rng.standard_normal(m.input_shape).astype(np.float32) for m in loaded]
        runs += [functools.partial(m.run, f) for m, f in zip(loaded, feeds, strict=True)]
        keys += [f"{g}\t{n}" for n in names]
        sizes.append(len(paths))
    first = groups[0][0]
    ms = time_interleaved(runs, keys, rng, warmup=int(first.warmup), rounds=int(first.rounds),
                          cv_threshold=float(first.cv_threshold), max_extra_rounds=int(first.max_extra_rounds),
                          progress=progress)
    out, at = [], 0
    for n in sizes:
        out.append([dataclasses.replace(m, name=m.name.split("\t", 1)[1]) for m in ms[at:at + n]])
        at += n
    return out


def run_job(job_path: str, out_path: str) -> None:
    """The timing process: rebuild each device from its spec, time, write the rows as JSON."""
    job = json.loads(Path(job_path).read_text())
    groups = []
    for g in job["groups"]:
        spec = dict(g["device"])
        groups.append((device_class(spec.pop("_target_"))(**spec), list(g["artefacts"]), list(g["names"])))
    try:
        ms = _time_groups(groups, job["seed"], job["progress"])
    except ValueError as e:  # a file that does not load, a bad input: handed back as one line
        Path(out_path).write_text(json.dumps({"error": str(e)}))
        return
    Path(out_path).write_text(json.dumps([[m.as_dict() for m in g] for g in ms]))
