"""Import Once-for-All's published MobileNetV3 supernets (``ofa_mbv3_d234_e346_k357_w1.0`` / ``_w1.2``) into
this space's supernet, key by key.

The published files hold ``{"state_dict": {...}}`` under the original key names
(``blocks.N.mobile_inverted_conv.inverted_bottleneck.conv.conv.weight``, ``...bn.bn...``); the ``ofa`` package's
current networks name the same tensors ``blocks.N.conv....``; both load. Every tensor of the file must map to one
of ours with the same shape and every one of ours must be filled: otherwise one line names the key. Files are
read with ``torch.load(weights_only=True)``: a file that needs code to load is refused, never executed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from search_spaces.ofa_mbv3.arch import KERNEL_CHOICES, MAX_DEPTH, N_STAGES
from search_spaces.ofa_mbv3.dynamic import transform_name

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
FORMATS = ("ofa_mbv3",)


def normalise_key(key: str) -> str:
    """One spelling for both naming generations: ``mobile_inverted_conv`` -> ``conv``, doubled wrapper names
    (``.bn.bn.``, ``.conv.conv.``, ``.linear.linear.``) collapsed, a DataParallel ``module.`` prefix dropped."""
    key = key[len("module."):] if key.startswith("module.") else key
    key = re.sub(r"^blocks\.(\d+)\.mobile_inverted_conv\.", r"blocks.\1.conv.", key)
    for name in ("bn", "conv", "linear"):
        key = key.replace(f".{name}.{name}.", f".{name}.")
    return key


def key_map() -> dict[str, str]:
    """Normalised OFA key -> key of :class:`~search_spaces.ofa_mbv3.supernet.OFAMobileNetV3Supernet`."""
    m: dict[str, str] = {"first_conv.conv.weight": "stem.0.weight", "feature_mix_layer.conv.weight": "head.feature_mix.0.weight",
                         "final_expand_layer.conv.weight": "head.final_expand.0.weight",
                         "classifier.linear.weight": "classifier.1.weight", "classifier.linear.bias": "classifier.1.bias"}
    for p in BN:
        m[f"first_conv.bn.{p}"] = f"stem.1.{p}"
        m[f"blocks.0.conv.depth_conv.bn.{p}"] = f"first_block.body.1.{p}"
        m[f"blocks.0.conv.point_linear.bn.{p}"] = f"first_block.body.4.{p}"
        m[f"final_expand_layer.bn.{p}"] = f"head.final_expand.1.{p}"
    m["blocks.0.conv.depth_conv.conv.weight"] = "first_block.body.0.weight"
    m["blocks.0.conv.point_linear.conv.weight"] = "first_block.body.3.weight"
    ks = sorted(KERNEL_CHOICES)
    for s in range(N_STAGES):
        for i in range(MAX_DEPTH):
            src, dst = f"blocks.{1 + s * MAX_DEPTH + i}.conv", f"stages.{s}.{i}"
            m[f"{src}.inverted_bottleneck.conv.weight"] = f"{dst}.expand_conv.weight"
            m[f"{src}.depth_conv.conv.weight"] = f"{dst}.dw_conv.weight"
            m[f"{src}.point_linear.conv.weight"] = f"{dst}.project_conv.weight"
            for small, big in zip(ks, ks[1:]):
                name = transform_name(big, small)
                m[f"{src}.depth_conv.conv.{name}_matrix"] = f"{dst}.kernel_transforms.{name}"
            for part, ours in (("inverted_bottleneck", "expand_bn"), ("depth_conv", "dw_bn"), ("point_linear", "project_bn")):
                for p in BN:
                    m[f"{src}.{part}.bn.{p}"] = f"{dst}.{ours}.{p}"
            for part, ours in (("reduce", "se_reduce"), ("expand", "se_expand")):
                for p in ("weight", "bias"):
                    m[f"{src}.depth_conv.se.fc.{part}.{p}"] = f"{dst}.{ours}.{p}"
    return m


def read_state(path: str | Path, what: str = "checkpoint",
               expected: str = "a published OFA supernet file (e.g. ofa_mbv3_d234_e346_k357_w1.0)"
               ) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (``{"state_dict": ...}`` or a bare state dict), read with
    ``torch.load(weights_only=True)``: a file that needs code to load is refused, never executed. One-line
    ``ValueError`` naming ``what`` and the file for anything else (also the accuracy predictor's reader)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} does not exist; expected {expected}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds; all mean "not a plain weights file"
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            why = "it needs code to load, which is refused (weights_only=True)"
        raise ValueError(f"{what} {str(path)!r} cannot be read as weights: {why[:200]}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} {str(path)!r} holds no state dict of tensors; expected {expected}")
    return dict(state)


def convert_state(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                  width_mult: float = 1.0) -> dict[str, torch.Tensor]:
    """OFA's tensors renamed to the keys of ``target`` (our supernet's ``state_dict()``): refuses with one line
    naming the key on an unmapped, mis-shaped or missing tensor (BatchNorm batch counters may be absent)."""
    names = key_map()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ours = names.get(normalise_key(key))
        if ours is None or ours not in target:
            raise ValueError(f"checkpoint key {key!r} has no counterpart in ofa_mbv3; expected a "
                             "OFAMobileNetV3 (ks 3/5/7, e 3/4/6, d 2/3/4) state dict")
        if tuple(value.shape) != tuple(target[ours].shape):
            raise ValueError(f"checkpoint key {key!r} has shape {list(value.shape)}; expected "
                             f"{list(target[ours].shape)} for width_mult={width_mult} (a file of another width "
                             "needs --width-mult / search_space.width_mult to match)")
        if ours in out:
            raise ValueError(f"checkpoint key {key!r} maps to {ours!r} like another key; expected one tensor each")
        out[ours] = value.detach().to(target[ours].dtype).clone()
    for key, value in target.items():
        if key not in out:
            if key.endswith("num_batches_tracked"):
                out[key] = torch.zeros_like(value)
                continue
            src = next((k for k, v in names.items() if v == key), key)
            raise ValueError(f"checkpoint lacks {src!r} (our {key!r}); expected every tensor of the published "
                             "supernet")
    return out


def import_supernet(path: str | Path, space: Any) -> Any:
    """Our supernet of ``space`` (an ``ofa_mbv3`` space with 1000 classes, 3 channels, the ImageNet setting and
    the file's width multiplier) holding the published weights of ``path``, in eval mode."""
    if getattr(space, "name", None) != "ofa_mbv3":
        raise ValueError(f"search space {getattr(space, 'name', space)!r} cannot hold an OFA MobileNetV3 supernet; "
                         "expected search_space=ofa_mbv3_imagenet")
    if (space.setting, space.n_classes, space.in_channels) != ("imagenet", 1000, 3):
        raise ValueError(f"search space has setting={space.setting!r}, n_classes={space.n_classes}, "
                         f"in_channels={space.in_channels}; expected imagenet, 1000, 3 for a published OFA supernet")
    if not space.kernel_transform:
        raise ValueError("search_space.kernel_transform=false cannot hold the published supernet's kernel "
                         "transformation matrices; expected true")
    net = space.build_supernet()
    net.load_state_dict(convert_state(read_state(path), net.state_dict(), space.width_mult))
    return net.eval()
