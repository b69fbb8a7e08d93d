"""The face every predictor of a run shares: ``fit(archs, y) -> self`` and ``predict(archs, return_std=False)``
on architectures (objects or canonical strings), so callers never switch on predictor types.

:class:`ArchPredictor` puts a feature regressor (e.g. :class:`predictors.EnsembleRegressor`) behind that face
with the space's features; the few-shot :class:`predictors.fewshot.FewShotLatencyPredictor` has it natively.
:func:`load_predictor` reads either from a run's ``predictors/`` folder.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from predictors.regressors import featurize


class ArchPredictor:
    """A regressor on ``featurize(space, archs, features)`` behind the architecture face.

    Args:
        model: an unfitted sklearn-style regressor (``fit(X, y)``, ``predict(X, return_std=...)``); a clone is
            fitted, so the same configured model can serve several predictors.
        space: the search space the architectures belong to (pickled with the predictor).
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
            raise ValueError("ArchPredictor is not fitted; call fit(archs, y) first")
        return self.model_.predict(self._X(archs), return_std=return_std)

    def save(self, path: str | os.PathLike) -> Path:
        """Atomic write (temp file beside ``path``, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".pkl")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(self, fh)
        os.replace(tmp, path)
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> ArchPredictor:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)  # noqa: S301 - the user's own run artefact
        if not isinstance(obj, ArchPredictor):
            raise ValueError(f"{os.fspath(path)} holds a {type(obj).__name__}; expected an ArchPredictor "
                             "(rerun the run's predict stage with force=[predict] if it predates it)")
        return obj


def load_predictor(path: str | os.PathLike) -> Any:
    """A saved predictor of a run (``predictors/latency_fewshot.pkl``, ``latency.pkl`` or ``accuracy.pkl``),
    whatever its kind: every one answers ``predict(archs, return_std=...)``."""
    from predictors.fewshot import FewShotLatencyPredictor
    from predictors.ofa_accuracy import OFAAccuracyPredictor

    if Path(path).suffix == ".npz":  # data-only formats: never unpickled
        return OFAAccuracyPredictor.load(path)
    unreadable = (ValueError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError)
    try:
        return FewShotLatencyPredictor.load(path)
    except unreadable:
        pass
    try:
        return ArchPredictor.load(path)
    except unreadable:
        raise ValueError(f"{os.fspath(path)} is not a saved predictor; expected predictors/latency_fewshot.pkl, "
                         "latency.pkl or accuracy.pkl of a run") from None
