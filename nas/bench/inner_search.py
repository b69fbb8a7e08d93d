"""bench=inner_search: how fast the product's own inner search scores candidates.

For each space of ``bench.spaces``: the search of a run directory whose predict stage finished
(``bench.run_dirs.<space>``, or a small cached run made with ``hwnas stages=[train,measure,predict]``), set
up exactly as the pipeline's search stage sets it up (:class:`nas.stages.search.SearchSetup`: the run's
predictors, the configured strategy, warm-started with the measure stage's subnets). Then:

* ``scoring``: ``candidates`` random distinct architectures scored with mean and std of every objective, as
  the strategy asks its models (``strategy.predict``: the closed loop's error GP and the run's latency
  predictor), new candidates each repeat (features computed afresh); and the predict stage's own predictors
  (``predictors/accuracy.skops`` and ``latency.skops``, what the one-pass and Optuna strategies read);
* ``round``: one whole inner search of the strategy at the run's settings (refit, predictor-driven NSGA-II,
  screening, batch acquisition), timed by the strategy itself (``inner_search_seconds``, ``predictor_evaluations``).

Each timing is the minimum over ``bench.repeats``. The JSON also records the thread counts of the numeric
libraries and the machine's load average before and after, so a figure from a busy machine says so.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from nas.bench.config import as_dict, bench_config, load_average, run_hwnas
from nas.rundir import RunContext, write_json_atomic

log = logging.getLogger(__name__)


def _threads() -> dict[str, int]:
    from threadpoolctl import threadpool_info

    return {f"{i['user_api']}:{i['internal_api']}": int(i["num_threads"]) for i in threadpool_info()}


def _run_dir(cfg: Any, space: str, cache: Path) -> Path:
    given = (cfg.run_dirs or {}).get(space)
    if given:
        run = Path(given)
        if not (run / "stages" / "predict.json").is_file():
            raise ValueError(f"bench.run_dirs.{space}={given!r} has no finished predict stage; expected a hwnas run directory")
        return run
    run = cache / space
    if not (run / "stages" / "predict.json").is_file():
        overrides = [f"search_space={space}", "stages=[train,measure,predict]", *list(cfg.run_overrides or [])]
        log.info("inner_search: making a small run for %s in %s: %s", space, run, " ".join(overrides))
        run_hwnas(run, overrides)
    return run


def _candidates(space: Any, n: int, rng: np.random.Generator) -> list[Any]:
    lo, hi = space.genome_bounds()
    out: dict[Any, None] = {}
    while len(out) < n:
        for a in space.from_genomes(rng.integers(lo, hi + 1, size=(n, len(lo)))):
            out.setdefault(a)
            if len(out) == n:
                break
    return list(out)


def _best_of(repeats: int, fn: Any) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return float(best)


def bench_space(run: Path, cfg: Any) -> dict[str, Any]:
    from nas.search import strategy_class
    from nas.stages.search import SearchSetup

    ctx = RunContext.open(run)
    setup = SearchSetup(ctx)
    st, space = setup.strategy, ctx.space
    rng = np.random.default_rng(int(cfg.seed))
    st.fit()
    rows = []
    for n in [int(v) for v in cfg.candidates]:
        archs = _candidates(space, n, rng)

        fresh = iter([_candidates(space, n, rng) for _ in range(int(cfg.repeats))])

        def strategy_models(fresh: Any = fresh) -> None:
            st.predict(next(fresh))  # new candidates each repeat: their features computed afresh

        def predict_stage(archs: list[Any] = archs) -> None:
            setup.models.acc.predict(archs, return_std=True)
            setup.models.lat.predict(archs, return_std=True)

        secs = _best_of(int(cfg.repeats), strategy_models)
        secs_ps = _best_of(int(cfg.repeats), predict_stage)
        rows.append({"candidates": n, "seconds": round(secs, 4), "seconds_per_1k": round(1000 * secs / n, 5),
                     "predict_stage_seconds": round(secs_ps, 4),
                     "predict_stage_seconds_per_1k": round(1000 * secs_ps / n, 5)})
        log.info("inner_search %s: %d candidates in %.3f s (strategy's models), %.3f s (predict stage's)",
                 space.name, n, secs, secs_ps)
    rounds = []
    for _ in range(int(cfg.repeats)):
        n0, k0 = st.predictor_evaluations, len(st.inner_seconds_)
        picks = st.ask()
        st.pending.difference_update(picks)  # a timing, not a search: nothing stays pending
        rounds.append({"seconds": float(st.inner_seconds_[k0]), "predictor_evaluations": st.predictor_evaluations - n0})
    best = min(rounds, key=lambda r: r["seconds"])
    node = ctx.cfg.search.strategy
    return {
        "run_dir": str(run), "strategy": st.label, "strategy_class": strategy_class(st),
        "models": [repr(m) for m in st.models], "accuracy_predictor": type(setup.models.acc.model_).__name__,
        "scoring": rows,
        "round": {"seconds": round(best["seconds"], 4), "predictor_evaluations": best["predictor_evaluations"],
                  "per_second": round(best["predictor_evaluations"] / best["seconds"], 1),
                  "pop_size": node.get("pop_size"), "generations": node.get("generations"), "screen": node.get("screen")},
    }


def run(cfg: Any) -> dict:
    cfg = bench_config("inner_search", cfg)
    if cfg.out is None:
        raise ValueError("bench.out is null; expected the path of the result JSON")
    if not cfg.candidates or min(int(v) for v in cfg.candidates) < 1:
        raise ValueError(f"bench.candidates={list(cfg.candidates)} is invalid; expected positive counts")
    if int(cfg.repeats) < 1:
        raise ValueError(f"bench.repeats={cfg.repeats} is invalid; expected >= 1")
    from nas.rundir import group_option

    for sp in cfg.spaces:
        group_option("search_space", str(sp))  # an unknown option names the choices
    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path("bench_runs") / "inner_search_cache"
    runs = {str(sp): _run_dir(cfg, str(sp), cache) for sp in cfg.spaces}
    load_before = load_average()
    per_space = {sp: bench_space(run, cfg) for sp, run in runs.items()}
    result = {"bench": "inner_search", "config": as_dict(cfg), "cpus": os.cpu_count(), "threads": _threads(),
              "load_before": load_before, "load_after": load_average(), "spaces": per_space}
    for sp, r in per_space.items():
        for row in r["scoring"]:
            print(f"{sp:<16} {row['candidates']:>7} candidates  {row['seconds']:.3f} s strategy's models  "
                  f"{row['predict_stage_seconds']:.3f} s predict stage's predictors")
        print(f"{sp:<16} one round: {r['round']['predictor_evaluations']} predictions in {r['round']['seconds']:.3f} s "
              f"({r['round']['per_second']:.0f}/s)")
    write_json_atomic(Path(cfg.out), result)
    return result
