"""Devices: what a run measures latencies on and prepares its deliverables for (README "Measurement protocol").

``conf/device/<name>.yaml`` names a class here by ``_target_``: :class:`OnnxRuntimeDevice` (onnxruntime on this
machine, ``device=local_cpu``), :class:`OpenVINODevice`, :class:`LiteRTDevice`, :class:`ExecuTorchDevice`,
:class:`TorchDevice` (those engines on this machine) or :class:`RemoteDevice` (any of them, timed elsewhere from
a kit). A new engine is a subclass of :class:`Device`
that fills its four hooks; the protocol is the base class's.
"""

from __future__ import annotations

from typing import Any

from latency_luts.device.base import Device, KitRequest, Loaded, NeedsMeasurement, device_class
from latency_luts.device.executorch import ExecuTorchDevice
from latency_luts.device.litert import LiteRTDevice
from latency_luts.device.openvino import OpenVINODevice
from latency_luts.device.ort import OnnxRuntimeDevice
from latency_luts.device.remote import RemoteDevice
from latency_luts.device.torch_eager import TorchDevice

__all__ = ["Device", "ExecuTorchDevice", "KitRequest", "LiteRTDevice", "Loaded", "NeedsMeasurement",
           "OnnxRuntimeDevice", "OpenVINODevice", "RemoteDevice", "TorchDevice", "build_device", "device_class"]


def build_device(node: Any) -> Device:
    """The device of a ``device`` config node (a DictConfig or dict with ``_target_``), built by
    ``hydra.utils.instantiate`` after its class and keys are checked: a bad ``_target_`` or an unknown key is
    a one-line ValueError, and no constructor runs before. Settings are checked by ``validate()``."""
    import dataclasses

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    kw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    if "runtime" in kw:
        raise ValueError(f"device.runtime={kw['runtime']!r} is no longer a setting: the device is chosen as a "
                         "whole; expected device=local_cpu (onnxruntime here), device=openvino|litert|executorch|"
                         "torch (that engine here) or device=remote (timed elsewhere from a kit, device.engine=...)")
    cls = device_class(kw.get("_target_"))
    fields = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(kw) - {"_target_", *fields})
    if unknown:
        raise ValueError(f"device.{unknown[0]} is not a setting of {cls.__name__}; expected one of {fields}")
    return instantiate(kw, _convert_="all")
