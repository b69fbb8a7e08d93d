"""The dynamic (weight-sharing) searchable layer of the FBNet supernet.

One layer owns the weights of its largest block (expansion 6, 5x5 depthwise) and runs every op by slicing:
expansion ``e`` takes the first ``cin * e`` channels (e1 within e3 within e6), kernel 3 is the centre crop of
the 5x5 depthwise kernel, and a group-2 op runs a real grouped conv whose weights are the diagonal blocks of the
shared dense 1x1 weight (output group j reads input group j). ``skip`` is the identity, or, where the layer
changes shape, a strided 1x1 conv + BN of its own. The op is passed to ``forward``; no state is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.fbnet.structure import MAX_EXPAND, MAX_KERNEL, op_params
from search_spaces.ofa_mbv3.dynamic import centre_crop, sliced_bn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: (g, c/g) channel grid transposed; exports to ONNX as Reshape/Transpose."""
    return x.unflatten(1, (groups, x.shape[1] // groups)).transpose(1, 2).flatten(1, 2)


def block_diagonal(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped-conv weight ``(out, in / groups, ...)`` made of the ``groups`` diagonal blocks of a dense
    ``(out, in, ...)`` weight: rows of output group j take the input columns of group j."""
    if groups == 1:
        return weight
    out, cin = weight.shape[:2]
    if out % groups or cin % groups:
        raise ValueError(f"weight of shape {tuple(weight.shape)} cannot be split into {groups} groups; "
                         "expected channel counts divisible by the group count")
    ro, ri = out // groups, cin // groups
    return torch.cat([weight[j * ro : (j + 1) * ro, j * ri : (j + 1) * ri] for j in range(groups)], 0)


class DynamicFBNetLayer(nn.Module):
    """Searchable layer: any of the nine FBNet ops on shared weights, chosen per call."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.residual = stride == 1 and cin == cout
        max_mid = cin * MAX_EXPAND
        self.expand_conv = nn.Conv2d(cin, max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(max_mid)
        self.dw_conv = nn.Conv2d(max_mid, max_mid, MAX_KERNEL, stride, MAX_KERNEL // 2, groups=max_mid, bias=False)
        self.dw_bn = nn.BatchNorm2d(max_mid)
        self.project_conv = nn.Conv2d(max_mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        if not self.residual:  # skip op of a shape-changing layer
            self.skip_conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.skip_bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, op: str) -> torch.Tensor:
        expand, kernel, groups = op_params(op)
        if op == "skip":
            return x if self.residual else self.skip_bn(self.skip_conv(x))
        mid = self.cin * expand
        w = self.expand_conv.weight[:mid] if groups == 1 else block_diagonal(self.expand_conv.weight[:mid], groups)
        h = F.relu(sliced_bn(F.conv2d(x, w, None, 1, 0, 1, groups), self.expand_bn, mid))
        if groups > 1:
            h = channel_shuffle(h, groups)
        w = self.dw_conv.weight[:mid]
        if kernel != MAX_KERNEL:
            w = centre_crop(w, kernel)
        h = F.relu(sliced_bn(F.conv2d(h, w, None, self.stride, kernel // 2, 1, mid), self.dw_bn, mid))
        w = self.project_conv.weight[:, :mid]
        if groups > 1:
            w = block_diagonal(w, groups)
        h = self.project_bn(F.conv2d(h, w, None, 1, 0, 1, groups))
        return x + h if self.residual else h
