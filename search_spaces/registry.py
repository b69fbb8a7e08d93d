"""Registry of search spaces: ``@register_search_space("name")`` and ``create_search_space(name, **cfg)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search_spaces.base import SearchSpace

_REGISTRY: dict[str, Callable[..., SearchSpace]] = {}


def register_search_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator that makes a search space constructible by name."""

    def deco(cls: type[SearchSpace]) -> type[SearchSpace]:
        if name in _REGISTRY:
            raise ValueError(f"search space {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return deco


def available_search_spaces() -> list[str]:
    return sorted(_REGISTRY)


def create_search_space(name: str, **cfg: Any) -> SearchSpace:
    """Build a registered search space; unknown names fail with the list of known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown search space {name!r}; expected one of {available_search_spaces()}")
    return _REGISTRY[name](**cfg)
