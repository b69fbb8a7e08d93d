"""``report.html``: one run directory as an interactive page (plotly), readable offline.

Built only from the files of the run directory (``candidates.csv``, ``pareto.csv``, ``summary.json``,
``timing_onnx/``, ``onnx/``), so ``hwnas report RUN_DIR`` rebuilds it at any time. plotly's JavaScript is
inlined and MathJax left out: the page needs no network. It shows
- accuracy vs measured latency of every candidate, by where it came from (the measure stage's random sample,
  each search round), the measured Pareto front as a step line and the front as the predictors saw it; hovering
  a point names its arch, accuracies, measured and predicted latency, params, MACs, source and files;
- predicted vs measured latency (the latency predictor's error bars when it gave a std), with y = x;
- the hypervolume of the measured front after each real evaluation, with where the search starts;
- the seconds each stage took, and a header with the run's space, data, device and headline figures.
Optional columns (test accuracy, predicted std, predicted accuracy) and files (pareto.csv, summary.json) may be
missing: what they would show is left out or reads "n/a".
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from latency_luts.files import write_text_atomic
from nas.rundir import file_stem

REPORT = "report.html"
REQUIRED = ("arch", "latency_ms", "val_accuracy")
NOT_DELIVERED = "(not delivered)"
FIGURE_IDS = ("candidates", "latency-predictor", "hypervolume", "stage-timings")


@dataclass
class RunFiles:
    """What the report reads from one run directory."""

    run_dir: Path
    cand: pd.DataFrame
    pareto: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    hover: list[str] = field(default_factory=list)  # one hover text per candidate row


def load_run(run_dir: str | Path) -> RunFiles:
    """Read the run's candidates (required), front and summary; one-line errors for a bad directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist; expected a hwnas run directory")
    path = run_dir / "candidates.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} has no candidates.csv; expected a run directory whose search "
                                "stage has finished")
    cand = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in cand.columns]
    if missing:
        raise ValueError(f"{path} lacks column {missing[0]!r}; expected the columns {list(REQUIRED)} at least")
    cand = cand.reset_index(drop=True)
    pareto_path = run_dir / "pareto.csv"
    if pareto_path.is_file():
        pareto = pd.read_csv(pareto_path)
    else:  # the front as candidates.csv marks it, nothing delivered
        pareto = cand[_column(cand, "pareto", False).astype(bool)].sort_values("latency_ms")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    run = RunFiles(run_dir, cand, pareto.reset_index(drop=True), summary)
    run.hover = hover_texts(run)
    return run


def _column(df: pd.DataFrame, name: str, default: Any = math.nan) -> pd.Series:
    """``df[name]``, or a column of ``default`` where the file has no such column."""
    return df[name] if name in df.columns else pd.Series([default] * len(df), index=df.index)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _fmt(v: Any, spec: str, scale: float = 1.0, unit: str = "") -> str:
    """A number for the page, "n/a" when it is missing or not a number."""
    try:
        return "n/a" if _missing(v) else f"{float(v) * scale:{spec}}{unit}"
    except (TypeError, ValueError):
        return "n/a"


def summary_value(summary: dict[str, Any], key: str) -> Any:
    """A figure of summary.json: at its top, else in a stage's record (the search stage's hypervolume history)."""
    if key in summary:
        return summary[key]
    for rec in (summary.get("stages") or {}).values():
        if isinstance(rec, dict) and key in rec:
            return rec[key]
    return None


def _files_by_stem(folder: Path) -> dict[str, str]:
    """``timing_onnx/``'s timed files by name stem (their key is the arch string, see nas.stages.common)."""
    if not folder.is_dir():
        return {}
    out: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        stem = p.name.split(".", 1)[0]
        if p.name != "key.json" and ".part" not in p.name:
            out.setdefault(stem, f"{folder.name}/{p.name}")
    return out


def deliverables(run: RunFiles) -> dict[str, str]:
    """arch -> the delivered file (pareto.csv's ``artefact_path``) for the front rows the export stage wrote."""
    paths = _column(run.pareto, "artefact_path", "")
    return {a: str(p) for a, p in zip(run.pareto.get("arch", []), paths, strict=False) if not _missing(p)}


