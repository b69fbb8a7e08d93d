"""The few-shot latency predictor falls back to what its measurements support on a device unlike every source
device, keeps its advantage on a device like them, and tells a device that runs the compiled network (dead
operations removed) from one that runs it as written (issue 27). Real HELP NB201 latencies, the predictor's
defaults, 20 measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import Ridge

from latency_luts.interchange import latency_matrix, load_latency_table
from predictors.arch_features import SpaceFeaturizer
from predictors.fewshot import FewShotLatencyPredictor, SourceRidgeBaseline
from predictors.fewshot.views import live_form, nb201_live
from search_spaces.nb201.arch import OPS, NB201Architecture

SOURCES = ["1080ti_1", "1080ti_32", "silver_4114", "pixel3", "samsung_a50", "essential_ph_1"]
LIKE = ["titan_rtx_256", "samsung_s7"]
POOL, QUERY = slice(0, 3000), slice(3000, 8000)
SEEDS = range(5)


@pytest.fixture(scope="module")
def table(shared_data: Path):
    df = load_latency_table([shared_data / "latency" / "nb201_help.csv.gz"], space="nb201", devices=SOURCES + LIKE)
    mat = latency_matrix(df)
    return mat, list(mat.index)


@pytest.fixture(scope="module")
def models(table):
    mat, _ = table
    ours = FewShotLatencyPredictor().meta_fit(mat[SOURCES], featurizer=SpaceFeaturizer("nb201"))
    return ours, SourceRidgeBaseline().meta_fit(mat[SOURCES])


def _op_counts(archs: list[str]) -> np.ndarray:
    return np.array([[NB201Architecture.from_string(a).ops.count(o) for o in OPS[1:]] for a in archs], dtype=float)


def _scores(ours, ridge, archs: list[str], y: np.ndarray) -> dict[str, float]:  # noqa: ANN001
    """Mean Spearman on the query over SEEDS: ours and two plain ridge fits on the same 20 random measurements
    (ridge on the source latencies = the bench's baseline; ridge on the one-hot encoding = per-edge op costs),
    and ours on the 20 archs it selects itself."""
    onehot = SpaceFeaturizer("nb201")(archs)["enc"]
    pool, query = archs[POOL], archs[QUERY]
    out: dict[str, list[float]] = {}
    for seed in SEEDS:
        picked = ridge.select(pool, 20, np.random.default_rng(seed))
        rows = [archs.index(a) for a in picked]
        for name, model in (("ours", ours), ("ridge", ridge)):
            model.adapt(picked, y[rows])
            out.setdefault(name, []).append(spearmanr(model.predict(query), y[QUERY])[0])
        enc = Ridge(alpha=0.1).fit(onehot[rows], y[rows])
        out.setdefault("onehot_ridge", []).append(spearmanr(enc.predict(onehot[QUERY]), y[QUERY])[0])
        own = ours.select(pool, 20, np.random.default_rng(seed))
        ours.adapt(own, y[[archs.index(a) for a in own]])
        out.setdefault("ours_own_picks", []).append(spearmanr(ours.predict(query), y[QUERY])[0])
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_unlike_every_source_device_falls_back_to_its_measurements(table, models) -> None:
    """A synthetic device whose per-op costs invert the sources' (skip-connections, cheaper than a 3x3
    convolution on every source, cost the most; 3x3 convolutions the least): the adapted predictor follows its
    20 measurements, far above ridge on the source latencies and near a ridge on per-edge op costs."""
    mat, archs = table
    ours, ridge = models
    cost = {"none": 0.0, "skip_connect": 2.0, "nor_conv_1x1": 0.3, "nor_conv_3x3": 0.1, "avg_pool_3x3": 0.6}
    rng = np.random.default_rng(0)
    y = np.array([0.5 + sum(cost[o] for o in NB201Architecture.from_string(a).ops) for a in archs])
    y *= np.exp(0.03 * rng.standard_normal(len(y)))
    # the premise: on every source device a skip-connection is cheaper than a 3x3 convolution (additive fit)
    x = np.hstack([_op_counts(archs[:3000]), np.ones((3000, 1))])
    for dev in SOURCES:
        c = np.linalg.lstsq(x, mat[dev].to_numpy()[:3000], rcond=None)[0]
        assert c[OPS.index("skip_connect") - 1] < c[OPS.index("nor_conv_3x3") - 1], dev
    s = _scores(ours, ridge, archs, y)
    assert s["ridge"] < 0.5 < s["onehot_ridge"], s  # the sources' latencies alone are no guide here
    # the check (within 0.02 of ridge on the same measurements) holds by far: ours leaves the prior
    assert s["ours"] >= s["ridge"] + 0.3 and s["ours_own_picks"] >= s["ridge"] + 0.3, s
    # against the per-op-cost ridge it stays short by ~0.04 (0.846 vs 0.884 on 2026-12-04; docs/history.md)
    assert s["ours"] >= s["onehot_ridge"] - 0.05 and s["ours_own_picks"] >= s["onehot_ridge"] - 0.05, s


def test_like_the_sources_keeps_its_advantage(table, models) -> None:
    """On held-out devices of kinds the sources cover (a GPU, a phone) the meta-learned prior still pays."""
    mat, archs = table
    ours, ridge = models
    s_gpu = _scores(ours, ridge, archs, mat["titan_rtx_256"].to_numpy())
    s_phone = _scores(ours, ridge, archs, mat["samsung_s7"].to_numpy())
    # 2026-12-04: GPU 0.997 / 0.997 (own picks) vs ridge 0.974; phone 0.912 / 0.927 vs 0.910
    assert s_gpu["ours"] >= s_gpu["ridge"] + 0.015 and s_gpu["ours_own_picks"] >= s_gpu["ridge"] + 0.015, s_gpu
    assert s_phone["ours"] >= s_phone["ridge"] - 0.01 and s_phone["ours_own_picks"] >= s_phone["ridge"] + 0.01, s_phone
    for s in (s_gpu, s_phone):
        assert s["ours"] >= s["onehot_ridge"] + 0.05, s


def _live_weight(model: FewShotLatencyPredictor) -> float:
    live = np.char.find(model.config_transforms_[model.active_].astype(str), "|live") >= 0
    return float(model.weights_[live].sum())


def test_the_measurements_decide_whether_dead_operations_run(table, models) -> None:
    """A device that runs the compiled cell (titan_rtx_256's latency of the cell without its dead edges) is
    recognised from 20 measurements and predicted better than by the as-written view alone; the real
    titan_rtx_256 (PyTorch, dead edges run) keeps the as-written view."""
    mat, archs = table
    ours, ridge = models
    assert ours.views_ == ["asis", "live"]
    assert nb201_live("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|") == (
        "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    assert live_form("k3_e1,skip") == "k3_e1,skip"  # not an NB201 cell: unchanged
    titan = mat["titan_rtx_256"]
    compiled = titan.loc[[live_form(a) for a in archs]].to_numpy()
    as_written = FewShotLatencyPredictor(views=("asis",)).meta_fit(mat[SOURCES], featurizer=SpaceFeaturizer("nb201"))
    assert as_written.views_ == ["asis"]
    both, asis_only = [], []
    for seed in range(3):
        picked = ridge.select(archs[POOL], 20, np.random.default_rng(seed))
        rows = [archs.index(a) for a in picked]
        ours.adapt(picked, compiled[rows])
        assert _live_weight(ours) > 0.9
        both.append(spearmanr(ours.predict(archs[QUERY]), compiled[QUERY])[0])
        as_written.adapt(picked, compiled[rows])
        asis_only.append(spearmanr(as_written.predict(archs[QUERY]), compiled[QUERY])[0])
        ours.adapt(picked, titan.to_numpy()[rows])
        assert _live_weight(ours) < 0.1
    assert np.mean(both) >= np.mean(asis_only) + 0.03, (both, asis_only)
    assert np.mean(both) > 0.97, both
    assert pd.Series(compiled).nunique() < titan.nunique()  # the compiled device has fewer distinct cells
