"""Loader for the latency interchange format (one row per architecture x device measurement).

The format is a long CSV table (optionally gzip-compressed, detected from the ``.gz`` suffix) with the columns

=========== ===============================================================================
space       search space name: ``nb201``, ``fbnet`` or ``ofa_mbv3``
arch        canonical architecture string of that space
device      device name (HELP's names end in the batch size, e.g. ``titan_rtx_256``)
latency_ms  measured latency in milliseconds (finite, > 0)
=========== ===============================================================================

Example::

    df = load_latency_table(["nb201_help.csv.gz"], space="nb201", devices=["pixel3", "raspi4"])
    mat = latency_matrix(df)          # archs x devices, archs in order of first appearance

The *dataset index* of an architecture is its order of first appearance in the loaded files; the benchmark
protocols (docs/benchmarks/) refer to it, so :func:`latency_matrix` keeps that order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

COLUMNS = ("space", "arch", "device", "latency_ms")
KNOWN_SPACES = ("nb201", "fbnet", "ofa_mbv3")


def _as_list(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    out = [os.fspath(p) for p in paths]
    if not out:
        raise ValueError("no latency files given; expected at least one CSV path")
    return out


def _read_one(path: str) -> pd.DataFrame:
    if not os.path.exists(path):
        raise ValueError(f"latency file {path!r} does not exist")
    expected = f"expected an interchange CSV (.csv or .csv.gz) with columns {list(COLUMNS)}"
    try:
        df = pd.read_csv(path, dtype={"space": str, "arch": str, "device": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"latency file {path!r} is not readable as CSV ({reason}); {expected}") from None
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"latency file {path!r} lacks column {missing[0]!r}; expected columns {list(COLUMNS)}")
    df = df[list(COLUMNS)]
    if df.empty:
        raise ValueError(f"latency file {path!r} has no rows; expected one row per measured architecture")
    for col in ("space", "arch", "device"):
        if df[col].isna().any():
            row = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise ValueError(f"latency file {path!r} row {row}: empty {col!r}; expected a non-empty string")
    lat = pd.to_numeric(df["latency_ms"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(lat) | (lat <= 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raw = df["latency_ms"].iloc[row]
        raw = raw.item() if hasattr(raw, "item") else raw
        raise ValueError(
            f"latency file {path!r} row {row}: latency_ms={raw!r} "
            f"(arch {df['arch'].iloc[row]!r}, device {df['device'].iloc[row]!r}); expected a finite number > 0"
        )
    df = df.assign(latency_ms=lat)
    unknown = sorted(set(df["space"]) - set(KNOWN_SPACES))
    if unknown:
        raise ValueError(f"latency file {path!r} has unknown space {unknown[0]!r}; expected one of {list(KNOWN_SPACES)}")
    return df


def load_latency_table(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    space: str | None = None,
    devices: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read and validate interchange CSV file(s) into one long DataFrame.

    Args:
        paths: one path or a list of paths (``.csv`` or ``.csv.gz``); rows are concatenated in order.
        space: keep only rows of this space (must be a known space and present in the files).
        devices: keep only these devices (each must be present in the files).

    Returns:
        DataFrame with columns ``space, arch, device, latency_ms`` (latency as float), original row order.

    Raises:
        ValueError: one line naming the bad value: missing file or column, empty string, NaN/non-positive
            latency, unknown space, a requested space/device absent from the data, or a duplicated
            (space, arch, device) measurement.
    """
    if space is not None and space not in KNOWN_SPACES:
        raise ValueError(f"unknown space filter {space!r}; expected one of {list(KNOWN_SPACES)}")
    return select_rows(pd.concat([_read_one(p) for p in _as_list(paths)], ignore_index=True), space, devices)


def select_rows(df: pd.DataFrame, space: str | None = None, devices: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of already-loaded tables (e.g. several :func:`load_latency_table` results concatenated) for
    ``space`` and ``devices``, each required to be present, with no (space, arch, device) pair measured twice."""
    if space is not None:
        if not (df["space"] == space).any():
            raise ValueError(f"space {space!r} has no rows in the latency files; found {sorted(set(df['space']))}")
        df = df[df["space"] == space]
    if devices is not None:
        devices = [str(d) for d in devices]
        have = set(df["device"])
        for d in devices:
            if d not in have:
                raise ValueError(f"device {d!r} has no rows in the latency files; found {sorted(have)}")
        df = df[df["device"].isin(devices)]
    dup = df.duplicated(["space", "arch", "device"])
    if dup.any():
        r = df[dup].iloc[0]
        raise ValueError(f"duplicate measurement for arch {r['arch']!r} on device {r['device']!r}; expected one per pair")
    return df.reset_index(drop=True)


def latency_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """Pivot a long table into an archs x devices matrix (ms).

    Rows keep the order of first appearance of each architecture (its dataset index), columns the order of
    first appearance of each device. Pairs that were not measured are NaN. A table mixing spaces is rejected.
    """
    missing = [c for c in ("arch", "device", "latency_ms") if c not in df.columns]
    if missing:
        raise ValueError(f"latency table lacks column {missing[0]!r}; expected {list(COLUMNS)}")
    if "space" in df.columns and df["space"].nunique() > 1:
        raise ValueError(f"latency table mixes spaces {sorted(set(df['space']))}; filter with space=...")
    arch_order = pd.unique(df["arch"])
    dev_order = pd.unique(df["device"])
    mat = df.pivot(index="arch", columns="device", values="latency_ms")
    mat = mat.reindex(index=arch_order, columns=dev_order)
    mat.index.name, mat.columns.name = "arch", "device"
    return mat
