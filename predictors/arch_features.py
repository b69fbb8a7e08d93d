"""Picklable architecture featurizer for the few-shot latency predictor: canonical strings -> feature blocks.

A meta-fitted :class:`predictors.fewshot.FewShotLatencyPredictor` keeps its featurizer, so a saved predictor
scores any architecture of its space, also ones no source device measured. Example::

    feat = SpaceFeaturizer("ofa_mbv3", setting="imagenet")
    model = FewShotLatencyPredictor().meta_fit(source_table, featurizer=feat)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class SpaceFeaturizer:
    """Feature blocks of a registered search space: ``enc`` = ``space.latency_encoding``, ``phys`` =
    ``space.cost_features`` (when the space has them). The space is rebuilt from ``name`` and ``space_kwargs``
    after unpickling, so the file holds no code objects beyond this class."""

    def __init__(self, name: str, **space_kwargs: Any) -> None:
        self.name = name
        self.space_kwargs = dict(space_kwargs)
        self._space = None

    @property
    def space(self):  # noqa: ANN201
        if self._space is None:
            from search_spaces import create_search_space

            self._space = create_search_space(self.name, **self.space_kwargs)
        return self._space

    def __call__(self, archs: Sequence[Any]) -> dict[str, np.ndarray]:
        space = self.space
        parsed = [space.parse(a) if isinstance(a, str) else a for a in archs]
        out = {"enc": np.asarray(space.latency_encoding(parsed), dtype=np.float64)}
        phys = np.asarray(space.cost_features(parsed), dtype=np.float64)
        if phys.shape[1]:  # spaces without cost features (nb201) have no phys block
            out["phys"] = phys
        return out

    def describe(self) -> dict[str, Any]:
        """Space name and settings, for checking that a saved predictor matches a run's space."""
        return {"name": self.name, **self.space_kwargs}

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "space_kwargs": self.space_kwargs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self.space_kwargs, self._space = state["name"], dict(state["space_kwargs"]), None

    def __repr__(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.space_kwargs.items())
        return f"SpaceFeaturizer({self.name!r}{', ' if kw else ''}{kw})"
