"""OFA-MobileNetV3: strings, structure facts, supernet == extracted subnet, HELP archs build and run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from search_spaces import OFAArchitecture, create_search_space
from search_spaces.ofa_mbv3.structure import make_divisible, mid_channels, se_channels


def randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BN statistics everywhere, so no branch is trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.15 if p.dim() > 1 else 0.5))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def test_largest_imagenet_subnet_has_the_reference_parameter_count():
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
    net = space.build_supernet()
    sub = space.extract(net, space.largest())
    assert sum(p.numel() for p in sub.parameters()) == 7_664_760
    assert space.params(space.largest()) == 7_664_760


def test_structure_rules():
    assert mid_channels(24, 3) == make_divisible(72, 8) == 72
    assert mid_channels(40, 6) == 240
    assert se_channels(240) == make_divisible(60, 8) == 64
    assert make_divisible(3.2) == 8  # never below the divisor


def test_string_round_trip_and_inactive_layers_ignored():
    a = OFAArchitecture.from_string("ks=" + ",".join(["3"] * 20) + ";e=" + ",".join(["4"] * 20) + ";d=2,2,2,2,2;r=160")
    ks = list(a.ks)
    ks[3] = 7  # layer 3 of stage 0 is inactive at depth 2
    b = OFAArchitecture(tuple(ks), a.e, a.d, a.r)
    assert a == b and hash(a) == hash(b) and a.to_string() != b.to_string()
    ks[1] = 7  # layer 1 of stage 0 is active
    assert OFAArchitecture(tuple(ks), a.e, a.d, a.r) != a
    assert OFAArchitecture.from_string(b.to_string()).to_string() == b.to_string()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("ks=3;e=3;d=2;r=128", "20 kernel"),
        ("ks=" + ",".join(["4"] * 20) + ";e=" + ",".join(["3"] * 20) + ";d=2,2,2,2,2;r=128", "ks value 4"),
        ("ks=" + ",".join(["3"] * 20) + ";e=" + ",".join(["3"] * 20) + ";d=2,2,2,2,2;r=130", "r=130"),
        ("kernel=3", "bad ofa_mbv3 arch part"),
    ],
)
def test_bad_strings_give_one_line_errors(text, fragment):
    with pytest.raises(ValueError, match=fragment) as e:
        OFAArchitecture.from_string(text)
    assert "\n" not in str(e.value)


def test_every_help_arch_parses_and_round_trips(shared_data):
    df = pd.read_csv(shared_data / "latency" / "ofa_mbv3_help.csv.gz")
    strings = df.arch.unique()
    assert len(strings) == 5000
    space = create_search_space("ofa_mbv3", setting="imagenet")
    archs = [space.parse(s) for s in strings]
    assert all(a.to_string() == s for a, s in zip(archs, strings))
    assert len(set(archs)) == 5000  # distinct networks, not just distinct strings


@pytest.mark.slow
def test_sample_of_help_archs_builds_and_runs_imagenet(shared_data):
    df = pd.read_csv(shared_data / "latency" / "ofa_mbv3_help.csv.gz")
    strings = np.random.default_rng(0).choice(df.arch.unique(), 50, replace=False)
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
    net = space.build_supernet().eval()
    for s in strings:
        arch = space.parse(s)
        sub = space.extract(net, arch).eval()
        with torch.no_grad():
            y = sub(torch.randn(1, 3, arch.r, arch.r))
        assert y.shape == (1, 1000) and torch.isfinite(y).all()
        assert sum(p.numel() for p in sub.parameters()) == space.params(arch)


@pytest.mark.slow
@pytest.mark.parametrize("setting, n", [("small", 200), ("imagenet", 200)])
def test_extracted_equals_supernet_for_random_archs(setting, n):
    space = create_search_space("ofa_mbv3", setting=setting, n_classes=10, in_channels=3)
    net = randomise(space.build_supernet())
    rng = np.random.default_rng(1)
    archs = [space.largest(), space.smallest()] + space.sample_many(n - 2, rng)
    worst = 0.0
    for arch in archs:
        x = torch.randn(2, 3, arch.r, arch.r)
        sub = space.extract(net, arch).eval()
        with torch.no_grad():
            ref, out = net(x, arch), sub(x)
        assert ref.abs().max() > 1e-3  # a non-trivial output, so equality means something
        worst = max(worst, float((ref - out).abs().max()))
        assert sum(p.numel() for p in sub.parameters()) == space.params(arch)
    assert worst <= 1e-5


def test_extract_leaves_supernet_unchanged_and_copies_weights():
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1)
    net = randomise(space.build_supernet())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    arch = space.sample(np.random.default_rng(3))
    sub = space.extract(net, arch)
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)  # editing the subnet must not touch the supernet
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(hasattr(m, "active_kernel") for m in net.modules())


def test_genome_round_trip():
    space = create_search_space("ofa_mbv3", setting="small", n_classes=10)
    rng = np.random.default_rng(0)
    lo, hi = space.genome_bounds()
    for a in space.sample_many(50, rng):
        assert space.from_genome(space.to_genome(a)) == a
    for g in rng.integers(lo, hi + 1, size=(50, len(lo))):
        x = space.from_genome(g)
        assert x.r in space.resolutions and space.parse(x.to_string()) == x
    lo, hi = space.genome_bounds()
    assert (hi >= lo).all() and len(lo) == 46


def test_encoding_shapes_and_cost_features():
    space = create_search_space("ofa_mbv3", setting="imagenet", n_classes=1000)
    archs = [space.largest(), space.smallest()]
    X = space.encode(archs)
    assert X.shape == (2, 136)
    C = space.cost_features(archs)
    assert C[0, 5] > 10 * C[1, 5]  # MACs: largest >> smallest
    assert space.macs(space.largest()) > 5e8


def test_unknown_space_and_setting_are_refused():
    with pytest.raises(ValueError, match="unknown search space 'nope'"):
        create_search_space("nope")
    with pytest.raises(ValueError, match="setting 'tiny'"):
        create_search_space("ofa_mbv3", setting="tiny")
