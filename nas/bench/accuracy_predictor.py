"""bench=accuracy_predictor: how well does an accuracy predictor fitted on a few evaluated archs rank the rest,
and is its uncertainty honest?

Two sources of truth: NB201's tabular accuracies (below), or the evaluated subnets of a trained supernet
(``bench.evaluations=CSV bench.run_dir=RUN``, e.g. the random subnets ``bench=search_supernet`` evaluates; the
space is the run's), where ``bench.n_test`` others are scored per seed.

On NB201's tabular CIFAR-10 accuracies (``bench.accuracy``, shared data): per seed, ``bench.n_train`` random
cells are "evaluated"; each predictor kind is fitted on them as the pipeline fits its accuracy predictor
(:class:`predictors.EnsembleRegressor` on ``predictors.featurize(space, archs, bench.features)``, the model
and features :class:`predictors.ArchPredictor` puts behind the architecture face; the features of all cells
are computed once) and scored on every other cell: Spearman of the predicted mean with the true accuracy,
and ``coverage80``, the share of cells whose true accuracy lies in the predicted central 80% interval
``mean +- 1.2816 std`` (honest uncertainty: near 0.8). ``auto`` is the kind chosen per fit by 5-fold
cross-validated Spearman on the training cells only (the choice a user's run makes); its per-seed choices
are recorded. Top-level ``spearman_mean`` / ``coverage80_mean`` are ``bench.main``'s, the mean over seeds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau, spearmanr
from tqdm.auto import tqdm

from nas.bench.config import as_dict, bench_config
from nas.rundir import write_json_atomic
from predictors import EnsembleRegressor, featurize
from predictors.regressors import KINDS, Z80
from search_spaces import create_search_space
from search_spaces.nb201.tabular import NB201Tabular

log = logging.getLogger(__name__)


def _check(c: Any) -> None:
    if not c.accuracy and not c.evaluations:
        raise ValueError("bench.accuracy is empty; expected a NATS-style accuracy CSV, e.g. "
                         "../shared/data/nb201/nats_bench_tss_test_acc_200ep.csv (or bench.evaluations=CSV "
                         "bench.run_dir=RUN: a trained supernet's evaluated subnets)")
    if c.evaluations and not c.run_dir:
        raise ValueError("bench.evaluations is set but bench.run_dir is null; expected the hwnas run directory "
                         "whose space the evaluated subnets belong to")
    if c.n_test is not None and (not isinstance(c.n_test, int) or c.n_test < 2):
        raise ValueError(f"bench.n_test={c.n_test!r} is invalid; expected an integer >= 2 or null (all the rest)")
    for key in ("n_train", "seeds", "n_members"):
        v = c[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"bench.{key}={v!r} is invalid; expected a positive integer")
    if c.n_train < 10:
        raise ValueError(f"bench.n_train={c.n_train} is invalid; expected >= 10 (5-fold selection and calibration)")
    for k in c.kinds:
        if k not in (*KINDS, "auto"):
            raise ValueError(f"bench.kinds has {k!r}; expected kinds of {[*KINDS, 'auto']}")
    if c.main not in c.kinds:
        raise ValueError(f"bench.main={c.main!r} is not in bench.kinds {list(c.kinds)}")


def _data(c: Any) -> tuple[Any, list[Any], np.ndarray, str]:
    """(space, archs, accuracy in [0, 1], source): NB201's tabular accuracies, or a trained supernet's evaluated
    subnets (``bench.evaluations``: arch and val_accuracy columns; the space is ``bench.run_dir``'s)."""
    if c.evaluations:
        import pandas as pd

        from nas.rundir import RunContext

        space = RunContext.open(str(c.run_dir)).space
        df = pd.read_csv(str(c.evaluations))
        missing = {"arch", "val_accuracy"} - set(df.columns)
        if missing:
            raise ValueError(f"{c.evaluations} lacks column {sorted(missing)[0]!r}; expected arch and val_accuracy")
        return space, [space.parse(s) for s in df.arch], df.val_accuracy.to_numpy(dtype=np.float64), str(c.evaluations)
    table = NB201Tabular(str(c.accuracy), dataset=str(c.dataset))
    space = create_search_space("nb201")
    return space, [space.parse(s) for s in table.archs], np.asarray(table.acc, dtype=np.float64) / 100.0, str(c.accuracy)


def score(model: EnsembleRegressor, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall, MAE and 80%-interval coverage of a fitted model on feature rows ``X``, truth ``y``."""
    mean, std = model.predict(X, return_std=True)
    return {"spearman": float(spearmanr(mean, y).statistic), "kendall": float(kendalltau(mean, y).statistic),
            "coverage80": float(np.mean(np.abs(y - mean) <= Z80 * std)),
            "mae": float(np.mean(np.abs(y - mean)))}


def run(cfg: Any) -> dict[str, Any]:
    c = bench_config("accuracy_predictor", cfg)
    _check(c)
    space, archs, y_all, source = _data(c)
    if len(archs) < int(c.n_train) + (c.n_test or 2):
        raise ValueError(f"{source} has {len(archs)} evaluated archs; expected at least bench.n_train + bench.n_test "
                         f"= {int(c.n_train) + (c.n_test or 2)}")
    # the features ArchPredictor would compute on every fit and predict, computed once for every cell
    X_all = featurize(space, archs, str(c.features))
    t0 = time.perf_counter()
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in c.kinds}
    bar = tqdm(total=int(c.seeds) * len(c.kinds), desc="accuracy predictors (seed x kind)", unit="fit")
    for seed in range(int(c.seeds)):
        perm = np.random.default_rng(seed).permutation(len(archs))
        tr, te = perm[: int(c.n_train)], perm[int(c.n_train):]
        te = te if c.n_test is None else te[: int(c.n_test)]
        for kind in c.kinds:
            t1 = time.perf_counter()
            model = EnsembleRegressor(kind=kind, n_members=int(c.n_members), seed=seed,
                                      calibrate_std=bool(c.calibrate_std), candidates=tuple(c.candidates))
            model.fit(X_all[tr], y_all[tr])  # what ArchPredictor(model, space, features).fit does
            rec = {"seed": seed, **score(model, X_all[te], y_all[te]), "kind_chosen": model.kind_,
                   "std_scale": model.std_scale_, "cv_spearman": model.cv_spearman_,
                   "seconds": round(time.perf_counter() - t1, 2)}
            rows[kind].append(rec)
            bar.update(1)
    bar.close()
    per_kind = {}
    for kind, rs in rows.items():
        sp = np.array([r["spearman"] for r in rs])
        cov = np.array([r["coverage80"] for r in rs])
        per_kind[kind] = {"spearman_mean": float(sp.mean()), "spearman_std": float(sp.std(ddof=1)) if len(sp) > 1 else 0.0,
                          "coverage80_mean": float(cov.mean()), "coverage80_min": float(cov.min()),
                          "coverage80_max": float(cov.max()), "runs": rs}
        log.info("%-12s Spearman %.3f +- %.3f, 80%% coverage %.2f (%.2f..%.2f)", kind, sp.mean(),
                 per_kind[kind]["spearman_std"], cov.mean(), cov.min(), cov.max())
    main = per_kind[c.main]
    n_test = len(archs) - int(c.n_train) if c.n_test is None else int(c.n_test)
    # targets: NB201 (100 cells) Spearman >= 0.85 with honest intervals; a supernet's subnets (50) Spearman >= 0.8
    target = main["spearman_mean"] >= 0.8 if c.evaluations else (
        main["spearman_mean"] >= 0.85 and 0.7 <= main["coverage80_mean"] <= 0.9)
    result = {
        "bench": "accuracy_predictor", "space": space.name, "source": source,
        "dataset": str(c.dataset) if not c.evaluations else None, "n_train": int(c.n_train),
        "n_test": n_test, "seeds": int(c.seeds), "features": str(c.features),
        "main": str(c.main), "spearman_mean": main["spearman_mean"], "coverage80_mean": main["coverage80_mean"],
        "target_met": bool(target),
        "predictor_class": "predictors.regressors.EnsembleRegressor",
        "seconds": round(time.perf_counter() - t0, 1), "config": as_dict(c), "kinds": per_kind,
    }
    write_json_atomic(Path(str(c.out)), result)
    return result
