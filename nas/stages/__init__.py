"""Pipeline stages: each reads earlier artifacts from the run directory and writes its own (the contract:
:class:`nas.stages.base.Stage`). :func:`stages` builds the pipeline's table of them, in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nas.stages.base import Stage

STAGES = ("train", "measure", "calibrate", "predict", "search", "export")


def stages() -> dict[str, Stage]:
    """One :class:`~nas.stages.base.Stage` object per stage, in order, for one pipeline run (the search's
    holds what its shared part set up for its run)."""
    from nas.stages import calibrate, export, measure, predict, train
    from nas.stages.base import FunctionStage
    from nas.stages.search import SearchStage

    return {
        "train": FunctionStage("train", train.validate, train.run, train.reset),
        "measure": FunctionStage("measure", measure.validate, measure.run, measure.reset),
        "calibrate": FunctionStage("calibrate", calibrate.validate, calibrate.run, calibrate.reset),
        "predict": FunctionStage("predict", predict.validate, predict.run, predict.reset),
        "search": SearchStage(),
        "export": FunctionStage("export", export.validate, export.run, export.reset),
    }
