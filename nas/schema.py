"""Typed schemas of hwnas's config (Hydra ConfigStore): composition itself rejects a value of the wrong type
(``seed=1.5``, ``train.epochs=ten``) and a key that does not exist, before any stage runs; the stages'
``validate`` then check ranges and choices. Registered by the config package (``conf/__init__.py``), so every
way of composing ``config`` (the CLI, ``hydra.compose`` in a notebook or a test) gets them.

Written without ``from __future__ import annotations``: OmegaConf reads these annotations at run time.
"""

from dataclasses import dataclass, field
from typing import Any

AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64  # global batch: split over the ranks of a torchrun job
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-5
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.1
    n_random: int = 2
    kd_weight: float = 1.0
    kd_temperature: float = 1.0
    augment_shift: int = 2
    augment_flip: bool = False  # random left-right mirroring (clothes, objects; not digits)
    grad_clip: float = 5.0
    eval_every: int = 0  # epochs between BN-recalibrated val checks of the largest subnet; 0 = only at the end
    seed: int = 0
    threads: Any = 0  # 0 = leave torch's default; auto = the CPUs free at each epoch start; or a positive int
    device: str = "auto"  # auto = cuda when available, else cpu
    amp: str = "auto"  # auto = fp16 autocast + grad scaling on CUDA, off on CPU; bf16 = bfloat16 autocast
    progressive: bool = False  # progressive shrinking: the space's phases (e.g. kernel -> depth -> expand)
    progressive_fractions: list[float] | None = None  # share of the epochs per phase; None = equal shares
    checkpoint_every_steps: int = 0  # mid-epoch checkpoints every N steps (0 = off)
    checkpoint_every_s: float = 120.0  # ... and/or every N seconds (0 = off); epoch ends always checkpoint
    stop_after_steps: int = 0  # pause (checkpoint, then TrainingPaused) after N steps of this invocation
    import_from: str | None = None  # a published supernet file imported instead of training (docs/guides/published-supernets.md)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"train.{name}={getattr(self, name)} is invalid; expected a positive integer")
        if self.lr <= 0:
            raise ValueError(f"train.lr={self.lr} is invalid; expected > 0")
        for name in ("n_random", "checkpoint_every_steps", "checkpoint_every_s", "stop_after_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}={getattr(self, name)} is invalid; expected >= 0")
        if self.amp not in AMP_MODES:
            raise ValueError(f"train.amp={self.amp!r} is invalid; expected one of {list(AMP_MODES)}")
        if self.progressive_fractions is not None:
            fr = [float(f) for f in self.progressive_fractions]
            if not fr or min(fr) <= 0:
                raise ValueError(f"train.progressive_fractions={fr} is invalid; expected positive shares, one per phase")
            self.progressive_fractions = fr




@dataclass
class MeasureSchema:
    n_archs: int = 40
    exporter: str = "legacy"


@dataclass
class CalibrateSchema:
    enabled: bool = False
    source: list[str] = field(default_factory=list)
    devices: list[str] | None = None
    budget: int = 20
    selection: str = "meta"
    seed: int = 0
    predictor: Any = None  # a _target_ node: FewShotLatencyPredictor's settings


@dataclass
class SearchSchema:
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "latency_ms"])
    constraints: dict[str, float | None] = field(default_factory=dict)  # open: latency_ms_<device> too
    latency_predictors: dict[str, str] = field(default_factory=dict)
    budget: int = 20
    storage: str | None = None
    study_name: str | None = None
    seed: int = 0
    strategy: Any = None  # conf/search/<name>.yaml: a _target_ node checked by nas.search.build_strategy


@dataclass
class ExportSchema:
    exporter: str = "dynamo"
    parity_batch: int = 8
    parity_atol: float = 1e-4
    fallback_to_legacy: bool = True


def device_schema(cls: type) -> type:
    """The typed schema of a device option, derived from its Device class (``_target_`` naming the class, then
    every setting with the class's type and default): keys and types here, ranges and choices in the device's
    ``validate()``; a setting added to the class is a key of its configs without a second list to keep."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    keys: list[tuple[str, Any, Any]] = [("_target_", str, field(default=f"{cls.__module__}.{cls.__qualname__}"))]
    for f in dataclasses.fields(cls):
        default = (field(default_factory=f.default_factory) if f.default is dataclasses.MISSING
                   else field(default=f.default))
        keys.append((f.name, hints[f.name], default))
    return dataclasses.make_dataclass(f"{cls.__name__}Schema", keys)


def _device_schemas() -> dict[str, type]:
    from latency_luts.device import (
        ExecuTorchDevice,
        LiteRTDevice,
        OnnxRuntimeDevice,
        OpenVINODevice,
        RemoteDevice,
        TorchDevice,
    )

    return {"onnxruntime_schema": device_schema(OnnxRuntimeDevice), "remote_schema": device_schema(RemoteDevice),
            "litert_schema": device_schema(LiteRTDevice), "openvino_schema": device_schema(OpenVINODevice),
            "torch_schema": device_schema(TorchDevice), "executorch_schema": device_schema(ExecuTorchDevice)}


DEVICE_SCHEMAS = _device_schemas()


@dataclass
class HwnasSchema:
    """The whole run config. Groups whose options differ in their keys (search space, data, predictor) are
    checked by what they build (``_target_``) and by the stages' ``validate``; each device option names its
    schema (:data:`DEVICE_SCHEMAS`) in its defaults list."""

    seed: int = 0
    worker: int = 0  # this process's index among workers sharing one run directory (a multirun sweeps it)
    threads: Any = "auto"
    stages: list[str] = field(default_factory=list)
    force: list[str] = field(default_factory=list)
    run_dir: str = "."
    measure: MeasureSchema = field(default_factory=MeasureSchema)
    calibrate: CalibrateSchema = field(default_factory=CalibrateSchema)
    search: SearchSchema = field(default_factory=SearchSchema)
    export: ExportSchema = field(default_factory=ExportSchema)
    train: TrainConfig = field(default_factory=TrainConfig)
    search_space: Any = None
    data: Any = None
    device: Any = None
    predictor: Any = None


def register() -> None:
    """Store the schema as ``hwnas_schema`` (conf/config.yaml lists it first in its defaults)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="hwnas_schema", node=HwnasSchema)
    for name, node in DEVICE_SCHEMAS.items():  # the device options' schemas (their defaults lists name them)
        cs.store(group="device", name=name, node=node)
