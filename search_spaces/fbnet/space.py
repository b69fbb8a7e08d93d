"""The ``fbnet`` search space (HW-NAS-Bench's FBNet): sampling, variation, encodings, LUT block keys.

The weight-sharing FBNet supernet is not built yet (issue "Search spaces II"); this space serves latency
prediction, LUTs and predictor-driven search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search_spaces.base import SearchSpace
from search_spaces.fbnet.arch import (
    CIFAR100_STRIDES,
    IMAGENET_STRIDES,
    N_LAYERS,
    OPS,
    STAGE_CHANNELS,
    STAGE_LAYERS,
    STEM_CHANNELS,
    FBNetArchitecture,
    encode_costs,
    encode_onehot,
)
from search_spaces.registry import register_search_space

SETTINGS = {
    "cifar100": {"strides": CIFAR100_STRIDES, "input": 32, "stem_stride": 1, "head": 1504},
    "imagenet": {"strides": IMAGENET_STRIDES, "input": 224, "stem_stride": 2, "head": 1984},
}


def op_params(op: str) -> tuple[int, int, int]:
    """(expansion, kernel, group) of an op name; skip -> (1, 1, 1)."""
    if op == "skip":
        return 1, 1, 1
    parts = op.split("_")
    return int(parts[1][1:]), int(parts[0][1:]), int(parts[2][1:]) if len(parts) > 2 else 1


@register_search_space("fbnet")
class FBNetSpace(SearchSpace):
    """22 searchable layers x 9 ops; ``dataset`` picks the CIFAR-100 or ImageNet macro-architecture."""

    def __init__(self, dataset: str = "cifar100", n_classes: int | None = None) -> None:
        if dataset not in SETTINGS:
            raise ValueError(f"fbnet dataset {dataset!r} is invalid; expected one of {sorted(SETTINGS)}")
        self.dataset = dataset
        self.n_classes = int(n_classes or (100 if dataset == "cifar100" else 1000))

    def sample(self, rng: np.random.Generator) -> FBNetArchitecture:
        return FBNetArchitecture.from_index(rng.integers(0, len(OPS), N_LAYERS))

    def mutate(self, arch: FBNetArchitecture, rng: np.random.Generator, prob: float = 0.1) -> FBNetArchitecture:
        ops = [OPS[int(rng.integers(len(OPS)))] if rng.random() < prob else o for o in arch.ops]
        return FBNetArchitecture(tuple(ops))

    def crossover(self, a: FBNetArchitecture, b: FBNetArchitecture, rng: np.random.Generator) -> FBNetArchitecture:
        return FBNetArchitecture(tuple(x if rng.random() < 0.5 else y for x, y in zip(a.ops, b.ops)))

    def parse(self, text: str) -> FBNetArchitecture:
        return FBNetArchitecture.from_string(text)

    def encode(self, archs: Sequence[FBNetArchitecture]) -> np.ndarray:
        return encode_onehot(archs)

    def cost_features(self, archs: Sequence[FBNetArchitecture]) -> np.ndarray:
        return encode_costs(archs, self.dataset)

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(N_LAYERS, dtype=int), np.full(N_LAYERS, len(OPS) - 1, dtype=int)

    def to_genome(self, arch: FBNetArchitecture) -> np.ndarray:
        return np.asarray([OPS.index(o) for o in arch.ops], dtype=int)

    def from_genome(self, g: np.ndarray) -> FBNetArchitecture:
        return FBNetArchitecture.from_index(np.asarray(np.rint(g), dtype=int))

    def layer_shapes(self) -> list[tuple[int, int, int, int]]:
        """(input H/W, Cin, Cout, stride) of each searchable layer, in order."""
        st = SETTINGS[self.dataset]
        hw = st["input"] // st["stem_stride"]
        cin, out = STEM_CHANNELS, []
        for n, cout, s in zip(STAGE_LAYERS, STAGE_CHANNELS, st["strides"]):
            for i in range(n):
                stride = s if i == 0 else 1
                out.append((hw, cin, cout, stride))
                hw, cin = hw // stride, cout
        return out

    def blocks(self, arch: FBNetArchitecture) -> list[str]:
        """HW-NAS-Bench-style block keys: op, input H/W, Cin, Cout, expansion, kernel, stride, group."""
        keys = []
        for (hw, cin, cout, stride), op in zip(self.layer_shapes(), arch.ops):
            e, k, g = op_params(op)
            kind = "skip" if op == "skip" else "ir"
            keys.append(f"{kind}_hw{hw}_cin{cin}_cout{cout}_e{e}_k{k}_s{stride}_g{g}")
        return keys
