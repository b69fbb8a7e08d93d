"""Few-shot latency predictor and ridge baseline on a small slice of HELP's NB201 measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from latency_luts.interchange import latency_matrix, load_latency_table
from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline, device_family
from search_spaces.nb201.arch import NB201Architecture, encode_onehot

SOURCES = ["1080ti_1", "1080ti_32", "silver_4114", "pixel3", "samsung_a50", "essential_ph_1"]
TARGETS = ["eyeriss", "titan_rtx_256"]
N_ARCHS = 2500


def small_predictor(**kw) -> FewShotLatencyPredictor:
    return FewShotLatencyPredictor(**{"transforms": ("raw", "log"), **kw},
        src_scales=(0.0, 1.0),
        proj_scales=(0.0, 1.0, 10.0),
        pmean_scales=(0.0, 3.0),
        enc_scales=(0.0, 0.3),
        noises=(0.1, 0.3),
        selections=("random", "variance"),
        prior_strengths=(0.0, 100.0),
        meta_tasks=1,
        meta_pool=500,
        meta_query=500,
    )


@pytest.fixture(scope="module")
def slice_(shared_data: Path):
    df = load_latency_table([shared_data / "latency" / "nb201_help.csv.gz"], space="nb201", devices=SOURCES + TARGETS)
    mat = latency_matrix(df).iloc[:N_ARCHS]
    archs = list(mat.index)
    feats = pd.DataFrame(encode_onehot([NB201Architecture.from_string(a) for a in archs]), index=archs)
    return mat, archs, feats


@pytest.fixture(scope="module")
def fitted(slice_):
    mat, _, feats = slice_
    return small_predictor().meta_fit(mat[SOURCES], feats), SourceRidgeBaseline().meta_fit(mat[SOURCES])


def _task(mat: pd.DataFrame, archs: list[str], target: str):
    y = mat[target].to_numpy()
    return [archs[i] for i in range(900)], [archs[i] for i in range(900, 1900)], y


def test_adapted_beats_unadapted_and_ridge_baseline(slice_, fitted) -> None:
    mat, archs, _ = slice_
    ours, base = fitted
    src_std = (mat[SOURCES] - mat[SOURCES].mean()) / mat[SOURCES].std()
    for target in TARGETS:
        pool, query, y = _task(mat, archs, target)
        yq = y[900:1900]
        unadapted = spearmanr(src_std.iloc[900:1900].mean(axis=1), yq)[0]  # no target data: average source
        rho_ours, rho_base = [], []
        for seed in range(3):
            picked = ours.select(pool, 20, np.random.default_rng(seed))
            ours.adapt(picked, y[[archs.index(a) for a in picked]])
            rho_ours.append(spearmanr(ours.predict(query), yq)[0])
            picked = base.select(pool, 20, np.random.default_rng(seed))
            base.adapt(picked, y[[archs.index(a) for a in picked]])
            rho_base.append(spearmanr(base.predict(query), yq)[0])
        ours_m, base_m = float(np.mean(rho_ours)), float(np.mean(rho_base))
        assert ours_m > 0.95, (target, ours_m)  # small meta-training (1 task per device); the bench gets 0.99+
        assert ours_m > base_m + 0.01, (target, ours_m, base_m)
        assert ours_m > unadapted + 0.03, (target, ours_m, unadapted)


def test_uncertainty_and_save_load_round_trip(slice_, fitted, tmp_path: Path) -> None:
    mat, archs, _ = slice_
    ours, base = fitted
    pool, query, y = _task(mat, archs, "eyeriss")
    picked = ours.select(pool, 20, np.random.default_rng(0))
    assert len(set(picked)) == 20 and set(picked) <= set(pool)
    ours.adapt(picked, y[[archs.index(a) for a in picked]])
    mean, std = ours.predict(query, return_std=True)
    assert mean.shape == std.shape == (1000,) and (std > 0).all() and np.isfinite(std).all()
    assert np.allclose(mean, ours.predict(query))
    # measured archs are predicted more confidently than the average query arch
    assert ours.predict(picked, return_std=True)[1].mean() < std.mean()
    ours.save(tmp_path / "ours.skops")
    again = FewShotLatencyPredictor.load(tmp_path / "ours.skops")
    assert np.array_equal(again.predict(query), mean)
    assert np.array_equal(again.predict(query, return_std=True)[1], std)
    base.adapt(picked, y[[archs.index(a) for a in picked]])
    base.save(tmp_path / "base.skops")
    b2 = SourceRidgeBaseline.load(tmp_path / "base.skops")
    assert np.array_equal(b2.predict(query), base.predict(query))
    assert (b2.predict(query, return_std=True)[1] > 0).all()
    with pytest.raises(ValueError, match="does not hold a saved FewShotLatencyPredictor"):
        FewShotLatencyPredictor.load(tmp_path / "base.skops")


def test_errors(slice_, fitted) -> None:
    mat, archs, feats = slice_
    ours, _ = fitted
    with pytest.raises(ValueError, match="not fitted; call meta_fit"):
        FewShotLatencyPredictor().select(archs[:50], 20, np.random.default_rng(0))
    with pytest.raises(ValueError, match="not fitted; call adapt"):
        small_predictor().meta_fit(mat[SOURCES], feats).predict(archs[:3])
    with pytest.raises(ValueError, match="budget=60 is invalid"):
        ours.select(archs[:50], 60, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no source-device latencies"):
        ours.adapt(["|none~0|+|none~0|none~1|+|none~0|none~1|bogus~2|"] + archs[:4], np.ones(5))
    with pytest.raises(ValueError, match="latency -1.0"):
        ours.adapt(archs[:3], [1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="got 3 archs but 2 latencies"):
        ours.adapt(archs[:3], [1.0, 2.0])
    bad = mat[SOURCES].copy()
    bad.iloc[5, 2] = np.nan
    with pytest.raises(ValueError, match="source_table latency nan"):
        small_predictor().meta_fit(bad, feats)
    with pytest.raises(ValueError, match="selection 'greedy' is invalid"):
        FewShotLatencyPredictor(selections=("greedy",)).meta_fit(mat[SOURCES], feats)
    with pytest.raises(ValueError, match="selection_transform='exp' is invalid"):
        small_predictor(selection_transform="exp").meta_fit(mat[SOURCES], feats)
    with pytest.raises(ValueError, match="arch_features block 'flops' is unknown"):
        small_predictor().meta_fit(mat[SOURCES], {"flops": feats})
    assert device_family("1080ti_256") == "1080ti" and device_family("eyeriss") == "eyeriss"


def _nb201_cut(shared_data: Path, tmp_path: Path, devices: list[str], n_archs: int, name: str) -> Path:
    """A CSV of HELP's nb201 latencies on ``devices`` for the first ``n_archs`` architectures (dataset order)."""
    df = load_latency_table([shared_data / "latency" / "nb201_help.csv.gz"], space="nb201", devices=devices)
    csv = tmp_path / name
    df[df["arch"].isin(set(pd.unique(df["arch"])[:n_archs]))].to_csv(csv, index=False)
    return csv


