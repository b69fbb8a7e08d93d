"""The fixed skeleton of OFA-MobileNetV3 (any width multiplier) and closed-form shapes, parameters and MACs
per block.

Everything that knows the network's layout lives here so the supernet, the static subnets, the LUT keys and
the cost features agree by construction. Widths follow Once-for-All's rule: every base width ``w`` becomes
``make_divisible(w * width_mult, 8)`` (w1.0: stem 16, stages 24/40/80/112/160, head 960/1280; w1.2: stem 24,
stages 32/48/96/136/192, head 1152/1536).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from search_spaces.ofa_mbv3.arch import MAX_DEPTH, N_STAGES, OFAArchitecture

# base widths (width multiplier 1.0)
STEM_CHANNELS = 16
STAGE_WIDTHS = (24, 40, 80, 112, 160)
STAGE_STRIDES = (2, 2, 2, 1, 2)
STAGE_ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
STAGE_SE = (False, True, False, True, True)
FINAL_EXPAND = 960
LAST_CHANNEL = 1280
SE_REDUCTION = 4

# Input settings: ImageNet (stem stride 2, r in 128..224) and small images (stem stride 1, r in 16..32).
SETTINGS: dict[str, dict] = {
    "imagenet": {"stem_stride": 2, "resolutions": tuple(range(128, 225, 4))},
    "small": {"stem_stride": 1, "resolutions": (16, 20, 24, 28, 32)},
}


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` without going 10% below it (MobileNet rule)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


@dataclass(frozen=True)
class Widths:
    """Channel widths of one width multiplier: stem (= first block), the five stages, final expand, last."""

    mult: float
    stem: int
    stages: tuple[int, ...]
    final_expand: int
    last: int


@lru_cache(maxsize=16)
def widths(width_mult: float = 1.0) -> Widths:
    """The widths of ``width_mult`` (OFA: ``make_divisible(base * width_mult, 8)`` for every base width)."""
    m = float(width_mult)
    if not m > 0:
        raise ValueError(f"width_mult={width_mult!r} is invalid; expected a positive number such as 1.0 or 1.2")
    w = lambda base: make_divisible(base * m, 8)  # noqa: E731
    return Widths(m, w(STEM_CHANNELS), tuple(w(c) for c in STAGE_WIDTHS), w(FINAL_EXPAND), w(LAST_CHANNEL))


def mid_channels(in_channels: int, expand: int) -> int:
    return make_divisible(round(in_channels * expand), 8)


def se_channels(mid: int) -> int:
    return make_divisible(mid // SE_REDUCTION, 8)


def conv_out(size: int, kernel: int, stride: int) -> int:
    pad = kernel // 2
    return (size + 2 * pad - kernel) // stride + 1


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block as it runs: enough to build it, cost it and key a LUT with it."""

    stage: int  # -1 for the fixed first block
    index: int  # layer index inside the stage
    in_hw: int
    cin: int
    cout: int
    kernel: int
    expand: int
    mid: int
    stride: int
    act: str
    se: bool
    residual: bool

    @property
    def out_hw(self) -> int:
        return conv_out(self.in_hw, self.kernel, self.stride)

    def key(self) -> str:
        """LUT key: every shape-relevant attribute, nothing positional."""
        return (
            f"mbconv:hw{self.in_hw}:cin{self.cin}:cout{self.cout}:k{self.kernel}:e{self.expand}:mid{self.mid}"
            f":s{self.stride}:{self.act}:se{int(self.se)}:res{int(self.residual)}"
        )

    def params(self) -> int:
        p = 0
        if self.expand != 1:
            p += self.cin * self.mid + 2 * self.mid  # 1x1 conv + BN
        p += self.mid * self.kernel * self.kernel + 2 * self.mid  # depthwise + BN
        if self.se:
            h = se_channels(self.mid)
            p += self.mid * h + h + h * self.mid + self.mid
        p += self.mid * self.cout + 2 * self.cout
        return p

    def macs(self) -> int:
        o = self.out_hw
        m = 0
        if self.expand != 1:
            m += self.in_hw * self.in_hw * self.cin * self.mid
        m += o * o * self.mid * self.kernel * self.kernel
        if self.se:
            h = se_channels(self.mid)
            m += 2 * self.mid * h
        m += o * o * self.mid * self.cout
        return m


def block_specs(arch: OFAArchitecture, setting: str = "imagenet", resolution: int | None = None,
                width_mult: float = 1.0) -> list[BlockSpec]:
    """The active blocks of ``arch`` in order: fixed first block, then the elastic stages."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown ofa_mbv3 input setting {setting!r}; expected one of {sorted(SETTINGS)}")
    W = widths(width_mult)
    hw = conv_out(resolution or arch.r, 3, SETTINGS[setting]["stem_stride"])
    specs = [BlockSpec(-1, 0, hw, W.stem, W.stem, 3, 1, W.stem, 1, "relu", False, True)]
    cin = W.stem
    for s in range(N_STAGES):
        for i in range(arch.d[s]):
            li = s * MAX_DEPTH + i
            stride = STAGE_STRIDES[s] if i == 0 else 1
            cout = W.stages[s]
            spec = BlockSpec(
                s, i, hw, cin, cout, arch.ks[li], arch.e[li], mid_channels(cin, arch.e[li]), stride,
                STAGE_ACTS[s], STAGE_SE[s], stride == 1 and cin == cout,
            )
            specs.append(spec)
            hw = spec.out_hw
            cin = cout
    return specs


def count_params(arch: OFAArchitecture, n_classes: int = 1000, in_channels: int = 3, setting: str = "imagenet",
                 specs: list[BlockSpec] | None = None, width_mult: float = 1.0) -> int:
    """Closed-form parameter count of the static subnet (convs without bias, BN affine, SE and head biases).

    ``specs``: the arch's ``block_specs`` when the caller already has them.
    """
    W = widths(width_mult)
    p = in_channels * W.stem * 9 + 2 * W.stem
    p += sum(b.params() for b in (specs or block_specs(arch, setting, width_mult=width_mult)))
    p += W.stages[-1] * W.final_expand + 2 * W.final_expand  # final expand 1x1 + BN
    p += W.final_expand * W.last  # feature mix 1x1, no BN, no bias
    p += W.last * n_classes + n_classes
    return p


def count_macs(arch: OFAArchitecture, n_classes: int = 1000, in_channels: int = 3, setting: str = "imagenet",
               specs: list[BlockSpec] | None = None, width_mult: float = 1.0) -> int:
    """Closed-form multiply-accumulates of one forward pass at the arch's resolution (``specs`` as above)."""
    W = widths(width_mult)
    stem_hw = conv_out(arch.r, 3, SETTINGS[setting]["stem_stride"])
    blocks = specs or block_specs(arch, setting, width_mult=width_mult)
    m = stem_hw * stem_hw * in_channels * W.stem * 9
    m += sum(b.macs() for b in blocks)
    fhw = blocks[-1].out_hw
    m += fhw * fhw * W.stages[-1] * W.final_expand
    m += W.final_expand * W.last + W.last * n_classes
    return m
