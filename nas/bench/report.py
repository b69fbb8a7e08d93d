"""``hwnas-bench report [--check]``: the results page and the README's headline table, from the benchmark JSONs.

Reads the registry ``experiments/results/published.yaml`` (:mod:`nas.bench.report_registry`) and the JSONs it
names, and writes ``docs/results.md`` (one table per benchmark, each linking its protocol page
``benchmarks/<bench>.md``) and the table between the README's ``<!-- results:headline:begin ... -->`` and
``<!-- results:headline:end -->`` lines (nothing else of the README is touched). Deterministic: registry
order, fixed decimals, no generation time, so regenerating from committed JSONs gives the committed bytes.
``--check`` writes nothing and exits 1 naming the first file that differs from what it would write.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from latency_luts.files import write_text_atomic
from nas.bench.report_registry import RegistryError, Row, fmt, met, rows, target_text, titles

BEGIN = "<!-- results:headline:begin"
END = "<!-- results:headline:end -->"
COLUMNS = ("Question", "Ours", "Compared with", "Target", "Met", "Command", "Date", "Commit", "Machine",
           "Also running")
INTRO = """\
# Results

Every figure this project publishes, generated from the benchmark JSONs in `experiments/results/` by
`hwnas-bench report` (the list of figures and where each sits in its JSON: `experiments/results/published.yaml`).
Do not edit this page by hand: rerun a benchmark, then `hwnas-bench report`; `hwnas-bench report --check`
fails when this page or the README's table is out of date.

Columns: **Ours** is the figure of this project's method; **Compared with** the same figure for each peer or
baseline, named (from the same run unless the name says otherwise); **Target** the figure asked for and **Met**
whether ours meets it (compared unrounded; "—": no target). **Command** is what produced the JSON (`<dir>`: a
scratch folder), **Date** when it ran (UTC), **Commit** the commit that recorded the JSON (for JSONs that carry
their own provenance: the checkout the bench ran from), **Machine** where it ran and **Also running** what else
used the machine meanwhile. How each benchmark is run and read: its protocol page, linked under each table.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _met(row: Row) -> str:
    m = met(row)
    return "—" if m is None else ("yes" if m else "**no**")


def _peers(row: Row) -> str:
    return "; ".join(f"{p.name} {fmt(p.value, row.spec)}" for p in row.peers) or "—"


def slug(title: str) -> str:
    """The anchor GitHub and MyST give a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def _table(header: tuple[str, ...], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in body]
    return lines


def render_results(results_dir: str | Path) -> str:
    """``docs/results.md``."""
    results_dir = Path(results_dir)
    all_rows = rows(results_dir)
    out = [INTRO]
    for bench, title in titles(results_dir):
        group = [r for r in all_rows if r.bench == bench]
        if not group:
            continue
        out += [f"## {title}", ""]
        body = [[r.question, fmt(r.ours, r.spec), _peers(r), target_text(r), _met(r), _code(r.provenance["command"]),
                 r.provenance["date"], r.provenance["commit"], r.provenance["machine"], r.provenance["also_running"]]
                for r in group]
        out += _table(COLUMNS, body)
        out += ["", f"Protocol: [{bench}](benchmarks/{bench}.md).", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_headline(results_dir: str | Path) -> str:
    """The README's headline table (the registry's ``headline: N`` figures, by N)."""
    results_dir = Path(results_dir)
    title = dict(titles(results_dir))
    body = [[f"[{r.question}](docs/results.md#{slug(title[r.bench])})", fmt(r.ours, r.spec), _peers(r),
             target_text(r), _met(r), f"[{r.bench}](docs/benchmarks/{r.bench}.md)"]
            for r in sorted((r for r in rows(results_dir) if r.headline), key=lambda r: r.headline)]
    return "\n".join(_table(("Question", "Ours", "Compared with", "Target", "Met", "Protocol"), body)) + "\n"


def _block(text: str, where: str) -> tuple[list[str], int, int]:
    lines = text.splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    end = [i for i, line in enumerate(lines) if line.rstrip("\n") == END]
    if len(begin) != 1 or len(end) != 1 or end[0] <= begin[0]:
        raise RegistryError(f"{where}: expected one {BEGIN!r} line before one {END!r} line")
    return lines, begin[0], end[0]


def headline_block(readme: str | Path) -> str:
    """What the README holds between its two marker lines."""
    lines, b, e = _block(Path(readme).read_text(), str(readme))
    return "".join(lines[b + 1:e])


def with_headline(text: str, table: str, where: str = "README.md") -> str:
    """The README's ``text`` with ``table`` between the marker lines (blank lines around it), the rest as it was."""
    lines, b, e = _block(text, where)
    return "".join(lines[:b + 1]) + "\n" + table + "\n" + "".join(lines[e:])


def run(results_dir: str | Path = "experiments/results", docs: str | Path = "docs/results.md",
        readme: str | Path = "README.md", check: bool = False) -> int:
    """Write (or with ``check``, compare) both outputs; 0, or 1 after naming the first stale file."""
    page, table = render_results(results_dir), render_headline(results_dir)
    docs, readme = Path(docs), Path(readme)
    if check:
        if not docs.is_file() or docs.read_text() != page:
            print(f"hwnas-bench report: {docs} is stale; run `hwnas-bench report`", file=sys.stderr)
            return 1
        if headline_block(readme) != "\n" + table + "\n":
            print(f"hwnas-bench report: {readme} (its headline table) is stale; run `hwnas-bench report`",
                  file=sys.stderr)
            return 1
        return 0
    docs.parent.mkdir(parents=True, exist_ok=True)
    if not docs.is_file() or docs.read_text() != page:
        write_text_atomic(docs, page)
    before = readme.read_text()  # read and rewritten in one step: others may be editing the rest of the README
    text = with_headline(before, table, str(readme))
    if text != before:
        write_text_atomic(readme, text)
    print(f"wrote {docs} and the headline table of {readme}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hwnas-bench report", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if an output is stale")
    p.add_argument("--results", default="experiments/results", help="folder of the JSONs and published.yaml")
    p.add_argument("--docs", default="docs/results.md")
    p.add_argument("--readme", default="README.md")
    a = p.parse_args(argv)
    try:
        return run(a.results, a.docs, a.readme, check=a.check)
    except (RegistryError, OSError) as e:
        print(f"hwnas-bench report: error: {e}", file=sys.stderr)
        return 2
