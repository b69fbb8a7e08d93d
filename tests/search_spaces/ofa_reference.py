"""The reference Once-for-All implementation (PyPI ``ofa``) for parity tests, imported beside our CPU torch.

``ofa`` reaches torchvision/PIL only through ``ofa.utils.my_dataloader``, which its network code never uses:
one placeholder module keeps that import from loading torchvision. Tests skip with the install command where
``ofa`` is absent.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

OFA_PIN = "ofa==0.1.0.post202307202001"


def ofa_modules() -> types.SimpleNamespace:
    """``OFAMobileNetV3``, ``set_running_statistics``, ``MobileNetArchEncoder``, ``AccuracyPredictor`` of the
    reference package (skips the calling test where it is not installed)."""
    sys.modules.setdefault("ofa.utils.my_dataloader", types.ModuleType("ofa.utils.my_dataloader"))
    try:
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
        from ofa.imagenet_classification.elastic_nn.utils import set_running_statistics
        from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder
    except ImportError as e:
        pytest.skip(f"reference implementation not importable ({e}); install it with: pip install '{OFA_PIN}'")
    return types.SimpleNamespace(OFAMobileNetV3=OFAMobileNetV3, set_running_statistics=set_running_statistics,
                                 MobileNetArchEncoder=MobileNetArchEncoder, AccuracyPredictor=AccuracyPredictor)


def reference_supernet(width_mult: float, seed: int = 0, identity_transforms: bool = False) -> torch.nn.Module:
    """The reference OFA-MobileNetV3 (ks 3/5/7, e 3/4/6, d 2/3/4) with random weights, random BN statistics and,
    unless ``identity_transforms``, kernel-transformation matrices = identity + noise; in eval mode."""
    ofa = ofa_modules()
    net = ofa.OFAMobileNetV3(n_classes=1000, dropout_rate=0.0, width_mult=width_mult, ks_list=[3, 5, 7],
                             expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):
                if not identity_transforms:
                    p.add_(torch.randn(p.shape, generator=g) * 0.2)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.dim() > 1 else 0.3))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def old_naming(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same tensors under the names of the published files (``blocks.N.mobile_inverted_conv...``)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "blocks" and parts[2] == "conv":
            k = ".".join(parts[:2] + ["mobile_inverted_conv"] + parts[3:])
        out[k] = v
    return out
