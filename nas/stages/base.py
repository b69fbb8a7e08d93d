"""The contract of a pipeline stage: ``validate(cfg)`` and ``run(ctx)``, with no-op defaults for the optional
steps, so the pipeline calls every step of every stage and never asks whether a stage has one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from nas.rundir import RunContext


class Stage(ABC):
    """One stage of the pipeline (``nas.stages.stages()`` builds one object per stage and pipeline run).

    * ``validate(cfg)``: one-line errors for the stage's keys, before anything is written;
    * ``reset(ctx)``: remove what a forced rerun must not reuse (default: nothing);
    * ``shared(ctx)``: the work several processes of one run directory do at once, before the stage's lock
      (default: none; the search over a shared study);
    * ``help(ctx) -> bool``: one unit of the lock holder's work while waiting for it, True if there was one
      (default: none, False);
    * ``run(ctx) -> record``: the stage, once, under its lock; the record goes to ``stages/<name>.json``.
    """

    name: str = "stage"

    @abstractmethod
    def validate(self, cfg: Any) -> None: ...

    @abstractmethod
    def run(self, ctx: RunContext) -> dict[str, Any]: ...

    def reset(self, ctx: RunContext) -> None:
        return None

    def shared(self, ctx: RunContext) -> None:
        return None

    def help(self, ctx: RunContext) -> bool:  # noqa: A003 - the pipeline's name for "work while waiting"
        return False


class FunctionStage(Stage):
    """A stage whose steps are a module's functions, handed over explicitly."""

    def __init__(self, name: str, validate: Callable[[Any], Any], run: Callable[[RunContext], dict[str, Any]],
                 reset: Callable[[RunContext], None] | None = None) -> None:
        self.name, self._validate, self._run, self._reset = name, validate, run, reset

    def validate(self, cfg: Any) -> None:
        self._validate(cfg)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return self._run(ctx)

    def reset(self, ctx: RunContext) -> None:
        if self._reset is not None:
            self._reset(ctx)
