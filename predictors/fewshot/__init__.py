"""The few-shot latency family: a predictor meta-trained on source devices' latency tables, adapted to a new
device from a handful of measurements (``meta_fit`` -> ``select`` -> ``adapt`` -> ``predict``).

* :mod:`predictors.fewshot.predictor` - :class:`FewShotLatencyPredictor` (meta-learned Bayesian linear model
  averaging; see its module text for the method),
* :mod:`predictors.fewshot.baseline` - :class:`SourceRidgeBaseline` (ridge on source latencies, same face),
* :mod:`predictors.fewshot.blocks` - the feature blocks built from a source table,
* :mod:`predictors.fewshot.blr` - the closed-form Bayesian linear regression they share,
* :mod:`predictors.fewshot.impute` - source latencies of architectures outside the table (``outside_``),
* :mod:`predictors.fewshot.common` - table checks, measurement checks and the saved-file format.
"""

from predictors.fewshot.baseline import SourceRidgeBaseline
from predictors.fewshot.predictor import FewShotLatencyPredictor, device_family

__all__ = ["FewShotLatencyPredictor", "SourceRidgeBaseline", "device_family"]
