"""The nb201 tabular space: registry, round-trips of all 15625 cells, genome, tabular accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_spaces import create_search_space
from search_spaces.nb201.arch import NB201Architecture
from search_spaces.nb201.space import active_edges, encode_structure, encode_wl
from search_spaces.nb201.tabular import NB201Tabular


@pytest.fixture(scope="module")
def table(shared_data: Path) -> NB201Tabular:
    return NB201Tabular(shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv")


def test_all_strings_round_trip_and_genome(table: NB201Tabular) -> None:
    space = create_search_space("nb201")
    assert len(table) == 15625
    archs = [space.parse(s) for s in table.archs]
    assert len(set(archs)) == 15625
    assert [a.to_string() for a in archs] == table.archs
    genomes = np.stack([space.to_genome(a) for a in archs])
    lo, hi = space.genome_bounds()
    assert genomes.shape == (15625, 6) and (genomes >= lo).all() and (genomes <= hi).all()
    assert [space.from_genome(g) for g in genomes] == archs
    assert set(space.all_archs()) == set(archs)
    assert space.encode(archs[:3]).shape == (3, 30)


def test_best_cifar10_arch_is_index_6111(table: NB201Tabular) -> None:
    idx, arch, acc = table.best()
    assert idx == 6111
    assert acc == pytest.approx(94.37, abs=0.005)
    assert table.error([arch])[0] == pytest.approx(100 - 94.37, abs=0.005)
    assert table.indices([NB201Architecture.from_string(arch)])[0] == 6111


def test_structure_features() -> None:
    space = create_search_space("nb201")
    a = space.sample(np.random.default_rng(0))
    dead = NB201Architecture(("nor_conv_3x3", "none", "none", "none", "none", "skip_connect"))
    assert not active_edges(dead).any()  # node 1 never reaches the output, node 2 is never reached
    assert encode_structure([dead])[0, -2] == 0.0
    # an edge out of an unreachable node is dead: same function as with 'none' there
    twin = NB201Architecture(("none",) * 6)
    assert space.isomorphism_key(dead) == space.isomorphism_key(twin)
    assert len(space.dedup([dead, twin, a])) == 1 + (space.isomorphism_key(a) != space.isomorphism_key(dead))


def test_wl_features_fixed_layout_and_dead_edges() -> None:
    space = create_search_space("nb201", encoding="wl")
    # edges: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
    conv = NB201Architecture(("none", "none", "none", "nor_conv_3x3", "none", "none"))
    dead = NB201Architecture(("nor_conv_1x1", "none", "none", "nor_conv_3x3", "none", "none"))  # node 1 unused
    live = NB201Architecture(("nor_conv_1x1", "none", "none", "nor_conv_3x3", "skip_connect", "none"))
    X = space.encode([conv, dead, live])
    assert X.shape == (3, 99)
    np.testing.assert_array_equal(X[0], X[1])  # a dead edge changes nothing
    assert not (X[0] == X[2]).all()
    assert X[0].sum() == 1 + 1 + 1  # one op, (conv3x3 <- input), output <- {conv3x3}
    # live: conv1x1, conv3x3, skip; conv1x1 <- input, conv3x3 <- input, skip <- {conv1x1}; output <- 2 ops
    assert X[2].sum() == 3 + 3 + 1
    rng = np.random.default_rng(0)
    others = [space.sample(rng) for _ in range(20)]
    np.testing.assert_array_equal(encode_wl([live])[0], encode_wl([*others, live])[-1])  # fixed layout
    empty = NB201Architecture(("none",) * 6)
    unreachable = NB201Architecture(("nor_conv_3x3", "none", "none", "none", "none", "skip_connect"))
    np.testing.assert_array_equal(encode_wl([unreachable]), encode_wl([empty]))
    assert encode_wl([empty]).sum() == 1  # only the output node, fed by nothing


def test_bad_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    space = create_search_space("nb201")
    with pytest.raises(ValueError, match="encoding='graph' is invalid"):
        create_search_space("nb201", encoding="graph")
    with pytest.raises(ValueError, match="genome"):
        space.from_genome(np.array([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="does not exist"):
        NB201Tabular(tmp_path / "missing.csv")
