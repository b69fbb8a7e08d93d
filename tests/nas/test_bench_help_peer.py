"""HELP's released predictor as a peer of bench=latency_fewshot: its own code and checkpoints, run on the CPU."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.bench import help_peer_bench
from nas.bench.help_peer import README, README_MEAN, HelpPeer, nb201_graph
from nas.bench.latency_fewshot import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def help_repo() -> Path:
    """../shared/peers/HELP (or $HWNAS_SHARED/peers/HELP); skips where a fresh clone lacks it."""
    shared = os.environ.get("HWNAS_SHARED")
    path = (Path(shared) if shared else REPO.parent / "shared") / "peers" / "HELP"
    if not (path / "help.py").is_file() or not (path / "data" / "nasbench201" / "checkpoint").is_dir():
        pytest.skip(f"HELP's code and checkpoints not found at {path}: these tests need ../shared/peers/HELP")
    return path


@pytest.fixture(scope="module")
def nb201_peer(help_repo: Path) -> HelpPeer:
    return HelpPeer(help_repo, "nb201")


def test_rebuilt_nb201_graph_is_the_one_helps_issue_shows() -> None:
    """NB201 arch 0 as HELP's architecture.pt holds it (its GitHub issue #2): node types input, avg_pool,
    conv1x1, skip, conv1x1, skip, skip, output in HELP's feature order; input feeds the first two edges' nodes."""
    op, adj = nb201_graph("|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|")
    assert op.argmax(1).tolist() == [0, 1, 2, 5, 2, 5, 5, 6]
    assert op.sum() == 8
    assert np.flatnonzero(adj[0]).tolist() == [1, 2, 4]  # input -> edges 0->1, 0->2, 0->3
    assert np.flatnonzero(adj[:, 7]).tolist() == [4, 5, 6]  # edges into node 3 -> output
    assert np.flatnonzero(adj[1]).tolist() == [3, 5]  # edge 0->1 feeds edges 1->2, 1->3
    with pytest.raises(ValueError, match=r"arch 'bad' is not an NB201 cell string"):
        nb201_graph("bad")


def test_helps_own_protocol_reproduces_its_readme_nb201(nb201_peer: HelpPeer) -> None:
    """HELP's own meta-test (its code path, 10 samples + 10 reference archs): per device and mean within 0.02
    of README Table 3 on the devices it ranks stably; the adapter leaves torch and sys.modules as it found them."""
    cuda, threads = torch.Tensor.cuda, torch.get_num_threads()
    res = nb201_peer.reproduce([3])  # the seed of HELP's meta-test script
    assert torch.Tensor.cuda is cuda and torch.get_num_threads() == threads
    assert "utils" not in sys.modules and "loader" not in sys.modules
    tensorboard = sys.modules.get("torch.utils.tensorboard")  # HELP's import-time placeholder is gone again
    assert tensorboard is None or getattr(tensorboard, "__file__", None)
    for dev in ("titan_rtx_256", "gold_6226", "fpga"):
        assert abs(res["devices"][dev]["spearman_mean"] - README["nb201"][dev]) <= 0.02, res["devices"][dev]
    assert abs(res["mean_spearman"] - README_MEAN["nb201"]) <= 0.02, res["mean_spearman"]
    assert res["within_0_02"] and res["checkpoint_episode"] == 1699


def test_helps_own_protocol_reproduces_its_readme_fbnet(help_repo: Path) -> None:
    res = HelpPeer(help_repo, "fbnet").reproduce([3])
    assert abs(res["mean_spearman"] - README_MEAN["fbnet"]) <= 0.02, res["mean_spearman"]
    assert all(abs(m["diff"]) <= 0.03 for m in res["devices"].values()), res["devices"]


def test_predict_at_our_budget_ranks_a_clean_device(nb201_peer: HelpPeer, shared_data: Path) -> None:
    """The side-by-side path of one task: HELP adapted on 10 random measured archs ranks titan_rtx_256's query
    well, and the same seed gives the same prediction."""
    from latency_luts.interchange import latency_matrix, load_latency_table

    mat = latency_matrix(load_latency_table([shared_data / "latency" / "nb201_help.csv.gz"], space="nb201"))
    y = mat["titan_rtx_256"].to_numpy()
    index = {a: i for i, a in enumerate(mat.index)}
    refs = [index[a] for a in nb201_peer.reference_archs]
    rows = list(np.random.default_rng(0).choice(np.arange(900), 10, replace=False))
    query = np.arange(900, 1900)
    xs, xq = nb201_peer.batch([mat.index[i] for i in rows]), nb201_peer.batch([mat.index[i] for i in query])
    pred = nb201_peer.predict(y[refs], xs, y[rows], xq, seed=0)
    from scipy.stats import spearmanr

    assert spearmanr(pred, y[query])[0] > 0.85
    np.testing.assert_allclose(pred, nb201_peer.predict(y[refs], xs, y[rows], xq, seed=0))


def test_bench_side_by_side_small(nb201_peer: HelpPeer, help_repo: Path, shared_data: Path, monkeypatch, capsys,
                                  tmp_path) -> None:
    """peers=[help] on a small config (a 410-arch cut of the real data holding HELP's reference archs, protocol
    all): HELP's figures per device beside ours in the JSON and the table."""
    import pandas as pd

    from latency_luts.interchange import load_latency_table

    devices = ["1080ti_1", "silver_4114", "pixel3", "samsung_a50", "fpga", "titan_rtx_256"]
    df = load_latency_table([shared_data / "latency" / "nb201_help.csv.gz"], space="nb201", devices=devices)
    keep = set(pd.unique(df["arch"])[:400]) | set(nb201_peer.reference_archs)
    csv = tmp_path / "cut.csv"
    df[df["arch"].isin(keep)].to_csv(csv, index=False)
    monkeypatch.setattr(help_peer_bench, "REPRODUCE_SEEDS", [3])
    out = run({"data": [str(csv)], "space": "nb201", "meta_train": devices[:4], "meta_test": devices[4:],
               "protocol": "all", "budget": 14, "seeds": 2, "peers": ["help"], "help_repo": str(help_repo),
               "out": str(tmp_path / "r.json")})
    res = out["peers"]["help"]
    assert set(res["devices"]) == {"fpga", "titan_rtx_256"} and res["not_applicable"] == {}
    for dev, m in res["devices"].items():
        assert len(m["spearman_per_seed"]) == 2 and 0.8 < m["spearman_mean"] <= 1.0, m
        assert m["ours_ge_help_every_meta_seed"] == (min(m["ours_spearman_per_meta_seed"]) >= m["spearman_mean"])
        assert m["ours_spearman_mean"] == out["devices"][dev]["spearman_mean"]
        assert "spearman_mean_pool_scale" not in m  # protocol all: no HELP pool to scale by
    assert res["budget_split"] == {"reference_archs": 10, "random_pool_archs": 4}
    assert res["reproduction"]["seeds"] == [3] and res["targets_in_help_meta_training"] == []
    assert res["help_commit"] in (None, "45f70eb92d0d735970a33b608d1544ad3c52f285")  # None: no peers README
    printed = capsys.readouterr().out
    assert "HELP's released predictor at the same budget (14 = 10 reference archs + 4 random pool archs)" in printed
    assert (tmp_path / "r.json").is_file()


