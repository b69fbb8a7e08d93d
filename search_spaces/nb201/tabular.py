"""Tabular evaluation of NB201 cells from a NATS-Bench-style CSV (one row per architecture).

Expected columns: ``ArchitectureString`` plus accuracy columns such as ``CIFAR10TestAccuracy200Epochs``;
``UniqueString`` (isomorphism class) is optional. Row order is the dataset index.

Example::

    tab = NB201Tabular("nats_bench_tss_test_acc_200ep.csv")
    tab.accuracy(["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from search_spaces.nb201.arch import NB201Architecture

DATASETS = {
    "cifar10": "CIFAR10TestAccuracy200Epochs",
    "cifar100": "CIFAR100TestAccuracy200Epochs",
    "imagenet16-120": "ImageNetTestAccuracy200Epochs",
}


class NB201Tabular:
    """Accuracy (%) per NB201 arch string read from a NATS-style CSV; unknown archs raise one-line errors."""

    def __init__(self, path: str | os.PathLike, dataset: str = "cifar10") -> None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"NB201 accuracy table {path!r} does not exist; expected a NATS-style CSV")
        col = DATASETS.get(dataset, dataset)  # a known dataset name or a raw column name
        df = pd.read_csv(path)
        for need in ("ArchitectureString", col):
            if need not in df.columns:
                raise ValueError(f"NB201 table {path!r} lacks column {need!r}; found {list(df.columns)}")
        acc = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(acc).all():
            row = int(np.flatnonzero(~np.isfinite(acc))[0])
            raise ValueError(f"NB201 table {path!r} row {row}: {col}={df[col].iloc[row]!r}; expected a number")
        self.path = path
        self.dataset = dataset
        self.archs: list[str] = [NB201Architecture.from_string(s).to_string() for s in df["ArchitectureString"]]
        self.index: dict[str, int] = {s: i for i, s in enumerate(self.archs)}
        if len(self.index) != len(self.archs):
            raise ValueError(f"NB201 table {path!r} lists an architecture twice; expected one row per arch")
        self.acc = acc
        self.unique = df["UniqueString"].astype(str).tolist() if "UniqueString" in df.columns else None

    def __len__(self) -> int:
        return len(self.archs)

    def indices(self, archs: Sequence[NB201Architecture | str]) -> np.ndarray:
        """Dataset indices of ``archs`` (objects or canonical strings)."""
        out = np.empty(len(archs), dtype=int)
        for k, a in enumerate(archs):
            s = a if isinstance(a, str) else a.to_string()
            i = self.index.get(s)
            if i is None:
                raise ValueError(f"arch {s!r} is not in the NB201 table {self.path!r}")
            out[k] = i
        return out

    def accuracy(self, archs: Sequence[NB201Architecture | str]) -> np.ndarray:
        """Test accuracy (%) of each arch."""
        return self.acc[self.indices(archs)]

    def error(self, archs: Sequence[NB201Architecture | str]) -> np.ndarray:
        """Test error (%) = 100 - accuracy: the minimised form."""
        return 100.0 - self.accuracy(archs)

    def best(self) -> tuple[int, str, float]:
        """(index, arch string, accuracy) of the most accurate arch."""
        i = int(np.argmax(self.acc))
        return i, self.archs[i], float(self.acc[i])

    def unique_string(self, arch: NB201Architecture | str) -> str:
        """Isomorphism class of ``arch`` (NATS ``UniqueString``); needs that column."""
        if self.unique is None:
            raise ValueError(f"NB201 table {self.path!r} has no UniqueString column")
        return self.unique[int(self.indices([arch])[0])]
