"""Architecture featurizers of a search space, built from config by ``_target_`` (e.g. the closed loop's
``error_model.featurizer: {_target_: predictors.SpaceFeatures, kind: surrogate}``); a model that reads features
takes one as its ``featurizer`` and is fitted and asked on architectures only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from predictors.regressors import FEATURES, featurize


class SpaceFeatures(BaseEstimator):
    """``featurize(space, archs, kind)`` (``onehot``, ``cost``, ``onehot+cost`` or ``surrogate``: the space's
    ``surrogate_features``), rows cached per architecture (a search asks about the same candidates every round).

    ``space`` may be left ``None`` in config: the strategy that owns the model gives it the problem's space
    (``set_params(featurizer__space=space)`` on the model)."""

    def __init__(self, kind: str = "surrogate", space: Any = None) -> None:
        if kind not in FEATURES:
            raise ValueError(f"featurizer kind={kind!r} is invalid; expected one of {list(FEATURES)}")
        self.kind = kind
        self.space = space

    def set_params(self, **params: Any) -> SpaceFeatures:
        super().set_params(**params)
        self.__dict__.pop("_rows", None)  # another space: the cache no longer applies
        return self

    def __call__(self, archs: Sequence[Any]) -> np.ndarray:
        if self.space is None:
            raise ValueError("SpaceFeatures has no space; expected SpaceFeatures(kind, space) or a strategy that gives "
                             "its models the problem's space")
        archs = [self.space.parse(a) if isinstance(a, str) else a for a in archs]
        cache: dict[Any, np.ndarray] = self.__dict__.setdefault("_rows", {})
        new = list(dict.fromkeys(a for a in archs if a not in cache))
        if new:
            cache.update(zip(new, np.asarray(featurize(self.space, new, self.kind), dtype=np.float64), strict=True))
        if not archs:
            return np.zeros((0, 0))
        return np.stack([cache[a] for a in archs])

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_rows"}
