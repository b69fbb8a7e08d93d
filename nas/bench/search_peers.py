"""The peer strategies of the search benchmarks (``bench=search_nb201`` and ``bench=search_supernet``): the
strategy node each name builds, which peers are slow, and the peers' library versions recorded with results.

Every peer is a class behind the ask/tell interface built by ``nas.search.build_strategy`` from its node, so
the benchmarks' budget, seeds, batches and hypervolume normalisation apply to all of them alike:

* ``random``, ``pymoo_nsga2``, ``optuna_nsga2|tpe|gp``: what ``hwnas search=random|nsga2|optuna`` builds;
* ``ax``: Ax's default multi-objective Bayesian optimisation (``nas.search.ax_search.AxSearch``);
* ``syne_morea``, ``syne_ehvi``: Syne Tune's multi-objective regularised evolution and its expected
  hypervolume improvement BO (``nas.search.syne_tune_search.SyneTuneSearch``).

The Ax and Syne Tune peers need the optional extra ``pip install -e '.[peers]'``.
"""

from __future__ import annotations

from typing import Any

BASE = ("ours", "random", "optuna_nsga2", "optuna_tpe", "optuna_gp", "pymoo_nsga2")
LIBRARY_PEERS = ("ax", "syne_morea", "syne_ehvi")
STRATEGIES = (*BASE, *LIBRARY_PEERS)
BO_PEERS = ("ax", "syne_ehvi")  # the outside libraries' Bayesian optimisation: many minutes per run
SLOW = ("ax", "optuna_gp", "syne_ehvi")  # run last, seed by seed, in this order
VERSIONED = ("ax-platform", "botorch", "syne-tune", "optuna", "pymoo", "torch")


def check_strategies(names: list[str]) -> None:
    """One line naming an unknown strategy, or a library peer whose library is not installed (before any work)."""
    bad = [s for s in names if s not in STRATEGIES]
    if bad or not names:
        raise ValueError(f"bench.strategies has {bad[0] if bad else 'nothing'!r}; expected some of {list(STRATEGIES)}")
    from nas.search.ax_search import require

    for name in names:
        if name == "ax":
            require("ax.api.client", "ax-platform")
        elif name.startswith("syne_"):
            require("syne_tune.optimizer.schedulers.multiobjective", "syne-tune")


def peer_config(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The strategy node of a peer: the batch size of ``bench.batch_size`` (random, Ax, Syne Tune's MOREA) and the
    population of ``bench.pop_size`` (the NSGA-II peers and MOREA's population; MOREA's tournament keeps Syne
    Tune's default 10)."""
    if name == "random":
        return {"_target_": "nas.search.RandomSearch", "batch_size": cfg["batch_size"]}
    if name == "pymoo_nsga2":
        return {"_target_": "nas.search.PymooNSGA2", "pop_size": cfg["pop_size"]}
    if name == "ax":
        return {"_target_": "nas.search.AxSearch", "batch_size": cfg["batch_size"]}
    if name == "syne_morea":
        return {"_target_": "nas.search.SyneTuneSearch", "method": "morea", "batch_size": cfg["batch_size"],
                "population_size": cfg["pop_size"]}
    if name == "syne_ehvi":  # one trial per ask: Syne Tune's EHVI fantasises pending trials inside one qLogEHVI,
        # whose cost doubles per pending trial (a batch of 10 did not finish its first batch in 11 min); sequential
        # proposals can only help it per evaluation
        return {"_target_": "nas.search.SyneTuneSearch", "method": "ehvi", "batch_size": 1}
    if name.startswith("optuna_"):
        return {"_target_": "nas.search.OptunaSearch", "sampler": name.removeprefix("optuna_"),
                "population_size": cfg["pop_size"]}
    raise ValueError(f"strategy {name!r} is not a peer; expected one of {list(STRATEGIES[1:])}")


def seeds_per_strategy(names: list[str], seeds: int, gp_seeds: int | None,
                       peer_seeds: int | dict[str, int] | None) -> dict[str, int]:
    """``bench.seeds`` for each strategy, fewer for Optuna's GP (``gp_seeds``) and the Ax / Syne Tune BO peers
    (``peer_seeds``: one count for both, or a count per peer such as ``{ax: 3, syne_ehvi: 1}``) where set."""
    if isinstance(peer_seeds, dict):
        bad = [k for k, v in peer_seeds.items() if k not in BO_PEERS or not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"bench.peer_seeds has {bad[0]}={peer_seeds[bad[0]]!r}; expected counts >= 1 of "
                             f"{list(BO_PEERS)}")
    elif peer_seeds is not None and (not isinstance(peer_seeds, int) or isinstance(peer_seeds, bool) or peer_seeds < 1):
        raise ValueError(f"bench.peer_seeds={peer_seeds!r} is invalid; expected an integer >= 1, a mapping or null")

    def n(name: str) -> int:
        if name == "optuna_gp" and gp_seeds is not None:
            return min(int(gp_seeds), seeds)
        if name in BO_PEERS and peer_seeds is not None:
            k = peer_seeds.get(name) if isinstance(peer_seeds, dict) else peer_seeds
            return seeds if k is None else min(int(k), seeds)
        return seeds

    return {s: n(s) for s in names}


def versions() -> dict[str, str | None]:
    """Installed versions of the peers' libraries (``None``: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for dist in VERSIONED:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def describe(strategy: Any) -> dict[str, Any] | None:
    """What a library peer ran (Ax's generation nodes and acquisition, Syne Tune's searcher), else ``None``."""
    fn = getattr(strategy, "describe", None)
    return fn() if callable(fn) else None
