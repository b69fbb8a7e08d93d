"""LUT files and the FBNet block keys: HW-NAS-Bench's per-layer table reproduces HELP's latencies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latency_luts.lut import LatencyLUT, lut_from_layer_table
from search_spaces import create_search_space
from search_spaces.fbnet.arch import OPS


def test_fbnet_lut_via_blocks_reproduces_help_latencies(shared_data, tmp_path):
    npz = np.load(shared_data / "hw-nas-bench" / "fbnet_cifar100_additive_latency_DERIVED.npz")
    assert tuple(npz["op_names"]) == OPS
    space = create_search_space("fbnet", dataset="cifar100")
    df = pd.read_csv(shared_data / "latency" / "fbnet_help.csv.gz")
    for d, dev in enumerate(npz["devices"]):
        lut = lut_from_layer_table(space, npz["table_ms"][d], npz["const_ms"][d], OPS, str(dev),
                                   meta={"relative": True, "source": "HW-NAS-Bench via HELP"})
        # shape keys merge identical layers: far fewer entries than 22 x 9
        assert len(lut.entries) < 22 * 9
        lut = LatencyLUT.load(lut.save(tmp_path / f"{dev}.json"), space="fbnet")
        rows = df[df.device == dev]
        assert len(rows) == 5000
        est = lut.estimate(space, [space.parse(s) for s in rows.arch])
        y = rows.latency_ms.to_numpy()
        # HELP's file stores 6 significant digits: rounded like that, the estimate must agree to the last digit,
        # so the only difference left is the file's own rounding.
        rounded = np.array([float(f"{v:.6g}") for v in est])
        assert (np.abs(rounded - y) <= 1e-9 * y).all(), dev
        assert (np.abs(est - y) / y).max() <= 5e-6, dev  # half a unit in the 6th significant digit


def test_wrong_layer_indexing_is_detected(shared_data):
    npz = np.load(shared_data / "hw-nas-bench" / "fbnet_cifar100_additive_latency_DERIVED.npz")
    space = create_search_space("fbnet", dataset="cifar100")
    shuffled = npz["table_ms"][3][::-1]  # layers reversed: same-shape layers no longer agree
    with pytest.raises(ValueError, match="expected one time per block shape"):
        lut_from_layer_table(space, shuffled, 0.0, OPS, "raspi4", meta={"relative": True})


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.update(space="nb201"), "expected 'fbnet'"),
        (lambda d: d.update(schema="other"), "schema"),
        (lambda d: d.pop("entries"), "lacks the key 'entries'"),
        (lambda d: d["entries"].update(x=None), "expected a finite number"),
        (lambda d: (d["entries"].update(x=-1.0), d["meta"].pop("relative")), "is negative"),
    ],
)
def test_corrupt_or_mismatched_lut_is_refused(mutate, fragment, tmp_path):
    good = LatencyLUT("fbnet", "dev", {"a": 1.0, "b": 2.0}, 0.5, {"relative": True}).save(tmp_path / "good.json")
    d = json.loads(good.read_text())
    mutate(d)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=fragment) as e:
        LatencyLUT.load(bad, space="fbnet")
    assert "\n" not in str(e.value)
    (tmp_path / "trunc.json").write_text(good.read_text()[:40])
    with pytest.raises(ValueError, match="cannot read LUT"):
        LatencyLUT.load(tmp_path / "trunc.json")


def test_missing_block_is_named():
    space = create_search_space("fbnet")
    lut = LatencyLUT("fbnet", "dev", {}, 0.0)
    with pytest.raises(ValueError, match="is missing from the dev LUT"):
        lut.estimate(space, [space.sample(np.random.default_rng(0))])
