"""Predictors built from config nodes (``_target_`` plus parameters), with one-line errors: the predict and
calibrate stages build through here, and their ``validate(cfg)`` dry-builds the same way before any stage runs."""

from __future__ import annotations

from typing import Any

from predictors.arch_predictor import ArchPredictor
from predictors.regressors import check_features


def instantiate_node(node: Any, key: str) -> Any:
    """``hydra.utils.instantiate(node)``; a node without ``_target_``, or one whose class refuses its parameters,
    fails in one line naming ``key``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    target = OmegaConf.select(node, "_target_") if OmegaConf.is_config(node) else dict(node or {}).get("_target_")
    if target is None:
        raise ValueError(f"{key} has no _target_; expected a predictor config like "
                         "{_target_: predictors.EnsembleRegressor, kind: ridge}")
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        why = " ".join(str(e.__cause__ or e).split())  # Hydra's report spans lines
        raise ValueError(f"{key} ({target}) cannot be built: {why}") from None


def build_predictor(node: Any, space: Any, features: str, key: str) -> ArchPredictor:
    """The unfitted predictor of a ``predictor.<name>`` node on ``space``'s ``features`` (``fit(archs, y)``)."""
    check_features(space, features)
    return ArchPredictor(instantiate_node(node, key), space, features)