def hover_texts(run: RunFiles) -> list[str]:
    """One hover text per candidate: arch, accuracies, latencies, params, MACs, source and round, files."""
    c = run.cand
    delivered, timed = deliverables(run), _files_by_stem(run.run_dir / "timing_onnx")
    has_test, has_std = "test_accuracy" in c.columns, "predicted_latency_std" in c.columns
    out = []
    for i in range(len(c)):
        row = {k: c[k].iat[i] for k in c.columns}
        arch = str(row["arch"])
        acc = f"val accuracy {_fmt(row['val_accuracy'], '.2f', 100, '%')}"
        if has_test:
            acc += f", test accuracy {_fmt(row['test_accuracy'], '.2f', 100, '%')}"
        pred = f"predicted {_fmt(row.get('predicted_latency_ms'), '.3f')}"
        if has_std:
            pred += f" ± {_fmt(row.get('predicted_latency_std'), '.3f')}"
        source, rnd = str(row.get("source", "n/a")), row.get("search_round")
        where = "measure stage, random sample" if source == "measure" else html.escape(source)
        lines = [f"<b>{html.escape(arch)}</b>", acc,
                 f"latency {_fmt(row['latency_ms'], '.3f')} ms measured, {pred} ms",
                 f"params {_fmt(row.get('params'), '.3f', 1e-6, ' M')}, MACs {_fmt(row.get('macs'), '.2f', 1e-6, ' M')}",
                 f"source: {where}" + ("" if _missing(rnd) or source == "measure" else f", round {int(rnd)}"),
                 f"deliverable: {html.escape(delivered.get(arch, NOT_DELIVERED))}"]
        if file_stem(arch) in timed:
            lines.append(f"timed file: {html.escape(timed[file_stem(arch)])}")
        out.append("<br>".join(lines))
    return out


def candidate_groups(cand: pd.DataFrame) -> list[tuple[str, pd.Index]]:
    """The candidates split by where they came from: the measure stage's sample, each search round, any other
    source; every row is in exactly one group."""
    source = _column(cand, "source", "candidates").astype(str)
    rounds = pd.to_numeric(_column(cand, "search_round"), errors="coerce")
    groups = []
    sample = cand.index[source == "measure"]
    if len(sample):
        groups.append((f"random sample, measure stage ({len(sample)})", sample))
    search = source == "search"
    for r in sorted(rounds[search].dropna().unique()):
        idx = cand.index[search & (rounds == r)]
        groups.append((f"search round {int(r)} ({len(idx)})", idx))
    if (search & rounds.isna()).any():
        idx = cand.index[search & rounds.isna()]
        groups.append((f"search, round unknown ({len(idx)})", idx))
    for s in sorted(set(source[~source.isin(["measure", "search"])])):
        idx = cand.index[source == s]
        groups.append((f"{s} ({len(idx)})", idx))
    return groups


def _colours(n: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [0.15 + 0.75 * k / max(1, n - 1) for k in range(n)]) if n else []


def accuracy_latency_figure(run: RunFiles) -> Any:
    """Every candidate (trace meta "candidates"), the measured front (step line + markers, meta "front") and
    the front as predicted (meta "front_predicted"); hover texts from :func:`hover_texts`."""
    import plotly.graph_objects as go

    c, fig = run.cand, go.Figure()
    groups = candidate_groups(c)
    searched = [g for g in groups if not g[0].startswith("random sample")]
    colours = iter(_colours(len(searched)))
    for name, idx in groups:
        sample = name.startswith("random sample")
        fig.add_trace(go.Scatter(
            x=c.latency_ms[idx], y=100 * c.val_accuracy[idx], mode="markers", name=name, meta="candidates",
            customdata=c.arch[idx], text=[run.hover[i] for i in idx], hovertemplate="%{text}<extra></extra>",
            marker={"symbol": "circle" if sample else "triangle-up", "size": 9, "opacity": 0.75,
                    "color": "rgb(150,150,150)" if sample else next(colours)}))
    pos = {a: i for i, a in enumerate(c.arch)}
    front = run.pareto[run.pareto.arch.isin(pos)].sort_values("latency_ms") if len(run.pareto) else run.pareto
    if len(front):
        rows = [pos[a] for a in front.arch]
        fig.add_trace(go.Scatter(
            x=c.latency_ms[rows], y=100 * c.val_accuracy[rows], mode="lines+markers", name="measured Pareto front",
            meta="front", line={"shape": "hv", "color": "black", "width": 1.5}, customdata=c.arch[rows],
            marker={"size": 11, "color": "black", "symbol": "circle-open", "line": {"width": 2}},
            text=[run.hover[i] for i in rows], hovertemplate="%{text}<extra>measured Pareto front</extra>"))
        if {"predicted_latency_ms", "predicted_accuracy"} <= set(c.columns):
            as_pred = [f"<b>{html.escape(str(c.arch[i]))}</b><br>as predicted: latency "
                       f"{_fmt(c.predicted_latency_ms[i], '.3f')} ms, accuracy "
                       f"{_fmt(c.predicted_accuracy[i], '.2f', 100, '%')}" for i in rows]
            fig.add_trace(go.Scatter(
                x=c.predicted_latency_ms[rows], y=100 * c.predicted_accuracy[rows], mode="markers",
                name="front as predicted", meta="front_predicted", customdata=c.arch[rows], text=as_pred,
                hovertemplate="%{text}<extra>front as predicted</extra>",
                marker={"size": 10, "symbol": "diamond-open", "color": "red", "line": {"width": 2}}))
    fig.update_layout(title="accuracy vs measured latency (hover a point: its arch and files)",
                      xaxis_title="measured latency (ms)", yaxis_title="validation accuracy (%)",
                      hovermode="closest", height=560, template="plotly_white", legend={"font": {"size": 11}},
                      hoverlabel={"bgcolor": "white", "font": {"color": "black"}})
    return fig


