"""The FBNet (HW-NAS-Bench) weight-sharing supernet: fixed stem and head, 22 dynamic searchable layers."""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.fbnet.arch import STAGE_CHANNELS, STAGE_LAYERS, STEM_CHANNELS, FBNetArchitecture
from search_spaces.fbnet.dynamic import DynamicFBNetLayer
from search_spaces.fbnet.structure import check_dataset


def make_stem(in_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, STEM_CHANNELS, 3, stride, 1, bias=False),
        nn.BatchNorm2d(STEM_CHANNELS),
        nn.ReLU(inplace=True),
    )


class Head(nn.Module):
    """1x1 conv to ``width`` + BN + ReLU, global average pool, flatten."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.conv(x).mean((2, 3)), 1)


class FBNetSupernet(nn.Module):
    """Weight-sharing supernet. ``forward(x, arch)`` runs the subnet ``arch`` (see ``search_spaces.base.Supernet``)."""

    def __init__(self, n_classes: int = 100, in_channels: int = 3, dataset: str = "cifar100",
                 dropout: float = 0.1) -> None:
        super().__init__()
        st = check_dataset(dataset)
        self.dataset, self.n_classes, self.in_channels = dataset, n_classes, in_channels
        self.stem = make_stem(in_channels, st["stem_stride"])
        layers, cin = [], STEM_CHANNELS
        for n, cout, stride in zip(STAGE_LAYERS, STAGE_CHANNELS, st["strides"]):
            for i in range(n):
                layers.append(DynamicFBNetLayer(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.ModuleList(layers)
        self.head = Head(STAGE_CHANNELS[-1], st["head"])
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(st["head"], n_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        for layer in self.layers:  # residual branches start near zero: every subnet starts close to identity
            if layer.residual:
                nn.init.zeros_(layer.project_bn.weight)

    def forward(self, x: torch.Tensor, arch: FBNetArchitecture) -> torch.Tensor:
        x = self.stem(x)
        for layer, op in zip(self.layers, arch.ops, strict=True):
            x = layer(x, op)
        return self.classifier(self.head(x))
