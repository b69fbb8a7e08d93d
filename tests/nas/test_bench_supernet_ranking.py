"""bench=supernet_ranking through the hwnas-bench app, shrunk: the JSON is consistent with its own rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from scipy.stats import spearmanr


def _bench(tmp_path, *extra: str, name: str = "sr.json"):
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "nas.bench.cli", "bench=supernet_ranking", "bench.n_archs=3",
                           "bench.epochs=1", "bench.standalone_seeds=1", "bench.threads=1",
                           "bench.calib_images=256", f"bench.out={out}", f"bench.cache_dir={tmp_path / 'cache'}",
                           f"hydra.run.dir={tmp_path / 'h'}", *extra], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_supernet_ranking_bench_reports_a_consistent_rank_correlation(tmp_path):
    res = _bench(tmp_path)
    rows = res["archs"]
    assert res["n_archs"] == len(rows) == 3 and len({r["arch"] for r in rows}) == 3
    assert res["holdout_images"] == 629
    for r in rows:
        assert 0 <= r["inherited_acc"] <= 1 and 0 <= r["standalone_acc"] <= 1
        assert r["standalone_acc"] > 0.3  # one epoch of real training beats chance (0.1) on digits
    want = spearmanr([r["inherited_acc"] for r in rows], [r["standalone_acc"] for r in rows]).statistic
    assert res["spearman"] == pytest.approx(want, nan_ok=True)
    assert res["reused_from_journal"] == 0

    # interrupted after the second subnet's inherited score: a rerun trains no supernet (its checkpoint is
    # done), keeps the 3 journalled scores, redoes the other 3 and gives the uninterrupted figures
    journal = Path(res["journal"])
    lines = journal.read_text().splitlines()
    assert len(lines) == 6 and {json.loads(x)["kind"] for x in lines} == {"inherited", "standalone"}
    journal.write_text("\n".join(lines[:3]) + "\n")
    again = _bench(tmp_path)
    assert again["reused_from_journal"] == 3 and len(journal.read_text().splitlines()) == 6
    assert again["supernet_seconds"] < res["supernet_seconds"] / 3
    for a, b in zip(res["archs"], again["archs"], strict=True):
        assert a["arch"] == b["arch"]
        assert a["inherited_acc"] == b["inherited_acc"] and a["standalone_acc"] == pytest.approx(b["standalone_acc"], abs=2e-3)

    # the centre-crop supernet (kernel_transform=false) against the same stand-alone reference, reused from the
    # first run's JSON: no stand-alone model is trained again, the reference figures are the first run's
    plain = _bench(tmp_path, "bench.kernel_transform=false", f"bench.standalone_from={tmp_path / 'sr.json'}",
                   name="plain.json")
    assert plain["reused_from_journal"] == 0
    kinds = [json.loads(x) for x in Path(plain["journal"]).read_text().splitlines()]
    assert sum(k["kind"] == "standalone" and k.get("from") == str(tmp_path / "sr.json") for k in kinds) == 3
    assert [r["standalone_accs"] for r in plain["archs"]] == [r["standalone_accs"] for r in res["archs"]]
    assert Path(plain["journal"]) != journal  # another supernet: another journal
    with pytest.raises(AssertionError, match="bench.standalone_from=.* has epochs=1; expected 2"):
        _bench(tmp_path, "bench.epochs=2", f"bench.standalone_from={tmp_path / 'sr.json'}", name="bad.json")


def test_bad_bench_values_are_refused(tmp_path):
    """Each bad value fails in one line before any training; the bench's own run() is what hwnas-bench calls,
    and one case goes through the app to check it turns that line into exit code 2."""
    import re

    from nas.bench import supernet_ranking

    for arg, frag in (("space=nb201", "bench.space='nb201'"), ("n_archs=2", "bench.n_archs=2"),
                      ("sampling=every", "bench.sampling='every'"), ("data=nope", "data 'nope' is unknown"),
                      ("data=cifar10", "bench.data=cifar10: data 'cifar10' needs its root"),
                      ("data_limit=10", "bench.data_limit=10"),
                      ("data_root=/x", "data 'digits' has no setting 'root'"),
                      ("data=fashion_mnist data_root=/x", "data.root='/x' lacks")):
        cfg = {k: (int(v) if v.isdigit() else v) for k, v in (kv.split("=") for kv in arg.split())}
        with pytest.raises(ValueError, match=re.escape(frag)):
            supernet_ranking.run({**cfg, "out": str(tmp_path / "x.json")})
    proc = subprocess.run([sys.executable, "-m", "nas.bench.cli", "bench=supernet_ranking", "bench.n_archs=2",
                           f"bench.out={tmp_path / 'x.json'}", f"hydra.run.dir={tmp_path / 'h'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bench.n_archs=2" in proc.stderr, proc.stderr[-1000:]
    assert not (tmp_path / "x.json").exists()


def test_stratified_sampling_spans_the_size_range():
    """One subnet per MACs bin: the sample reaches both tails that a uniform sample of 10 rarely does."""
    import numpy as np

    from nas.bench.supernet_ranking import SPACES, sample_subnets
    from search_spaces import create_search_space

    space = create_search_space(**SPACES["ofa_mbv3_small"])
    archs = sample_subnets(space, 10, "stratified", np.random.default_rng(0))
    macs = np.array([space.macs(a) for a in archs])
    ref = np.array([space.macs(a) for a in space.sample_many(2000, np.random.default_rng(1))])
    assert len({a.to_string() for a in archs}) == 10
    assert (np.diff(macs) >= 0).all()  # bins in MACs order
    assert macs[0] <= np.quantile(ref, 0.1) and macs[-1] >= np.quantile(ref, 0.9)
    uniform = sample_subnets(space, 10, "uniform", np.random.default_rng(0))
    assert [a.to_string() for a in uniform] == [a.to_string() for a in space.sample_many(10, np.random.default_rng(0))]
