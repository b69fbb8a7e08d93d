"""Latency and accuracy predictors, sklearn-style (fit / predict, fitted attributes end in ``_``). Every model a
stage or strategy uses shares one face: ``fit(archs, y) -> self`` and ``predict(archs, return_std=False)`` on
architectures, features from the model's own featurizer; an unfitted model raises sklearn's ``NotFittedError``."""

from sklearn.exceptions import NotFittedError

from predictors.arch_predictor import ArchPredictor, load_predictor
from predictors.bayes import BayesLinearPredictor, GPPredictor
from predictors.exact import ExactCost
from predictors.features import SpaceFeatures
from predictors.regressors import EnsembleRegressor, featurize

__all__ = ["ArchPredictor", "BayesLinearPredictor", "EnsembleRegressor", "ExactCost", "GPPredictor", "NotFittedError",
           "SpaceFeatures", "featurize", "load_predictor"]
