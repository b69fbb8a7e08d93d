"""The ``fbnet`` search space (HW-NAS-Bench's FBNet): sampling, variation, encodings, supernet, extraction,
closed-form costs and LUT block keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from search_spaces.base import WeightSharingSpace
from search_spaces.fbnet.arch import (
    N_LAYERS,
    OPS,
    FBNetArchitecture,
    encode_costs,
    encode_onehot,
    encode_shape_counts,
    op_indices,
)
from search_spaces.fbnet.structure import (
    SETTINGS,
    check_dataset,
    count_macs,
    count_params,
    layer_cost_tables,
    layer_specs,
    op_params,
)
from search_spaces.registry import register_search_space

__all__ = ["SETTINGS", "FBNetSpace", "op_params"]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or int(value) <= 0:
        raise ValueError(f"fbnet {name}={value!r} is invalid; expected a positive integer")
    return int(value)


@register_search_space("fbnet")
class FBNetSpace(WeightSharingSpace[FBNetArchitecture]):
    """22 searchable layers x 9 ops; ``dataset`` picks the CIFAR-100 or ImageNet macro-architecture.

    ``input_size`` (default 32 / 224) is the fixed input side of every subnet; ``n_classes`` defaults to the
    dataset's (100 / 1000), ``in_channels`` to 3.
    """

    def __init__(self, dataset: str = "cifar100", n_classes: int | None = None, in_channels: int = 3,
                 input_size: int | None = None, dropout: float = 0.1) -> None:
        st = check_dataset(dataset)
        self.dataset = dataset
        self.n_classes = _positive_int("n_classes", st["classes"] if n_classes is None else n_classes)
        if self.n_classes < 2:
            raise ValueError(f"fbnet n_classes={n_classes!r} is invalid; expected an integer >= 2")
        self.in_channels = _positive_int("in_channels", in_channels)
        self.input_size = _positive_int("input_size", st["input"] if input_size is None else input_size)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"fbnet dropout={dropout!r} is invalid; expected a probability in [0, 1)")
        self.dropout = float(dropout)

    # --- architectures -------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> FBNetArchitecture:
        return FBNetArchitecture.from_index(rng.integers(0, len(OPS), N_LAYERS))

    def largest(self) -> FBNetArchitecture:
        """Every layer k5_e6: the supernet's full weights."""
        return FBNetArchitecture(("k5_e6",) * N_LAYERS)

    def smallest(self) -> FBNetArchitecture:
        """The fewest-MAC subnet: per layer the cheapest op. That is skip, except at a shape-changing layer where
        the 1x1 skip conv can cost more than ``k3_e1_g2`` (layer shapes do not depend on the ops, so the per-layer
        minimum is the global one)."""
        return self._cheapest(OPS)

    def _cheapest(self, ops: Sequence[str]) -> FBNetArchitecture:
        specs = layer_specs(self.largest(), self.dataset, self.input_size)
        pick = [min(ops, key=lambda o, s=s: (replace(s, op=o).macs(), o != "skip")) for s in specs]
        return FBNetArchitecture(tuple(pick))

    # --- progressive shrinking: elastic kernel, then expansion, then groups and skip ----------------
    PHASES = ("kernel", "expand", "all")
    _PHASE_OPS = (("k3_e6", "k5_e6"), ("k3_e1", "k3_e3", "k3_e6", "k5_e1", "k5_e3", "k5_e6"), OPS)

    def progressive_phases(self) -> tuple[str, ...]:
        return self.PHASES

    def _phase_ops(self, phase: int) -> tuple[str, ...]:
        if not 0 <= phase < len(self.PHASES):
            raise ValueError(f"progressive phase {phase} is out of range; expected 0..{len(self.PHASES) - 1}")
        return self._PHASE_OPS[phase]

    def sample_phase(self, rng: np.random.Generator, phase: int) -> FBNetArchitecture:
        """A subnet drawn from the ops open in progressive-shrinking ``phase``."""
        ops = self._phase_ops(phase)
        return FBNetArchitecture(tuple(ops[int(i)] for i in rng.integers(0, len(ops), N_LAYERS)))

    def smallest_phase(self, phase: int) -> FBNetArchitecture:
        """The fewest-MAC subnet open in ``phase`` (the sandwich's lower slice)."""
        return self._cheapest(self._phase_ops(phase))

    def parse(self, text: str) -> FBNetArchitecture:
        return FBNetArchitecture.from_string(text)

    def resolution(self, arch: FBNetArchitecture) -> int:
        return self.input_size

    # --- features and costs --------------------------------------------------------------------
    def encode(self, archs: Sequence[FBNetArchitecture]) -> np.ndarray:
        return encode_onehot(archs)

    def latency_encoding(self, archs: Sequence[FBNetArchitecture]) -> np.ndarray:
        """Op counts per layer shape (:func:`~search_spaces.fbnet.arch.encode_shape_counts`): layers 2-4 of a
        stage have one shape, so they share per-op latency costs on any device."""
        return encode_shape_counts(archs, self.dataset, self.input_size)

    def cost_features(self, archs: Sequence[FBNetArchitecture]) -> np.ndarray:
        """Analytic per-stage costs of :func:`encode_costs` plus total MACs (M) and params (M) of the subnet
        (closed form, gathered for the whole batch from per-layer tables)."""
        base = encode_costs(archs, self.dataset, self.input_size)
        macs, params, fixed_macs, fixed_params = layer_cost_tables(self.dataset, self.input_size, self.n_classes,
                                                                   self.in_channels)
        idx, layers = op_indices(archs), np.arange(N_LAYERS)[None, :]
        extra = np.column_stack([(fixed_macs + macs[layers, idx].sum(1)) / 1e6,
                                 (fixed_params + params[layers, idx].sum(1)) / 1e6])
        return np.hstack([base, extra.reshape(len(archs), 2)])

    def params(self, arch: FBNetArchitecture) -> int:
        return count_params(arch, self.n_classes, self.in_channels, self.dataset)

    def macs(self, arch: FBNetArchitecture) -> int:
        return count_macs(arch, self.n_classes, self.in_channels, self.dataset, self.input_size)

    def input_shape(self, arch: FBNetArchitecture, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_channels, self.input_size, self.input_size)

    # --- supernet ------------------------------------------------------------------------------
    def build_supernet(self):  # noqa: ANN201 - torch imported lazily
        from search_spaces.fbnet.supernet import FBNetSupernet

        return FBNetSupernet(self.n_classes, self.in_channels, self.dataset, self.dropout)

    def extract(self, supernet, arch: FBNetArchitecture):  # noqa: ANN001, ANN201
        from search_spaces.fbnet.static import extract_subnet

        return extract_subnet(supernet, arch)

    # --- integer genome ------------------------------------------------------------------------
    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(N_LAYERS, dtype=int), np.full(N_LAYERS, len(OPS) - 1, dtype=int)

    def to_genome(self, arch: FBNetArchitecture) -> np.ndarray:
        return np.asarray(arch.index, dtype=int)

    def from_genome(self, g: np.ndarray) -> FBNetArchitecture:
        return self.from_genomes(np.asarray(g)[None, :])[0]

    def from_genomes(self, G: np.ndarray) -> list[FBNetArchitecture]:
        """Architectures of the rows of an op-index matrix, decoded in one pass."""
        G = np.asarray(np.rint(G), dtype=np.int64).reshape(len(G), -1)
        if G.shape[1] != N_LAYERS or (G < 0).any() or (G >= len(OPS)).any():
            bad = G[0] if G.shape[1] != N_LAYERS else G[((G < 0) | (G >= len(OPS))).any(1)][0]
            raise ValueError(f"genome {bad.tolist()} is invalid; expected {N_LAYERS} op indices in 0..{len(OPS) - 1}")
        return [FBNetArchitecture.trusted(row) for row in G.tolist()]

    # --- LUT keys ------------------------------------------------------------------------------
    def layer_shapes(self) -> list[tuple[int, int, int, int]]:
        """(input H/W, Cin, Cout, stride) of each searchable layer, in order."""
        return [(s.in_hw, s.cin, s.cout, s.stride) for s in layer_specs(self.largest(), self.dataset, self.input_size)]

    def blocks(self, arch: FBNetArchitecture) -> list[str]:
        """HW-NAS-Bench-style block keys: op, input H/W, Cin, Cout, expansion, kernel, stride, group."""
        return [s.key() for s in layer_specs(arch, self.dataset, self.input_size)]

    def block_catalogue(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """Every (layer shape, op) block of the 22 searchable layers; identity skips (no work) as ``None``."""
        from search_spaces.fbnet.static import FBNetBlock

        cat: dict[str, tuple[Any, tuple[int, ...]]] = {}
        for op in OPS:
            for spec in layer_specs(FBNetArchitecture((op,) * N_LAYERS), self.dataset, self.input_size):
                key = spec.key()
                if key not in cat:
                    shape = (1, spec.cin, spec.in_hw, spec.in_hw)
                    cat[key] = (None if spec.is_skip and spec.shape_preserving else FBNetBlock(spec), shape)
        return cat

    def fixed_blocks(self) -> list[tuple[Any, tuple[int, ...]]]:
        """The stem (at the input size) and the head with the classifier (at the last layer's output)."""
        from torch import nn

        net = self.build_supernet()
        last = layer_specs(self.largest(), self.dataset, self.input_size)[-1]
        return [(net.stem, self.input_shape(self.largest())),
                (nn.Sequential(net.head, net.classifier), (1, last.cout, last.out_hw, last.out_hw))]

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "input_size": self.input_size, "n_classes": self.n_classes,
                "in_channels": self.in_channels}
