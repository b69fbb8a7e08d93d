"""Short modules with one job and short functions (DESIGN.md, "Habits"): no module of the packages over
400 lines and no function over 80, unless the module's docstring says why in a line starting with
``Long because:`` (e.g. ``Long because: one table of every op's cost, read top to bottom``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("search_spaces", "latency_luts", "predictors", "nas")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
MARKER = "Long because:"


def too_long(source: str, max_module: int = MAX_MODULE_LINES, max_function: int = MAX_FUNCTION_LINES) -> list[str]:
    """What in ``source`` is over the limits (``"module: N lines"``, ``"NAME(): N lines"``), nothing when its
    docstring carries a ``Long because:`` line with a reason after it."""
    tree = ast.parse(source)
    doc = ast.get_docstring(tree) or ""
    if any(line.strip().startswith(MARKER) and line.strip()[len(MARKER):].strip() for line in doc.splitlines()):
        return []
    out = []
    n = len(source.splitlines())
    if n > max_module:
        out.append(f"module: {n} lines")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > max_function:
                out.append(f"{node.name}(): {length} lines")
    return out


def test_the_check_finds_long_modules_and_functions_and_reads_the_reason() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    long_function = f'"""A module."""\n\n\ndef f() -> None:\n{body}\n'
    assert too_long(long_function) == ["f(): 82 lines"]
    assert too_long(f'"""A module.\n\nLong because: one table read top to bottom.\n"""\n\n\ndef f() -> None:\n{body}\n') == []
    assert too_long(f'"""A module.\n\nLong because:\n"""\n\n\ndef f() -> None:\n{body}\n') == ["f(): 82 lines"]  # no reason
    long_module = '"""A module."""\n' + "\n".join(f"X{i} = {i}" for i in range(400))
    assert too_long(long_module) == ["module: 401 lines"]
    assert too_long('"""A module."""\n\n\ndef f() -> None:\n    return None\n') == []


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_and_functions_are_short_or_say_why(package: str) -> None:
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        problems = too_long(path.read_text())
        if problems:
            found[str(path.relative_to(REPO))] = problems
    assert not found, (f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function, without a "
                       f"'{MARKER} <reason>' line in the module docstring: {found}")
