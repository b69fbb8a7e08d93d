"""Contract tests over the registries: every registered search space, every configured search strategy and
every predictor kind passes the same suite, shipped in search_spaces.testing, predictors.testing and
nas.testing for whoever adds one (timm's registry-parametrised model tests, Optuna's shipped sampler test
case), so adding one is adding a class and a config."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nas import testing as contract
from nas.search import build_strategy, run_budget
from nas.search.problem import strategy_config
from predictors.regressors import KINDS
from search_spaces import SearchSpace, WeightSharingSpace, available_search_spaces, create_search_space
from search_spaces import testing as space_contract

# the small setting of each registered space (CPU-sized supernets); a new space adds its line here
SMALL: dict[str, dict[str, Any]] = {
    "ofa_mbv3": {"setting": "small", "n_classes": 10, "in_channels": 1, "resolutions": [16, 24]},
    "fbnet": {"dataset": "cifar100", "n_classes": 10, "in_channels": 1, "input_size": 16},
    "nb201": {},
}
STRATEGIES = sorted(p.name[:-5] for p in resources.files("nas.conf").joinpath("search").iterdir()
                    if p.name.endswith(".yaml"))
PREDICT_FEASIBLE = {"closed_loop", "nsga2"}  # model-driven from the start: only predicted-feasible proposals


def test_every_registered_space_has_a_small_setting() -> None:
    assert set(available_search_spaces()) == set(SMALL)


@pytest.fixture(scope="module", params=sorted(SMALL))
def space(request: pytest.FixtureRequest) -> SearchSpace:
    return create_search_space(request.param, **SMALL[request.param])


def _archs(space: SearchSpace, n: int = 24, seed: int = 0) -> list[Any]:
    return space_contract.sample_archs(space, n, seed)


def test_space_strings_round_trip(space: SearchSpace) -> None:
    space_contract.check_strings_round_trip(space, _archs(space))


def test_space_genome_round_trips_within_bounds(space: SearchSpace) -> None:
    space_contract.check_genome(space, _archs(space))


def test_space_features_have_fixed_width_and_separate_archs(space: SearchSpace) -> None:
    space_contract.check_features(space, _archs(space))


def _weight_sharing(space: SearchSpace) -> WeightSharingSpace:
    if not isinstance(space, WeightSharingSpace):
        pytest.skip(f"{space.name} has no supernet")
    return space


def test_supernet_forward_equals_the_extracted_subnet(space: SearchSpace) -> None:
    space_contract.check_supernet_equals_extraction(_weight_sharing(space), _archs(space, 4, 1))


def test_params_are_closed_form_and_phases_sample_the_space(space: SearchSpace) -> None:
    ws = _weight_sharing(space)
    space_contract.check_closed_form_costs(ws, _archs(ws, 3, 3))
    space_contract.check_progressive_phases(ws)


def test_the_supernet_check_catches_an_extraction_that_drops_running_statistics() -> None:
    """The shipped check fails on a space whose extraction forgets one BatchNorm's running statistics."""
    import torch

    space = create_search_space("fbnet", **SMALL["fbnet"])
    extract = space.extract

    def forgetful(supernet: Any, arch: Any) -> Any:
        sub = extract(supernet, arch)
        next(m for m in sub.modules() if isinstance(m, torch.nn.BatchNorm2d)).reset_running_stats()
        return sub

    space.extract = forgetful  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="extracted subnet differs from the supernet"):
        space_contract.check_supernet_equals_extraction(space, _archs(space, 2, 1))


class TestShippedSpaceCaseOnNB201(space_contract.SearchSpaceContract):
    """A third party's use of the shipped test case, here on a registered space."""

    def make_space(self) -> SearchSpace:
        return create_search_space("nb201")


# ------------------------------------------------------------------------------------------- strategies
@pytest.fixture(scope="module")
def ofa() -> SearchSpace:
    return create_search_space("ofa_mbv3", **SMALL["ofa_mbv3"])


def _node(name: str) -> dict[str, Any]:
    node = strategy_config(name)
    if name == "nsga2":
        node["batch_size"] = 6  # conf: ${search.budget}
    if "pop_size" in node:
        node.update(pop_size=16, generations=4)  # CPU-sized inner search
    if name == "ax":
        node["batch_size"] = 6  # fewer of Ax's model fits per contract budget (each ~10 s on 2 cores)
    return node


def _maker(name: str) -> contract.MakeStrategy:
    if name in ("ax", "syne_tune"):  # library peers: the optional extra pip install -e '.[peers]'
        pytest.importorskip("ax" if name == "ax" else "syne_tune", reason="needs pip install -e '.[peers]'")
    return lambda problem: build_strategy(_node(name), problem)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_asks_tells_and_never_repeats_an_evaluation(ofa: WeightSharingSpace, name: str) -> None:
    contract.check_strategy_no_repeats(_maker(name), ofa)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_same_seed_same_proposals(ofa: WeightSharingSpace, name: str) -> None:
    contract.check_strategy_seeded(_maker(name), ofa)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_takes_constraints(ofa: WeightSharingSpace, name: str) -> None:
    contract.check_strategy_constraints(_maker(name), ofa, name in PREDICT_FEASIBLE)


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_killed_midway_resumes_from_the_journal_without_new_evaluations(ofa: WeightSharingSpace,
                                                                                  name: str) -> None:
    contract.check_strategy_resumes(_maker(name), ofa)


