"""Contract tests over the registries: every registered search space and every configured search strategy
passes the same suite, so adding one is adding a class and a config (timm's registry-parametrised model
tests, Optuna's shipped sampler test case)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas.search import SearchProblem, build_strategy, run_budget
from nas.search.problem import strategy_config
from nas.search.surrogates import FixedModel
from predictors.regressors import KINDS
from search_spaces import SearchSpace, WeightSharingSpace, available_search_spaces, create_search_space

# the small setting of each registered space (CPU-sized supernets); a new space adds its line here
SMALL: dict[str, dict[str, Any]] = {
    "ofa_mbv3": {"setting": "small", "n_classes": 10, "in_channels": 1, "resolutions": [16, 24]},
    "fbnet": {"dataset": "cifar100", "n_classes": 10, "in_channels": 1, "input_size": 16},
    "nb201": {},
}
STRATEGIES = sorted(p.name[:-5] for p in resources.files("nas.conf").joinpath("search").iterdir()
                    if p.name.endswith(".yaml"))


def test_every_registered_space_has_a_small_setting() -> None:
    assert set(available_search_spaces()) == set(SMALL)


@pytest.fixture(scope="module", params=sorted(SMALL))
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return create_search_space(request.param, **SMALL[request.param])


def _archs(space: SearchSpace, n: int = 24, seed: int = 0) -> list[Any]:
    return space.sample_many(n, np.random.default_rng(seed))


def test_space_strings_round_trip_and_variation_stays_inside(space: SearchSpace) -> None:
    rng = np.random.default_rng(1)
    archs = _archs(space)
    for a in archs:
        assert space.parse(a.to_string()) == a and hash(space.parse(a.to_string())) == hash(a)
    for a, b in zip(archs[::2], archs[1::2], strict=True):
        for child in (space.mutate(a, rng, prob=0.5), space.crossover(a, b, rng)):
            assert space.parse(child.to_string()) == child
    with pytest.raises(ValueError):
        space.parse("not an architecture")


def test_space_genome_round_trips_within_bounds(space: SearchSpace) -> None:
    lo, hi = space.genome_bounds()
    for a in _archs(space):
        g = space.to_genome(a)
        assert g.shape == lo.shape and np.all(g >= lo) and np.all(g <= hi)
        assert space.from_genome(g) == a
    rng = np.random.default_rng(2)
    for _ in range(20):  # any integer vector within the bounds decodes to an architecture of the space
        a = space.from_genome(rng.integers(lo, hi + 1))
        assert space.parse(a.to_string()) == a


def test_space_features_have_fixed_width_and_separate_archs(space: SearchSpace) -> None:
    archs = _archs(space)
    for X in (space.encode(archs), space.surrogate_features(archs)):
        X = np.asarray(X, dtype=np.float64)
        assert X.shape[0] == len(archs) and np.isfinite(X).all()
        assert len({row.tobytes() for row in X}) > len(archs) // 2  # distinct archs, mostly distinct rows
    assert space.cost_features(archs).shape[0] == len(archs)
    np.testing.assert_array_equal(space.surrogate_features(archs[:3]), space.surrogate_features(archs)[:3])


def test_weight_sharing_extraction_is_the_supernet_and_params_are_closed_form(space: SearchSpace) -> None:
    if not isinstance(space, WeightSharingSpace):
        pytest.skip(f"{space.name} has no supernet")
    import torch

    torch.manual_seed(0)
    supernet = space.build_supernet().eval()
    for a in [space.largest(), space.smallest(), *_archs(space, 3)]:
        sub = space.extract(supernet, a).eval()
        assert sum(p.numel() for p in sub.parameters()) == space.params(a)
        x = torch.randn(*space.input_shape(a, 2))
        with torch.no_grad():
            y1, y2 = sub(x), space.extract(supernet, a).eval()(x)
        assert y1.shape == (2, space.n_classes) and torch.equal(y1, y2)  # extraction leaves no state behind
        assert space.blocks(a) and space.macs(a) > 0
    assert space.params(space.largest()) > space.params(space.smallest())


# ------------------------------------------------------------------------------------------- strategies
def _problem(space: SearchSpace, seed: int, n_constraints: int = 0, storage: str | None = None) -> SearchProblem:
    """Two minimised objectives with closed-form costs of the space: an error that falls with size, and MACs."""
    def err(archs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return _error(space, archs), np.full(len(archs), 0.01)

    def macs(archs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return np.array([space.macs(a) / 1e6 for a in archs]), np.zeros(len(archs))

    bound = float(np.median([space.macs(a) / 1e6 for a in _archs(space, 50, 9)]))
    return SearchProblem(space=space, n_objectives=2, seed=seed, n_constraints=n_constraints,
                         models=[FixedModel(err), FixedModel(macs)],
                         constraint_model=(lambda archs, F: (F[:, 1:2] - bound) / bound) if n_constraints else None,
                         storage=storage, study_name="contract" if storage else None)


def _error(space: SearchSpace, archs: list[Any]) -> np.ndarray:
    p = np.array([space.params(a) for a in archs], dtype=np.float64)
    return 0.02 + 0.5 / (1.0 + p / 1e5)


def _objective(space: SearchSpace, calls: list[Any], bound: float | None = None):  # noqa: ANN202
    def f(archs: list[Any]) -> Any:
        calls.extend(archs)
        F = np.c_[_error(space, archs), [space.macs(a) / 1e6 for a in archs]]
        return F if bound is None else (F, (F[:, 1:2] - bound) / bound)

    return f


@pytest.fixture(scope="module")
def ofa() -> SearchSpace:
    return create_search_space("ofa_mbv3", **SMALL["ofa_mbv3"])


def _node(name: str) -> dict[str, Any]:
    node = strategy_config(name)
    if name == "nsga2":
        node["batch_size"] = 6  # conf: ${search.budget}
    if "pop_size" in node:
        node.update(pop_size=16, generations=4)  # CPU-sized inner search
    return node


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_asks_tells_and_never_repeats_an_evaluation(ofa: SearchSpace, name: str) -> None:
    calls: list[Any] = []
    st = build_strategy(_node(name), _problem(ofa, 0))
    warm = _archs(ofa, 12, 5)
    st.warm_start(warm, np.c_[_error(ofa, warm), [ofa.macs(a) / 1e6 for a in warm]])
    order, F = run_budget(st, _objective(ofa, calls), 12)
    assert len(order) == len(calls) == len(set(calls)) == 12
    assert not set(calls) & set(warm)  # handed-over evaluations are not evaluated again
    assert all(ofa.parse(a.to_string()) == a for a in order)
    np.testing.assert_allclose(F[:, 1], [ofa.macs(a) / 1e6 for a in order])


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_same_seed_same_proposals(ofa: SearchSpace, name: str) -> None:
    runs = []
    for _ in range(2):
        calls: list[Any] = []
        run_budget(build_strategy(_node(name), _problem(ofa, 3)), _objective(ofa, calls), 10)
        runs.append([a.to_string() for a in calls])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_takes_constraints(ofa: SearchSpace, name: str) -> None:
    problem = _problem(ofa, 0, n_constraints=1)
    bound = float(np.median([ofa.macs(a) / 1e6 for a in _archs(ofa, 50, 9)]))
    calls: list[Any] = []
    st = build_strategy(_node(name), problem)
    warm = _archs(ofa, 12, 5)
    F = np.c_[_error(ofa, warm), [ofa.macs(a) / 1e6 for a in warm]]
    st.warm_start(warm, F, (F[:, 1:2] - bound) / bound)
    run_budget(st, _objective(ofa, calls, bound), 12)
    assert len(calls) == 12 == len(set(calls))
    if name in ("closed_loop", "nsga2"):  # model-driven from the start: only predicted-feasible proposals
        assert all(ofa.macs(a) / 1e6 <= bound for a in calls)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_killed_midway_resumes_from_the_journal_without_new_evaluations(ofa: SearchSpace,
                                                                                  name: str) -> None:
    """The pipeline's resume: a rebuilt strategy, same seed, re-asks; a journal answers what the killed run
    evaluated. The resumed run must end where an uninterrupted one does, evaluating each arch once."""
    def journalled(journal: dict[str, np.ndarray], calls: list[Any], kill_after: int | None = None):  # noqa: ANN202
        inner = _objective(ofa, calls)

        def f(archs: list[Any]) -> Any:
            todo = [a for a in archs if a.to_string() not in journal]
            if kill_after is not None and len(calls) + len(todo) > kill_after:
                raise _Killed
            if todo:
                for a, row in zip(todo, inner(todo), strict=True):
                    journal[a.to_string()] = row
            return np.stack([journal[a.to_string()] for a in archs])

        return f

    warm = _archs(ofa, 12, 5)
    F0 = np.c_[_error(ofa, warm), [ofa.macs(a) / 1e6 for a in warm]]

    def fresh() -> Any:
        st = build_strategy(_node(name), _problem(ofa, 4))
        st.warm_start(warm, F0)
        return st

    whole: list[Any] = []
    ref, _ = run_budget(fresh(), journalled({}, whole), 12)
    journal: dict[str, np.ndarray] = {}
    calls: list[Any] = []
    with pytest.raises(_Killed):
        run_budget(fresh(), journalled(journal, calls, kill_after=7), 12)
    assert 0 < len(calls) <= 7
    order, _ = run_budget(fresh(), journalled(journal, calls), 12)
    assert [a.to_string() for a in order] == [a.to_string() for a in ref]
    assert len(calls) == len(set(calls)) == 12  # the killed run's evaluations were not made again


def test_optuna_strategy_resumes_its_study_and_counts_it_in_the_budget(ofa: SearchSpace, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls: list[Any] = []
    run_budget(build_strategy(_node("optuna"), _problem(ofa, 0, storage=storage)), _objective(ofa, calls), 8)
    again = build_strategy(_node("optuna"), _problem(ofa, 0, storage=storage))
    assert again.resumed_evaluations == 8
    run_budget(again, _objective(ofa, calls), 12)
    assert len(calls) == 12 == len(set(calls))


def test_bad_strategy_config_is_one_line(ofa: SearchSpace) -> None:
    for node, text in (({"_target_": "nas.search.NoSuchSearch"}, "cannot be built"),
                       ({"_target_": "nas.search.surrogates.GPSurrogate"}, "not a search strategy"),
                       ({**_node("closed_loop"), "batch_size": 0}, "batch_size=0"),
                       ({}, "has no _target_")):
        with pytest.raises(ValueError, match=text) as e:
            build_strategy(node, _problem(ofa, 0))
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- predictors
@pytest.mark.parametrize("kind", [*KINDS, "auto"])
def test_regressor_fits_predicts_with_std_and_saves_identically(kind: str, ofa: SearchSpace, tmp_path: Path) -> None:
    from predictors import EnsembleRegressor, featurize

    archs = _archs(ofa, 40, 4)
    X = featurize(ofa, archs, "onehot+cost")
    y = np.array([ofa.macs(a) / 1e6 for a in archs])
    model = EnsembleRegressor(kind=kind, n_members=4, log_target=True, calibrate_std=kind == "auto").fit(X[:30], y[:30])
    mean, std = model.predict(X[30:], return_std=True)
    assert mean.shape == std.shape == (10,) and (std >= 0).all() and np.isfinite(mean).all()
    from scipy.stats import spearmanr

    assert spearmanr(mean, y[30:]).statistic > 0.6  # MACs are learnable from one-hot + cost features
    back = EnsembleRegressor.load(model.save(tmp_path / f"{kind}.pkl"))
    np.testing.assert_array_equal(back.predict(X[30:]), model.predict(X[30:]))
    np.testing.assert_array_equal(back.predict(X[30:], return_std=True)[1], std)


@pytest.mark.parametrize("make", ["gp", "bayes_linear"])
def test_surrogates_fit_predict_with_std(make: str, ofa: SearchSpace) -> None:
    from nas.search.surrogates import BayesLinearSurrogate, GPSurrogate

    archs = _archs(ofa, 40, 6)
    X = ofa.surrogate_features(archs)
    y = np.array([ofa.macs(a) / 1e6 for a in archs])
    s = GPSurrogate(kernel="exponential", scale="median", log_target=True) if make == "gp" else BayesLinearSurrogate()
    s.fit(archs[:30], X[:30], y[:30])
    mean, std = s.predict(archs[30:], X[30:])
    assert mean.shape == std.shape == (10,) and (std > 0).all()
    from scipy.stats import spearmanr

    assert spearmanr(mean, y[30:]).statistic > 0.6


def test_run_predictors_share_the_architecture_face(ofa: SearchSpace, tmp_path: Path) -> None:
    """Every predictor a run saves answers predict(archs, return_std) on architectures or their strings, and
    load_predictor reads any of them back with identical predictions."""
    from predictors import ArchPredictor, EnsembleRegressor, load_predictor

    archs = _archs(ofa, 40, 7)
    y = np.array([ofa.macs(a) / 1e6 for a in archs])
    p = ArchPredictor(EnsembleRegressor(kind="ridge", n_members=3, log_target=True), ofa).fit(archs[:30], y[:30])
    mean, std = p.predict(archs[30:], return_std=True)
    np.testing.assert_array_equal(p.predict([a.to_string() for a in archs[30:]]), mean)
    back = load_predictor(p.save(tmp_path / "latency.pkl"))
    assert isinstance(back, ArchPredictor)
    np.testing.assert_array_equal(back.predict(archs[30:], return_std=True)[1], std)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="is not a saved predictor"):
        load_predictor(tmp_path / "junk.pkl")
