"""NAS-Bench-201 cell space (tabular): architectures, canonical cell strings and encodings."""

from search_spaces.nb201.arch import EDGES, N_EDGES, OPS, NB201Architecture, encode_graph, encode_onehot

__all__ = ["EDGES", "N_EDGES", "OPS", "NB201Architecture", "encode_graph", "encode_onehot"]