def latency_figure(run: RunFiles) -> Any:
    """Predicted vs measured latency of every candidate, the predictor's std as error bars, and y = x."""
    import plotly.graph_objects as go

    c, fig = run.cand, go.Figure()
    if "predicted_latency_ms" not in c.columns:
        return None
    err = None
    if "predicted_latency_std" in c.columns:
        err = {"type": "data", "array": c.predicted_latency_std.fillna(0), "visible": True, "thickness": 1}
    texts = [f"<b>{html.escape(str(a))}</b><br>measured {_fmt(m, '.3f')} ms, predicted {_fmt(p, '.3f')} ms"
             for a, m, p in zip(c.arch, c.latency_ms, c.predicted_latency_ms, strict=True)]
    fig.add_trace(go.Scatter(x=c.latency_ms, y=c.predicted_latency_ms, mode="markers", name="candidates",
                             error_y=err, customdata=c.arch, text=texts, hovertemplate="%{text}<extra></extra>",
                             marker={"size": 8, "opacity": 0.75}))
    both = pd.concat([c.latency_ms, c.predicted_latency_ms]).dropna()
    if len(both):
        lo, hi = float(both.min()), float(both.max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", hoverinfo="skip",
                                 line={"dash": "dash", "color": "black", "width": 1}))
        pad = 0.05 * (hi - lo) or 0.05 * hi
        fig.update_xaxes(range=[lo - pad, hi + pad])
        fig.update_yaxes(range=[lo - pad, hi + pad])  # the same scale on both: y = x is the diagonal
    fig.update_layout(title="latency predictor vs measurement", xaxis_title="measured latency (ms)",
                      yaxis_title="predicted latency (ms)", height=460, template="plotly_white")
    return fig


def hv_figure(run: RunFiles) -> Any:
    """The measured front's hypervolume after each real evaluation; a dashed line where the search starts."""
    import plotly.graph_objects as go

    hv = summary_value(run.summary, "hypervolume_history") or []
    if not hv:
        return None
    fig = go.Figure(go.Scatter(x=list(range(1, len(hv) + 1)), y=hv, mode="lines+markers", name="hypervolume",
                               hovertemplate="evaluation %{x}: hypervolume %{y:.4f}<extra></extra>"))
    n_initial = int((_column(run.cand, "source", "").astype(str) == "measure").sum())
    if 0 < n_initial < len(hv):
        fig.add_vline(x=n_initial + 0.5, line_dash="dash", line_color="grey", annotation_text="search starts")
    fig.update_layout(title="hypervolume of the measured front", xaxis_title="real evaluations",
                      yaxis_title="hypervolume (normalised)", height=400, template="plotly_white")
    return fig