def test_bench_config_errors() -> None:
    from nas.bench.latency_fewshot import run

    cfg = {"data": None, "space": "nb201", "meta_train": None, "meta_test": None, "budget": 20, "protocol": "help",
           "seeds": 1, "out": None}
    with pytest.raises(ValueError, match="bench.data is null"):
        run(cfg)
    with pytest.raises(ValueError, match="bench.protocol='loo' is invalid"):
        run({**cfg, "data": ["x.csv"], "protocol": "loo"})
    with pytest.raises(ValueError, match="bench.sedes is unknown"):
        run({**cfg, "sedes": 3})
    with pytest.raises(ValueError, match="bench.validate=help_valid is invalid for space 'nb201'"):
        run({**cfg, "data": ["x.csv"], "validate": "help_valid"})


def test_bench_end_to_end_protocol_all(shared_data: Path, tmp_path: Path) -> None:
    """run() on a tiny CSV cut from the real data: JSON shape, atomic write, ours beats the baseline."""
    import json

    from nas.bench.latency_fewshot import run

    csv = _nb201_cut(shared_data, tmp_path, ["1080ti_1", "silver_4114", "pixel3", "samsung_a50", "fpga"], 400, "tiny.csv")
    out = tmp_path / "res" / "fewshot.json"
    res = run({"data": [str(csv)], "space": "nb201", "meta_train": ["1080ti_1", "silver_4114", "pixel3", "samsung_a50"],
               "meta_test": ["fpga"], "budget": 20, "protocol": "all", "seeds": 2, "out": str(out)})
    saved = json.loads(out.read_text())
    assert saved["devices"] == res["devices"] and not list(out.parent.glob("*.tmp"))
    summary = {"devices", "mean_spearman", "mean_spearman_worst_meta_seed"}
    assert set(saved) == {"space", "budget", "protocol", "meta_seeds", "meta_fits", "predictor", "baseline", "prior",
                          "losses_to_ridge", "n_losses_to_ridge", *summary}
    assert set(saved["baseline"]) == {"space", "budget", "protocol", *summary} == set(saved["prior"])
    m, b, p = (saved[k]["devices"]["fpga"] if k != "ours" else saved["devices"]["fpga"] for k in ("ours", "baseline", "prior"))
    assert set(m) == {"spearman_mean", "spearman_std", "spearman_worst", "spearman_per_meta_seed", "mape_mean",
                      "within10_mean"} == set(b) == set(p)
    assert m["spearman_mean"] > 0.97 and m["spearman_mean"] > b["spearman_mean"]
    assert saved["losses_to_ridge"] == [] and saved["n_losses_to_ridge"] == 0
    assert 0.5 < p["spearman_mean"] < m["spearman_mean"]  # the unadapted prior: the typical source device
    assert m["mape_mean"] < b["mape_mean"] and 0 <= m["within10_mean"] <= 1


