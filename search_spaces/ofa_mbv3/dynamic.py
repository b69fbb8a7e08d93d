"""Dynamic ops and layers of the OFA-MobileNetV3 supernet.

A dynamic layer owns the weights of its largest configuration and runs any smaller one by slicing:
expand ratio by taking the first ``mid`` channels, kernel size by centre-cropping the largest kernel.
The active configuration is passed to ``forward`` explicitly; no layer keeps "active" state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.ofa_mbv3.structure import mid_channels, se_channels


def make_act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "h_swish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected 'relu' or 'h_swish'")


def sliced_bn(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` features of ``bn``; running stats of that slice update in place."""
    if channels == bn.num_features:
        return bn(x)
    return F.batch_norm(
        x,
        bn.running_mean[:channels],
        bn.running_var[:channels],
        bn.weight[:channels],
        bn.bias[:channels],
        bn.training or not bn.track_running_stats,
        bn.momentum if bn.momentum is not None else 0.1,
        bn.eps,
    )


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centre ``kernel x kernel`` window of a square depthwise kernel."""
    full = weight.shape[-1]
    if kernel > full or kernel % 2 == 0:
        raise ValueError(f"kernel {kernel} cannot be cropped from a {full}x{full} kernel; expected odd <= {full}")
    start = (full - kernel) // 2
    return weight[..., start : start + kernel, start : start + kernel]


class DynamicMBConv(nn.Module):
    """Inverted residual block (1x1 expand, depthwise kxk, optional SE, 1x1 project) with elastic k and e."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        act: str,
        use_se: bool,
        kernel_choices: tuple[int, ...],
        expand_choices: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.act_name, self.use_se = cin, cout, stride, act, use_se
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.expand_choices = tuple(sorted(expand_choices))
        max_mid = mid_channels(cin, max(expand_choices))
        max_k = max(kernel_choices)
        self.expand_conv = nn.Conv2d(cin, max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(max_mid)
        self.dw_conv = nn.Conv2d(max_mid, max_mid, max_k, stride, max_k // 2, groups=max_mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(max_mid)
        if use_se:
            max_se = se_channels(max_mid)
            self.se_reduce = nn.Conv2d(max_mid, max_se, 1, bias=True)
            self.se_expand = nn.Conv2d(max_se, max_mid, 1, bias=True)
        self.project_conv = nn.Conv2d(max_mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        mid = mid_channels(self.cin, expand)
        h = F.conv2d(x, self.expand_conv.weight[:mid])
        h = self.act(sliced_bn(h, self.expand_bn, mid))
        w = centre_crop(self.dw_conv.weight[:mid], kernel)
        h = F.conv2d(h, w, None, self.stride, kernel // 2, 1, mid)
        h = self.act(sliced_bn(h, self.dw_bn, mid))
        if self.use_se:
            sc = se_channels(mid)
            y = h.mean((2, 3), keepdim=True)
            y = F.relu(F.conv2d(y, self.se_reduce.weight[:sc, :mid], self.se_reduce.bias[:sc]))
            y = F.hardsigmoid(F.conv2d(y, self.se_expand.weight[:mid, :sc], self.se_expand.bias[:mid]))
            h = h * y
        h = F.conv2d(h, self.project_conv.weight[:, :mid])
        h = self.project_bn(h)
        return x + h if self.residual else h
