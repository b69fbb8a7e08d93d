"""Datasets as in-memory tensors with a fixed train/val/test split.

``digits`` ships inside scikit-learn (1,797 real 8x8 images), so the default run downloads nothing.
``cifar10`` reads the python batches (``data_batch_1..5``, ``test_batch``) from a user path.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Normalised float tensors (N, C, H, W) and int64 labels for train / val / test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def _split(n: int, val_frac: float, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac={val_frac}, test_frac={test_frac} are invalid; expected fractions summing < 1")
    perm = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(round(n * test_frac)), int(round(n * val_frac))
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def _standardise(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    mean = ref.mean(dim=(0, 2, 3), keepdim=True)
    std = ref.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std


def load_digits(image_size: int = 32, val_frac: float = 0.15, test_frac: float = 0.2, seed: int = 0) -> DataSplits:
    """scikit-learn's digits (1,797 grey 8x8 images, 10 classes), bilinearly upsampled to ``image_size``."""
    from sklearn.datasets import load_digits as _sk_digits

    if image_size < 8:
        raise ValueError(f"image_size={image_size} is invalid for digits; expected >= 8")
    d = _sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.int64)
    tr, va, te = _split(len(y), val_frac, test_frac, seed)
    ref = x[tr]
    xs = [_standardise(x[i], ref) for i in (tr, va, te)]
    return DataSplits("digits", xs[0], y[tr], xs[1], y[va], xs[2], y[te], 10)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d[b"labels"], dtype=np.int64)
    return x, y


def load_cifar10(root: str, val_frac: float = 0.1, seed: int = 0, limit: int | None = None) -> DataSplits:
    """CIFAR-10 python batches from ``root`` (the folder holding ``data_batch_1`` … ``test_batch``)."""
    if not root:
        raise ValueError("data.root is empty; expected the folder holding CIFAR-10's data_batch_1..5 and test_batch")
    base = Path(root).expanduser()
    if (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (base / n).is_file()]
    if missing:
        raise ValueError(f"data.root={root!r} lacks {missing}; expected CIFAR-10 python batches there")
    parts = [_read_cifar_batch(base / n) for n in names[:5]]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(base / "test_batch")
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[: limit // 5], yte[: limit // 5]
    perm = np.random.default_rng(seed).permutation(len(ytr))
    n_val = int(round(len(ytr) * val_frac))
    va, tr = perm[:n_val], perm[n_val:]
    to_t = lambda a: torch.tensor(a, dtype=torch.float32) / 255.0  # noqa: E731
    x_all, x_test = to_t(xtr), to_t(xte)
    ref = x_all[tr]
    return DataSplits(
        "cifar10", _standardise(x_all[tr], ref), torch.tensor(ytr[tr]), _standardise(x_all[va], ref),
        torch.tensor(ytr[va]), _standardise(x_test, ref), torch.tensor(yte), 10,
    )


def resize(x: torch.Tensor, r: int) -> torch.Tensor:
    """Bilinear resize of a batch to r x r (no-op when it already is)."""
    if x.shape[-1] == r and x.shape[-2] == r:
        return x
    return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)
