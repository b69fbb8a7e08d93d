"""The one atomic writer: unique temporary names, all-or-nothing replacement, no leftovers."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import pytest

from latency_luts.files import (
    atomic_path,
    temp_beside,
    write_bytes_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)


def test_writers_round_trip(tmp_path: Path) -> None:
    write_bytes_atomic(tmp_path / "a" / "b.bin", b"\x00\x01")
    write_text_atomic(tmp_path / "t.txt", "héllo")
    write_json_atomic(tmp_path / "j.json", {"x": [1, 2], "p": tmp_path})
    write_csv_atomic(tmp_path / "c.csv", [{"a": 1, "b": "x"}, {"a": 2}], ["a", "b"])
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "j.json").read_text()) == {"x": [1, 2], "p": str(tmp_path)}
    with open(tmp_path / "c.csv", newline="") as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x"}, {"a": "2", "b": ""}]
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["b.bin", "c.csv", "j.json", "t.txt"]


def test_failed_write_leaves_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    write_json_atomic(target, {"old": 1})
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_temp_names_unique_per_call_and_thread(tmp_path: Path) -> None:
    names: list[str] = []
    lock = threading.Lock()

    def grab() -> None:
        for _ in range(50):
            n = temp_beside(tmp_path / "f.csv").name
            with lock:
                names.append(n)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 200 and all(n.startswith("f.csv.") and n.endswith(".tmp") for n in names)
    assert temp_beside(tmp_path / "w.npz", suffix=".npz").suffix == ".npz"


def test_concurrent_writers_of_one_target(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for k in range(30):
                write_json_atomic(target, {"writer": i, "k": k, "pad": "x" * 5000})
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(target.read_text())["k"] == 29
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]