def test_bench_validate_holds_out_each_meta_train_family(shared_data: Path, tmp_path: Path) -> None:
    """bench.validate=true scores every meta-train device, each meta-trained without its whole family, and
    never the meta-test device; a fold equals the plain run with that split."""
    from nas.bench.latency_fewshot import run

    devices = ["1080ti_1", "1080ti_32", "silver_4114", "pixel3", "samsung_a50", "fpga"]
    csv = _nb201_cut(shared_data, tmp_path, devices, 300, "tiny.csv")
    cfg = {"data": [str(csv)], "space": "nb201", "meta_train": devices[:5], "meta_test": ["fpga"], "budget": 20,
           "protocol": "all", "seeds": 1, "out": None}
    with pytest.raises(ValueError, match="bench.validate='yes' is invalid"):
        run({**cfg, "validate": "yes"})
    res = run({**cfg, "validate": True})
    assert res["validate"] is True and set(res["devices"]) == set(devices[:5]) == set(res["baseline"]["devices"])
    fold = run({**cfg, "meta_train": ["silver_4114", "pixel3", "samsung_a50"], "meta_test": ["1080ti_1", "1080ti_32"]})
    assert res["devices"]["1080ti_32"] == fold["devices"]["1080ti_32"]
    assert res["devices"]["1080ti_1"]["spearman_mean"] > 0.8
    assert res["mean_spearman"] == pytest.approx(np.mean([m["spearman_mean"] for m in res["devices"].values()]))


def test_source_latencies_only(slice_) -> None:
    """Without arch features the predictor still works (src block only) and beats nothing-known guessing."""
    mat, archs, _ = slice_
    model = FewShotLatencyPredictor(selections=("random",), prior_strengths=(0.0,), meta_tasks=1, meta_pool=400,
                                    meta_query=400).meta_fit(mat[SOURCES])
    assert all(c[1][1:] == (0.0, 0.0, 0.0, 0.0) for c in model.configs_)
    pool, query, y = _task(mat, archs, "titan_rtx_256")
    picked = model.select(pool, 20, np.random.default_rng(1))
    model.adapt(picked, y[[archs.index(a) for a in picked]])
    assert spearmanr(model.predict(query), y[900:1900])[0] > 0.95


@pytest.fixture(scope="module")
def fitted_without_tail(slice_):
    """Meta-fitted on the first N_SEEN archs only: the rest of the slice is absent from the source table."""
    from predictors.arch_features import SpaceFeaturizer

    mat, _, _ = slice_
    return small_predictor().meta_fit(mat[SOURCES].iloc[:N_SEEN], featurizer=SpaceFeaturizer("nb201"))


