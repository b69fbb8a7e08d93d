"""The Ax and Syne Tune peers (``pip install -e '.[peers]'``) behind the ask/tell interface, with the real
libraries on the NB201 table (one HELP device): every budget spent on distinct architectures, the libraries'
models used, seeds reproducible; and the two search benchmarks' peer path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.search import SearchProblem, build_strategy, run_budget

DEVICE = "pixel2"


class Table:
    """Test error (%) and ``DEVICE`` latency (ms) of the 15,625 NB201 cells; the HV ratio of a run's evaluations
    against the true front (normalised by its ideal and nadir, reference (1.1, 1.1), as bench=search_nb201)."""

    def __init__(self, shared: Path) -> None:
        from latency_luts.interchange import latency_matrix, load_latency_table
        from nas.pareto import hypervolume, normalize, pareto_mask
        from search_spaces import create_search_space
        from search_spaces.nb201.tabular import NB201Tabular

        table = NB201Tabular(str(shared / "nb201" / "nats_bench_tss_test_acc_200ep.csv"))
        self.space = create_search_space("nb201")
        self.archs = [self.space.parse(s) for s in table.archs]
        self.row = {a: i for i, a in enumerate(self.archs)}
        mat = latency_matrix(load_latency_table(str(shared / "latency" / "nb201_help.csv.gz"), space="nb201",
                                                devices=[DEVICE])).loc[table.archs]
        self.F = np.c_[100.0 - table.acc, mat[DEVICE].to_numpy(dtype=float)]
        T = self.F[pareto_mask(self.F)]
        self.ideal, self.nadir = T.min(0), T.max(0)
        self.hv_true = hypervolume(normalize(T, self.ideal, self.nadir), np.array([1.1, 1.1]))

    def objective(self, calls: list[Any]) -> Any:
        def f(archs: list[Any]) -> np.ndarray:
            calls.extend(archs)
            return self.F[[self.row[a] for a in archs]]

        return f

    def hv_curve(self, order: list[Any]) -> np.ndarray:
        from nas.pareto import hv_history, normalize

        F = self.F[[self.row[a] for a in order]]
        return hv_history(normalize(F, self.ideal, self.nadir), np.array([1.1, 1.1])) / self.hv_true

    def problem(self, seed: int) -> SearchProblem:
        return SearchProblem(space=self.space, n_objectives=2, seed=seed, candidates=self.archs)


@pytest.fixture(scope="module")
def nb201(shared_data: Path) -> Table:
    return Table(shared_data)


def _run(table: Table, node: dict[str, Any], seed: int, budget: int) -> tuple[Any, list[Any], list[Any]]:
    calls: list[Any] = []
    strategy = build_strategy(node, table.problem(seed))
    order, F = run_budget(strategy, table.objective(calls), budget)
    assert len(order) == len(calls) == len(set(calls)) == budget  # exactly the budget, nothing evaluated twice
    np.testing.assert_array_equal(F, table.F[[table.row[a] for a in order]])
    return strategy, order, calls


@pytest.mark.slow
def test_ax_runs_its_default_moo_bo_in_batches_seeded_and_improves_on_its_first_batch(nb201: Table) -> None:
    pytest.importorskip("ax")
    node = {"_target_": "nas.search.AxSearch", "batch_size": 10}
    st, order, _ = _run(nb201, node, seed=0, budget=20)
    info = st.describe()
    # a center trial and Sobol first, then Ax's model-based node with the log noisy EHVI it picks for two objectives
    assert info["generation_strategy"].startswith("Center+Sobol+MBM")
    assert info["trials_per_node"].get("MBM", 0) >= 10
    assert info["acquisition"] == "qLogNoisyExpectedHypervolumeImprovement"
    hv = nb201.hv_curve(order)
    assert hv[-1] > hv[9]  # its model's batch extends the front of the space-filling first batch
    _, again, _ = _run(nb201, node, seed=0, budget=20)
    assert [a.to_string() for a in again] == [a.to_string() for a in order]  # Client(random_seed=...) reproduces


def test_syne_morea_evolves_its_population_seeded(nb201: Table) -> None:
    pytest.importorskip("syne_tune")
    node = {"_target_": "nas.search.SyneTuneSearch", "method": "morea", "batch_size": 10, "population_size": 24}
    st, order, _ = _run(nb201, node, seed=1, budget=120)
    assert st.describe()["searcher"] == "MultiObjectiveRegularizedEvolution"
    genomes = np.stack([nb201.space.to_genome(a) for a in order])
    # past the random population every proposal is a parent (an earlier result) with one gene changed: the
    # results reach the searcher. Uniform draws would be one gene from an earlier arch ~4% of the time here.
    later = [min(int((g != genomes[:i]).sum(1).min()), 2) for i, g in enumerate(genomes) if i >= 40]
    assert np.mean(np.array(later) == 1) > 0.8, later
    hv = nb201.hv_curve(order)
    assert hv[-1] > hv[23]  # evolution extends the front of its random population
    _, again, _ = _run(nb201, node, seed=1, budget=120)
    assert [a.to_string() for a in again] == [a.to_string() for a in order]
    _, other, _ = _run(nb201, node, seed=2, budget=30)
    assert [a.to_string() for a in other] != [a.to_string() for a in order[:30]]


@pytest.mark.slow
def test_syne_ehvi_proposes_from_its_gp_and_spends_the_budget_on_new_archs(nb201: Table) -> None:
    pytest.importorskip("syne_tune")
    node = {"_target_": "nas.search.SyneTuneSearch", "method": "ehvi", "batch_size": 1}
    st, order, _ = _run(nb201, node, seed=0, budget=10)
    info = st.describe()
    assert info["scheduler"] == "EHVI" and info["searcher"] == "ExpectedHyperVolumeImprovement"
    # its proposals after the 3 random ones come from its GPs; those repeating an evaluated arch are answered
    # from the cache (and, past 3 in a row, replaced by uniform unseen draws), never evaluated
    assert st.scheduler.searcher.num_suggestions() == 10 + info["repeats_answered"]
    assert len(st.scheduler.searcher.trial_observations) == 10 + info["repeats_answered"]


def test_bad_peer_settings_are_one_line_errors(nb201: Table) -> None:
    pytest.importorskip("ax")
    pytest.importorskip("syne_tune")
    for node, text in (({"_target_": "nas.search.AxSearch", "batch_size": 0}, "batch_size=0 is invalid"),
                       ({"_target_": "nas.search.SyneTuneSearch", "batch_size": 0}, "batch_size=0 is invalid"),
                       ({"_target_": "nas.search.SyneTuneSearch", "method": "mobo"}, "method='mobo' is invalid"),
                       ({"_target_": "nas.search.SyneTuneSearch", "population_size": 1}, "population_size=1")):
        with pytest.raises(ValueError, match=text) as e:
            build_strategy(node, nb201.problem(0))
        assert "\n" not in str(e.value)
    st = build_strategy({"_target_": "nas.search.SyneTuneSearch"}, nb201.problem(0))
    archs = st.ask()
    with pytest.raises(ValueError, match="not pending"):
        st.tell(archs[:1] + [next(a for a in nb201.archs if a not in archs)], np.ones((2, 2)))


def test_hwnas_imports_without_the_peers_and_names_the_extra() -> None:
    """With ax and syne_tune unimportable, nas.search imports, and building either peer (as ``hwnas search=ax``
    does from conf/search/ax.yaml) is one line naming the extra."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ax', 'syne_tune'):
            raise ImportError(name)
