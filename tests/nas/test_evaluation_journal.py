"""The workers' shared files (nas.workers): keyed folders and the evaluation journal, with real processes as
the other workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nas.rundir import file_stem
from nas.workers import Budget, EvaluationJournal, KeyedFiles


def test_a_keyed_folder_keeps_its_files_for_one_setting_and_empties_for_another(tmp_path: Path) -> None:
    files = KeyedFiles(tmp_path / "f", {"ckpt": 1})
    files.write_json("a|x", {"v": 1})
    path = files.put("arch-1", ".onnx", lambda tmp: tmp.write_bytes(b"model"))
    assert path == tmp_path / "f" / f"{file_stem('arch-1')}.onnx" and path.read_bytes() == b"model"
    assert files.put("arch-1", ".onnx", lambda tmp: tmp.write_bytes(b"other")).read_bytes() == b"model"  # kept
    same = KeyedFiles(tmp_path / "f", {"ckpt": 1})
    assert same.matched and not same.reset and same.rows() == [{"v": 1}] and path.is_file()
    other = KeyedFiles(tmp_path / "f", {"ckpt": 2})
    assert not other.matched and other.reset and other.rows() == [] and not path.exists()
    assert json.loads((tmp_path / "f" / "key.json").read_text()) == {"ckpt": 2}


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path) -> None:
    files = KeyedFiles(tmp_path / "f", {"k": 0})

    def broken(tmp: Path) -> None:
        assert tmp.name.endswith(".part.onnx") and str(os.getpid()) in tmp.name  # process-unique, keeps the suffix
        tmp.write_bytes(b"half")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        files.put("arch", ".onnx", broken)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["key.json"]


def _owner(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{proc.pid}"


def test_claims_exclude_live_workers_and_are_taken_over_from_dead_or_silent_ones(tmp_path: Path) -> None:
    journal = EvaluationJournal(KeyedFiles(tmp_path / "j", {}), grace=30.0)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        journal.files.path("held", ".claim").write_text(_owner(live))
        journal.files.path("orphan", ".claim").write_text(_owner(dead))
        silent = journal.files.path("silent", ".claim")
        silent.write_text(f"elsewhere:{live.pid}")  # another host: only its heartbeat tells
        os.utime(silent, (time.time() - 31, time.time() - 31))
        assert not journal.claim("held")
        assert journal.claim("orphan") and journal.claim("silent") and journal.claim("free")
        assert not journal.claim("free")  # held by this very session now
        other = subprocess.run(  # another worker process on the same folder
            [sys.executable, "-c", "import sys; from pathlib import Path; from nas.workers import EvaluationJournal, "
             "KeyedFiles; j = EvaluationJournal(KeyedFiles(Path(sys.argv[1]), {}), grace=30.0); "
             "print([j.claim(k) for k in ('orphan', 'silent', 'free', 'new')])", str(tmp_path / "j")],
            capture_output=True, text=True, check=True)
        assert other.stdout.split("\n")[-2] == "[False, False, False, True]"
    finally:
        live.kill()
    journal.release("free")
    assert not journal.files.path("free", ".claim").exists() and journal.files.path("orphan", ".claim").is_file()
    journal.release()
    assert sorted(p.name for p in (tmp_path / "j").glob("*.claim")) == sorted(
        f"{file_stem(k)}.claim" for k in ("held", "new"))  # the other workers' claims stay


def test_the_heartbeat_keeps_claims_fresh_and_an_error_gives_them_back(tmp_path: Path) -> None:
    journal = EvaluationJournal(KeyedFiles(tmp_path / "j", {}), grace=0.1)  # touched every second (the floor)
    assert journal.claim("a")
    path = journal.files.path("a", ".claim")
    os.utime(path, (0, 0))
    with journal.heartbeat():
        time.sleep(1.5)
    assert time.time() - path.stat().st_mtime < 2
    with pytest.raises(KeyboardInterrupt), journal.heartbeat():
        raise KeyboardInterrupt
    assert not path.exists() and journal.held == []


def test_a_published_batch_is_shared_key_by_key(tmp_path: Path) -> None:
    holder = EvaluationJournal(KeyedFiles(tmp_path / "j", {}))
    batch = tmp_path / "batch.json"
    assert holder.take_from_batch(batch, done=lambda k: False) is None  # nothing published
    holder.publish_batch(batch, {"strategy": "s", "round": 3, "keys": ["a", "b", "c", "d"]})
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder.files.path("a", ".claim").write_text(_owner(live))  # another worker is evaluating it
        taken = holder.take_from_batch(batch, done=lambda k: k == "b", where={"strategy": "s"})
        assert taken == ({"strategy": "s", "round": 3, "keys": ["a", "b", "c", "d"]}, "c")
        assert holder.take_from_batch(batch, done=lambda k: k == "b")[1] == "d"  # a held, b done, c taken
        assert holder.take_from_batch(batch, done=lambda k: k == "b") is None
        holder.release()
        assert holder.take_from_batch(batch, done=lambda k: False, where={"strategy": "other"}) is None
    finally:
        live.kill()
    holder.record("s|c", {"arch": "c", "v": 0.5})
    assert holder.rows() == [{"arch": "c", "v": 0.5}]


def test_a_local_budget_counts_recovered_and_new_evaluations() -> None:
    b = Budget(5, done=2)
    assert (b.room(0), b.room(2), b.room(3), b.spent(), b.shared) == (3, 1, None, 2, False)
    assert b.admit(list(np.arange(3))) == [0, 1, 2]