N_SEEN = 2000


def test_archs_absent_from_the_source_table_are_predicted(slice_, fitted_without_tail, tmp_path: Path) -> None:
    mat, archs, _ = slice_
    model = fitted_without_tail
    unseen = archs[N_SEEN:]  # 500 archs no source device measured (as far as the predictor knows)
    assert not set(unseen) & set(model.index_)
    for target in TARGETS:
        y = mat[target]
        picked = model.select(archs[:900], 20, np.random.default_rng(0))
        model.adapt(picked, y[picked].to_numpy())
        rho_unseen = spearmanr(model.predict(unseen), y[unseen])[0]
        rho_seen = spearmanr(model.predict(archs[900:1900]), y[900:1900])[0]
        assert rho_unseen > 0.94, (target, rho_unseen)
        assert rho_unseen > rho_seen - 0.01, (target, rho_unseen, rho_seen)
    # measuring unseen archs works too: adapt on 20 of them, score the other unseen ones
    y = mat["eyeriss"]
    picked = model.select(unseen[:250], 20, np.random.default_rng(1))
    model.adapt(picked, y[picked].to_numpy())
    assert spearmanr(model.predict(unseen[250:]), y[unseen[250:]])[0] > 0.97
    # the imputation error widens the predictive std of unseen archs only (seen: in the table as written and as
    # compiled, the live view of views.py)
    from predictors.fewshot.views import live_form

    assert model.views_ == ["asis", "live"]
    seen = [a for a in archs[900:1200] if live_form(a) in model.index_][:100]
    mean, std = model.predict(unseen, return_std=True)
    seen_std = model.predict(seen, return_std=True)[1]
    saved_cov = model.outside_.impute_cov_
    try:
        model.outside_.impute_cov_ = {t: 0 * c for t, c in saved_cov.items()}
        narrow = model.predict(unseen, return_std=True)[1]
        assert len(seen) == 100 and np.array_equal(model.predict(seen, return_std=True)[1], seen_std)
    finally:
        model.outside_.impute_cov_ = saved_cov
    assert (std >= narrow - 1e-12).all() and (std > narrow).mean() > 0.9
    model.save(tmp_path / "m.skops")
    again = FewShotLatencyPredictor.load(tmp_path / "m.skops")
    got_mean, got_std = again.predict(unseen, return_std=True)
    assert np.array_equal(got_mean, mean) and np.array_equal(got_std, std)
    assert again.select(unseen, 5, np.random.default_rng(3)) == model.select(unseen, 5, np.random.default_rng(3))


def test_unseen_arch_errors(slice_, fitted) -> None:
    from predictors.arch_features import SpaceFeaturizer

    mat, archs, feats = slice_
    ours, _ = fitted  # meta-fitted with features but no featurizer
    ours.adapt(archs[:20], mat["eyeriss"].iloc[:20].to_numpy())
    with pytest.raises(ValueError, match="has no source-device latencies; meta_fit on a table"):
        ours.predict(archs[:3] + [archs[-1] + "x"])
    with pytest.raises(ValueError, match="featurizer disagrees with arch_features block 'enc'"):
        small_predictor().meta_fit(mat[SOURCES].iloc[:100], feats.iloc[:100] * 2, featurizer=SpaceFeaturizer("nb201"))
    with pytest.raises(ValueError, match="impute='knn' is invalid"):
        FewShotLatencyPredictor(impute="knn").meta_fit(mat[SOURCES], feats)
    with pytest.raises(ValueError, match="prior_check='cv' is invalid"):
        FewShotLatencyPredictor(prior_check="cv").meta_fit(mat[SOURCES], feats)


