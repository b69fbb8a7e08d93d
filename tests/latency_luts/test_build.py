"""LUT building on a one-resolution OFA space and the LUT + residual estimator against real measurements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from latency_luts.build import build_lut, timing_device
from latency_luts.lut import LatencyLUT
from predictors.lut_residual import LUTResidualPredictor
from search_spaces import create_search_space

SPACES = {"ofa_mbv3": {"setting": "imagenet", "resolutions": [128]},
          "fbnet": {"dataset": "cifar100", "input_size": 32, "n_classes": 10}}


def test_catalogue_covers_every_block_of_random_archs():
    space = create_search_space("ofa_mbv3", setting="imagenet")
    cat = space.block_catalogue()
    assert len(cat) == 1251
    for a in space.sample_many(200, np.random.default_rng(0)):
        assert all(k in cat for k in space.blocks(a))


def test_fbnet_catalogue_covers_every_block_and_times_identities_as_nothing():
    space = create_search_space("fbnet", **SPACES["fbnet"])
    cat = space.block_catalogue()
    for a in space.sample_many(200, np.random.default_rng(0)) + [space.largest(), space.smallest()]:
        assert all(k in cat for k in space.blocks(a))
    none = [k for k, (m, _) in cat.items() if m is None]
    assert none and all(k.startswith("skip") and "_s1_" in k for k in none)
    assert all(k.split("_")[2][3:] == k.split("_")[3][4:] for k in none)  # identities keep Cin == Cout
    for key, (mod, shape) in cat.items():  # each block runs on its declared input and gives its key's output
        if mod is not None:
            hw, cin, cout, _, _, stride = (int(p[1:] if p[0] in "eks" else p.lstrip("hwcinout"))
                                           for p in key.split("_")[1:7])
            assert shape == (1, cin, hw, hw)
            assert tuple(mod.eval()(torch.zeros(shape)).shape) == (1, cout, -(-hw // stride), -(-hw // stride))
    (stem, stem_in), (head, head_in) = space.fixed_blocks()
    assert tuple(stem.eval()(torch.zeros(stem_in)).shape)[:2] == (1, 16) and stem_in == (1, 3, 32, 32)
    assert tuple(head.eval()(torch.zeros(head_in)).shape) == (1, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPACES))
def test_lut_plus_residual_tracks_whole_network_latency(tmp_path, name):
    """Subnets spread over the space's MACs range (not 8 random draws, whose latencies sit within timing noise
    of each other on a busy machine); the fit uses 4 of them, the check the other 8."""
    space = create_search_space(name, **SPACES[name])
    lut = LatencyLUT.load(build_lut(space, rounds=20, out=tmp_path / "lut.json") and tmp_path / "lut.json")
    assert lut.meta["n_blocks"] == len(lut.entries) > 50 and lut.space == name
    assert lut.meta["n_fixed_blocks"] == len(space.fixed_blocks()) and (lut.const_ms > 0) == bool(space.fixed_blocks())
    pool = sorted(space.sample_many(300, np.random.default_rng(1)), key=space.macs)
    spread = [pool[i] for i in np.linspace(0, len(pool) - 1, 10).round().astype(int)]
    archs = [space.largest(), space.smallest(), spread[2], spread[7]] + [a for i, a in enumerate(spread)
                                                                         if i not in (2, 7)]
    net, dev = space.build_supernet().eval(), timing_device(rounds=20)
    paths = [str(dev.prepare(space.extract(net, a).eval(), space.input_shape(a), tmp_path / f"{i}.onnx"))
             for i, a in enumerate(archs)]
    meas = np.array([m.latency_ms for m in dev.measure(paths, [str(i) for i in range(len(paths))])])
    model = LUTResidualPredictor(lut, space).fit(archs[:4], meas[:4])
    pred = model.predict(archs[4:])
    assert spearmanr(pred, meas[4:]).statistic > 0.8
    assert np.median(np.abs(pred - meas[4:]) / meas[4:]) < 0.15


@pytest.mark.slow
def test_a_lut_is_built_with_the_engine_of_the_device_it_is_given(tmp_path):
    """Blocks prepared and timed by another engine (OpenVINO IR here): the LUT records that engine, and its
    estimate ranks whole subnets timed by the same engine."""
    pytest.importorskip("openvino", reason="pip install -e '.[openvino]'")
    from latency_luts.device import OpenVINODevice

    space = create_search_space("fbnet", **SPACES["fbnet"])
    dev = OpenVINODevice(name="cpu_openvino", rounds=10, warmup=3, max_extra_rounds=0)
    lut = LatencyLUT.load(build_lut(space, device=dev, out=tmp_path / "lut.json") and tmp_path / "lut.json")
    assert lut.meta["profile"]["runtime"] == "openvino-cpu" and lut.meta["n_blocks"] == len(lut.entries) > 50
    assert all(v >= 0 for v in lut.entries.values()) and lut.const_ms > 0
    archs = [space.smallest(), space.largest()]
    net = space.build_supernet().eval()
    paths = [dev.prepare(space.extract(net, a).eval(), space.input_shape(a), tmp_path / f"{i}.xml")
             for i, a in enumerate(archs)]
    whole = [m.latency_ms for m in dev.measure(paths)]
    est = lut.estimate(space, archs)
    assert whole[1] > whole[0] and est[1] > est[0]
