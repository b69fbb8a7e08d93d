"""The fixed skeleton of the FBNet (HW-NAS-Bench) network and closed-form shapes, parameters and MACs.

Everything that knows the network's layout lives here so the supernet, the static subnets, the LUT keys and
the cost features agree by construction. A searchable layer runs either an inverted-residual block
(1x1 expand conv with ``g`` groups + BN + ReLU, channel shuffle when ``g > 1``, depthwise kxk conv + BN + ReLU,
1x1 project conv with ``g`` groups + BN, identity shortcut when shape-preserving) or ``skip`` (identity when
shape-preserving, else a strided 1x1 conv + BN).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from search_spaces.fbnet.arch import (
    CIFAR100_STRIDES,
    IMAGENET_STRIDES,
    OPS,
    STAGE_CHANNELS,
    STAGE_LAYERS,
    STEM_CHANNELS,
    FBNetArchitecture,
)

OPS_LAYERS = range(sum(STAGE_LAYERS))  # flat indices of the searchable layers

# Macro-architectures of HW-NAS-Bench: CIFAR-100 (stem stride 1, head 1504) and ImageNet (stem stride 2, head 1984).
SETTINGS: dict[str, dict] = {
    "cifar100": {"strides": CIFAR100_STRIDES, "input": 32, "stem_stride": 1, "head": 1504, "classes": 100},
    "imagenet": {"strides": IMAGENET_STRIDES, "input": 224, "stem_stride": 2, "head": 1984, "classes": 1000},
}
MAX_KERNEL = 5
MAX_EXPAND = 6


def check_dataset(dataset: str) -> dict:
    if dataset not in SETTINGS:
        raise ValueError(f"fbnet dataset {dataset!r} is invalid; expected one of {sorted(SETTINGS)}")
    return SETTINGS[dataset]


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with 'same'-style padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def op_params(op: str) -> tuple[int, int, int]:
    """(expansion, kernel, group) of an op name; skip -> (1, 1, 1)."""
    if op not in OPS:
        raise ValueError(f"fbnet op {op!r} is invalid; expected one of {list(OPS)}")
    if op == "skip":
        return 1, 1, 1
    parts = op.split("_")
    return int(parts[1][1:]), int(parts[0][1:]), int(parts[2][1:]) if len(parts) > 2 else 1


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer as it runs: enough to build it, cost it and key a LUT with it."""

    index: int  # flat layer index 0..21
    stage: int
    in_hw: int
    cin: int
    cout: int
    stride: int
    op: str

    @property
    def expand(self) -> int:
        return op_params(self.op)[0]

    @property
    def kernel(self) -> int:
        return op_params(self.op)[1]

    @property
    def group(self) -> int:
        return op_params(self.op)[2]

    @property
    def mid(self) -> int:
        return self.cin * self.expand

    @property
    def is_skip(self) -> bool:
        return self.op == "skip"

    @property
    def shape_preserving(self) -> bool:
        return self.stride == 1 and self.cin == self.cout

    @property
    def out_hw(self) -> int:
        return conv_out(self.in_hw, 1 if self.is_skip else self.kernel, self.stride)

    def key(self) -> str:
        """HW-NAS-Bench-style block key: op kind, input H/W, Cin, Cout, expansion, kernel, stride, group."""
        kind = "skip" if self.is_skip else "ir"
        e, k, g = op_params(self.op)
        return f"{kind}_hw{self.in_hw}_cin{self.cin}_cout{self.cout}_e{e}_k{k}_s{self.stride}_g{g}"

    def params(self) -> int:
        if self.is_skip:
            return 0 if self.shape_preserving else self.cin * self.cout + 2 * self.cout
        m, g = self.mid, self.group
        return (self.cin * m // g + 2 * m) + (m * self.kernel**2 + 2 * m) + (m * self.cout // g + 2 * self.cout)

    def macs(self) -> int:
        o = self.out_hw
        if self.is_skip:
            return 0 if self.shape_preserving else o * o * self.cin * self.cout
        m, g = self.mid, self.group
        return self.in_hw**2 * self.cin * m // g + o * o * m * self.kernel**2 + o * o * m * self.cout // g


def stem_out(dataset: str, input_size: int) -> int:
    return conv_out(input_size, 3, check_dataset(dataset)["stem_stride"])


def layer_specs(arch: FBNetArchitecture, dataset: str = "cifar100", input_size: int | None = None) -> list[LayerSpec]:
    """The 22 searchable layers of ``arch`` in order (``input_size`` defaults to the setting's)."""
    st = check_dataset(dataset)
    hw = stem_out(dataset, int(input_size or st["input"]))
    cin, specs, li = STEM_CHANNELS, [], 0
    for s, (n, cout, stride) in enumerate(zip(STAGE_LAYERS, STAGE_CHANNELS, st["strides"])):
        for i in range(n):
            spec = LayerSpec(li, s, hw, cin, cout, stride if i == 0 else 1, arch.ops[li])
            specs.append(spec)
            hw, cin, li = spec.out_hw, cout, li + 1
    return specs


def count_params(arch: FBNetArchitecture, n_classes: int, in_channels: int = 3, dataset: str = "cifar100",
                 specs: list[LayerSpec] | None = None) -> int:
    """Closed-form parameter count of the static subnet (convs without bias, BN affine, classifier bias)."""
    head = check_dataset(dataset)["head"]
    p = in_channels * STEM_CHANNELS * 9 + 2 * STEM_CHANNELS
    p += sum(b.params() for b in (specs or layer_specs(arch, dataset)))
    p += STAGE_CHANNELS[-1] * head + 2 * head
    return p + head * n_classes + n_classes


def count_macs(arch: FBNetArchitecture, n_classes: int, in_channels: int = 3, dataset: str = "cifar100",
               input_size: int | None = None, specs: list[LayerSpec] | None = None) -> int:
    """Closed-form multiply-accumulates of one forward pass at ``input_size``."""
    st = check_dataset(dataset)
    size = int(input_size or st["input"])
    specs = specs or layer_specs(arch, dataset, size)
    hw = stem_out(dataset, size)
    m = hw * hw * in_channels * STEM_CHANNELS * 9
    m += sum(b.macs() for b in specs)
    fhw = specs[-1].out_hw
    return m + fhw * fhw * STAGE_CHANNELS[-1] * st["head"] + st["head"] * n_classes


@lru_cache(maxsize=32)
def layer_cost_tables(dataset: str, input_size: int, n_classes: int, in_channels: int
                      ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Closed-form costs of every (layer, op), from the same :class:`LayerSpec` the supernet and the LUT keys
    use: (MACs (22, 9), params (22, 9), fixed MACs and fixed params of stem and head). Every layer's shape is
    fixed by the macro-architecture, so a subnet's MACs / params are the fixed part plus one entry per layer."""
    macs = np.zeros((len(OPS_LAYERS), len(OPS)), dtype=np.int64)
    params = np.zeros_like(macs)
    for j, op in enumerate(OPS):
        arch = FBNetArchitecture((op,) * len(OPS_LAYERS))
        specs = layer_specs(arch, dataset, input_size)
        for i, s in enumerate(specs):
            macs[i, j], params[i, j] = s.macs(), s.params()
    arch = FBNetArchitecture((OPS[0],) * len(OPS_LAYERS))
    fixed_macs = count_macs(arch, n_classes, in_channels, dataset, input_size) - int(macs[:, 0].sum())
    fixed_params = count_params(arch, n_classes, in_channels, dataset) - int(params[:, 0].sum())
    macs.setflags(write=False)
    params.setflags(write=False)
    return macs, params, fixed_macs, fixed_params
