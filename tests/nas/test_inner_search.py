"""The inner search's batch paths: features gathered from tables equal the closed-form costs, genome matrices
decode to canonical archs, stacked ensembles predict what their members predict, and the vectorised NSGA-II
finds predicted fronts at least as good as pymoo's with the same number of predictions."""

from __future__ import annotations

import numpy as np
import pytest

from nas.pareto import hypervolume
from nas.search.nsga2 import PymooNSGA2, VectorisedNSGA2, survival_keys
from predictors.regressors import EnsembleRegressor
from search_spaces import create_search_space
from search_spaces.ofa_mbv3.arch import EXPAND_CHOICES, KERNEL_CHOICES, MAX_DEPTH, N_STAGES, OFAArchitecture
from search_spaces.ofa_mbv3.structure import block_specs

SPACES = {
    "ofa_small": dict(name="ofa_mbv3", setting="small", n_classes=10, in_channels=1),
    "ofa_imagenet": dict(name="ofa_mbv3", setting="imagenet"),
    "fbnet_cifar": dict(name="fbnet", dataset="cifar100", n_classes=100),
    "fbnet_28": dict(name="fbnet", dataset="cifar100", n_classes=10, in_channels=1, input_size=28),
    "fbnet_imagenet": dict(name="fbnet", dataset="imagenet"),
}


def _space(key: str):  # noqa: ANN202
    kw = dict(SPACES[key])
    return create_search_space(kw.pop("name"), **kw)


def _ofa_reference_onehot(a: OFAArchitecture, lo: int, hi: int) -> np.ndarray:
    x = np.zeros(136)
    for s in range(N_STAGES):
        for i in range(a.d[s]):
            li = s * MAX_DEPTH + i
            x[li * 6 + KERNEL_CHOICES.index(a.ks[li])] = 1
            x[li * 6 + 3 + EXPAND_CHOICES.index(a.e[li])] = 1
        x[120 + s * 3 + (a.d[s] - 2)] = 1
    x[-1] = (a.r - lo) / max(hi - lo, 1)
    return x


@pytest.mark.parametrize("key", sorted(SPACES))
def test_batch_costs_equal_closed_form(key: str) -> None:
    space = _space(key)
    archs = space.sample_many(300, np.random.default_rng(3)) + [space.largest(), space.smallest()]
    X = space.cost_features(archs)
    # total MACs and params columns against the per-arch closed form (the supernet's own count)
    col = {"ofa_mbv3": (5, 6), "fbnet": (-2, -1)}[space.name]
    np.testing.assert_array_equal(X[:, col[0]], [space.macs(a) / 1e6 for a in archs])
    np.testing.assert_array_equal(X[:, col[1]], [space.params(a) / 1e6 for a in archs])
    if space.name == "ofa_mbv3":
        per_stage = [[sum(b.macs() for b in block_specs(a, space.setting) if b.stage == s) / 1e6 for s in range(5)]
                     for a in archs]
        np.testing.assert_array_equal(X[:, :5], per_stage)
        lo, hi = min(space.resolutions), max(space.resolutions)
        np.testing.assert_array_equal(space.encode(archs), [_ofa_reference_onehot(a, lo, hi) for a in archs])
    else:
        from search_spaces.fbnet.arch import OPS

        ref = np.zeros((len(archs), 22 * 9))
        for r, a in enumerate(archs):
            for k, op in enumerate(a.ops):
                ref[r, k * 9 + OPS.index(op)] = 1
        np.testing.assert_array_equal(space.encode(archs), ref)


