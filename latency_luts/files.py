"""Atomic file writes: the one way this project writes a file that another process (or a killed run) may read.

Every writer goes through :func:`atomic_path`: the content is written to a temporary name beside the target
that is unique to this process, thread and call, then renamed over the target (``os.replace``, atomic on one
filesystem). A reader sees the old file or the new one, never half a file; several workers writing the same
target never share a temporary file; a writer that fails leaves no temporary file behind. No fsync: the
guarantee is against concurrent readers and killed processes, not against power loss.

Standard library only: the measurement kit's agent (onnxruntime + numpy on the device) imports it too.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_calls = itertools.count()


def temp_beside(path: str | Path, suffix: str = ".tmp") -> Path:
    """A temporary name beside ``path`` that no other process, thread or call uses: ``NAME.PID-TID-N`` +
    ``suffix`` (``.tmp`` by default, so globs for the target's extension never see it; a writer that needs
    the extension, like ``np.savez``, passes it)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}-{next(_calls)}{suffix}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to (``torch.save``, an ONNX export, any writer that
    takes a path); on a clean exit it replaces ``path``, on an error it is removed and ``path`` is untouched.
    The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, default: Any = str) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (``default=str`` writes paths and the like as text)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=default))


def write_csv_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write dict ``rows`` as CSV with header ``columns`` to ``path`` atomically (keys outside ``columns``
    are an error, missing keys are empty cells)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(columns))
            w.writeheader()
            for r in rows:
                w.writerow(r)
    return Path(path)