sys.meta_path.insert(0, Block())
import nas.search
from nas.search import SearchProblem, build_strategy
from nas.search.problem import strategy_config
from search_spaces import create_search_space
p = SearchProblem(space=create_search_space('nb201'))
for name in ('ax', 'syne_tune'):
    try:
        build_strategy(strategy_config(name), p)
    except ValueError as e:
        print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "ax-platform is not installed; expected the peers extra: pip install -e '.[peers]'",
        "syne-tune is not installed; expected the peers extra: pip install -e '.[peers]'"]


def test_bench_search_nb201_settings_for_peers() -> None:
    from nas.bench.search_peers import peer_config, seeds_per_strategy

    names = ["ours", "optuna_gp", "ax", "syne_morea", "syne_ehvi"]
    assert seeds_per_strategy(names, 10, 3, {"ax": 4, "syne_ehvi": 1}) == {
        "ours": 10, "optuna_gp": 3, "ax": 4, "syne_morea": 10, "syne_ehvi": 1}
    assert seeds_per_strategy(names, 10, None, 2)["syne_ehvi"] == 2
    with pytest.raises(ValueError, match="bench.peer_seeds has syne_morea=2"):
        seeds_per_strategy(names, 10, None, {"syne_morea": 2})
    with pytest.raises(ValueError, match="bench.peer_seeds=0 is invalid"):
        seeds_per_strategy(names, 10, None, 0)
    assert peer_config("syne_morea", {"batch_size": 10, "pop_size": 24}) == {
        "_target_": "nas.search.SyneTuneSearch", "method": "morea", "batch_size": 10, "population_size": 24}
    with pytest.raises(ValueError, match="strategy 'ours' is not a peer"):
        peer_config("ours", {"batch_size": 10, "pop_size": 24})


class _SupernetObjective:
    """What bench=search_supernet's ``_one_run`` reads of its objective, on the OFA-MBv3 space of its smoke
    setting: the space, the latency column's model (MACs, a real cost model of the space) and ``F``; the error
    falls with size and MACs (the strategy contract's closed form), no trained supernet needed."""

    def __init__(self) -> None:
        from predictors import ExactCost
        from search_spaces import create_search_space

        self.space = create_search_space("ofa_mbv3", setting="small", n_classes=10, in_channels=1,
                                         resolutions=[16, 24])
        self.latency = ExactCost(self.space, "macs")

    def F(self, archs: list[Any]) -> np.ndarray:
        from nas.testing import error_of

        return np.c_[error_of(self.space, archs), self.latency.predict(archs)]


def test_bench_search_supernet_runs_the_peers_through_its_own_path(tmp_path: Path) -> None:
    pytest.importorskip("ax")
    pytest.importorskip("syne_tune")
    from nas.bench import search_supernet as bench

    c = bench._config({"strategies": ["ours", "ax", "syne_morea", "syne_ehvi"], "budget": 4, "batch_size": 4,
                       "pop_size": 6, "checkpoints": [2, 4], "cache_dir": str(tmp_path)})
    obj = _SupernetObjective()
    for name in ("ax", "syne_morea"):  # Ax: its center and Sobol trials at this budget (its model: the nb201 test)
        run = bench._one_run(name, 0, obj, c)
        assert len(run["archs"]) == len(set(run["archs"])) == 4, name
        assert run["strategy_class"].endswith(("AxSearch", "SyneTuneSearch")) and run["library"]["batch_size"] == 4
    with pytest.raises(ValueError, match="bench.strategies has 'syne_mobo'"):
        bench._config({"strategies": ["ours", "syne_mobo"], "cache_dir": str(tmp_path)})
