"""The registry of published figures (``experiments/results/published.yaml``) and what it points at in the JSONs.

The registry is data only (read with ``yaml.safe_load``):

- ``files``: per result JSON (path relative to the results folder) its provenance as the benchmark log (docs/history.md) records it:
  ``command``, ``date``, ``commit`` (the commit that wrote the file), ``machine``, ``also_running``. A JSON that
  carries its own ``provenance`` block (every JSON ``hwnas-bench`` writes since that block exists) is read
  from it instead.
- ``groups``: one per benchmark (``bench`` names its protocol page ``docs/benchmarks/<bench>.md``, ``title``
  its heading), each with its ``figures``: ``id``, ``question``, ``file``, ``key`` (a dotted path into the
  JSON; list items by index), ``format`` (``f0``–``f4`` decimals, ``pct0``–``pct2`` percent of a fraction,
  ``x2`` a ratio, ``e1`` scientific), optional ``unit``, ``never_above`` (a count above it prints as "not reached"),
  ``divide_by`` (``{file, key}``: the figure is the ratio of the two), ``peers`` (``[{name, key, file?}]``, the
  file defaulting to the figure's), ``target`` (``{op, value}`` or ``{op, peer}``, op one of ``>= <= > <
  == between``; ``between`` takes ``value: [lo, hi]``) and ``headline: N`` for the README's table (its rows ordered by N).

A figure naming a JSON that is missing, or a key path the JSON does not have, is a one-line
:class:`RegistryError` naming the figure and the path.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGISTRY = "published.yaml"
OPS = {">=": "≥", "<=": "≤", ">": ">", "<": "<", "==": "=", "between": "within"}
PROVENANCE = ("command", "date", "commit", "machine", "also_running")
_FORMAT = re.compile(r"^(f[0-4]|pct[0-2]|x2|e1)$")


class RegistryError(ValueError):
    """A registry entry that does not match the results folder (one line: the entry and the path)."""


@dataclass(frozen=True)
class Value:
    """One number of a row: its label (a peer's name, or "" for ours) and the raw value."""

    name: str
    value: float


@dataclass(frozen=True)
class Row:
    """One published figure, resolved: our value, the peers', the target and the provenance strings."""

    id: str
    bench: str
    question: str
    ours: float
    peers: tuple[Value, ...]
    spec: dict[str, Any]
    target: dict[str, Any] | None
    provenance: dict[str, str] = field(default_factory=dict)
    headline: int = 0


def load(results_dir: Path) -> dict[str, Any]:
    path = results_dir / REGISTRY
    if not path.is_file():
        raise RegistryError(f"no registry {path}; expected the list of published figures there")
    reg = yaml.safe_load(path.read_text())
    if not isinstance(reg, dict) or not isinstance(reg.get("groups"), list):
        raise RegistryError(f"{path}: expected a mapping with 'files' and a list 'groups'")
    return reg


class _Jsons:
    """The result JSONs, each read once."""

    def __init__(self, results_dir: Path) -> None:
        self.dir, self._cache = results_dir, {}

    def get(self, file: str, where: str) -> Any:
        if file not in self._cache:
            path = self.dir / file
            if not path.is_file():
                raise RegistryError(f"{where}: no JSON {path}")
            self._cache[file] = json.loads(path.read_text())
        return self._cache[file]

    def number(self, file: str, key: str, where: str) -> float:
        node = self.get(file, where)
        for part in str(key).split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise RegistryError(f"{where}: {self.dir / file} has no key {key!r} (no {part!r})")
        if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
            raise RegistryError(f"{where}: {self.dir / file} key {key!r} is {node!r}; expected a number")
        return float(node)


def _date(iso: str) -> str:
    return iso[:16].replace("T", " ") + " UTC" if re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d", iso) else iso


def _own_provenance(block: dict[str, Any]) -> dict[str, str]:
    """The report's strings from a JSON's own ``provenance`` block (:mod:`nas.bench.provenance`)."""
    m, load = block.get("machine") or {}, block.get("load") or {}
    commit = block.get("commit")
    other = load.get("other_processes_cpus")
    return {
        "command": str(block.get("command", "")),
        "date": _date(str(block.get("date", ""))),
        "commit": "not a git checkout" if commit is None else f"{commit}{' (modified)' if block.get('dirty') else ''}",
        "machine": f"{m.get('platform', '?')}, {m.get('cpu', '?')}, {m.get('cores', '?')} cores",
        "also_running": (f"load average {load.get('load_1min_before')} → {load.get('load_1min_after')}; other "
                         f"processes used {'?' if other is None else f'{other:.2f}'} CPUs on average"),
    }


def provenance(reg: dict[str, Any], jsons: _Jsons, file: str, where: str) -> dict[str, str]:
    own = jsons.get(file, where)
    if isinstance(own, dict) and isinstance(own.get("provenance"), dict):
        return _own_provenance(own["provenance"])
    entry = (reg.get("files") or {}).get(file)
    if not isinstance(entry, dict):
        raise RegistryError(f"{where}: {file} has no provenance block and no entry under 'files' in {REGISTRY}")
    missing = [k for k in PROVENANCE if not entry.get(k)]
    if missing:
        raise RegistryError(f"{where}: files.{file} lacks {missing}; expected {list(PROVENANCE)}")
    return {k: str(entry[k]) for k in PROVENANCE}


def _check_spec(fig: dict[str, Any], where: str) -> None:
    for k in ("id", "question", "file", "key", "format"):
        if not fig.get(k):
            raise RegistryError(f"{where}: missing {k!r}; expected id, question, file, key, format")
    if not _FORMAT.match(str(fig["format"])):
        raise RegistryError(f"{where}: format {fig['format']!r}; expected f0-f4, pct0-pct2, x2 or e1")
    target = fig.get("target")
    if target is not None and (not isinstance(target, dict) or target.get("op") not in OPS
                               or ("value" in target) == ("peer" in target)):
        raise RegistryError(f"{where}: target {target!r}; expected {{op: one of {list(OPS)}, value or peer}}")


def rows(results_dir: Path) -> list[Row]:
    """Every figure of the registry, resolved against the JSONs, in registry order."""
    reg, jsons, out, seen = load(results_dir), _Jsons(results_dir), [], set()
    for group in reg["groups"]:
        for fig in group.get("figures") or []:
            where = f"{REGISTRY}: figure {fig.get('id')!r}"
            _check_spec(fig, where)
            if fig["id"] in seen:
                raise RegistryError(f"{where}: the id is used twice; expected unique ids")
            seen.add(fig["id"])
            ours = jsons.number(fig["file"], fig["key"], where)
            if fig.get("divide_by"):
                ours /= jsons.number(fig["divide_by"]["file"], fig["divide_by"]["key"], where)
            peers = tuple(Value(str(p["name"]), jsons.number(p.get("file", fig["file"]), p["key"], where))
                          for p in fig.get("peers") or [])
            out.append(Row(id=fig["id"], bench=group["bench"], question=fig["question"], ours=ours, peers=peers,
                           spec=fig, target=fig.get("target"), headline=int(fig.get("headline") or 0),
                           provenance=provenance(reg, jsons, fig["file"], where)))
    return out


def titles(results_dir: Path) -> list[tuple[str, str]]:
    """(bench, title) of every group, in registry order."""
    return [(g["bench"], g.get("title", g["bench"])) for g in load(results_dir)["groups"]]


def fmt(value: float, spec: dict[str, Any]) -> str:
    """The figure as the page prints it (deterministic: fixed decimals, no locale)."""
    never = spec.get("never_above")
    if never is not None and value > never:
        return "not reached"
    f, unit = str(spec["format"]), str(spec.get("unit", ""))
    if f.startswith("pct"):
        return f"{100 * value:,.{int(f[3:])}f}%"
    if f == "x2":
        return f"{value:.2f}x"
    if f == "e1":
        return f"{value:.1e}{unit}"
    return f"{value:,.{int(f[1:])}f}{unit}"


def met(row: Row) -> bool | None:
    """Whether our figure meets the row's target (unrounded values), None without a target."""
    t = row.target
    if t is None:
        return None
    if "peer" in t:
        ref = next((p.value for p in row.peers if p.name == t["peer"]), None)
        if ref is None:
            raise RegistryError(f"{REGISTRY}: figure {row.id!r}: target peer {t['peer']!r} is not among its peers")
    else:
        ref = t["value"]
    v, op = row.ours, t["op"]
    if op == "between":
        return bool(ref[0] <= v <= ref[1])
    return bool({">=": v >= ref, "<=": v <= ref, ">": v > ref, "<": v < ref, "==": v == ref}[op])


def _plain(value: float, spec: dict[str, Any]) -> str:
    """A target as written: no padding digits (``≤ 300 s``, ``≥ 97%``, ``≤ 1e-04``)."""
    f, unit = str(spec["format"]), str(spec.get("unit", ""))
    if f.startswith("pct"):
        return f"{100 * value:g}%"
    if f == "x2":
        return f"{value:g}x"
    if f == "e1":
        return f"{value:.0e}{unit}"
    return f"{value:,g}{unit}"


def target_text(row: Row) -> str:
    t = row.target
    if t is None:
        return "—"
    if "peer" in t:
        return f"{OPS[t['op']]} {t['peer']}"
    if t["op"] == "between":
        return f"{_plain(t['value'][0], row.spec)}–{_plain(t['value'][1], row.spec)}"
    return f"{OPS[t['op']]} {_plain(float(t['value']), row.spec)}"
