"""Latency and accuracy predictors, sklearn-style (fit / predict, fitted attributes end in ``_``); a run's
predictors share one face, ``predict(archs, return_std=False)`` on architectures (predictors.arch_predictor)."""

from predictors.arch_predictor import ArchPredictor, load_predictor
from predictors.regressors import EnsembleRegressor, featurize

__all__ = ["ArchPredictor", "EnsembleRegressor", "featurize", "load_predictor"]
