"""Ax (``ax.api.Client``, Bayesian optimisation on BoTorch) behind the ask/tell interface: a peer of the
benchmarks, in the optional extra ``pip install -e '.[peers]'``.

One unordered choice parameter per gene of ``space.to_genome`` (the Optuna peers' encoding); every objective
minimised; Ax's default generation strategy for the experiment (``Client.configure_generation_strategy()``'s
"fast" default: a center trial, Sobol, then its modular BoTorch model with the acquisition function Ax picks
for several objectives; :meth:`AxSearch.describe` records which ran). No objective thresholds are given: Ax
infers them from the data (the problem states no reference point). Each ``ask()`` gets a batch of trials from
``get_next_trials`` and ``tell`` completes them with ``complete_trial``. Repeats, candidates and constraints:
:mod:`nas.search.library_peer` (constraint rows are ignored, not mapped to outcome constraints).

Example::

    s = AxSearch(space=space, batch_size=10, seed=0)
    archs = s.ask(); s.tell(archs, F)          # F: (len(archs), n_objectives), minimised
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nas.search.library_peer import LibraryPeer, quiet
from search_spaces.base import Architecture

EXTRA = "pip install -e '.[peers]'"


def require(module: str, dist: str) -> Any:
    """Import a peer library, or one line saying how to install the extra."""
    import importlib

    try:
        with quiet():  # Ax logs its storage setup on import
            return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{dist} is not installed; expected the peers extra: {EXTRA}") from None


class AxSearch(LibraryPeer):
    """Ax's default multi-objective Bayesian optimisation over the genome, in batches.

    Args:
        space: the search space.
        n_objectives: objective columns of every ``tell`` (minimised).
        batch_size: trials per ``ask()`` (``get_next_trials(max_trials=batch_size)``).
        seed: ``Client(random_seed=seed)``.
        candidates: a tabular space's architectures (proposals outside are replaced, see the module doc).
        max_retries: proposal rounds without a new arch before unseen archs are drawn uniformly.
    """

    label = "ax"

    def __init__(self, *, space: Any, n_objectives: int = 2, batch_size: int = 10, seed: int = 0,
                 candidates: Sequence[Architecture] | None = None, max_retries: int = 3) -> None:
        super().__init__(space=space, n_objectives=n_objectives, batch_size=batch_size, seed=seed,
                         candidates=candidates, max_retries=max_retries)
        require("ax.api.client", "ax-platform")
        from ax.api.client import Client
        from ax.api.configs import ChoiceParameterConfig

        with quiet():
            self.client = Client(random_seed=self.seed)
            self.client.configure_experiment(parameters=[
                ChoiceParameterConfig(name=n, values=list(range(lo, hi + 1)), parameter_type="int", is_ordered=False)
                for n, (lo, hi) in zip(self.names, self.bounds, strict=True) if hi > lo])
            self.client.configure_optimization(objective=", ".join(f"-{m}" for m in self.metrics))
        self._fixed = {n: lo for n, (lo, hi) in zip(self.names, self.bounds, strict=True) if hi == lo}
        self.nodes: dict[str, int] = {}  # generation node -> trials it generated
        self.acquisition: str | None = None

    def _genome(self, params: dict[str, Any]) -> np.ndarray:
        return np.array([int(params[n]) if n in params else self._fixed[n] for n in self.names], dtype=np.int64)

    def _propose(self, n: int) -> list[tuple[Any, np.ndarray]]:
        with quiet():
            trials = self.client.get_next_trials(max_trials=n)
        exp = self.client._experiment  # which node made each trial, for describe()
        for idx in trials:
            node = exp.trials[idx].generator_runs[0]._generation_node_name or "unknown"
            self.nodes[node] = self.nodes.get(node, 0) + 1
        if self.acquisition is None and any(k not in ("Sobol", "CenterOfSearchSpace") for k in self.nodes):
            self.acquisition = self._acquisition_class()
        return [(idx, self._genome(p)) for idx, p in trials.items()]

    def _acquisition_class(self) -> str | None:
        """The BoTorch acquisition class the model-based node optimised (read from its fitted generator)."""
        try:
            gen = self.client._generation_strategy._curr.generator_spec_to_gen_from.fitted_adapter.generator
            try:  # the private name first (ax-platform 1.3), then the public one
                acqf = gen._botorch_acqf_class
            except AttributeError:
                acqf = None
            return (acqf or gen.botorch_acqf_class).__name__
        except (AttributeError, IndexError, ValueError):
            return None

    def _complete(self, handle: Any, f: np.ndarray) -> None:
        with quiet():
            self.client.complete_trial(int(handle), {m: float(v) for m, v in zip(self.metrics, f, strict=True)})

    def _abandon(self, handle: Any) -> None:
        with quiet():
            self.client.mark_trial_abandoned(int(handle))

    def _inject(self, genome: np.ndarray) -> Any:
        with quiet():
            idx = self.client.attach_trial({n: int(g) for n, g in zip(self.names, genome, strict=True)
                                            if n not in self._fixed})
        self.nodes["injected"] = self.nodes.get("injected", 0) + 1
        return idx

    def describe(self) -> dict[str, Any]:
        gs = self.client._generation_strategy
        return {**super().describe(), "generation_strategy": gs.name, "trials_per_node": dict(self.nodes),
                "acquisition": self.acquisition, "objective_thresholds": "inferred by Ax"}
