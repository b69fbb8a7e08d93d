"""Latency and accuracy predictors, sklearn-style (fit / predict, fitted attributes end in ``_``)."""

from predictors.regressors import EnsembleRegressor, featurize

__all__ = ["EnsembleRegressor", "featurize"]
