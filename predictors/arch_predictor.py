"""The face every predictor of a run shares: ``fit(archs, y) -> self`` and ``predict(archs, return_std=False)``
on architectures (objects or canonical strings), so callers never switch on predictor types.

:class:`ArchPredictor` puts a feature regressor (e.g. :class:`predictors.EnsembleRegressor`) behind that face
with the space's features; the few-shot :class:`predictors.fewshot.FewShotLatencyPredictor` has it natively.
:func:`load_predictor` reads either from a run's ``predictors/`` folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from predictors import saved
from predictors.regressors import featurize


class ArchPredictor:
    """A regressor on ``featurize(space, archs, features)`` behind the architecture face.

    Args:
        model: an unfitted sklearn-style regressor (``fit(X, y)``, ``predict(X, return_std=...)``); a clone is
            fitted, so the same configured model can serve several predictors.
        space: the search space the architectures belong to (saved with the predictor).
        features: ``onehot``, ``cost`` or ``onehot+cost`` (see :func:`predictors.featurize`).
    """

    def __init__(self, model: Any, space: Any, features: str = "onehot+cost") -> None:
        self.model = model
        self.space = space
        self.features = features

    def _X(self, archs: Sequence[Any]) -> np.ndarray:
        parsed = [self.space.parse(a) if isinstance(a, str) else a for a in archs]
        return featurize(self.space, parsed, self.features)

    def fit(self, archs: Sequence[Any], y: Any) -> ArchPredictor:
        self.model_ = clone(self.model).fit(self._X(archs), np.asarray(y, dtype=np.float64))
        return self

    def predict(self, archs: Sequence[Any], return_std: bool = False) -> Any:
        if not hasattr(self, "model_"):
            raise NotFittedError("ArchPredictor is not fitted; call fit(archs, y) first")
        return self.model_.predict(self._X(archs), return_std=return_std)

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic write in the data-only saved-predictor format (:mod:`predictors.saved`)."""
        return saved.save(self, path)

    @staticmethod
    def load(path: str | os.PathLike) -> ArchPredictor:
        """Read a file written by :meth:`save`; any other file (a pickle included) is one ``ValueError`` line."""
        return saved.read(path, ArchPredictor)


def load_predictor(path: str | os.PathLike) -> Any:
    """A saved predictor of a run (``predictors/latency_fewshot.skops``, ``latency.skops``, ``accuracy.skops`` or
    an imported ``accuracy.npz``), whatever its kind: every one answers ``predict(archs, return_std=...)``. Nothing
    is unpickled; a file of another kind, an old pickle or one naming a type off the allow-list is one line."""
    from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline
    from predictors.ofa_accuracy import OFAAccuracyPredictor

    if Path(path).suffix == ".npz":  # OFA's imported accuracy predictor: arrays only
        return OFAAccuracyPredictor.load(path)
    return saved.read(path, (ArchPredictor, FewShotLatencyPredictor, SourceRidgeBaseline))
