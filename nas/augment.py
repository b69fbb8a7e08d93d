"""The training augmentation of a supernet or subnet batch (random shift, left-right flip), drawn from the
step's numpy generator so that a resumed run draws what the uninterrupted one would."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nas.schema import TrainConfig


def random_shift(x: torch.Tensor, pad: int, rng: np.random.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero padding then crop), one offset per batch."""
    if pad <= 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad))
    i, j = (int(v) for v in rng.integers(0, 2 * pad + 1, 2))
    return xp[..., i : i + h, j : j + w]


def random_flip(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mask = torch.from_numpy(rng.random(len(x)) < 0.5)
    if not mask.any():
        return x
    out = x.clone()
    out[mask] = x[mask].flip(-1)
    return out


def augment(x: torch.Tensor, cfg: TrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """The training augmentation of ``cfg``: random shift by up to ``augment_shift`` pixels, then (with
    ``augment_flip``) random left-right mirroring; a no-op when both are off."""
    x = random_shift(x, cfg.augment_shift, rng)
    return random_flip(x, rng) if cfg.augment_flip else x