def test_prior_mix_average_is_the_mean_of_each_strengths_model_average(slice_, fitted) -> None:
    """prior_mix='average' (the default): no strength is chosen, and the prediction is the mean of the model
    averages that each candidate strength alone gives."""
    import copy

    mat, archs, _ = slice_
    ours, _ = fitted
    assert ours.prior_mix == "average" and ours.prior_strength_ is None
    y = mat["titan_rtx_256"]
    picked = ours.select(archs[:900], 5, np.random.default_rng(0))  # few timings: the prior matters
    ours.adapt(picked, y[picked].to_numpy())  # prior_check="loo": the mix, or one strength when clearly better
    assert ours.kappa_ is None or ours.kappa_ in ours.prior_strengths
    assert ours.loo_gain_.shape == (1 + len(ours.prior_strengths),) and ours.loo_gain_[0] == 0
    ours.prior_check = "none"
    ours.adapt(picked, y[picked].to_numpy())
    assert ours.kappa_ is None
    query = archs[900:1900]
    mixed = ours.predict(query)
    def full(model: FewShotLatencyPredictor) -> np.ndarray:
        w = np.zeros(len(model.configs_))
        w[model.active_] = model.weights_
        return w

    alone, weights = [], []
    for kappa in ours.prior_strengths:
        one = copy.deepcopy(ours)
        one.prior_mix, one.prior_check, one.prior_strength_ = "choose", "none", kappa
        one.adapt(picked, y[picked].to_numpy())
        assert one.kappa_ == kappa
        alone.append(one.predict(query))
        weights.append(full(one))
    assert np.allclose(mixed, np.mean(alone, axis=0), rtol=1e-3)
    assert np.allclose(full(ours), np.mean(weights, axis=0), atol=1e-3)
    assert np.abs(weights[0] - weights[-1]).max() > 0.05  # the strengths weigh configurations differently
    ours.prior_check = "loo"
    with pytest.raises(ValueError, match="prior_mix='vote' is invalid"):
        small_predictor(prior_mix="vote").meta_fit(mat[SOURCES], slice_[2])


def test_prior_check_keeps_or_overrules_the_meta_learned_strength(slice_) -> None:
    """prior_mix='choose': prior_check='none' uses the meta-learned strength; 'loo' may only move to another
    candidate strength, and for an in-domain target (eyeriss after NB201 meta-training) it keeps the
    meta-learned one."""
    mat, archs, feats = slice_
    ours = small_predictor(prior_mix="choose").meta_fit(mat[SOURCES], feats)
    assert ours.prior_strength_ in ours.prior_strengths
    y = mat["eyeriss"]
    picked = ours.select(archs[:900], 20, np.random.default_rng(0))
    try:
        ours.prior_check = "none"
        ours.adapt(picked, y[picked].to_numpy())
        assert ours.kappa_ == ours.prior_strength_
        fixed = ours.predict(archs[900:1900])
        ours.prior_check = "loo"
        ours.adapt(picked, y[picked].to_numpy())
        assert ours.kappa_ == ours.prior_strength_ and ours.loo_gain_.shape == (len(ours.prior_strengths),)
        assert np.array_equal(ours.predict(archs[900:1900]), fixed)
    finally:
        ours.prior_check = "loo"


def test_bench_ceiling_separates_predictable_from_noise_targets() -> None:
    """The full-pool ceiling diagnostic: ~1 for a latency that is a function of the inputs, ~0 for noise."""
    from nas.bench.latency_fewshot import _ceiling

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    pool, query = np.arange(400), np.arange(400, 600)
    inputs = {"source": x[:, :2], "arch": x[:, 2:], "both": x}
    additive = np.exp(0.3 * x @ np.array([1.0, -0.5, 0.8, 0.2, 0.4]))
    res = _ceiling(inputs, additive, pool, query)
    assert res["pool_size"] == 400 and res["best"] == res["ridge_both"] > 0.99
    assert res["ridge_source"] < 0.9  # the source block alone misses part of the signal
    noise = _ceiling(inputs, np.exp(rng.normal(size=600)), pool, query)
    assert abs(noise["ridge_both"]) < 0.25 and noise["best"] < 0.3


