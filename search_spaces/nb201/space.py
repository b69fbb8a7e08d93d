"""The ``nb201`` search space: the 15625 NAS-Bench-201 cells, tabular (no supernet), with an integer genome.

Genome: 6 genes (one per edge in :data:`~search_spaces.nb201.arch.EDGES` order), each an index into
:data:`~search_spaces.nb201.arch.OPS` (5 ops). Genome order is NOT the dataset (NATS/HW-NAS-Bench) index
order; the tabular evaluator (:mod:`search_spaces.nb201.tabular`) maps arch strings to dataset indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations_with_replacement

import numpy as np

from search_spaces.base import SearchSpace
from search_spaces.nb201.arch import EDGES, N_EDGES, N_NODES, OPS, NB201Architecture, encode_onehot
from search_spaces.registry import register_search_space

N_ARCHS = len(OPS) ** N_EDGES


def active_edges(arch: NB201Architecture) -> np.ndarray:
    """Boolean mask of edges on some input -> output path through non-``none`` ops."""
    live = [op != "none" for op in arch.ops]
    fwd = [True] + [False] * (N_NODES - 1)  # reachable from the input node
    for k, (to, frm) in enumerate(EDGES):
        if live[k] and fwd[frm]:
            fwd[to] = True
    bwd = [False] * (N_NODES - 1) + [True]  # reaches the output node
    for k in reversed(range(N_EDGES)):
        to, frm = EDGES[k]
        if live[k] and bwd[to]:
            bwd[frm] = True
    return np.array([live[k] and fwd[frm] and bwd[to] for k, (to, frm) in enumerate(EDGES)], dtype=bool)


def encode_structure(archs: Sequence[NB201Architecture]) -> np.ndarray:
    """Path-aware features: one-hot of the *effective* op per edge (inactive edges read as ``none``), counts
    of each effective op, a connected flag and the longest input->output path length (in ops, pooling and
    skips included)."""
    rows = np.zeros((len(archs), N_EDGES * len(OPS) + len(OPS) + 2), dtype=np.float64)
    for r, a in enumerate(archs):
        act = active_edges(a)
        eff = [op if on else "none" for op, on in zip(a.ops, act, strict=True)]
        for k, op in enumerate(eff):
            rows[r, k * len(OPS) + OPS.index(op)] = 1.0
            rows[r, N_EDGES * len(OPS) + OPS.index(op)] += 1.0
        depth = [0] + [-1] * (N_NODES - 1)
        for k, (to, frm) in enumerate(EDGES):
            if act[k] and depth[frm] >= 0:
                depth[to] = max(depth[to], depth[frm] + (eff[k] != "skip_connect"))
        rows[r, -2] = float(act.any())
        rows[r, -1] = float(max(depth[-1], 0))
    return rows


_LIVE = tuple(op for op in OPS if op != "none")
# in-neighbourhoods of one Weisfeiler-Lehman step on the op graph: an op node's inputs are the ops on the active
# edges into its source node (the cell input for node 0, at most 2 ops for node 2); the output node's are the
# ops into node 3 (at most 3)
_OP_IN = [("input",)] + [c for n in (1, 2) for c in combinations_with_replacement(_LIVE, n)]
_OUT_IN = [c for n in range(4) for c in combinations_with_replacement(_LIVE, n)]
_WL_COLUMNS = {key: i for i, key in enumerate(
    [("op", o) for o in _LIVE] + [("op", o, c) for o in _LIVE for c in _OP_IN] + [("output", c) for c in _OUT_IN])}


def encode_wl(archs: Sequence[NB201Architecture]) -> np.ndarray:
    """Weisfeiler-Lehman features (one refinement) of the cell as a graph whose nodes are the ops on active
    edges: counts of each op, of each (op, sorted ops feeding its source node) pair and of the sorted ops
    feeding the output. Dead edges are dropped, so cells that differ only in them share a row. A fixed column
    layout (99 columns), independent of which archs are encoded."""
    rows = np.zeros((len(archs), len(_WL_COLUMNS)), dtype=np.float64)
    for r, a in enumerate(archs):
        act = active_edges(a)
        into: list[list[str]] = [[] for _ in range(N_NODES)]
        for k, (to, _) in enumerate(EDGES):
            if act[k]:
                into[to].append(a.ops[k])
        for k, (_, frm) in enumerate(EDGES):
            if act[k]:
                rows[r, _WL_COLUMNS["op", a.ops[k]]] += 1.0
                inputs = ("input",) if frm == 0 else tuple(sorted(into[frm], key=_LIVE.index))
                rows[r, _WL_COLUMNS["op", a.ops[k], inputs]] += 1.0
        rows[r, _WL_COLUMNS["output", tuple(sorted(into[-1], key=_LIVE.index))]] = 1.0
    return rows


@register_search_space("nb201")
class NB201Space(SearchSpace[NB201Architecture]):
    """NAS-Bench-201 cell space: 6 edges x 5 ops = 15625 architectures, evaluated from tables.

    ``encoding="onehot"`` (30 columns), ``"structure"`` (one-hot of effective ops + path features) or ``"wl"``
    (Weisfeiler-Lehman counts of the active op graph, :func:`encode_wl`).
    """

    def __init__(self, encoding: str = "onehot") -> None:
        if encoding not in ("onehot", "structure", "wl"):
            raise ValueError(f"encoding={encoding!r} is invalid; expected 'onehot', 'structure' or 'wl'")
        self.encoding = encoding

    # --- architectures -------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> NB201Architecture:
        return NB201Architecture.from_index(rng.integers(0, len(OPS), N_EDGES))

    def parse(self, text: str) -> NB201Architecture:
        return NB201Architecture.from_string(text)

    def all_archs(self) -> list[NB201Architecture]:
        """Every architecture, in genome order (edge 0 slowest)."""
        return [NB201Architecture(tuple(OPS[i] for i in g)) for g in np.ndindex(*(len(OPS),) * N_EDGES)]

    # --- features ------------------------------------------------------------------------------
    def encode(self, archs: Sequence[NB201Architecture]) -> np.ndarray:
        enc = {"onehot": encode_onehot, "structure": encode_structure, "wl": encode_wl}[self.encoding]
        return enc(archs)

    def surrogate_features(self, archs: Sequence[NB201Architecture]) -> np.ndarray:
        """Structure counts beside the Weisfeiler-Lehman encoding of the active op graph (what the closed
        loop's error GP reads; counts suit its exponential kernel)."""
        return np.hstack([encode_structure(archs), encode_wl(archs)])

    @staticmethod
    def isomorphism_key(arch: NB201Architecture) -> tuple[str, ...]:
        """Cheap dedup key: the ops with inactive edges (off every input->output path) set to ``none``.

        Two archs with equal keys compute the same function (dead edges contribute nothing); it merges most,
        not all, isomorphic pairs (tables carry an exact ``UniqueString`` where available).
        """
        return tuple(op if on else "none" for op, on in zip(arch.ops, active_edges(arch), strict=True))

    def dedup(self, archs: Sequence[NB201Architecture]) -> list[NB201Architecture]:
        """First architecture of each :meth:`isomorphism_key` class, order kept."""
        seen: set[tuple[str, ...]] = set()
        out = []
        for a in archs:
            k = self.isomorphism_key(a)
            if k not in seen:
                seen.add(k)
                out.append(a)
        return out

    # --- integer genome ------------------------------------------------------------------------
    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive bounds of the 6 op indices."""
        return np.zeros(N_EDGES, dtype=int), np.full(N_EDGES, len(OPS) - 1, dtype=int)

    def to_genome(self, arch: NB201Architecture) -> np.ndarray:
        return np.asarray([OPS.index(o) for o in arch.ops], dtype=int)

    def from_genome(self, g: np.ndarray) -> NB201Architecture:
        g = np.asarray(np.rint(g), dtype=int)
        if g.shape != (N_EDGES,) or g.min() < 0 or g.max() >= len(OPS):
            raise ValueError(f"nb201 genome {g.tolist()} is invalid; expected {N_EDGES} ints in [0, {len(OPS) - 1}]")
        return NB201Architecture.from_index(g)
