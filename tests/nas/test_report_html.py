"""report.html: written by the real pipeline at smoke size, rebuilt by ``hwnas report``, and opened in a real
headless browser (Debian's chromium driven by playwright): no console errors, no network, one point per
candidate, and the real mouse over a Pareto-front point shows that point's arch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from nas.pipeline import run_pipeline
from nas.report import NOT_DELIVERED, figures, load_run, write_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, smoke_through_predict: Path) -> Path:
    """The session's smoke run through predict (tests/conftest.py), copied, then its search and export run."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(smoke_through_predict, run)
    assert not (run / "report.html").exists()  # a run of a prefix of the stages (through predict) writes none
    with initialize_config_module(config_module="nas.conf", version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"run_dir={run}"])
    run_pipeline(cfg)
    return run


def hwnas(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from nas.cli import main; sys.argv = ['hwnas', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # the smoke run's search and export (and the session's train, when first)
def test_the_run_writes_report_html_and_hwnas_report_rebuilds_it(run_dir: Path) -> None:
    page = run_dir / "report.html"
    assert page.is_file() and page.stat().st_size > 1_000_000  # plotly.js inlined
    text = page.read_text()
    assert "cdn.plot.ly/plotly" not in text and 'src="http' not in text
    page.unlink()
    proc = hwnas("report", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(page) and page.is_file()
    cand, pareto = pd.read_csv(run_dir / "candidates.csv"), pd.read_csv(run_dir / "pareto.csv")
    text = page.read_text()
    for arch in cand.arch:  # every candidate's hover text is on the page, the delivered files with the front's
        assert arch in text
    for path in pareto.artefact_path:
        assert path.startswith("onnx/") and path in text


@pytest.mark.parametrize("args, fragment", [
    (["report", "/nonexistent/run"], "'/nonexistent/run' does not exist"),
    (["report", "EMPTY"], "has no candidates.csv"),
    (["report"], "report takes one run directory, got 0"),
])
def test_hwnas_report_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = hwnas(*[str(tmp_path) if a == "EMPTY" else a for a in args])
    assert proc.returncode == 2 and not proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwnas: error: ") and fragment in lines[0], proc.stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.slow
def test_hover_texts_name_every_figure_of_a_candidate(run_dir: Path) -> None:
    run = load_run(run_dir)
    cand = run.cand
    front = dict(zip(run.pareto.arch, run.pareto.artefact_path, strict=True))
    for i, arch in enumerate(cand.arch):
        text = run.hover[i]
        assert text.startswith(f"<b>{arch}</b>")
        assert f"val accuracy {100 * cand.val_accuracy[i]:.2f}%" in text
        assert f"test accuracy {100 * cand.test_accuracy[i]:.2f}%" in text
        assert f"{cand.latency_ms[i]:.3f} ms measured" in text
        assert f"predicted {cand.predicted_latency_ms[i]:.3f} ± {cand.predicted_latency_std[i]:.3f} ms" in text
        assert f"params {cand.params[i] / 1e6:.3f} M" in text and f"MACs {cand.macs[i] / 1e6:.2f} M" in text
        assert (f"source: search, round {cand.search_round[i]}" if cand.source[i] == "search"
                else "source: measure stage, random sample") in text
        assert f"deliverable: {front.get(arch, NOT_DELIVERED)}" in text
        assert "timed file: timing_onnx/" in text  # every candidate was timed from a file this run kept
    figs = figures(run)
    assert list(figs) == ["candidates", "latency-predictor", "hypervolume", "stage-timings"]
    points = [t for t in figs["candidates"].data if t.meta == "candidates"]
    assert sum(len(t.x) for t in points) == len(cand)
    assert sorted(a for t in points for a in t.customdata) == sorted(cand.arch)


@pytest.mark.slow
def test_missing_optional_columns_and_nan_cells_read_n_a(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("candidates.csv", "summary.json"):
        shutil.copy(run_dir / name, run / name)
    cand = pd.read_csv(run / "candidates.csv").drop(columns=["predicted_latency_std", "test_accuracy", "source"])
    cand.loc[0, ["predicted_latency_ms", "params"]] = np.nan
    cand.to_csv(run / "candidates.csv", index=False)
    summary = json.loads((run / "summary.json").read_text())
    del summary["stages"]["search"]["hypervolume_history"]
    (run / "summary.json").write_text(json.dumps(summary))
    loaded = load_run(run)  # no pareto.csv: the front is candidates.csv's pareto column, nothing delivered
    assert "predicted n/a ms" in loaded.hover[0] and "params n/a" in loaded.hover[0] and "±" not in loaded.hover[0]
    assert "test accuracy" not in loaded.hover[1] and f"deliverable: {NOT_DELIVERED}" in loaded.hover[1]
    figs = figures(loaded)
    assert "hypervolume" not in figs
    assert sum(len(t.x) for t in figs["candidates"].data if t.meta == "candidates") == len(cand)
    assert write_report(run).is_file()


# ------------------------------------------------------------------------------------------- in a real browser
FRONT_POINTS = """() => {
  const gd = document.getElementById('candidates');
  gd.scrollIntoView();
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  const px = (t, i) => [box.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[i]),
                        box.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[i])];
  const all = [], front = [];
  for (const t of gd._fullData) {
    if (!t.visible || !t.customdata) continue;
    for (let i = 0; i < t.x.length; i++) {
      const p = {arch: t.customdata[i], xy: px(t, i)};
      all.push(p);
      if (t.meta === 'front') front.push(p);
    }
  }
  // the front point farthest (in pixels) from every point drawn elsewhere (its own candidate marker lies under
  // it): the hover cannot pick a neighbour, nor the point's own predicted position
  const dist = (p, q) => Math.hypot(q.xy[0] - p.xy[0], q.xy[1] - p.xy[1]);
  const gap = p => Math.min(...all.map(q => dist(p, q)).filter(d => d > 0.5));
  return front.map(p => ({...p, gap: gap(p)})).sort((a, b) => b.gap - a.gap);
}"""
N_CANDIDATE_POINTS = """() => document.getElementById('candidates')._fullData
  .filter(t => t.meta === 'candidates').reduce((n, t) => n + t.x.length, 0)"""


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # CI runs as root
        yield b
        b.close()


@pytest.mark.slow
def test_report_in_chromium_renders_every_candidate_and_hovers_the_front(run_dir: Path, browser,
                                                                         tmp_path: Path) -> None:
    check_in_browser(run_dir, browser, tmp_path)


def test_default_runs_report_in_chromium(browser, tmp_path: Path) -> None:
    """The report of a default run (``hwnas``, the README's main command): ``.ci/run`` names its run directory
    in HWNAS_DEFAULT_RUN after running that command."""
    import os

    run = os.environ.get("HWNAS_DEFAULT_RUN")
    if not run:
        pytest.skip("needs a default run: run `hwnas`, then set HWNAS_DEFAULT_RUN=its run directory "
                    "(.ci/run does both)")
    run_dir = Path(run)
    assert (run_dir / "report.html").is_file(), f"the default run {run_dir} wrote no report.html"
    cfg = (run_dir / ".hydra" / "overrides.yaml").read_text().strip()
    assert cfg == "[]", f"HWNAS_DEFAULT_RUN={run_dir} is not a default run: its overrides are {cfg}"
    check_in_browser(run_dir, browser, tmp_path)


def check_in_browser(run_dir: Path, browser, tmp_path: Path) -> None:
    """No console error, no network request, one drawn point per row of candidates.csv, the front's points are
    the front's archs, and the real mouse over a front point shows its arch and delivered file; a screenshot."""
    cand = pd.read_csv(run_dir / "candidates.csv")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    remote: list[str] = []
    page.route("**/*", lambda route: (remote.append(route.request.url), route.abort())
               if not route.request.url.startswith(("file:", "data:", "blob:")) else route.continue_())
    page.goto((run_dir / "report.html").as_uri(), wait_until="load")
    page.wait_for_function("() => document.getElementById('candidates')?._fullLayout?.xaxis?.l2p")
    assert page.evaluate(N_CANDIDATE_POINTS) == len(cand)
    assert page.locator("#candidates .scatterlayer .trace .point").count() >= len(cand)  # drawn, not only data
    front = page.evaluate(FRONT_POINTS)
    assert {p["arch"] for p in front} == set(cand.arch[cand.pareto])
    target = front[0]
    page.mouse.move(target["xy"][0] - 30, target["xy"][1] - 30)
    page.mouse.move(*target["xy"], steps=5)
    page.wait_for_selector("#candidates .hoverlayer .hovertext", timeout=5000)
    hover = page.locator("#candidates .hoverlayer").text_content()
    assert target["arch"] in hover, (target, hover)
    assert "measured" in hover and "deliverable: onnx/" in hover  # a front point: its delivered file
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    assert not errors, errors
    assert not remote, remote  # the page asked for nothing over the network
    page.close()
