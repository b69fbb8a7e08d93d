"""``hwnas-bench report``: docs/results.md and the README's headline table are what the committed JSONs give,
every printed figure is the one in its JSON, a bad registry entry is one line naming it, and ``--check`` exits
0 / 1 / 2 (up to date / stale / bad registry)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from nas.bench import report
from nas.bench.provenance import Recorder
from nas.bench.report_registry import RegistryError, rows

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results"
DOCS = REPO / "docs" / "results.md"
README = REPO / "README.md"
REGISTRY = yaml.safe_load((RESULTS / "published.yaml").read_text())
FIGURES = [f for g in REGISTRY["groups"] for f in g["figures"]]


def _json_value(results: Path, file: str, key: str) -> float:
    node = json.loads((results / file).read_text())
    for part in key.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return float(node)


def _ours(results: Path, fig: dict) -> float:
    v = _json_value(results, fig["file"], fig["key"])
    if fig.get("divide_by"):
        v /= _json_value(results, fig["divide_by"]["file"], fig["divide_by"]["key"])
    return v


def _agrees(cell: str, raw: float, fig: dict) -> bool:
    """Whether a printed figure is ``raw`` as the figure's format prints it (to its last printed digit)."""
    if cell == "not reached":
        return fig.get("never_above") is not None and raw > fig["never_above"]
    f, text = fig["format"], cell.removesuffix(fig.get("unit", "")).replace(",", "")
    if f.startswith("pct"):
        return abs(float(text.removesuffix("%")) - 100 * raw) <= 0.5 * 10 ** -int(f[3:]) + 1e-9
    if f == "x2":
        return abs(float(text.removesuffix("x")) - raw) <= 0.005 + 1e-9
    if f == "e1":
        return abs(float(text) - raw) <= 0.05 * abs(raw) + 1e-15
    return abs(float(text) - raw) <= 0.5 * 10 ** -int(f[1:]) + 1e-9


def _table_rows(markdown: str) -> list[list[str]]:
    out = []
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| Question |"):
            out.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out


def _check_page(page: str, results: Path) -> list[str]:
    """Every row's figures against the JSONs, read here without the report's code; the mismatches."""
    bad, body = [], _table_rows(page)
    assert len(body) == len(FIGURES)
    for fig, cells in zip(FIGURES, body, strict=True):
        assert cells[0] == fig["question"]
        if not _agrees(cells[1], _ours(results, fig), fig):
            bad.append(f"{fig['id']}: ours {cells[1]}")
        printed = cells[2].split("; ") if fig.get("peers") else []
        for peer, part in zip(fig.get("peers") or [], printed, strict=True):
            assert part.startswith(peer["name"] + " ")
            raw = _json_value(results, peer.get("file", fig["file"]), peer["key"])
            if not _agrees(part[len(peer["name"]) + 1:], raw, fig):
                bad.append(f"{fig['id']}: {part}")
    return bad


