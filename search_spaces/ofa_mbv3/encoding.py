"""Fixed-length features of OFA-MobileNetV3 architectures for predictors, computed for a whole batch at once.

Every feature is a gather from small tables indexed by the archs' choice indices (:func:`choice_indices`), so a
batch of 20,000 candidates costs one pass over the archs to read their choices and a few numpy operations;
the inner search of ``hwnas`` scores tens of thousands of candidates per round through these.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from search_spaces.ofa_mbv3.arch import (
    DEPTH_CHOICES,
    EXPAND_CHOICES,
    KERNEL_CHOICES,
    MAX_DEPTH,
    N_LAYERS,
    N_STAGES,
    OFAArchitecture,
)

ONEHOT_WIDTH = N_LAYERS * (len(KERNEL_CHOICES) + len(EXPAND_CHOICES)) + N_STAGES * len(DEPTH_CHOICES) + 1


def _index_of(choices: tuple[int, ...]) -> np.ndarray:
    table = np.full(max(choices) + 1, -1, dtype=np.int64)
    table[list(choices)] = np.arange(len(choices))
    return table


_K, _E, _D = _index_of(KERNEL_CHOICES), _index_of(EXPAND_CHOICES), _index_of(DEPTH_CHOICES)


def active_mask(depths: np.ndarray) -> np.ndarray:
    """``(n, 20)`` bool: layer ``s*4+i`` is active where ``i < depths[:, s]`` (depths ``(n, 5)``, the values)."""
    depths = np.asarray(depths)
    return (np.arange(MAX_DEPTH)[None, None, :] < depths[:, :, None]).reshape(len(depths), N_LAYERS)


def choice_indices(archs: Sequence[OFAArchitecture]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kernel index (n, 20), expand index (n, 20), depth index (n, 5), resolution (n,), active (n, 20) bool)."""
    n = len(archs)
    if not n:
        z = np.zeros((0, N_LAYERS), dtype=np.int64)
        return z, z, np.zeros((0, N_STAGES), dtype=np.int64), np.zeros(0, dtype=np.int64), z.astype(bool)
    v = np.array([a.ks + a.e + a.d + (a.r,) for a in archs], dtype=np.int64)
    k, e, d, r = _K[v[:, :N_LAYERS]], _E[v[:, N_LAYERS:2 * N_LAYERS]], v[:, 2 * N_LAYERS:2 * N_LAYERS + N_STAGES], v[:, -1]
    return k, e, _D[d], r, active_mask(d)


def encode_onehot(archs: Sequence[OFAArchitecture], r_range: tuple[int, int] = (128, 224)) -> np.ndarray:
    """Per-layer one-hot kernel and expand (all zeros for inactive layers), one-hot depth, scaled resolution.

    Width: 20*(3+3) + 5*3 + 1 = 136 columns.
    """
    k, e, d, r, active = choice_indices(archs)
    n = len(archs)
    x = np.zeros((n, ONEHOT_WIDTH), dtype=np.float64)
    rows = np.arange(n)[:, None]
    base = np.arange(N_LAYERS)[None, :] * 6
    x[rows, base + k] = active
    x[rows, base + 3 + e] = active
    x[rows, N_LAYERS * 6 + np.arange(N_STAGES)[None, :] * 3 + d] = 1.0
    lo, hi = r_range
    x[:, -1] = (r - lo) / max(hi - lo, 1)
    return x


@lru_cache(maxsize=32)
def cost_tables(setting: str, resolutions: tuple[int, ...], n_classes: int, in_channels: int,
                width_mult: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form costs of every (resolution, layer, kernel, expand) block, from the same ``block_specs`` the
    supernet and the LUT keys use: (block MACs (R, 20, 3, 3), block params (20, 3, 3), fixed MACs (R,) of the
    stem, first block and head, fixed params). Integer arrays: sums are exact."""
    from search_spaces.ofa_mbv3.structure import block_specs, count_macs, count_params

    R = len(resolutions)
    macs = np.zeros((R, N_LAYERS, len(KERNEL_CHOICES), len(EXPAND_CHOICES)), dtype=np.int64)
    params = np.zeros((N_LAYERS, len(KERNEL_CHOICES), len(EXPAND_CHOICES)), dtype=np.int64)
    fixed_macs = np.zeros(R, dtype=np.int64)
    fixed_params = 0
    for ri, r in enumerate(resolutions):
        for ki, kk in enumerate(KERNEL_CHOICES):
            for ei, ee in enumerate(EXPAND_CHOICES):
                arch = OFAArchitecture((kk,) * N_LAYERS, (ee,) * N_LAYERS, (max(DEPTH_CHOICES),) * N_STAGES, r)
                specs = block_specs(arch, setting, width_mult=width_mult)
                for b in specs[1:]:
                    li = b.stage * MAX_DEPTH + b.index
                    macs[ri, li, ki, ei] = b.macs()
                    params[li, ki, ei] = b.params()
                if ki == 0 and ei == 0:
                    fixed_macs[ri] = (count_macs(arch, n_classes, in_channels, setting, specs, width_mult)
                                      - sum(b.macs() for b in specs[1:]))
                    fixed_params = (count_params(arch, n_classes, in_channels, setting, specs, width_mult)
                                    - sum(b.params() for b in specs[1:]))
    for a in (macs, params, fixed_macs):
        a.setflags(write=False)
    return macs, params, fixed_macs, np.int64(fixed_params)


def encode_costs(archs: Sequence[OFAArchitecture], setting: str, resolutions: tuple[int, ...], n_classes: int,
                 in_channels: int, width_mult: float = 1.0) -> np.ndarray:
    """Per-stage MACs (M) of the elastic stages, total MACs (M), params (M) and resolution / 100: ``(n, 8)``."""
    k, e, _, r, active = choice_indices(archs)
    n = len(archs)
    res = np.asarray(resolutions)
    ri = np.searchsorted(res, r)
    if n and (ri.max() >= len(res) or not np.array_equal(res[np.minimum(ri, len(res) - 1)], r)):
        bad = int(r[(ri >= len(res)) | (res[np.minimum(ri, len(res) - 1)] != r)][0])
        raise ValueError(f"resolution r={bad} is outside this space's resolutions {list(resolutions)}")
    T_macs, T_params, fixed_macs, fixed_params = cost_tables(setting, tuple(resolutions), n_classes, in_channels,
                                                             float(width_mult))
    layers = np.arange(N_LAYERS)[None, :]
    block_macs = np.where(active, T_macs[ri[:, None], layers, k, e], 0)
    block_params = np.where(active, T_params[layers, k, e], 0)
    per_stage = block_macs.reshape(n, N_STAGES, MAX_DEPTH).sum(2)
    total_macs = fixed_macs[ri] + per_stage.sum(1)
    total_params = fixed_params + block_params.sum(1)
    return np.column_stack([per_stage / 1e6, total_macs / 1e6, total_params / 1e6, r / 100.0]).astype(np.float64)
