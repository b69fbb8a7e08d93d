"""Static (plain ``nn.Module``) FBNet subnets and their extraction from a supernet.

Group-2 ops become real ``nn.Conv2d(groups=2)`` modules followed by the same channel shuffle the supernet runs.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from search_spaces.fbnet.arch import FBNetArchitecture
from search_spaces.fbnet.dynamic import DynamicFBNetLayer, block_diagonal
from search_spaces.fbnet.structure import LayerSpec, layer_specs
from search_spaces.ofa_mbv3.dynamic import centre_crop


class ChannelShuffle(nn.Module):
    """The supernet's channel shuffle (:func:`~search_spaces.fbnet.dynamic.channel_shuffle`) of ``channels``
    channels as one constant channel permutation: both ONNX exporters write a single Gather with constant
    indices at any input size (reshapes by the input's own size make the TorchScript exporter emit a
    Shape/Slice/Concat chain per shuffle)."""

    def __init__(self, groups: int, channels: int) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels={channels} cannot be shuffled in {groups} groups; expected a multiple")
        self.groups, self.channels = groups, channels
        perm = torch.arange(channels).reshape(groups, channels // groups).t().reshape(-1)
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.perm)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, channels={self.channels}"


class FBNetBlock(nn.Module):
    """Static inverted-residual block (or non-identity skip) described by a :class:`LayerSpec`."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.residual = spec.shape_preserving and not spec.is_skip
        if spec.is_skip:
            self.body = nn.Sequential(nn.Conv2d(spec.cin, spec.cout, 1, spec.stride, bias=False),
                                      nn.BatchNorm2d(spec.cout))
            return
        m, g, k = spec.mid, spec.group, spec.kernel
        layers: list[nn.Module] = [nn.Conv2d(spec.cin, m, 1, groups=g, bias=False), nn.BatchNorm2d(m),
                                   nn.ReLU(inplace=True)]
        if g > 1:
            layers.append(ChannelShuffle(g, m))
        layers += [
            nn.Conv2d(m, m, k, spec.stride, k // 2, groups=m, bias=False), nn.BatchNorm2d(m), nn.ReLU(inplace=True),
            nn.Conv2d(m, spec.cout, 1, groups=g, bias=False), nn.BatchNorm2d(spec.cout),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class FBNetSubnet(nn.Module):
    """A standalone FBNet subnet: stem, 22 layers (identity skips are ``nn.Identity``), head, classifier."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module, classifier: nn.Module,
                 arch: FBNetArchitecture) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.classifier = classifier
        self.arch_string = arch.to_string()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)
    dst.eps, dst.momentum = src.eps, src.momentum


@torch.no_grad()
def static_block_from_dynamic(layer: DynamicFBNetLayer, spec: LayerSpec) -> nn.Module:
    """A static block with the weights ``layer`` uses for ``spec.op`` (channel slices, kernel crop, group blocks)."""
    if spec.is_skip and spec.shape_preserving:
        return nn.Identity()
    block = FBNetBlock(spec)
    mods = list(block.body)
    if spec.is_skip:
        mods[0].weight.copy_(layer.skip_conv.weight)
        _copy_bn(mods[1], layer.skip_bn, spec.cout)
        return block
    m, g = spec.mid, spec.group
    mods[0].weight.copy_(block_diagonal(layer.expand_conv.weight[:m], g))
    _copy_bn(mods[1], layer.expand_bn, m)
    i = 4 if g > 1 else 3
    mods[i].weight.copy_(centre_crop(layer.dw_conv.weight[:m], spec.kernel))
    _copy_bn(mods[i + 1], layer.dw_bn, m)
    mods[i + 3].weight.copy_(block_diagonal(layer.project_conv.weight[:, :m], g))
    _copy_bn(mods[i + 4], layer.project_bn, spec.cout)
    return block


@torch.no_grad()
def extract_subnet(supernet: nn.Module, arch: FBNetArchitecture) -> FBNetSubnet:
    """Copy the weights ``arch`` uses out of ``supernet`` into a fresh static module (supernet untouched)."""
    specs = layer_specs(arch, supernet.dataset)
    blocks = [static_block_from_dynamic(supernet.layers[s.index], s) for s in specs]
    sub = FBNetSubnet(copy.deepcopy(supernet.stem), blocks, copy.deepcopy(supernet.head),
                      copy.deepcopy(supernet.classifier), arch)
    sub.train(supernet.training)
    return sub
