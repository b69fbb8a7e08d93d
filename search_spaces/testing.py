"""The contract suite of a search space, shipped so that whoever adds a space runs the checks every
registered space passes (as ``optuna.testing`` ships Optuna's own sampler and storage tests).

Either subclass a test case and name the space (pytest collects the inherited ``test_*`` methods)::

    from search_spaces.testing import WeightSharingSpaceContract

    class TestMySpace(WeightSharingSpaceContract):  # SearchSpaceContract for a space without a supernet
        def make_space(self):
            return MySpace(n_classes=10, input_size=16)  # a CPU-sized setting

or call the ``check_*`` functions with a space. Imported only by tests (it imports pytest and, for the
supernet checks, torch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from search_spaces.base import SearchSpace, Supernet, WeightSharingSpace


def sample_archs(space: SearchSpace, n: int = 24, seed: int = 0) -> list[Any]:
    """``n`` distinct architectures of ``space`` drawn with ``seed``."""
    return space.sample_many(n, np.random.default_rng(seed))


def check_strings_round_trip(space: SearchSpace, archs: list[Any]) -> None:
    """Canonical strings parse back to equal, equally hashed architectures; a non-architecture is a ValueError."""
    for a in archs:
        back = space.parse(a.to_string())
        assert back == a and hash(back) == hash(a), f"{a.to_string()!r} does not round-trip: {back!r}"
    with pytest.raises(ValueError):
        space.parse("not an architecture")


def check_genome(space: SearchSpace, archs: list[Any], seed: int = 2) -> None:
    """Genomes lie within :meth:`~SearchSpace.genome_bounds` and decode back; any vector within the bounds
    decodes to an architecture of the space (the strategies vary architectures only through genomes)."""
    lo, hi = space.genome_bounds()
    for a in archs:
        g = space.to_genome(a)
        assert g.shape == lo.shape and np.all(g >= lo) and np.all(g <= hi), f"genome {g} is outside [{lo}, {hi}]"
        assert space.from_genome(g) == a
    rng = np.random.default_rng(seed)
    G = rng.integers(lo, hi + 1, size=(20, len(lo)))
    decoded = space.from_genomes(G)
    assert decoded == [space.from_genome(g) for g in G]
    for a in decoded:
        assert space.parse(a.to_string()) == a


def check_features(space: SearchSpace, archs: list[Any]) -> None:
    """Encodings and surrogate features: one finite row per architecture, mostly distinct rows, and a row that
    does not depend on the other architectures of the batch."""
    for X in (space.encode(archs), space.surrogate_features(archs), space.latency_encoding(archs)):
        X = np.asarray(X, dtype=np.float64)
        assert X.shape[0] == len(archs) and np.isfinite(X).all()
        assert len({row.tobytes() for row in X}) > len(archs) // 2  # distinct archs, mostly distinct rows
    assert space.cost_features(archs).shape[0] == len(archs)
    np.testing.assert_array_equal(space.surrogate_features(archs[:3]), space.surrogate_features(archs)[:3])


def _nontrivial_state(space: WeightSharingSpace, supernet: Any, seed: int) -> None:
    """Every BatchNorm gets random affine weights (no zero-initialised residual branch) and the running
    statistics of a few training-mode passes of random subnets on random inputs (as calibration sets them), so
    a slicing or copying mistake in extraction changes the output."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    bns = [m for m in supernet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for m in bns:
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.momentum = None  # cumulative average over the passes below
        supernet.train()
        rng = np.random.default_rng(seed)
        for a in [space.largest(), *space.sample_many(3, rng), space.smallest()]:
            supernet(torch.randn(*space.input_shape(a, 8), generator=gen), a)
    for m in bns:
        m.momentum = 0.1


