"""The contracts every space implements (see DESIGN.md, "Core types and contracts").

:class:`SearchSpace` is what the search and the predictors call (sampling, strings, features, the integer
genome through which every strategy varies architectures); :class:`WeightSharingSpace` adds what training,
measurement and export call on a supernet space (supernet build, its ``forward(x, arch)`` (:class:`Supernet`)
and extraction, extremes, costs, input shape, LUT block keys, progressive-shrinking phases). Callers rely on
these declarations, never on ``hasattr`` probes; :mod:`search_spaces.testing` checks an implementation keeps them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np


@runtime_checkable
class Architecture(Protocol):
    """What every space's architecture is: a frozen, hashable value with a canonical string
    (``space.parse(arch.to_string()) == arch``); the cache key of measurements, predictions and evaluations.
    Each space has its own dataclass (``NB201Architecture``, ``FBNetArchitecture``, ``OFAArchitecture``)."""

    def to_string(self) -> str: ...

    def __hash__(self) -> int: ...


A = TypeVar("A", bound=Architecture)
A_in = TypeVar("A_in", bound=Architecture, contravariant=True)


@runtime_checkable
class Supernet(Protocol[A_in]):
    """What :meth:`WeightSharingSpace.build_supernet` returns: a torch module whose ``forward(x, arch)`` runs
    the subnet ``arch`` on the batch ``x`` (shape :meth:`WeightSharingSpace.input_shape`) and returns its logits
    ``(batch, n_classes)``, as training calls it (``supernet(x, arch)``). In eval mode its output equals that of
    ``space.extract(supernet, arch)`` on the same ``x`` (the contract suite checks it)."""

    def __call__(self, x: Any, arch: A_in) -> Any: ...

    def forward(self, x: Any, arch: A_in) -> Any: ...


class SearchSpace(ABC, Generic[A]):
    """A family of architectures of type ``A`` (see :class:`Architecture`)."""

    name: str = "base"

    # --- architectures -------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: np.random.Generator) -> A:
        """One architecture drawn uniformly from the space."""

    @abstractmethod
    def parse(self, text: str) -> A:
        """Architecture from its canonical string (error names the bad part)."""

    @abstractmethod
    def encode(self, archs: Sequence[A]) -> np.ndarray:
        """Fixed-length float features, one row per architecture (for predictors)."""

    # --- integer genome (NSGA-II, Optuna) ---------------------------------------------------------
    @abstractmethod
    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive lower and upper bounds of every gene."""

    @abstractmethod
    def to_genome(self, arch: A) -> np.ndarray:
        """The integer vector of ``arch`` within :meth:`genome_bounds`."""

    @abstractmethod
    def from_genome(self, g: np.ndarray) -> A:
        """The architecture of an integer vector (inverse of :meth:`to_genome` up to inactive genes)."""

    def from_genomes(self, G: np.ndarray) -> list[A]:
        """The architectures of the rows of a genome matrix (spaces decode them in one pass where they can)."""
        return [self.from_genome(g) for g in np.asarray(G)]

    # --- features --------------------------------------------------------------------------------
    def cost_features(self, archs: Sequence[A]) -> np.ndarray:
        """Physical cost features (e.g. MACs and params per stage), one row per architecture; spaces without
        them return zero columns."""
        return np.zeros((len(archs), 0))

    def latency_encoding(self, archs: Sequence[A]) -> np.ndarray:
        """The encoding over which the few-shot latency predictor fits additive per-op costs: :meth:`encode` by
        default; a space whose layers repeat a shape overrides it with op counts per layer shape (FBNet), so
        the costs it must learn from a handful of measurements are fewer."""
        return np.asarray(self.encode(archs), dtype=np.float64)

    def surrogate_features(self, archs: Sequence[A]) -> np.ndarray:
        """Features the search's surrogates (the closed loop's error GP) read: the encoding beside the cost
        features by default; a space with a better-suited description overrides it (NB201: structure and
        Weisfeiler-Lehman counts of the active cell graph)."""
        return np.hstack([np.asarray(self.encode(archs), dtype=np.float64),
                          np.asarray(self.cost_features(archs), dtype=np.float64)])

    def sample_many(self, n: int, rng: np.random.Generator, unique: bool = True) -> list[A]:
        out: list[A] = []
        seen: set[A] = set()
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

    def resolution(self, arch: A) -> int:
        """Input image side length (pixels) the subnet ``arch`` runs at; spaces without an elastic
        resolution return their fixed input size."""
        return int(arch.r)



class WeightSharingSpace(SearchSpace[A]):
    """A space whose architectures are subnets of one trainable supernet (OFA-MobileNetV3, FBNet)."""

    n_classes: int  # logits of every subnet, the width of the supernet's output (supernet_overhead's labels)

    @abstractmethod
    def build_supernet(self) -> Supernet[A]:
        """A fresh supernet (torch module) holding every subnet's weights; ``supernet(x, arch)`` runs ``arch``."""

    @abstractmethod
    def extract(self, supernet: Supernet[A], arch: A) -> Any:
        """A plain static module with ``arch``'s weights copied out of ``supernet`` (no active state left)."""

    @abstractmethod
    def blocks(self, arch: A) -> list[str]:
        """LUT keys of the blocks that make up ``arch``."""

    def block_catalogue(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        """Every distinct block of the space: LUT key (as in :meth:`blocks`) -> (static module with random
        weights, input shape), for timing blocks alone (latency_luts.build). A module of ``None`` marks a block
        that does no work (an identity skip): 0 ms."""
        raise NotImplementedError(f"search space {self.name!r} has no block catalogue yet; expected one to build a LUT")

    def fixed_blocks(self) -> list[tuple[Any, tuple[int, ...]]]:
        """(module, input shape) of the parts every subnet runs identically and :meth:`blocks` leaves out
        (e.g. a fixed stem and head); a LUT times them into its constant. Spaces that key every part return
        none."""
        return []

    def describe(self) -> dict[str, Any]:
        """The constructor settings that fix the space's shapes (recorded beside a LUT built for it)."""
        return {}

    @abstractmethod
    def largest(self) -> A: ...

    @abstractmethod
    def smallest(self) -> A: ...

    @abstractmethod
    def params(self, arch: A) -> int:
        """Parameter count of the extracted subnet (closed form)."""

    @abstractmethod
    def macs(self, arch: A) -> int:
        """Multiply-accumulates of one forward pass at the arch's resolution (closed form)."""

    @abstractmethod
    def input_shape(self, arch: A, batch: int = 1) -> tuple[int, int, int, int]:
        """``(batch, channels, r, r)`` of the subnet's input."""

    @abstractmethod
    def progressive_phases(self) -> tuple[str, ...]:
        """Names of the progressive-shrinking phases, in training order."""

    @abstractmethod
    def sample_phase(self, rng: np.random.Generator, phase: int) -> A:
        """A subnet from the part of the space open in ``phase``."""

    @abstractmethod
    def smallest_phase(self, phase: int) -> A:
        """The smallest subnet open in ``phase``."""
