"""Static (plain ``nn.Module``) OFA-MobileNetV3 subnets and their extraction from a supernet."""

from __future__ import annotations

import copy

import torch
from torch import nn

from search_spaces.ofa_mbv3.arch import OFAArchitecture
from search_spaces.ofa_mbv3.dynamic import DynamicMBConv, make_act
from search_spaces.ofa_mbv3.structure import BlockSpec, block_specs, se_channels


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = se_channels(channels)
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(y))))


class MBConv(nn.Module):
    """Static inverted residual block described by a :class:`BlockSpec`."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        if spec.expand != 1:
            layers += [nn.Conv2d(spec.cin, spec.mid, 1, bias=False), nn.BatchNorm2d(spec.mid), make_act(spec.act)]
        layers += [
            nn.Conv2d(spec.mid, spec.mid, spec.kernel, spec.stride, spec.kernel // 2, groups=spec.mid, bias=False),
            nn.BatchNorm2d(spec.mid),
            make_act(spec.act),
        ]
        if spec.se:
            layers.append(SqueezeExcite(spec.mid))
        layers += [nn.Conv2d(spec.mid, spec.cout, 1, bias=False), nn.BatchNorm2d(spec.cout)]
        self.body = nn.Sequential(*layers)
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class OFASubnet(nn.Module):
    """A standalone OFA-MobileNetV3 subnet: stem, blocks, head. Input: (N, C, r, r)."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, classifier: nn.Module,
                 arch: OFAArchitecture) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.classifier = classifier
        self.arch_string = arch.to_string()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.classifier(self.head(x))


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


@torch.no_grad()
def static_block_from_dynamic(layer: DynamicMBConv, spec: BlockSpec) -> MBConv:
    """A static block with the weights ``layer`` uses for ``spec`` (transformed kernel, channel slices)."""
    block = MBConv(spec)
    mods = list(block.body)
    mid = spec.mid
    mods[0].weight.copy_(layer.expand_conv.weight[:mid])
    _copy_bn(mods[1], layer.expand_bn, mid)
    mods[3].weight.copy_(layer.depthwise_kernel(mid, spec.kernel))
    _copy_bn(mods[4], layer.dw_bn, mid)
    i = 6
    if spec.se:
        se: SqueezeExcite = mods[i]
        sc = se_channels(mid)
        se.reduce.weight.copy_(layer.se_reduce.weight[:sc, :mid])
        se.reduce.bias.copy_(layer.se_reduce.bias[:sc])
        se.expand.weight.copy_(layer.se_expand.weight[:mid, :sc])
        se.expand.bias.copy_(layer.se_expand.bias[:mid])
        i += 1
    mods[i].weight.copy_(layer.project_conv.weight[:, :mid])
    _copy_bn(mods[i + 1], layer.project_bn, spec.cout)
    return block


@torch.no_grad()
def extract_subnet(supernet: nn.Module, arch: OFAArchitecture) -> OFASubnet:
    """Copy the weights ``arch`` uses out of ``supernet`` into a fresh static module (supernet untouched)."""
    specs = block_specs(arch, supernet.setting, width_mult=supernet.width_mult)
    blocks: list[nn.Module] = [copy.deepcopy(supernet.first_block)]
    for spec in specs[1:]:
        layer = supernet.stages[spec.stage][spec.index]
        blocks.append(static_block_from_dynamic(layer, spec))
    sub = OFASubnet(
        copy.deepcopy(supernet.stem), blocks, copy.deepcopy(supernet.head), copy.deepcopy(supernet.classifier), arch
    )
    sub.train(supernet.training)
    return sub