def test_bench_help_protocol_the_path_behind_the_published_figures(shared_data: Path, tmp_path: Path) -> None:
    """protocol=help (HELP's pool [0, 900) and query [900, 1900) of the dataset order, both trimmed to the
    target's 10th-90th latency percentile), as every published few-shot figure runs: ours above the ridge
    baseline and close to the full-table figure on fpga."""
    from nas.bench.latency_fewshot import run

    devices = ["1080ti_1", "1080ti_32", "silver_4114", "pixel3", "samsung_a50", "fpga"]
    csv = _nb201_cut(shared_data, tmp_path, devices, 2000, "first2000.csv")
    res = run({"data": [str(csv)], "space": "nb201", "meta_train": devices[:5], "meta_test": ["fpga"], "budget": 20,
               "protocol": "help", "seeds": 2, "out": None})
    assert res["protocol"] == "help" and res["budget"] == 20
    ours, base = res["devices"]["fpga"], res["baseline"]["devices"]["fpga"]
    assert ours["spearman_mean"] > 0.97 and ours["spearman_mean"] > base["spearman_mean"] + 0.02, (ours, base)
    assert ours["within10_mean"] > base["within10_mean"]
    with pytest.raises(ValueError, match="has 1000 archs; protocol=help needs 1900"):
        cut = _nb201_cut(shared_data, tmp_path, devices, 1000, "first1000.csv")
        run({"data": [str(cut)], "space": "nb201", "meta_train": devices[:5], "meta_test": ["fpga"], "budget": 20,
             "protocol": "help", "seeds": 1, "out": None})


def test_bench_meta_seeds_and_untrimmed_pool(shared_data: Path, tmp_path: Path) -> None:
    """bench.meta_seeds=K meta-trains K times and reports the worst meta-seed beside the mean (meta-seed 0 is
    the single-seed run); protocol=help_untrimmed picks from HELP's whole 900-arch pool and scores on HELP's
    trimmed query."""
    from nas.bench.latency_fewshot import run

    devices = ["1080ti_1", "1080ti_32", "silver_4114", "pixel3", "samsung_a50", "fpga"]
    csv = _nb201_cut(shared_data, tmp_path, devices, 2000, "first2000.csv")
    cfg = {"data": [str(csv)], "space": "nb201", "meta_train": devices[:5], "meta_test": ["fpga"], "budget": 10,
           "seeds": 2, "out": None}
    two = run({**cfg, "protocol": "help_untrimmed", "meta_seeds": 2})
    one = run({**cfg, "protocol": "help_untrimmed", "meta_seeds": 1})
    d2, d1 = two["devices"]["fpga"], one["devices"]["fpga"]
    assert len(d2["spearman_per_meta_seed"]) == 2 and d2["spearman_per_meta_seed"][0] == d1["spearman_per_meta_seed"][0]
    assert d2["spearman_worst"] == min(d2["spearman_per_meta_seed"]) <= d2["spearman_mean"]
    assert two["mean_spearman_worst_meta_seed"] == d2["spearman_worst"] and [c["meta_seed"] for c in two["meta_fits"]] == [0, 1]
    assert two["ceiling"]["devices"]["fpga"]["pool_size"] == 900 and d2["spearman_mean"] > 0.9
    assert [c["meta_budget"] for c in two["meta_fits"]] == [10, 10]  # the simulated tasks get the bench's budget
    trimmed = run({**cfg, "protocol": "help", "meta_seeds": 1})
    assert trimmed["ceiling"]["devices"]["fpga"]["pool_size"] == 720
    with pytest.raises(ValueError, match="bench.meta_seeds=0 is invalid"):
        run({**cfg, "protocol": "help", "meta_seeds": 0})
    with pytest.raises(ValueError, match="task_trim='most' is invalid"):
        run({**cfg, "protocol": "help", "predictor": {"task_trim": "most"}})
    with pytest.raises(ValueError, match=r"bench.predictor=\{'tasks': 3\} is invalid"):
        run({**cfg, "protocol": "help", "predictor": {"tasks": 3}})
    untrimmed_tasks = run({**cfg, "protocol": "help_untrimmed", "predictor": {"task_trim": "query"}})
    assert untrimmed_tasks["predictor"] == {"task_trim": "query"} and untrimmed_tasks["devices"]["fpga"]["spearman_mean"] > 0.9