def stages_figure(run: RunFiles) -> Any:
    """Seconds per stage (summary.json), one bar each."""
    import plotly.graph_objects as go

    secs = {k: v for k, v in (run.summary.get("seconds_per_stage") or {}).items() if not _missing(v)}
    if not secs:
        return None
    labels = [f"{v:.1f} s" for v in secs.values()]
    fig = go.Figure(go.Bar(x=list(secs.values()), y=list(secs), orientation="h", text=labels,
                           hovertemplate="%{y}: %{x:.2f} s<extra></extra>"))
    fig.update_layout(title=f"stage timings (total {_fmt(run.summary.get('seconds_total'), '.1f')} s)",
                      xaxis_title="seconds", yaxis={"autorange": "reversed"}, height=80 + 40 * len(secs),
                      template="plotly_white", margin={"t": 50, "b": 40})
    return fig


def figures(run: RunFiles) -> dict[str, Any]:
    """The page's figures by div id (a figure with nothing to show is left out)."""
    made = zip(FIGURE_IDS, (accuracy_latency_figure(run), latency_figure(run), hv_figure(run), stages_figure(run)),
               strict=True)
    return {k: f for k, f in made if f is not None}


def _device_text(dev: Any) -> str:
    if not isinstance(dev, dict):
        return str(dev or "n/a")
    parts = [dev.get("device"), f"{dev.get('runtime')} {dev.get('runtime_version', '')}".strip(),
             dev.get("precision"), f"batch {dev.get('batch')}", f"{dev.get('threads')} threads", dev.get("cpu")]
    return ", ".join(str(p) for p in parts if p and "None" not in str(p))


def header_html(run: RunFiles) -> str:
    """Title, the run's headline figures and links to its files."""
    s, c = run.summary, run.cand
    rows = [("run directory", str(run.run_dir)), ("space", s.get("space", "n/a")), ("data", s.get("data", "n/a")),
            ("device", _device_text(s.get("device"))), ("hypervolume", _fmt(s.get("hypervolume"), ".4f")),
            ("candidates", str(len(c))), ("Pareto front", f"{len(run.pareto)} subnets"),
            ("best test accuracy", _fmt(s.get("best_test_accuracy"), ".2f", 100, "%")),
            ("run time", _fmt(s.get("seconds_total"), ".1f", unit=" s"))]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    links = " · ".join(f'<a href="{n}">{n}</a>' for n in ("candidates.csv", "pareto.csv", "summary.json",
                                                           "pareto.png", "hv_history.png")
                       if (run.run_dir / n).is_file())
    title = f"hwnas run: {s.get('space', '?')} on {s.get('data', '?')}"
    return (f"<h1>{html.escape(title)}</h1><table class='head'>{table}</table><p>files: {links}</p>")


def front_table(run: RunFiles) -> str:
    """The Pareto front as a table: arch, accuracies, latency, the delivered file."""
    p = run.pareto
    if not len(p):
        return "<p>no Pareto front (no feasible candidate)</p>"
    cells = []
    for i in range(len(p)):
        path = _column(p, "artefact_path", "").iat[i]
        cells.append(f"<tr><td><code>{html.escape(str(p.arch.iat[i]))}</code></td>"
                     f"<td>{_fmt(p.val_accuracy.iat[i], '.2f', 100, '%')}</td>"
                     f"<td>{_fmt(_column(p, 'test_accuracy').iat[i], '.2f', 100, '%')}</td>"
                     f"<td>{_fmt(p.latency_ms.iat[i], '.3f')}</td>"
                     f"<td>{html.escape(NOT_DELIVERED if _missing(path) else str(path))}</td></tr>")
    head = "<tr><th>arch</th><th>val acc</th><th>test acc</th><th>latency (ms)</th><th>deliverable</th></tr>"
    return f"<h2>Pareto front</h2><table class='front'>{head}{''.join(cells)}</table>"


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1300px}table{border-collapse:collapse}
th,td{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}table.front td{font-size:12px}"""


def render(run: RunFiles) -> str:
    """The whole page: header, figures (plotly.js inlined once, no MathJax), the front as a table."""
    import plotly.io as pio

    parts, first = [], True
    for div_id, fig in figures(run).items():
        parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=first, include_mathjax=False,
                                 div_id=div_id, config={"displaylogo": False}, default_height=f"{fig.layout.height}px"))
        first = False
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>hwnas report</title><style>{STYLE}</style>"
            f"</head><body>{header_html(run)}{''.join(parts)}{front_table(run)}</body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Build ``report.html`` from the run directory's files and write it atomically; returns its path."""
    run = load_run(run_dir)
    return write_text_atomic(run.run_dir / REPORT, render(run))
