"""The package layout DESIGN.md promises: imports one way, no circles in nas/, benchmarks as a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("search_spaces", "latency_luts", "predictors", "nas")
LAYER = {name: i for i, name in enumerate(PACKAGES)}  # a package may import only packages left of it


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in the file (also inside functions), resolved to known modules."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    out = set()
    for n in names:
        while n and n not in known:
            n = n.rpartition(".")[0]
        if n and n != module:
            out.add(n)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, m, set(mods)) for m, p in mods.items()}


def _cycle(graph: dict[str, set[str]], nodes: set[str]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n] & nodes):
            if m.startswith(n + ".") or n.startswith(m + "."):
                continue  # a package and its own submodules (re-exports in __init__)
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(nodes):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_circle_among_nas_modules(graph):
    cycle = _cycle(graph, {m for m in graph if m.split(".")[0] == "nas"})
    assert cycle is None, " -> ".join(cycle)


def test_packages_import_one_way(graph):
    back = [(m, d) for m, deps in graph.items() for d in deps if LAYER[d.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert not back, back


def test_benchmarks_are_a_leaf(graph):
    users = sorted(m for m, deps in graph.items() if not m.startswith("nas.bench") and any(
        d.startswith("nas.bench") for d in deps))
    assert not users, users


def test_pipeline_imports_its_stages_by_name():
    src = (REPO / "nas" / "pipeline.py").read_text()
    assert "import_module" not in src and "__import__" not in src
    tree = ast.parse(src)
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "nas.stages"
                for a in n.names}
    from nas.pipeline import STAGES

    assert set(STAGES) <= imported


def test_every_stage_module_has_the_stage_contract():
    from nas.pipeline import STAGE_MODULES

    for name, mod in STAGE_MODULES.items():
        for fn in ("validate", "run", "reset"):
            assert callable(getattr(mod, fn, None)), f"nas.stages.{name} lacks {fn}()"
