"""FBNet architectures (HW-NAS-Bench's FBNet space) and their canonical strings.

22 searchable layers in stages of ``STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)`` with output channels
``(16, 24, 32, 64, 112, 184, 352)`` after a 16-channel stem. Each layer picks one op from :data:`OPS`
(``k<kernel>_e<expand>[_g<groups>]`` inverted residual blocks, or ``skip``). The canonical string is the 22 op
names joined by commas, e.g. ``k3_e1,k5_e6,skip,...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STEM_CHANNELS = 16
CIFAR100_STRIDES = (1, 1, 2, 2, 1, 2, 1)
IMAGENET_STRIDES = (1, 2, 2, 2, 1, 2, 1)
N_LAYERS = sum(STAGE_LAYERS)
ONEHOT_WIDTH = N_LAYERS * len(OPS)
_OP_INDEX = {o: i for i, o in enumerate(OPS)}


def layer_stage(layer: int) -> int:
    """Stage index (0..6) of a flat layer index (0..21)."""
    if not 0 <= layer < N_LAYERS:
        raise ValueError(f"fbnet layer {layer} is out of range; expected 0..{N_LAYERS - 1}")
    return int(np.searchsorted(np.cumsum(STAGE_LAYERS), layer, side="right"))


@dataclass(frozen=True)
class FBNetArchitecture:
    """One FBNet network: ``ops[l]`` is the op name of searchable layer ``l``."""

    ops: tuple[str, ...]
    index: tuple[int, ...] = field(init=False, repr=False, compare=False)  # op index into OPS, per layer

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(str(o) for o in self.ops))
        if len(self.ops) != N_LAYERS:
            raise ValueError(f"fbnet arch needs {N_LAYERS} layer ops, got {len(self.ops)}")
        for o in self.ops:
            if o not in _OP_INDEX:
                raise ValueError(f"fbnet op {o!r} is invalid; expected one of {list(OPS)}")
        object.__setattr__(self, "index", tuple(_OP_INDEX[o] for o in self.ops))

    @classmethod
    def trusted(cls, index: Sequence[int]) -> FBNetArchitecture:
        """An architecture from 22 op indices already known to be valid (a space's genome decoder), without the
        constructor's checks: the inner search builds thousands per second."""
        self = object.__new__(cls)
        object.__setattr__(self, "index", tuple(index))
        object.__setattr__(self, "ops", tuple(OPS[i] for i in self.index))
        return self

    def to_string(self) -> str:
        return ",".join(self.ops)

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str) -> FBNetArchitecture:
        parts = [p.strip() for p in str(text).strip().split(",")]
        if len(parts) != N_LAYERS:
            raise ValueError(f"fbnet arch {text!r} has {len(parts)} ops; expected {N_LAYERS} comma-separated op names")
        for p in parts:
            if p not in OPS:
                raise ValueError(f"fbnet op {p!r} in {text!r} is invalid; expected one of {list(OPS)}")
        return cls(tuple(parts))

    @classmethod
    def from_index(cls, flat: Sequence[int]) -> FBNetArchitecture:
        """Architecture from 22 op indices into :data:`OPS`."""
        return cls(tuple(OPS[int(i)] for i in flat))


def op_indices(archs: Sequence[FBNetArchitecture]) -> np.ndarray:
    """``(n, 22)`` op indices into :data:`OPS`."""
    return np.array([a.index for a in archs], dtype=np.int64).reshape(len(archs), N_LAYERS)


def encode_onehot(archs: Sequence[FBNetArchitecture]) -> np.ndarray:
    """One-hot op per layer: ``(n, 22 * 9)`` float64, layer-major (column ``layer * 9 + op``)."""
    idx = op_indices(archs)
    x = np.zeros((len(archs), ONEHOT_WIDTH), dtype=np.float64)
    x[np.arange(len(archs))[:, None], np.arange(N_LAYERS)[None, :] * len(OPS) + idx] = 1.0
    return x


def _layer_shapes(strides: Sequence[int], input_size: int) -> list[tuple[int, int, int, int, int]]:
    """(stage, in_channels, out_channels, in_size, out_size) of every searchable layer."""
    shapes = []
    c_in, size = STEM_CHANNELS, input_size
    for s, (n, c_out, st) in enumerate(zip(STAGE_LAYERS, STAGE_CHANNELS, strides, strict=True)):
        for i in range(n):
            out = (size - 1) // (st if i == 0 else 1) + 1  # 'same'-padded conv output side
            shapes.append((s, c_in, c_out, size, out))
            c_in, size = c_out, out
    return shapes