def _copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The results folder (without ablations), docs/results.md and the README, copied under ``tmp_path``."""
    results = tmp_path / "results"
    results.mkdir()
    for p in RESULTS.iterdir():
        if p.is_file():
            shutil.copy(p, results / p.name)
    (tmp_path / "docs").mkdir()
    shutil.copy(DOCS, tmp_path / "docs" / "results.md")
    shutil.copy(README, tmp_path / "README.md")
    return results, tmp_path / "docs" / "results.md", tmp_path / "README.md"


def test_committed_page_and_readme_table_are_what_the_committed_jsons_give() -> None:
    assert report.render_results(RESULTS) == DOCS.read_text()
    assert report.headline_block(README) == "\n" + report.render_headline(RESULTS) + "\n"
    assert report.run(RESULTS, DOCS, README, check=True) == 0
    assert 25 <= len(FIGURES) <= 50 and 6 <= sum(bool(f.get("headline")) for f in FIGURES) <= 8


def test_every_printed_figure_is_the_one_in_its_json() -> None:
    assert _check_page(DOCS.read_text(), RESULTS) == []
    headline = _table_rows(report.headline_block(README))
    by_question = {f["question"]: f for f in FIGURES}
    assert len(headline) == sum(bool(f.get("headline")) for f in FIGURES)
    for cells in headline:
        fig = by_question[re.fullmatch(r"\[(.*)\]\(docs/results\.md#[\w-]+\)", cells[0]).group(1)]
        assert _agrees(cells[1], _ours(RESULTS, fig), fig)
        assert cells[5] == f"[{_bench(fig)}](docs/benchmarks/{_bench(fig)}.md)"


def _bench(fig: dict) -> str:
    return next(g["bench"] for g in REGISTRY["groups"] if fig in g["figures"])


def test_a_changed_figure_makes_the_check_fail_and_a_rerun_prints_it(tmp_path: Path, capsys) -> None:
    results, docs, readme = _copy(tmp_path)
    assert report.run(results, docs, readme, check=True) == 0
    data = json.loads((results / "quickstart.json").read_text())
    before = data["median"]["seconds_total"]
    data["median"]["seconds_total"] = 301.04  # over its 300 s target
    (results / "quickstart.json").write_text(json.dumps(data))
    assert report.run(results, docs, readme, check=True) == 1
    assert f"{docs} is stale" in capsys.readouterr().err
    assert _check_page(docs.read_text(), results) == [f"quickstart.seconds: ours {before:.1f} s"]
    readme_before = readme.read_text()
    assert report.run(results, docs, readme) == 0
    assert _check_page(docs.read_text(), results) == []
    spread = f"fastest run {data['min']['seconds_total']:.1f} s; slowest run {data['max']['seconds_total']:.1f} s"
    assert f"| 301.0 s | {spread} | ≤ 300 s | **no** |" in docs.read_text()
    after = readme.read_text()
    begin, end = after.index(report.BEGIN), after.index(report.END)
    assert after[:begin] == readme_before[:readme_before.index(report.BEGIN)]  # nothing else of the README moved
    assert after[end:] == readme_before[readme_before.index(report.END):]
    assert "301.0 s" in after[begin:end]
    assert report.run(results, docs, readme, check=True) == 0


def _registry(tmp_path: Path, key: str, file: str = "x.json") -> Path:
    (tmp_path / "x.json").write_text(json.dumps({"a": {"b": [1.5, 2.5]}}))
    reg = {"files": {"x.json": {k: "v" for k in ("command", "date", "commit", "machine", "also_running")}},
           "groups": [{"bench": "quickstart", "figures": [
               {"id": "demo", "question": "q", "file": file, "key": key, "format": "f1"}]}]}
    (tmp_path / "published.yaml").write_text(yaml.safe_dump(reg))
    return tmp_path


def test_a_bad_registry_entry_is_one_line_naming_the_entry_and_the_path(tmp_path: Path) -> None:
    assert [r.ours for r in rows(_registry(tmp_path, "a.b.1"))] == [2.5]
    with pytest.raises(RegistryError) as e:
        rows(_registry(tmp_path, "a.c.1"))
    msg = str(e.value)
    assert "\n" not in msg and "'demo'" in msg and "'a.c.1'" in msg and str(tmp_path / "x.json") in msg
    with pytest.raises(RegistryError) as e:
        rows(_registry(tmp_path, "a.b.7"))
    assert "'demo'" in str(e.value) and "'7'" in str(e.value)
    with pytest.raises(RegistryError) as e:
        rows(_registry(tmp_path, "a.b.1", file="missing.json"))
    msg = str(e.value)
    assert "\n" not in msg and "'demo'" in msg and str(tmp_path / "missing.json") in msg
    with pytest.raises(RegistryError, match="'a.b' is .*expected a number"):
        rows(_registry(tmp_path, "a.b"))


def test_a_json_with_its_own_provenance_is_reported_from_it(tmp_path: Path) -> None:
    results, docs, readme = _copy(tmp_path)
    before = datetime.now(UTC).replace(microsecond=0)
    recorder = Recorder(["bench=inner_search", "bench.out=x.json"])
    assert recorder.stamp(results / "inner_search.json")
    block = json.loads((results / "inner_search.json").read_text())["provenance"]
    assert block["command"] == "hwnas-bench bench=inner_search bench.out=x.json"
    assert datetime.fromisoformat(block["date"]) >= before
    assert block["machine"]["cores"] == os.cpu_count()
    assert set(block["load"]) == {"load_1min_before", "load_1min_after", "other_processes_cpus"}
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert block["commit"] == head
    row = next(r for r in rows(results) if r.id == "inner_search.ofa")
    assert row.provenance["command"] == block["command"]
    assert row.provenance["date"] == block["date"][:16].replace("T", " ") + " UTC"
    assert str(block["machine"]["cores"]) + " cores" in row.provenance["machine"]
    assert not recorder.stamp(tmp_path / "nothing.json")


def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "hwnas-bench"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "nas.bench.cli"]
    return subprocess.run([*cmd, "report", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    assert _cli("--check").returncode == 0
    results, docs, readme = _copy(tmp_path)
    paths = ("--results", str(results), "--docs", str(docs), "--readme", str(readme))
    assert _cli("--check", *paths).returncode == 0
    data = json.loads((results / "engines.json").read_text())
    data["spearman"]["onnxruntime"]["litert"] = 0.5
    (results / "engines.json").write_text(json.dumps(data))
    proc = _cli("--check", *paths)
    assert proc.returncode == 1 and str(docs) in proc.stderr
    shutil.copy(DOCS, docs)
    assert report.run(results, tmp_path / "other.md", readme) == 0  # the README table now has 0.500
    shutil.copy(DOCS, docs)
    data["spearman"]["onnxruntime"]["litert"] = 0.7038066129480413
    (results / "engines.json").write_text(json.dumps(data))
    proc = _cli("--check", *paths)
    assert proc.returncode == 1 and str(readme) in proc.stderr and "headline" in proc.stderr
    (results / "ofa_import.json").unlink()
    proc = _cli("--check", *paths)
    assert proc.returncode == 2 and "'ofa_import.largest'" in proc.stderr and proc.stderr.count("\n") == 1


def test_hwnas_bench_stamps_its_json_with_provenance(tmp_path: Path) -> None:
    out = tmp_path / "so.json"
    args = ["bench=supernet_overhead", "bench.spaces=[ofa_mbv3_small]", "bench.n_archs=1", "bench.steps=1",
            "bench.warmup=1", "bench.threads=1", f"bench.out={out}", f"hydra.run.dir={tmp_path / 'h'}"]
    start = datetime.now(UTC).replace(microsecond=0)
    proc = subprocess.run([sys.executable, "-m", "nas.bench.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    block = res["provenance"]
    assert block["command"] == "hwnas-bench " + " ".join(a if "[" not in a else f"'{a}'" for a in args)
    assert start <= datetime.fromisoformat(block["date"]) <= datetime.fromisoformat(block["finished"])
    assert block["machine"]["cores"] == os.cpu_count() and block["machine"]["cpu"]
    assert block["load"]["load_1min_before"] is not None and block["load"]["other_processes_cpus"] >= 0
    assert (block["commit"] is None) == (not (REPO / ".git").exists())
    assert res["spaces"]["ofa_mbv3_small"]["n_archs"] == 1  # the bench's own result is kept beside it
