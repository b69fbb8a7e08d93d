"""The SearchSpace contract every space implements (see DESIGN.md, "Core types and contracts")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np


class SearchSpace(ABC):
    """A family of architectures.

    Architectures are frozen, hashable dataclasses with ``to_string()`` / ``from_string()``; they are the
    cache keys for measurements, predictions and evaluations.
    """

    name: str = "base"

    # --- architectures -------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Hashable:
        """One architecture drawn uniformly from the space."""

    @abstractmethod
    def mutate(self, arch: Any, rng: np.random.Generator, prob: float = 0.1) -> Any:
        """A copy of ``arch`` with each choice resampled with probability ``prob``."""

    @abstractmethod
    def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Any:
        """Uniform crossover of two architectures."""

    @abstractmethod
    def parse(self, text: str) -> Any:
        """Architecture from its canonical string (error names the bad part)."""

    @abstractmethod
    def encode(self, archs: Sequence[Any]) -> np.ndarray:
        """Fixed-length float features, one row per architecture (for predictors)."""

    def sample_many(self, n: int, rng: np.random.Generator, unique: bool = True) -> list[Any]:
        out: list[Any] = []
        seen: set[Any] = set()
        tries = 0
        while len(out) < n:
            a = self.sample(rng)
            tries += 1
            if unique and a in seen:
                if tries > 100 * n:
                    raise ValueError(f"cannot draw {n} distinct architectures from space {self.name!r}")
                continue
            seen.add(a)
            out.append(a)
        return out

    def resolution(self, arch: Any) -> int:
        """Input image side length (pixels) the subnet ``arch`` runs at; spaces without an elastic
        resolution return their fixed input size."""
        return int(arch.r)

    # --- optional: weight-sharing spaces ---------------------------------------------------------
    def build_supernet(self) -> Any:
        raise NotImplementedError(f"search space {self.name!r} has no supernet")

    def extract(self, supernet: Any, arch: Any) -> Any:
        raise NotImplementedError(f"search space {self.name!r} has no supernet")

    def blocks(self, arch: Any) -> list[str]:
        """LUT keys of the blocks that make up ``arch``."""
        raise NotImplementedError(f"search space {self.name!r} defines no blocks")
