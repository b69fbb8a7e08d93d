"""The conformance suite every Device passes, shipped so a new engine's test calls it (as ``optuna.testing``):

    from latency_luts.device.testing import check_device
    from nas.testing import trained_digits_supernet

    def test_my_engine(tmp_path):
        check_device(MyEngineDevice(name="cpu_mine"), tmp_path, trained_digits_supernet())

It runs on real parts: a small OFA-style supernet trained a few epochs on ``sklearn``'s digits, its smallest
and largest subnets (BatchNorm recalibrated, so outputs vary with the image) prepared by the device, loaded by
the engine and timed with the project's protocol in a fresh process. Plain asserts with messages: it needs no test framework.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from latency_luts.device.base import Device


class Subnets(Protocol):
    """What the suite prepares: ``space`` (a weight-sharing space), ``subnet(arch)`` (the extracted subnet with
    BatchNorm recalibrated, eval mode: what a run delivers) and ``inputs(arch, n)`` (n real images at the arch's
    resolution, a float tensor). :func:`nas.testing.trained_digits_supernet` is one."""

    space: Any

    def subnet(self, arch: Any) -> Any: ...

    def inputs(self, arch: Any, n: int) -> Any: ...


def prepare_pair(device: Device, folder: Path, trained: Subnets) -> tuple[list[Any], list[Any], list[Path]]:
    """The smallest and largest subnets, extracted (BatchNorm recalibrated) and prepared by ``device``."""
    space = trained.space
    archs = [space.smallest(), space.largest()]
    subs = [trained.subnet(a) for a in archs]
    paths = [device.prepare(s, space.input_shape(a, int(device.batch)), folder / f"{i}{device.suffix}")
             for i, (a, s) in enumerate(zip(archs, subs, strict=True))]
    return archs, subs, paths


def check_device(device: Device, tmp_path: str | Path, trained: Subnets, *,
                 fp32_atol: float = 1e-4, time: bool = True) -> dict[str, Any]:
    """Assert ``device`` honours the Device contract; returns the measured facts (parity, latencies)."""
    from latency_luts.device import build_device

    tmp = Path(tmp_path)
    device.validate()
    prof = device.profile()
    assert prof["runtime"] == device.runtime and prof["runtime_version"] == device.engine_version(), prof
    assert (prof["threads"], prof["batch"], prof["precision"]) == (device.threads, device.batch, device.precision)

    folder = tmp / "prepared"
    archs, subs, paths = prepare_pair(device, folder, trained)
    files = sorted(p.name for p in folder.iterdir())
    want = sorted(f.name for p in paths for f in device.artefact_files(p))
    if device.precision in device.quantized:
        want = sorted(want + [f.name for p in paths for f in device.artefact_files(device.fp32_companion(p))])
    assert files == want, f"prepare left {files}; expected exactly the artefact files {want}"
    assert all(p.suffix == device.suffix for p in paths), paths

    atol, diffs = device.parity_atol(fp32_atol), []
    for arch, sub, path in zip(archs, subs, paths, strict=True):
        x = trained.inputs(arch, int(device.batch)).contiguous()
        loaded = device.load(path)
        assert tuple(loaded.input_shape) == tuple(trained.space.input_shape(arch, int(device.batch))), loaded
        if device.precision in device.quantized:
            assert device.agreement(sub, path, x) >= 0.5, f"int8 {path.name} disagrees with torch"
            continue
        diffs.append(device.check_parity(sub, path, x))
        assert diffs[-1] <= atol, f"{path.name}: max abs diff {diffs[-1]:.2e} vs torch exceeds {atol:.1e}"
        assert device.agreement(sub, path, x) == 1.0, f"{path.name} predicts other classes than torch"
        out = loaded.run(np.ascontiguousarray(x.numpy(), dtype=np.float32))
        kept = out.copy()
        loaded.run(np.full_like(x.numpy(), 3.0, dtype=np.float32))
        assert np.array_equal(out, kept), "run() returns a buffer the next run overwrites; expected a fresh array"

    broken = tmp / f"broken{device.suffix}"
    broken.write_bytes(b"not a model")
    try:
        device.load(broken)
    except ValueError as e:
        msg = str(e)
        assert "\n" not in msg and "does not load in" in msg and broken.name in msg, msg
    else:
        raise AssertionError(f"{device.runtime} loaded a broken file without a ValueError")

    assert build_device(device.spec()) == device, "spec() does not rebuild the same device (the timing process's)"
    facts: dict[str, Any] = {"max_abs_diff": max(diffs, default=float("nan"))}
    if time:
        names = [a.to_string() for a in archs]
        quick = _quick(device)
        ms = quick.measure(paths, names, seed=1)
        assert [m.name for m in ms] == names
        for m in ms:
            assert 0 < m.latency_ms <= m.p10_ms <= m.median_ms <= m.p90_ms, m
            assert m.runs == quick.rounds and m.warmup == quick.warmup, m
        facts["latency_ms"] = [m.latency_ms for m in ms]
    return facts


def _quick(device: Device) -> Device:
    """The device with a short protocol (the suite checks the protocol's shape, not the figures)."""
    import dataclasses

    return dataclasses.replace(device, warmup=2, rounds=6, cv_threshold=10.0, max_extra_rounds=0)
