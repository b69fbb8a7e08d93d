"""The fixed skeleton of OFA-MobileNetV3 (w1.0) and closed-form shapes, parameters and MACs per block.

Everything that knows the network's layout lives here so the supernet, the static subnets, the LUT keys and
the cost features agree by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.ofa_mbv3.arch import MAX_DEPTH, N_STAGES, OFAArchitecture

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


def block_specs(arch: OFAArchitecture, setting: str = "imagenet", resolution: int | None = None) -> list[BlockSpec]:
    """The active blocks of ``arch`` in order: fixed first block, then the elastic stages."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown ofa_mbv3 input setting {setting!r}; expected one of {sorted(SETTINGS)}")
    hw = conv_out(resolution or arch.r, 3, SETTINGS[setting]["stem_stride"])
    specs = [BlockSpec(-1, 0, hw, STEM_CHANNELS, STEM_CHANNELS, 3, 1, STEM_CHANNELS, 1, "relu", False, True)]
    cin = STEM_CHANNELS
    for s in range(N_STAGES):
        for i in range(arch.d[s]):
            li = s * MAX_DEPTH + i
            stride = STAGE_STRIDES[s] if i == 0 else 1
            cout = STAGE_WIDTHS[s]
            spec = BlockSpec(
                s, i, hw, cin, cout, arch.ks[li], arch.e[li], mid_channels(cin, arch.e[li]), stride,
                STAGE_ACTS[s], STAGE_SE[s], stride == 1 and cin == cout,
            )
            specs.append(spec)
            hw = spec.out_hw
            cin = cout
    return specs


def head_spec(n_classes: int, final_hw: int) -> dict[str, int]:
    return {"in_hw": final_hw, "cin": STAGE_WIDTHS[-1], "expand": FINAL_EXPAND, "last": LAST_CHANNEL, "classes": n_classes}


def count_params(arch: OFAArchitecture, n_classes: int = 1000, in_channels: int = 3, setting: str = "imagenet",
                 specs: list[BlockSpec] | None = None) -> int:
    """Closed-form parameter count of the static subnet (convs without bias, BN affine, SE and head biases).

    ``specs``: the arch's ``block_specs`` when the caller already has them.
    """
    p = in_channels * STEM_CHANNELS * 9 + 2 * STEM_CHANNELS
    p += sum(b.params() for b in (specs or block_specs(arch, setting)))
    p += STAGE_WIDTHS[-1] * FINAL_EXPAND + 2 * FINAL_EXPAND  # final expand 1x1 + BN
    p += FINAL_EXPAND * LAST_CHANNEL  # feature mix 1x1, no BN, no bias
    p += LAST_CHANNEL * n_classes + n_classes
    return p


def count_macs(arch: OFAArchitecture, n_classes: int = 1000, in_channels: int = 3, setting: str = "imagenet",
               specs: list[BlockSpec] | None = None) -> int:
    """Closed-form multiply-accumulates of one forward pass at the arch's resolution (``specs`` as above)."""
    stem_hw = conv_out(arch.r, 3, SETTINGS[setting]["stem_stride"])
    blocks = specs or block_specs(arch, setting)
    m = stem_hw * stem_hw * in_channels * STEM_CHANNELS * 9
    m += sum(b.macs() for b in blocks)
    fhw = blocks[-1].out_hw
    m += fhw * fhw * STAGE_WIDTHS[-1] * FINAL_EXPAND
    m += FINAL_EXPAND * LAST_CHANNEL + LAST_CHANNEL * n_classes
    return m
