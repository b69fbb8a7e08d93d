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
    """The pipeline's table is nas.stages.stages(): one Stage object per stage, in order, built from imports
    (no import by computed name)."""
    src = (REPO / "nas" / "pipeline.py").read_text() + (REPO / "nas" / "stages" / "__init__.py").read_text()
    assert "import_module" not in src and "__import__" not in src
    from nas.pipeline import STAGES
    from nas.stages import stages

    assert tuple(stages()) == STAGES == ("train", "measure", "calibrate", "predict", "search", "export")


def test_every_stage_has_the_stage_contract():
    from nas.stages import stages
    from nas.stages.base import Stage

    table, again = stages(), stages()
    for name, stage in table.items():
        assert isinstance(stage, Stage), f"stage {name} is a {type(stage).__name__}, not a nas.stages.base.Stage"
        assert stage.name == name
        assert stage is not again[name], "stage objects are per pipeline run: state must not leak between runs"
        assert stage.help.__func__ is Stage.help or name == "search"  # only the search helps a holder


# ------------------------------------------------------------------------------------------ no type probes
PROBE_FREE = ("nas/pipeline.py", "nas/stages", "nas/search")
CONFIG_NAMES = {"cfg", "conf", "config", "node"}  # a config node's getattr(node, key, default) reads a key


def _is_config(expr: ast.expr) -> bool:
    """Whether an expression is a config node: a name of CONFIG_NAMES, or an attribute chain through one of
    them or through ``.cfg`` (``ctx.cfg.search``, ``cfg.device``)."""
    while isinstance(expr, ast.Attribute):
        if expr.attr in CONFIG_NAMES:
            return True
        expr = expr.value
    return isinstance(expr, ast.Name) and expr.id in CONFIG_NAMES


def type_probes(source: str) -> list[tuple[int, str]]:
    """(line, text) of each type probe: any ``hasattr(...)``, and ``getattr(obj, name, default)`` (asks whether
    ``obj`` has an attribute) unless ``obj`` is a config node. ``getattr(obj, name)`` without a default is a
    plain attribute read by name, not a probe."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        with_default = node.func.id == "getattr" and len(node.args) + len(node.keywords) >= 3
        if node.func.id == "hasattr" or (with_default and not _is_config(node.args[0])):
            out.append((node.lineno, ast.unparse(node)))
    return out


def test_the_probe_rule_tells_probes_from_config_reads():
    found = type_probes("hasattr(m, 'fit')\ngetattr(mod, 'help', None)\ngetattr(cfg.search, 'seed', 0)\n"
                        "getattr(ctx.cfg, 'device', None)\ngetattr(space, key)\ngetattr(node, 'x', 1)\n")
    assert [line for line, _ in found] == [1, 2]


def _probe_free_files() -> list[Path]:
    out = []
    for entry in PROBE_FREE:
        path = REPO / entry
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


@pytest.mark.parametrize("path", _probe_free_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_type_probes_in_the_pipeline_stages_and_strategies(path: Path):
    rel = str(path.relative_to(REPO))
    found = type_probes(path.read_text())
    assert not found, f"{rel}: type probes {found}; declare the method on the " \
        "contract (a no-op default) instead of asking whether an object has it"
