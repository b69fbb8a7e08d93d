"""bench=accuracy_predictor on NB201's tabular CIFAR-10 accuracies (shared data), shrunk: the JSON holds what
docs/results.md quotes, and its figures are those of the pipeline's predictor classes refitted here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from nas.bench.accuracy_predictor import run


def test_bench_figures_are_the_predictor_classes_own(shared_data, tmp_path):
    acc = shared_data / "nb201" / "nats_bench_tss_test_acc_200ep.csv"
    out = tmp_path / "ap.json"
    res = run({"accuracy": str(acc), "n_train": 40, "seeds": 2, "kinds": ["ridge", "auto"],
               "candidates": ["ridge", "extra_trees"], "n_members": 3, "out": str(out)})
    saved = json.loads(out.read_text())
    assert saved["spearman_mean"] == res["spearman_mean"] == pytest.approx(
        np.mean([r["spearman"] for r in saved["kinds"]["auto"]["runs"]]))
    assert saved["n_test"] == 15_625 - 40 and saved["main"] == "auto"
    for r in saved["kinds"]["auto"]["runs"]:
        assert r["kind_chosen"] in ("ridge", "extra_trees") and set(r["cv_spearman"]) == {"ridge", "extra_trees"}
        assert 0 <= r["coverage80"] <= 1 and r["std_scale"] > 0
    assert saved["kinds"]["ridge"]["spearman_mean"] > 0.5  # 40 cells already rank the space well above chance
    # the seed-0 ridge figure, recomputed from the classes the pipeline uses
    from predictors import ArchPredictor, EnsembleRegressor
    from search_spaces import create_search_space
    from search_spaces.nb201.tabular import NB201Tabular

    table, space = NB201Tabular(str(acc)), create_search_space("nb201")
    archs = [space.parse(s) for s in table.archs]
    perm = np.random.default_rng(0).permutation(len(archs))
    tr, te = perm[:40], perm[40:]
    p = ArchPredictor(EnsembleRegressor(kind="ridge", n_members=3, seed=0, calibrate_std=True), space, "surrogate")
    p.fit([archs[i] for i in tr], table.acc[tr] / 100)
    got = spearmanr(p.predict([archs[i] for i in te]), table.acc[te]).statistic
    assert got == pytest.approx(saved["kinds"]["ridge"]["runs"][0]["spearman"], abs=1e-12)


def test_bad_bench_values_are_one_line(tmp_path):
    for cfg, frag in (({"accuracy": None}, "bench.accuracy is empty"), ({"accuracy": "x", "n_train": 5}, "n_train=5"),
                      ({"accuracy": "x", "kinds": ["svm"]}, "'svm'"),
                      ({"accuracy": "x", "main": "gp", "kinds": ["ridge"]}, "bench.main='gp'")):
        with pytest.raises(ValueError, match=frag) as e:
            run({**cfg, "out": str(tmp_path / "x.json")})
        assert "\n" not in str(e.value)