def op_cost(op: str, c_in: int, c_out: int, size_in: int, size_out: int) -> tuple[float, float, float]:
    """Analytic (pointwise MACs, depthwise MACs, activation elements) of one inverted-residual op; skip = 0."""
    if op not in OPS:
        raise ValueError(f"fbnet op {op!r} is invalid; expected one of {list(OPS)}")
    if op == "skip":
        return 0.0, 0.0, 0.0
    parts = op.split("_")
    k, e = int(parts[0][1:]), int(parts[1][1:])
    g = int(parts[2][1:]) if len(parts) > 2 else 1
    mid = c_in * e
    pw = size_in**2 * c_in * mid / g + size_out**2 * mid * c_out / g
    dw = size_out**2 * mid * k * k
    act = size_in**2 * (c_in + mid) + size_out**2 * (mid + c_out)
    return float(pw), float(dw), float(act)


def encode_costs(archs: Sequence[FBNetArchitecture], dataset: str = "cifar100",
                 input_size: int | None = None) -> np.ndarray:
    """Analytic cost features: totals of (pointwise MACs, depthwise MACs, activations, non-skip layers) and the
    per-stage (pointwise MACs, depthwise MACs, activations); ``(n, 4 + 7 * 3)`` float64, in millions.

    ``dataset`` picks the macro-architecture: ``cifar100`` (32x32 input, stem stride 1) or ``imagenet``
    (224x224, stem stride 2); ``input_size`` overrides the input side.
    """
    table = _cost_table(dataset, input_size)
    idx = op_indices(archs)
    per_layer = table[np.arange(N_LAYERS)[None, :], idx]  # (n, 22, 3): pointwise, depthwise, activations (M)
    x = np.zeros((len(archs), 4 + len(STAGE_LAYERS) * 3), dtype=np.float64)
    x[:, :3] = per_layer.sum(1)
    x[:, 3] = (idx != len(OPS) - 1).sum(1)  # non-skip layers
    stage_of = np.repeat(np.arange(len(STAGE_LAYERS)), STAGE_LAYERS)
    for s in range(len(STAGE_LAYERS)):
        x[:, 4 + s * 3 : 7 + s * 3] = per_layer[:, stage_of == s].sum(1)
    return x


@lru_cache(maxsize=16)
def _shapes(dataset: str, input_size: int | None) -> tuple[tuple[int, int, int, int, int], ...]:
    """:func:`_layer_shapes` of the ``dataset``'s macro-architecture (``input_size`` overrides the input side)."""
    if dataset == "cifar100":
        size = 32 if input_size is None else int(input_size)
        return tuple(_layer_shapes(CIFAR100_STRIDES, size))
    if dataset == "imagenet":
        size = 224 if input_size is None else int(input_size)
        return tuple(_layer_shapes(IMAGENET_STRIDES, (size - 1) // 2 + 1))
    raise ValueError(f"fbnet dataset {dataset!r} is invalid; expected 'cifar100' or 'imagenet'")


@lru_cache(maxsize=16)
def _cost_table(dataset: str, input_size: int | None) -> np.ndarray:
    """``(22, 9, 3)``: :func:`op_cost` of every op at every layer, in millions."""
    shapes = _shapes(dataset, input_size)
    table = np.array([[op_cost(op, c_in, c_out, si, so) for op in OPS] for _, c_in, c_out, si, so in shapes]) / 1e6
    table.setflags(write=False)
    return table


def layer_shape_classes(dataset: str = "cifar100", input_size: int | None = None) -> np.ndarray:
    """``(22,)`` shape class of every searchable layer: layers with equal (in channels, out channels, in side,
    out side) share one, numbered in order of first appearance (CIFAR-100: 12 classes, the stages' first layers
    and the rest of each stage)."""
    sig = [shape[1:] for shape in _shapes(dataset, input_size)]
    first = {}
    for s in sig:
        first.setdefault(s, len(first))
    return np.array([first[s] for s in sig], dtype=np.int64)


def encode_shape_counts(archs: Sequence[FBNetArchitecture], dataset: str = "cifar100",
                        input_size: int | None = None) -> np.ndarray:
    """How many layers of each shape class (:func:`layer_shape_classes`) use each op: ``(n, n_classes * 9)``
    float64, class-major. On any device the same op on two layers of one shape costs the same, so an additive
    latency model over these columns learns 12 x 9 costs (CIFAR-100) instead of the one-hot's 22 x 9."""
    cls = layer_shape_classes(dataset, input_size)
    idx = op_indices(archs)
    x = np.zeros((len(archs), (int(cls.max()) + 1) * len(OPS)), dtype=np.float64)
    rows = np.arange(len(archs))
    for layer in range(N_LAYERS):
        np.add.at(x, (rows, cls[layer] * len(OPS) + idx[:, layer]), 1.0)
    return x
