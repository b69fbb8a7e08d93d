"""Dynamic ops and layers of the OFA-MobileNetV3 supernet.

A dynamic layer owns the weights of its largest configuration and runs any smaller one by slicing:
expand ratio by taking the first ``mid`` channels, kernel size as Once-for-All defines it ("kernel
transformation"): a smaller kernel is the centre of the next larger one passed through a learned
``k^2 x k^2`` matrix (7x7 -> centre 5x5 -> ``7to5`` -> centre 3x3 of that -> ``5to3``). The matrices are
parameters of the supernet, initialised to identity (so an untrained transform is a plain centre crop), and
trained with the rest; ``kernel_transform=False`` builds a supernet that only centre-crops.
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


def transform_name(larger: int, smaller: int) -> str:
    """Key of the matrix that maps the centre of a ``larger`` kernel to a ``smaller`` one (``"7to5"``)."""
    return f"{larger}to{smaller}"


def transformed_kernel(weight: torch.Tensor, kernel: int, transforms: nn.ParameterDict | None) -> torch.Tensor:
    """The ``kernel x kernel`` depthwise kernel of ``weight`` (``(C, 1, K, K)``, K the largest kernel): a centre
    crop, then for each step down the kernel ladder the step's matrix applied to the flattened window (OFA's
    ``DynamicSeparableConv2d.get_active_filter``); ``transforms=None`` or empty is a plain centre crop."""
    full = weight.shape[-1]
    if kernel == full or not transforms:
        return centre_crop(weight, kernel)
    if kernel > full or kernel % 2 == 0:
        raise ValueError(f"kernel {kernel} cannot be cropped from a {full}x{full} kernel; expected odd <= {full}")
    ladder = sorted({int(k.split("to")[1]) for k in transforms} | {int(k.split("to")[0]) for k in transforms})
    if kernel not in ladder or full != ladder[-1]:
        raise ValueError(f"kernel {kernel} is not on this layer's kernel ladder {ladder}")
    w = weight
    for big, small in zip(ladder[::-1], ladder[-2::-1]):
        if big <= kernel:
            break
        c = centre_crop(w, small)
        w = (c.reshape(-1, small * small) @ transforms[transform_name(big, small)].t()).reshape(c.shape)
    return w


def kernel_transforms(kernel_choices: tuple[int, ...]) -> nn.ParameterDict:
    """Identity matrices for every step of the kernel ladder (``{"7to5": I_25, "5to3": I_9}`` for 3/5/7)."""
    ks = sorted(set(kernel_choices))
    return nn.ParameterDict({transform_name(big, small): nn.Parameter(torch.eye(small * small))
                             for small, big in zip(ks, ks[1:])})


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
        kernel_transform: bool = True,
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
        self.kernel_transforms = kernel_transforms(self.kernel_choices) if kernel_transform else None
        if use_se:
            max_se = se_channels(max_mid)
            self.se_reduce = nn.Conv2d(max_mid, max_se, 1, bias=True)
            self.se_expand = nn.Conv2d(max_se, max_mid, 1, bias=True)
        self.project_conv = nn.Conv2d(max_mid, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)
        self.residual = stride == 1 and cin == cout

    def depthwise_kernel(self, mid: int, kernel: int) -> torch.Tensor:
        """The depthwise kernel of the first ``mid`` channels at size ``kernel`` (transformed, see module doc)."""
        return transformed_kernel(self.dw_conv.weight[:mid], kernel, self.kernel_transforms)

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        mid = mid_channels(self.cin, expand)
        h = F.conv2d(x, self.expand_conv.weight[:mid])
        h = self.act(sliced_bn(h, self.expand_bn, mid))
        w = self.depthwise_kernel(mid, kernel)
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
