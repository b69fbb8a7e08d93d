"""FBNet space of HW-NAS-Bench: 22 searchable layers, 9 candidate ops each."""

from search_spaces.fbnet.arch import (
    N_LAYERS,
    OPS,
    STAGE_LAYERS,
    FBNetArchitecture,
    encode_costs,
    encode_onehot,
)

__all__ = ["N_LAYERS", "OPS", "STAGE_LAYERS", "FBNetArchitecture", "encode_costs", "encode_onehot"]