def check_supernet_equals_extraction(space: WeightSharingSpace, archs: list[Any], seed: int = 0,
                                     rtol: float = 1e-4) -> None:
    """In eval mode, with non-trivial BatchNorm statistics, ``supernet(x, arch)`` (the :class:`Supernet`
    forward training calls) equals ``space.extract(supernet, arch)(x)`` for every arch (largest and smallest
    included), within ``rtol`` of the output's scale; different archs give different outputs, and extraction
    leaves no state behind (a second extraction gives the same output)."""
    import torch

    torch.manual_seed(seed)
    supernet = space.build_supernet()
    assert isinstance(supernet, Supernet) and isinstance(supernet, torch.nn.Module)
    _nontrivial_state(space, supernet, seed)
    supernet.eval()
    outputs = []
    for a in [space.largest(), space.smallest(), *archs]:
        x = torch.randn(*space.input_shape(a, 2), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            want = supernet(x, a)
            got = space.extract(supernet, a).eval()(x)
            again = space.extract(supernet, a).eval()(x)
        assert want.shape == got.shape == (2, space.n_classes), f"{a.to_string()}: shapes {want.shape}, {got.shape}"
        scale = float(want.abs().max())
        assert scale > 0 and torch.isfinite(want).all()
        err = float((want - got).abs().max())
        assert err <= rtol * scale, f"{a.to_string()}: extracted subnet differs from the supernet by {err:.3g} " \
                                    f"(output scale {scale:.3g})"
        assert torch.equal(got, again), f"{a.to_string()}: extraction left state behind"
        outputs.append(want)
    spread = max(float((o - outputs[0]).abs().max()) for o in outputs[1:]) if len(outputs) > 1 else 0.0
    assert spread > 100 * rtol * float(outputs[0].abs().max()), "every subnet gives the same output"


def check_closed_form_costs(space: WeightSharingSpace, archs: list[Any]) -> None:
    """``params`` counts the extracted subnet's parameters; MACs and LUT block keys are there; the largest
    subnet is bigger than the smallest."""
    supernet = space.build_supernet()
    for a in [space.largest(), space.smallest(), *archs]:
        sub = space.extract(supernet, a)
        assert sum(p.numel() for p in sub.parameters()) == space.params(a), a.to_string()
        assert space.blocks(a) and space.macs(a) > 0
        assert len(space.input_shape(a, 3)) == 4 and space.input_shape(a, 3)[0] == 3
    assert space.params(space.largest()) > space.params(space.smallest())
    assert space.macs(space.largest()) > space.macs(space.smallest())


def check_progressive_phases(space: WeightSharingSpace, seed: int = 0) -> None:
    """Every progressive-shrinking phase samples architectures of the space, and its smallest subnet is one."""
    rng = np.random.default_rng(seed)
    phases = space.progressive_phases()
    assert len(phases) >= 1 and len(set(phases)) == len(phases)
    for p in range(len(phases)):
        for a in [space.smallest_phase(p), *(space.sample_phase(rng, p) for _ in range(5))]:
            assert space.parse(a.to_string()) == a


class SearchSpaceContract:
    """The checks every search space passes; subclass it and define :meth:`make_space`."""

    n_archs = 24

    def make_space(self) -> SearchSpace:
        raise NotImplementedError("a contract test case names its space: define make_space()")

    @pytest.fixture(scope="class")
    @classmethod
    def space(cls) -> SearchSpace:
        return cls().make_space()

    def test_strings_round_trip(self, space: SearchSpace) -> None:
        check_strings_round_trip(space, sample_archs(space, self.n_archs))

    def test_genome(self, space: SearchSpace) -> None:
        check_genome(space, sample_archs(space, self.n_archs))

    def test_features(self, space: SearchSpace) -> None:
        check_features(space, sample_archs(space, self.n_archs))


class WeightSharingSpaceContract(SearchSpaceContract):
    """The search-space checks plus those of a supernet space (subclass it and define :meth:`make_space`)."""

    def test_supernet_equals_extraction(self, space: WeightSharingSpace) -> None:
        check_supernet_equals_extraction(space, sample_archs(space, 4, seed=1))

    def test_closed_form_costs(self, space: WeightSharingSpace) -> None:
        check_closed_form_costs(space, sample_archs(space, 3, seed=3))

    def test_progressive_phases(self, space: WeightSharingSpace) -> None:
        check_progressive_phases(space)
