"""Search spaces: architecture types, the registry, supernets and static subnet extraction."""

from search_spaces.base import Architecture, SearchSpace, Supernet, WeightSharingSpace
from search_spaces.fbnet.space import FBNetSpace
from search_spaces.nb201.space import NB201Space
from search_spaces.ofa_mbv3.arch import OFAArchitecture
from search_spaces.ofa_mbv3.space import OFAMobileNetV3Space
from search_spaces.registry import available_search_spaces, create_search_space, register_search_space

__all__ = [
    "Architecture",
    "FBNetSpace",
    "NB201Space",
    "OFAArchitecture",
    "OFAMobileNetV3Space",
    "SearchSpace",
    "Supernet",
    "WeightSharingSpace",
    "available_search_spaces",
    "create_search_space",
    "register_search_space",
]