class TestShippedStrategyCaseOnRandomSearch(contract.StrategyContract):
    """A third party's use of the shipped strategy test case, here on the configured random search."""

    def make_strategy(self, problem: Any) -> Any:
        return build_strategy(_node("random"), problem)


def test_optuna_strategy_resumes_its_study_and_counts_it_in_the_budget(ofa: SearchSpace, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls: list[Any] = []
    run_budget(build_strategy(_node("optuna"), contract.contract_problem(ofa, 0, storage=storage)), contract.objective(ofa, calls), 8)
    again = build_strategy(_node("optuna"), contract.contract_problem(ofa, 0, storage=storage))
    assert again.resumed_evaluations == 8
    run_budget(again, contract.objective(ofa, calls), 12)
    assert len(calls) == 12 == len(set(calls))


def test_bad_strategy_config_is_one_line(ofa: SearchSpace) -> None:
    for node, text in (({"_target_": "nas.search.NoSuchSearch"}, "cannot be built"),
                       ({"_target_": "predictors.GPPredictor"}, "not a search strategy"),
                       ({**_node("closed_loop"), "batch_size": 0}, "batch_size=0"),
                       ({}, "has no _target_")):
        with pytest.raises(ValueError, match=text) as e:
            build_strategy(node, contract.contract_problem(ofa, 0))
        assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------- predictors
@pytest.mark.parametrize("kind", [*KINDS, "auto"])
def test_predictor_of_every_kind_passes_the_predictor_contract(kind: str, ofa: SearchSpace, tmp_path: Path) -> None:
    """A run's predictor of each regressor kind (ArchPredictor over EnsembleRegressor, as the predict stage
    builds it) fits, predicts with std, ranks MACs and reads back from its file with identical predictions."""
    from predictors import ArchPredictor, EnsembleRegressor, load_predictor

    model = EnsembleRegressor(kind=kind, n_members=4, log_target=True, calibrate_std=kind == "auto")
    predictor, held_out = contract.check_predictor(ArchPredictor(model, ofa), ofa)
    contract.check_save_and_load(predictor, load_predictor(predictor.save(tmp_path / f"{kind}.skops")), held_out)


class TestShippedPredictorCaseOnRidge(contract.PredictorContract):
    """A third party's use of the shipped predictor test case, here on a ridge ArchPredictor."""

    def make_predictor(self, space: SearchSpace) -> Any:
        from predictors import ArchPredictor, EnsembleRegressor

        return ArchPredictor(EnsembleRegressor(kind="ridge", n_members=3, log_target=True), space)

    def save_and_load(self, predictor: Any, path: Path) -> Any:
        from predictors import load_predictor

        return load_predictor(predictor.save(path / "ridge.skops"))


@pytest.mark.parametrize("make", ["gp", "bayes_linear", "exact"])
def test_search_models_pass_the_predictor_contract(make: str, ofa: SearchSpace) -> None:
    """The search's own models (the closed loop's GP, the Bayesian-linear latency model, exact costs) on the
    same face and checks as every predictor."""
    from predictors import BayesLinearPredictor, ExactCost, GPPredictor, SpaceFeatures

    feats = SpaceFeatures("surrogate", ofa)
    model = {"gp": lambda: GPPredictor(feats, kernel="exponential", scale="median", log_target=True),
             "bayes_linear": lambda: BayesLinearPredictor(feats),
             "exact": lambda: ExactCost(ofa, "macs")}[make]()
    mean, std = contract.check_predictor(model, ofa, learns=make != "exact")[0].predict(_archs(ofa, 5, 8), True)
    assert (std > 0).all() if make != "exact" else (std == 0).all()


def test_run_predictors_share_the_architecture_face(ofa: SearchSpace, tmp_path: Path) -> None:
    """Every predictor a run saves answers predict(archs, return_std) on architectures or their strings, and
    load_predictor reads any of them back with identical predictions."""
    from predictors import ArchPredictor, EnsembleRegressor, load_predictor

    archs = _archs(ofa, 40, 7)
    y = np.array([ofa.macs(a) / 1e6 for a in archs])
    p = ArchPredictor(EnsembleRegressor(kind="ridge", n_members=3, log_target=True), ofa).fit(archs[:30], y[:30])
    mean, std = p.predict(archs[30:], return_std=True)
    np.testing.assert_array_equal(p.predict([a.to_string() for a in archs[30:]]), mean)
    back = load_predictor(p.save(tmp_path / "latency.skops"))
    assert isinstance(back, ArchPredictor)
    np.testing.assert_array_equal(back.predict(archs[30:], return_std=True)[1], std)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="is not a saved predictor"):
        load_predictor(tmp_path / "junk.pkl")
