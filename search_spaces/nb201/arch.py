"""NAS-Bench-201 architectures and their canonical cell strings.

A cell has 4 nodes; every node j > 0 sums one operation applied to each earlier node i, giving 6 edges in the
order (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2). The canonical string lists them as
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, e.g.
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
N_NODES = 4
EDGES = tuple((j, i) for j in range(1, N_NODES) for i in range(j))  # (to, from)
N_EDGES = len(EDGES)
ONEHOT_WIDTH = N_EDGES * len(OPS)


@dataclass(frozen=True)
class NB201Architecture:
    """One NB201 cell: ``ops[k]`` is the operation on edge ``EDGES[k]`` = (to-node, from-node)."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(str(o) for o in self.ops))
        if len(self.ops) != N_EDGES:
            raise ValueError(f"nb201 arch needs {N_EDGES} edge ops, got {len(self.ops)}: {list(self.ops)}")
        for o in self.ops:
            if o not in OPS:
                raise ValueError(f"nb201 op {o!r} is invalid; expected one of {list(OPS)}")

    def to_string(self) -> str:
        parts = []
        k = 0
        for j in range(1, N_NODES):
            parts.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(parts)

    def __str__(self) -> str:
        return self.to_string()

    @classmethod
    def from_string(cls, text: str) -> NB201Architecture:
        text = str(text).strip()
        nodes = text.split("+")
        if len(nodes) != N_NODES - 1:
            raise ValueError(f"nb201 arch {text!r} has {len(nodes)} node groups; expected {N_NODES - 1} joined by '+'")
        ops: list[str] = []
        for j, group in enumerate(nodes, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise ValueError(f"nb201 node group {group!r} in {text!r} must be wrapped in '|'")
            items = group[1:-1].split("|")
            if len(items) != j:
                raise ValueError(f"nb201 node {j} group {group!r} has {len(items)} inputs; expected {j}")
            for i, item in enumerate(items):
                op, sep, src = item.partition("~")
                if not sep or src != str(i):
                    raise ValueError(f"nb201 edge {item!r} in {text!r}; expected 'op~{i}'")
                if op not in OPS:
                    raise ValueError(f"nb201 op {op!r} in {text!r} is invalid; expected one of {list(OPS)}")
                ops.append(op)
        return cls(tuple(ops))

    @classmethod
    def from_index(cls, flat: Sequence[int]) -> NB201Architecture:
        """Architecture from 6 op indices into :data:`OPS`."""
        return cls(tuple(OPS[int(i)] for i in flat))


def encode_onehot(archs: Sequence[NB201Architecture]) -> np.ndarray:
    """One-hot op per edge: ``(n, 6 * 5)`` float64, edge-major (column ``edge * 5 + op``)."""
    x = np.zeros((len(archs), ONEHOT_WIDTH), dtype=np.float64)
    for row, a in enumerate(archs):
        for k, op in enumerate(a.ops):
            x[row, k * len(OPS) + OPS.index(op)] = 1.0
    return x


def encode_graph(archs: Sequence[NB201Architecture]) -> tuple[np.ndarray, np.ndarray]:
    """Op-on-node graph form (as used by GCN latency predictors such as HELP/BRP-NAS).

    Nodes: 0 = cell input, 1..6 = the six edge operations (in :data:`EDGES` order), 7 = cell output.
    Returns ``(ops, adj)``: ``ops`` is ``(n, 8, 7)`` one-hot over ``["input", *OPS, "output"]``; ``adj`` is
    ``(n, 8, 8)`` with ``adj[b, u, v] = 1`` when node u feeds node v. An op node of edge (j <- i) is fed by
    the input node when i == 0, else by every op node that ends in node i; ops ending in node 3 feed the output.
    """
    n_nodes = N_EDGES + 2
    ops = np.zeros((len(archs), n_nodes, len(OPS) + 2), dtype=np.float64)
    adj = np.zeros((len(archs), n_nodes, n_nodes), dtype=np.float64)
    into: dict[int, list[int]] = {j: [1 + k for k, (to, _) in enumerate(EDGES) if to == j] for j in range(1, N_NODES)}
    for b, a in enumerate(archs):
        ops[b, 0, 0] = 1.0
        ops[b, -1, -1] = 1.0
        for k, (_, frm) in enumerate(EDGES):
            ops[b, 1 + k, 1 + OPS.index(a.ops[k])] = 1.0
            feeders = [0] if frm == 0 else into[frm]
            for u in feeders:
                adj[b, u, 1 + k] = 1.0
        for u in into[N_NODES - 1]:
            adj[b, u, -1] = 1.0
    return ops, adj