def test_selection_geometry_is_of_the_requested_transform(slice_, fitted) -> None:
    """The rule selects in the best random-pick configuration's geometry among those of ``selection_transform``
    (log by default; the best raw and log ones tie in the 4th digit and flipped between meta-training seeds)."""
    mat, archs, feats = slice_
    ours, _ = fitted
    assert ours.selection_transform == "log" and ours.geometry_[0] == "log"
    raw = small_predictor(selection_transform="raw").meta_fit(mat[SOURCES], feats)
    assert raw.geometry_[0] == "raw"
    only_raw = small_predictor(transforms=("raw",)).meta_fit(mat[SOURCES], feats)  # no log configuration: any
    assert only_raw.geometry_[0] == "raw"
    pool = archs[:300]
    picks = {tuple(m.select(pool, 10, np.random.default_rng(0))) for m in (ours, raw)}
    assert len(picks) == 2  # the geometry decides which archs are measured


def test_bench_featurizes_as_the_pipeline_and_fbnet_shape_counts_pay(shared_data: Path) -> None:
    """The bench reads architectures through the pipeline's SpaceFeaturizer. For fbnet its ``enc`` is the op
    count per layer shape: on pixel3 (HW-NAS-Bench's additive latencies) 150 measurements pin every cost of
    it, while the per-layer one-hot (199 unknowns) is still under-determined."""
    from nas.bench.latency_fewshot import featurizer
    from search_spaces import create_search_space
    from search_spaces.fbnet.arch import FBNetArchitecture
    from search_spaces.fbnet.arch import encode_onehot as fbnet_onehot

    mat = latency_matrix(load_latency_table([shared_data / "latency" / "fbnet_help.csv.gz"], space="fbnet",
                                            devices=["pixel3"])).iloc[:1200]
    archs = list(mat.index)
    blocks = featurizer("fbnet")(archs)
    space = create_search_space("fbnet", dataset="cifar100")
    parsed = [space.parse(a) for a in archs]
    assert np.array_equal(blocks["enc"], space.latency_encoding(parsed)) and blocks["enc"].shape[1] == 108
    assert np.array_equal(blocks["phys"], space.cost_features(parsed))
    y = mat["pixel3"].to_numpy()
    scores = {}
    for name, x in (("counts", blocks["enc"]), ("onehot", fbnet_onehot([FBNetArchitecture.from_string(a) for a in archs]))):
        x = np.hstack([x, np.ones((len(x), 1))])
        cost = np.linalg.lstsq(x[:150], y[:150], rcond=None)[0]
        scores[name] = spearmanr(x[150:] @ cost, y[150:])[0]
    assert scores["counts"] > 0.999 and scores["onehot"] < 0.95, scores
    nb = featurizer("nb201")(["|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"])
    assert set(nb) == {"enc"} and nb["enc"].shape == (1, 30)


def test_bench_scores_a_device_from_another_measurement_campaign(shared_data: Path, tmp_path: Path) -> None:
    """A user's NB201 latency set (its own CSV, its own device names, a few hundred archs) is scored against
    a predictor meta-trained on every device of the other files (bench.meta_train=all, protocol=all)."""
    from nas.bench.latency_fewshot import run

    sources = ["1080ti_1", "1080ti_32", "silver_4114", "pixel3", "samsung_a50"]
    help_csv = _nb201_cut(shared_data, tmp_path, sources, 2000, "help_cut.csv")
    other = load_latency_table([shared_data / "latency" / "nb201_help.csv.gz"], space="nb201", devices=["eyeriss"])
    other = other[other["arch"].isin(set(pd.unique(other["arch"])[:600]))].assign(device="accelerator_b")
    other.to_csv(tmp_path / "other.csv", index=False)
    res = run({"data": [str(help_csv), str(tmp_path / "other.csv")], "space": "nb201", "meta_train": "all",
               "meta_test": ["accelerator_b"], "budget": 20, "protocol": "all", "seeds": 2, "out": None})
    ours, base = res["devices"]["accelerator_b"], res["baseline"]["devices"]["accelerator_b"]
    assert ours["spearman_mean"] > 0.8 and ours["spearman_mean"] > base["spearman_mean"] + 0.1, (ours, base)
    with pytest.raises(ValueError, match="bench.meta_train='some' is invalid"):
        run({"data": [str(help_csv)], "space": "nb201", "meta_train": "some", "meta_test": ["pixel3"], "budget": 20,
             "protocol": "all", "seeds": 1, "out": None})