def test_device_without_reference_archs_is_not_applicable(nb201_peer: HelpPeer, monkeypatch) -> None:
    """A target lacking HELP's reference archs (another campaign's device) is listed, not scored."""
    import pandas as pd

    archs = nb201_peer.reference_space()[:1000]
    y = np.linspace(1.0, 2.0, len(archs))
    mat = pd.DataFrame({"other": y}, index=archs)
    monkeypatch.setattr(help_peer_bench, "REPRODUCE_SEEDS", [3])
    monkeypatch.setattr(HelpPeer, "reproduce", lambda self, seeds: {"seeds": seeds})
    cfg = {"help_repo": str(nb201_peer.repo), "space": "nb201", "seeds": 1, "budget": 20}
    splits = {"other": (y, np.arange(len(y)), archs, None)}
    res = help_peer_bench.run_help(cfg, mat, splits, {"devices": {}}, lambda p, t: (0.0, 0.0, 0.0), None)
    assert res["devices"] == {} and res["mean_spearman"] is None
    assert "latencies of 3 of HELP's 10 reference archs" in res["not_applicable"]["other"]


@pytest.mark.parametrize(("over", "message"), [
    ({"peers": ["helpp"]}, r"bench.peers=\['helpp'\] is invalid: unknown peer 'helpp'; expected a list of \['help'\]"),
    ({"peers": ["help"], "help_repo": "/nonexistent/HELP"},
     r"bench.help_repo='/nonexistent/HELP' lacks HELP's help.py; expected a HayeonLee/HELP snapshot"),
    ({"peers": ["help"], "space": "ofa_mbv3"}, r"bench.space='ofa_mbv3' is invalid with bench.peers=\[help\]"),
    ({"peers": ["help"], "validate": True}, r"bench.validate=True is invalid with bench.peers=\[help\]"),
    ({"peers": ["help"], "budget": 11}, r"bench.budget=11 is invalid with bench.peers=\[help\].*expected >= 12"),
])
def test_bad_peer_settings_are_one_line_errors(help_repo: Path, over: dict, message: str) -> None:
    cfg = {"data": ["unused.csv"], "space": "nb201", "help_repo": str(help_repo), **over}
    with pytest.raises(ValueError, match=message) as err:
        run(cfg)
    assert "\n" not in str(err.value)
