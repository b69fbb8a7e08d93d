"""The OFA-MobileNetV3 weight-sharing supernet: fixed stem/first block/head, five elastic stages."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from search_spaces.ofa_mbv3.arch import (
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    MAX_DEPTH,
    N_STAGES,
    OFAArchitecture,
)
from search_spaces.ofa_mbv3.dynamic import DynamicMBConv
from search_spaces.ofa_mbv3.structure import SETTINGS, STAGE_ACTS, STAGE_SE, STAGE_STRIDES, widths

log = logging.getLogger(__name__)


class FirstBlock(nn.Module):
    """OFA's fixed first block: depthwise 3x3 + BN + ReLU, 1x1 project + BN, identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Head(nn.Module):
    """Final 1x1 expand (BN, h-swish), global average pool, 1x1 feature mix (no BN, no bias, h-swish)."""

    def __init__(self, cin: int, final_expand: int = 960, last: int = 1280) -> None:
        super().__init__()
        self.final_expand = nn.Sequential(
            nn.Conv2d(cin, final_expand, 1, bias=False), nn.BatchNorm2d(final_expand), nn.Hardswish(inplace=True)
        )
        self.feature_mix = nn.Sequential(nn.Conv2d(final_expand, last, 1, bias=False), nn.Hardswish(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand(x)
        x = x.mean((2, 3), keepdim=True)
        return torch.flatten(self.feature_mix(x), 1)


class OFAMobileNetV3Supernet(nn.Module):
    """Weight-sharing supernet. ``forward(x, arch)`` runs the subnet ``arch`` (see ``search_spaces.base.Supernet``).

    ``width_mult`` scales every width as OFA does (1.0 and 1.2 are the published supernets);
    ``kernel_transform`` adds OFA's learned kernel-transformation matrices (identity at initialisation).
    """

    def __init__(
        self,
        n_classes: int = 1000,
        in_channels: int = 3,
        setting: str = "imagenet",
        dropout: float = 0.1,
        kernel_choices: tuple[int, ...] = KERNEL_CHOICES,
        expand_choices: tuple[int, ...] = EXPAND_CHOICES,
        width_mult: float = 1.0,
        kernel_transform: bool = True,
    ) -> None:
        super().__init__()
        if setting not in SETTINGS:
            raise ValueError(f"unknown ofa_mbv3 input setting {setting!r}; expected one of {sorted(SETTINGS)}")
        self.setting, self.n_classes, self.in_channels = setting, n_classes, in_channels
        self.width_mult, self.kernel_transform = float(width_mult), bool(kernel_transform)
        W = widths(width_mult)
        stride = SETTINGS[setting]["stem_stride"]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, W.stem, 3, stride, 1, bias=False),
            nn.BatchNorm2d(W.stem),
            nn.Hardswish(inplace=True),
        )
        self.first_block = FirstBlock(W.stem)
        stages = []
        cin = W.stem
        for s in range(N_STAGES):
            layers = []
            for i in range(MAX_DEPTH):
                layers.append(
                    DynamicMBConv(
                        cin, W.stages[s], STAGE_STRIDES[s] if i == 0 else 1, STAGE_ACTS[s], STAGE_SE[s],
                        kernel_choices, expand_choices, kernel_transform,
                    )
                )
                cin = W.stages[s]
            stages.append(nn.ModuleList(layers))
        self.stages = nn.ModuleList(stages)
        self.head = Head(W.stages[-1], W.final_expand, W.last)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(W.last, n_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # zero-init the last BN of each residual branch: every subnet starts close to identity
        for stage in self.stages:
            for layer in stage:
                if layer.residual:
                    nn.init.zeros_(layer.project_bn.weight)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module.load_state_dict``; a state written before kernel transforms existed (no
        ``...kernel_transforms...`` keys) loads with identity matrices, i.e. the centre-crop kernels it was trained
        with, and a one-line notice."""
        missing = [k for k, v in self.state_dict().items() if ".kernel_transforms." in k and k not in state_dict]
        if missing and strict:
            state = dict(state_dict)
            own = self.state_dict()
            state.update({k: torch.eye(own[k].shape[0]) for k in missing})
            log.warning("supernet checkpoint predates kernel transforms: %d identity matrices added (centre-crop "
                        "kernels, as it was trained); retrain or re-import to learn them", len(missing))
            state_dict = state
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: torch.Tensor, arch: OFAArchitecture) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for s, stage in enumerate(self.stages):
            for i in range(arch.d[s]):
                li = s * MAX_DEPTH + i
                x = stage[i](x, arch.ks[li], arch.e[li])
        return self.classifier(self.head(x))
