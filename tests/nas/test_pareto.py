"""Tests for nas.pareto against brute-force references and pymoo's hypervolume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nas import pareto
from nas.pareto import hv_history, hv_ratio, hypervolume, nondominated_ranks, normalize, pareto_mask

# ----------------------------------------------------------------------------- brute-force references


def bf_dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(a <= b) and np.any(a < b))


def bf_mask(F: np.ndarray) -> np.ndarray:
    n = len(F)
    return np.array([not any(bf_dominates(F[j], F[i]) for j in range(n)) for i in range(n)], dtype=bool)


def bf_ranks(F: np.ndarray) -> np.ndarray:
    ranks = np.full(len(F), -1)
    remaining = np.arange(len(F))
    r = 0
    while len(remaining):
        nd = bf_mask(F[remaining])
        ranks[remaining[nd]] = r
        remaining = remaining[~nd]
        r += 1
    return ranks


def grid_hv(F: np.ndarray, ref: np.ndarray) -> int:
    """Exact HV for integer points and integer ref: count unit cells [c, c+1) inside some [p, ref)."""
    lo = int(min(F.min(), ref.min()))
    cells = np.array(list(itertools.product(*[range(lo, int(r)) for r in ref])), dtype=float)
    if len(cells) == 0 or len(F) == 0:
        return 0
    return int((cells[:, None, :] >= F[None, :, :]).all(axis=2).any(axis=1).sum())


def random_int_sets(m: int, count: int, seed: int, hi: int = 4, with_inf: bool = False):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 40))
        F = rng.integers(0, hi, size=(n, m)).astype(float)
        if with_inf:
            F[rng.random(F.shape) < 0.1] = np.inf
        yield F


# ----------------------------------------------------------------------------- pareto_mask


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_pareto_mask_matches_brute_force(m: int) -> None:
    for F in random_int_sets(m, 60, seed=m, with_inf=(m > 1)):
        np.testing.assert_array_equal(pareto_mask(F), bf_mask(F), err_msg=str(F.tolist()))


@pytest.mark.parametrize("m", [3, 4])
def test_pareto_mask_chunked_matches_brute_force(m: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pareto, "_BLOCK_ELEMS", 40)  # chunks of ~3 rows, front compared in tiny blocks
    for F in random_int_sets(m, 40, seed=10 + m, hi=6):
        np.testing.assert_array_equal(pareto_mask(F), bf_mask(F), err_msg=str(F.tolist()))


@pytest.mark.parametrize("m", [2, 3, 5])
def test_pareto_mask_large_matches_full_broadcast(m: int) -> None:
    rng = np.random.default_rng(7)
    F = np.round(rng.random((1200, m)) * 30)  # many ties
    le = (F[None, :, :] <= F[:, None, :]).all(axis=2)  # le[i, j]: F[j] <= F[i]
    lt = (F[None, :, :] < F[:, None, :]).any(axis=2)
    expected = ~(le & lt).any(axis=1)
    got = pareto_mask(F)
    assert got.sum() > 1
    np.testing.assert_array_equal(got, expected)


def test_pareto_mask_duplicates_and_explicit_cases() -> None:
    F = np.array([[1, 2], [1, 2], [2, 1], [2, 2], [0, 5], [0, 6], [1, 2]], dtype=float)
    np.testing.assert_array_equal(pareto_mask(F), [True, True, True, False, True, False, True])
    F3 = np.array([[1, 1, 1], [1, 1, 1], [0, 2, 2], [1, 1, 2], [2, 0, 5]], dtype=float)
    np.testing.assert_array_equal(pareto_mask(F3), [True, True, True, False, True])
    assert pareto_mask(np.empty((0, 3))).shape == (0,)


# ----------------------------------------------------------------------------- nondominated_ranks


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_ranks_match_repeated_peeling(m: int) -> None:
    for F in random_int_sets(m, 40, seed=100 + m, hi=5, with_inf=(m == 2)):
        np.testing.assert_array_equal(nondominated_ranks(F), bf_ranks(F), err_msg=str(F.tolist()))


def test_ranks_explicit_2d() -> None:
    F = np.array([[0, 3], [1, 1], [1, 1], [2, 2], [3, 3], [1, 2], [0, 4], [5, 0]], dtype=float)
    np.testing.assert_array_equal(nondominated_ranks(F), [0, 0, 0, 2, 3, 1, 1, 0])


def test_ranks_front_is_pareto_mask() -> None:
    F = np.random.default_rng(3).random((500, 3))
    np.testing.assert_array_equal(nondominated_ranks(F) == 0, pareto_mask(F))


# ----------------------------------------------------------------------------- hypervolume


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hypervolume_matches_grid_cell_count(m: int) -> None:
    rng = np.random.default_rng(200 + m)
    hi = {2: 7, 3: 6, 4: 5}[m]
    for F in random_int_sets(m, 40, seed=300 + m, hi=hi + 1):  # some points on/behind ref
        ref = rng.integers(hi - 2, hi + 1, size=m).astype(float)
        assert hypervolume(F, ref) == pytest.approx(grid_hv(F, ref), abs=1e-9), (F.tolist(), ref.tolist())


@pytest.mark.parametrize(("m", "n"), [(2, 80), (3, 60), (4, 40)])
def test_hypervolume_matches_pymoo(m: int, n: int) -> None:
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(400 + m)
    ref = np.full(m, 1.1)
    for _ in range(5):
        F = rng.random((n, m))
        if m > 2:  # bend towards a front so many points are non-dominated
            F = F / np.linalg.norm(F, axis=1, keepdims=True) * rng.uniform(0.9, 1.0, size=(n, 1))
        expected = float(HV(ref_point=ref)(F))
        assert expected > 0
        assert hypervolume(F, ref) == pytest.approx(expected, rel=1e-10)


def test_hypervolume_hand_values_and_edge_cases() -> None:
    assert hypervolume([[0.0, 1.0], [1.0, 0.0]], [1.1, 1.1]) == pytest.approx(0.21)
    assert hypervolume([[1.0, 1.0, 1.0]], [3.0, 2.0, 4.0]) == pytest.approx(2 * 1 * 3)
    assert hypervolume([[0.5]], [2.0]) == pytest.approx(1.5)
    assert hypervolume(np.empty((0, 2)), [1.0, 1.0]) == 0.0
    # on the boundary or behind the ref point contributes nothing; +inf is ignored
    assert hypervolume([[1.0, 0.0], [2.0, -1.0], [np.inf, 0.0]], [1.0, 1.0]) == 0.0
    assert hypervolume([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0]], [1.0, 2.0]) == pytest.approx(2.0)


# ----------------------------------------------------------------------------- normalize / hv_ratio


def test_normalize_maps_ideal_and_nadir() -> None:
    F = np.array([[1.0, 10.0, 5.0], [3.0, 30.0, 5.0]])
    got = normalize(F, ideal=[1.0, 10.0, 5.0], nadir=[3.0, 30.0, 5.0])
    np.testing.assert_allclose(got, [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    # a degenerate objective (nadir == ideal) is only shifted
    np.testing.assert_allclose(
        normalize([[2.0, 20.0, 7.0]], [1.0, 10.0, 5.0], [3.0, 30.0, 5.0]), [[0.5, 0.5, 2.0]]
    )


@pytest.mark.parametrize("m", [2, 3])
def test_hv_ratio_of_true_front_is_one(m: int) -> None:
    rng = np.random.default_rng(500 + m)
    T = rng.random((60, m)) * [1.0, 50.0, 0.01][:m] + [0.0, 7.0, -3.0][:m]
    T = T[pareto_mask(T)]
    assert len(T) > 3
    assert hv_ratio(T, T) == pytest.approx(1.0, abs=1e-12)
    worse = T + rng.random(T.shape) * T.std(axis=0)
    assert hv_ratio(np.vstack([T, worse]), T) == pytest.approx(1.0, abs=1e-12)
    assert hv_ratio(T[: len(T) // 2], T) < 1.0
    assert hv_ratio(worse, T) < 1.0


def test_hv_ratio_hand_value_and_scale_invariance() -> None:
    T = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert hv_ratio([[0.0, 1.0]], T) == pytest.approx(0.11 / 0.21)
    scale = np.array([1000.0, 0.001])
    assert hv_ratio(np.array([[0.0, 1.0]]) * scale + 5, T * scale + 5) == pytest.approx(0.11 / 0.21)
    assert hv_ratio(np.empty((0, 2)), T) == 0.0


# ----------------------------------------------------------------------------- hv_history


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hv_history_monotone_and_matches_prefix_hypervolumes(m: int) -> None:
    rng = np.random.default_rng(600 + m)
    F = rng.random((60, m))
    F[rng.integers(0, 60, 5)] = F[rng.integers(0, 60, 5)]  # duplicates
    F[17] = 2.0  # outside the reference point
    F[3] = -0.5  # best in every objective but the last, which is outside the reference point
    F[3, -1] = 2.0
    ref = np.full(m, 1.05)
    hist = hv_history(F, ref)
    assert hist.shape == (60,)
    assert np.all(np.diff(hist) >= 0)
    assert hist[-1] == pytest.approx(hypervolume(F, ref), rel=1e-12)
    expected = [hypervolume(F[: i + 1], ref) for i in range(len(F))]
    np.testing.assert_allclose(hist, expected, rtol=1e-12, atol=1e-15)
    assert hist[-1] > hist[0]


def test_hv_history_long_2d_run() -> None:
    F = np.random.default_rng(9).random((2000, 2))
    hist = hv_history(F, [1.0, 1.0])
    assert np.all(np.diff(hist) >= 0)
    assert hist[-1] == pytest.approx(hypervolume(F, [1.0, 1.0]), rel=1e-12)
    assert hist[999] == pytest.approx(hypervolume(F[:1000], [1.0, 1.0]), rel=1e-12)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pareto_mask(np.zeros(3)), r"F must be a 2-D array .* got 1-D shape \(3,\)"),
        (lambda: pareto_mask(np.zeros((2, 2, 2))), r"got 3-D shape \(2, 2, 2\)"),
        (lambda: pareto_mask([[1.0, np.nan], [0.0, 0.0]]), r"F contains NaN at row 0, column 1"),
        (lambda: nondominated_ranks([["a", "b"]]), r"F must be numeric"),
        (
            lambda: hypervolume([[0.0, 0.0]], [1.0, 1.0, 1.0]),
            r"ref=\[1.0, 1.0, 1.0\] has shape \(3,\); expected shape \(2,\)",
        ),
        (lambda: hypervolume([[0.0, 0.0]], [1.0, np.nan]), r"ref=\[1.0, nan\] contains NaN"),
        (lambda: hypervolume([[-np.inf, 0.0]], [1.0, 1.0]), r"F contains -inf"),
        (lambda: hv_history([[0.0, 0.0]], [1.0]), r"expected shape \(2,\)"),
        (lambda: normalize([[0.0, 0.0]], [1.0, 1.0], [0.0, 2.0]), r"nadir=\[0.0, 2.0\] is below ideal"),
        (lambda: hv_ratio([[0.0, 0.0]], [[0.0, 0.0, 0.0]]), r"F has 2 objectives but true_front has 3"),
        (lambda: hv_ratio([[0.0, 0.0]], np.empty((0, 2))), r"true_front is empty"),
        (lambda: hv_ratio([[0.0, 0.0]], [[0.0, 1.0]], ref=[1.1, 1.1, 1.1]), r"ref=.* expected shape \(2,\)"),
    ],
)
def test_bad_input_raises_value_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