@pytest.mark.parametrize("key", ["ofa_small", "ofa_imagenet", "fbnet_cifar"])
def test_genome_matrix_decodes_to_canonical_archs(key: str) -> None:
    space = _space(key)
    lo, hi = space.genome_bounds()
    G = np.random.default_rng(0).integers(lo, hi + 1, size=(500, len(lo)))
    archs = space.from_genomes(G)
    for a, g in zip(archs, G, strict=True):
        b = space.parse(a.to_string())  # through the checked constructor
        assert a == b and hash(a) == hash(b)
        if space.name == "ofa_mbv3":
            assert a.to_string() == b.canonical().to_string()
        assert space.from_genome(space.to_genome(a)) == a
        assert space.from_genome(g) == a
    bad = hi.copy()
    bad[0] += 1
    with pytest.raises(ValueError, match="is invalid; expected"):
        space.from_genome(bad)


@pytest.mark.parametrize("kind", ["ridge", "extra_trees", "boost", "mlp"])
@pytest.mark.parametrize("log_target", [False, True])
def test_stacked_ensemble_equals_its_members(kind: str, log_target: bool) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((40, 30)), rng.random(40) + 0.5
    model = EnsembleRegressor(kind=kind, log_target=log_target, n_members=4).fit(X, y)
    Q = rng.random((257, 30))
    mean, std = model.predict(Q, return_std=True)
    P = np.stack([m.predict(Q) for m in model.members_])
    P = np.exp(P) if log_target else P
    np.testing.assert_allclose(mean, 0.5 * (P[0] + P.mean(0)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, P.std(0), rtol=1e-9, atol=1e-12)
    mode = {"ridge": "linear", "extra_trees": "forest", "boost": "boost", "mlp": "loop"}[kind]
    assert model._stacked.mode == mode


def _problem(space, seed: int):  # noqa: ANN001, ANN202
    """A predictor-like bi-objective problem: a random positive linear 'error' on the encoding vs MACs."""
    w = np.random.default_rng(100 + seed).random(space.encode([space.largest()]).shape[1])

    def score(archs):  # noqa: ANN001, ANN202
        enc, cost = space.encode(archs), space.cost_features(archs)
        return np.column_stack([1.0 / (1.0 + enc @ w), cost[:, 5] if space.name == "ofa_mbv3" else cost[:, -2]]), None

    return score


@pytest.mark.parametrize("key", ["ofa_small", "fbnet_cifar"])
def test_vectorised_nsga2_front_matches_pymoo(key: str) -> None:
    space = _space(key)
    ratios = []
    for seed in range(3):
        score = _problem(space, seed)
        archs, F, G = VectorisedNSGA2(space=space, pop_size=32, seed=seed).run(score, 25)
        assert len(archs) == len(set(archs)) == len(F) and G.shape == (len(F), 0)  # nothing scored twice
        ref = PymooNSGA2(space=space, n_objectives=2, pop_size=32, seed=seed)
        for _ in range(25):
            a = ref.ask()
            ref.tell(a, score(a)[0])
        Fp = np.stack(list(ref.history_.values()))
        both = np.vstack([F, Fp])
        lo, span = both.min(0), np.ptp(both, 0)
        ratios.append(hypervolume((F - lo) / span, [1.1, 1.1]) / hypervolume((Fp - lo) / span, [1.1, 1.1]))
    assert np.mean(ratios) >= 0.99, ratios


def test_vectorised_nsga2_keeps_feasible_candidates_first() -> None:
    space = _space("ofa_small")
    base = _problem(space, 0)
    bound = float(np.median(space.cost_features(space.sample_many(200, np.random.default_rng(1)))[:, 5]))

    def score(archs):  # noqa: ANN001, ANN202
        F, _ = base(archs)
        return F, (F[:, 1:2] - bound) / bound

    archs, F, G = VectorisedNSGA2(space=space, pop_size=32, seed=0).run(score, 20)
    assert (G <= 0).mean() > 0.5  # the population is driven into the feasible region
    rank, crowd = survival_keys(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.5, 0.5]]), np.array([0, 0, 1.0, 0]))
    assert rank.tolist() == [0, 0, 1, 0] and np.isinf(crowd[[0, 1]]).all()
