"""Evaluation of subnets extracted from a supernet: BatchNorm recalibration (exact or Once-for-All's),
BatchNorm folding, top-1 accuracy. Re-exported by :mod:`nas.training`, where callers import them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nas.data import DataSplits, resize
from search_spaces.base import WeightSharingSpace


def _device_of(module: nn.Module | None) -> torch.device:
    p = next(module.parameters(), None) if module is not None else None
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, r: int,
             module: nn.Module | None = None, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``fn`` on (x, y) resized to r; ``module`` is put in eval mode and restored."""
    was = module.training if module is not None else None
    if module is not None:
        module.eval()
    dev = _device_of(module)
    correct = 0
    for i in range(0, len(y), batch_size):
        pred = fn(resize(x[i : i + batch_size], r).to(dev)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    if module is not None and was:
        module.train()
    return correct / max(1, len(y))


CALIB_MODES = ("exact", "ofa")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, r: int, batch_size: int = 256, mode: str = "exact") -> None:
    """Reset BatchNorm running statistics and re-estimate them over ``x`` (at resolution r), in batches.

    ``mode="exact"``: torch's cumulative average of each batch's mean and unbiased variance (batches weighted
    equally). ``mode="ofa"``: Once-for-All's ``set_running_statistics``: each batch's mean and *biased* variance,
    averaged with the batch sizes as weights (what the published supernets' accuracies were measured with).
    Either way every layer normalises a batch with that batch's own statistics while they are gathered.
    """
    if mode not in CALIB_MODES:
        raise ValueError(f"BN recalibration mode {mode!r} is invalid; expected one of {list(CALIB_MODES)}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum) for m in bns]
    sums: dict[nn.Module, list] = {}
    hooks = []
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over batches
        if mode == "ofa":  # momentum 1: after each batch the running stats are that batch's (variance unbiased)
            m.momentum, sums[m] = 1.0, [0.0, 0.0, 0]

            def gather(mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
                h = inputs[0]
                n, per_channel = h.shape[0], h.numel() // h.shape[1]
                acc = sums[mod]
                acc[0] = acc[0] + mod.running_mean.double() * n
                acc[1] = acc[1] + mod.running_var.double() * ((per_channel - 1) / per_channel * n)  # biased
                acc[2] += n

            hooks.append(m.register_forward_hook(gather))
    was = model.training
    model.train()
    dev = _device_of(model)
    try:
        for i in range(0, len(x), batch_size):
            model(resize(x[i : i + batch_size], r).to(dev))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
        for m, mom in zip(bns, saved):
            m.momentum = mom
    for m, (mean, var, n) in sums.items():
        if n:
            m.running_mean.copy_(mean / n)
            m.running_var.copy_(var / n)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution in an ``nn.Sequential`` into that convolution
    (in place, eval-mode arithmetic; the BatchNorm becomes an ``Identity``) and return the model in eval mode.

    For evaluation after :func:`recalibrate_bn`: outputs agree with the unfolded model to float rounding and a
    forward pass skips one normalisation per convolution. The folded model must not be trained further.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


def subnet_accuracy(space: WeightSharingSpace, supernet: nn.Module, arch: Any, data: DataSplits, split: str = "val",
                    calib_images: int = 512, calib_batch: int = 256, calib_mode: str = "exact",
                    n_eval: int | None = None) -> float:
    """Accuracy of ``arch`` extracted from ``supernet`` on the first ``n_eval`` images of ``split`` after BN
    recalibration (:func:`recalibrate_bn`) on the first ``calib_images`` training images, all as the data
    presents them at the subnet's resolution (``DataSplits.at``)."""
    r = space.resolution(arch)
    sub = space.extract(supernet, arch).to(memory_format=torch.channels_last)  # 2-3x faster on CPU
    recalibrate_bn(sub, data.at("train", r, calib_images), r, calib_batch, calib_mode)
    sub = fold_batchnorm(sub).to(memory_format=torch.channels_last)
    y = (data.y_val if split == "val" else data.y_test)[:n_eval]
    return evaluate(sub, data.at(split, r, n_eval), y, r, sub)
