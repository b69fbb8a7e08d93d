"""Fixed-length features of OFA-MobileNetV3 architectures for predictors."""

from __future__ import annotations

from collections.abc import Sequence

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


def encode_onehot(archs: Sequence[OFAArchitecture], r_range: tuple[int, int] = (128, 224)) -> np.ndarray:
    """Per-layer one-hot kernel and expand (all zeros for inactive layers), one-hot depth, scaled resolution.

    Width: 20*(3+3) + 5*3 + 1 = 136 columns.
    """
    x = np.zeros((len(archs), ONEHOT_WIDTH), dtype=np.float64)
    lo, hi = r_range
    for row, a in enumerate(archs):
        for s in range(N_STAGES):
            for i in range(a.d[s]):
                li = s * MAX_DEPTH + i
                x[row, li * 6 + KERNEL_CHOICES.index(a.ks[li])] = 1.0
                x[row, li * 6 + 3 + EXPAND_CHOICES.index(a.e[li])] = 1.0
            x[row, N_LAYERS * 6 + s * 3 + DEPTH_CHOICES.index(a.d[s])] = 1.0
        x[row, -1] = (a.r - lo) / max(hi - lo, 1)
    return x
