"""Figures written into run directories (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from latency_luts.files import atomic_path


def _save(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Lay out, write atomically (a reader never sees half a PNG), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:  # savefig picks the format from the suffix
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path


def plot_pareto(cand: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Left: measured accuracy vs latency of every candidate, by where it came from (the measure stage's random
    sample, each search round), with the measured front; right: predicted vs measured latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.5))
    front = cand[cand.pareto].sort_values("latency_ms")
    sample = cand[cand.source == "measure"]
    ax.scatter(sample.latency_ms, 100 * sample.val_accuracy, marker="o", color="0.6", alpha=0.6,
               label=f"random sample, measure stage ({len(sample)})")
    picks = cand[cand.source == "search"]
    rounds = sorted(picks.search_round.unique())
    cmap = plt.get_cmap("viridis")
    for k, r in enumerate(rounds):  # what each search round added, early rounds dark, late ones bright
        sub = picks[picks.search_round == r]
        ax.scatter(sub.latency_ms, 100 * sub.val_accuracy, marker="^", alpha=0.85,
                   color=cmap(0.15 + 0.75 * k / max(1, len(rounds) - 1)),
                   label=f"search round {r} ({len(sub)})" if len(rounds) <= 8 or k in (0, len(rounds) - 1) else None)
    ax.step(front.latency_ms, 100 * front.val_accuracy, where="post", color="k", lw=1.2, label="measured Pareto front")
    ax.scatter(front.predicted_latency_ms, 100 * front.predicted_accuracy, facecolors="none", edgecolors="r",
               label="front as predicted")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title or "accuracy vs latency")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lo = float(min(cand.latency_ms.min(), cand.predicted_latency_ms.min()))
    hi = float(max(cand.latency_ms.max(), cand.predicted_latency_ms.max()))
    bx.scatter(cand.latency_ms, cand.predicted_latency_ms, s=14, alpha=0.7)
    bx.plot([lo, hi], [lo, hi], "k--", lw=1)
    bx.set_xlabel("measured latency (ms)")
    bx.set_ylabel("predicted latency (ms)")
    bx.set_title("latency predictor vs measurement")
    bx.grid(alpha=0.3)
    return _save(fig, path)


def plot_hv_history(hv: list[float] | Any, n_initial: int, path: Path, title: str = "") -> Path:
    """Hypervolume of the measured front after each real evaluation (measure-stage sample first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(1, len(hv) + 1)
    ax.plot(x, hv, lw=1.5)
    if 0 < n_initial < len(hv):
        ax.axvline(n_initial + 0.5, color="grey", ls="--", lw=1, label="search starts")
        ax.legend(fontsize=8)
    ax.set_xlabel("real evaluations")
    ax.set_ylabel("hypervolume (normalised)")
    ax.set_title(title or "hypervolume history")
    ax.grid(alpha=0.3)
    return _save(fig, path)
