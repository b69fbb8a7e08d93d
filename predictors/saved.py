"""Saved predictors: one tagged, data-only file format for every predictor and featurizer a run saves.

A saved predictor is a skops file (a zip of JSON + arrays, ``.skops``) holding
``{"format": "hwnas-predictor", "version": 1, "class": "<module>.<Class>", "predictor": <the object>}``.
Reading never unpickles: skops rebuilds objects from data, and :func:`read` first lists every type the file
names and refuses, in one line, any that is not a class defined in this project's ``predictors`` /
``search_spaces`` packages or in scikit-learn (skops itself trusts only plain containers, numpy arrays and
dtypes, numpy/scipy ufuncs and random generators). A file written by an older version (a pickle) is refused
with a line naming the converter, ``hwnas-convert-predictor`` (:mod:`predictors.convert`), for files the user
trusts.
"""

from __future__ import annotations

import importlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

from latency_luts.files import write_bytes_atomic

FORMAT = "hwnas-predictor"
VERSION = 1
SUFFIX = ".skops"
ALLOWED_MODULES = ("predictors.", "search_spaces.", "sklearn.")
CONVERTER = "hwnas-convert-predictor"


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def save(obj: Any, path: str | os.PathLike, layout: int | None = None) -> Path:
    """Write ``obj`` (a predictor or featurizer) to ``path`` atomically in the tagged format; ``layout`` is the
    class's own version of its fitted attributes, checked by :func:`read`."""
    import skops.io as sio

    blob = {"format": FORMAT, "version": VERSION, "class": qualname(type(obj)), "layout": layout, "predictor": obj}
    return write_bytes_atomic(path, sio.dumps(blob))


def convert_hint(path: str | os.PathLike) -> str:
    p = Path(path)
    return f"{CONVERTER} --trusted {p} {p.with_suffix(SUFFIX)}"


def _allowed(name: str) -> bool:
    """Whether the type or callable ``module.Name`` a file names is a class defined in an allowed package
    (checked on the string before anything is imported, then on the resolved object: a name a module merely
    imports, like ``predictors.x.os``, is not a class defined there)."""
    if not name.startswith(ALLOWED_MODULES):
        return False
    module, _, attr = name.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and qualname(obj) == name and obj.__module__.startswith(ALLOWED_MODULES)


def _refusal(path: Path, data: bytes) -> str | None:
    """Why ``data`` is not a file :func:`read` may open, in one line, or None."""
    if data[:1] == b"\x80":
        return (f"{path} is a pickled predictor of an older version, which is never unpickled here (unpickling "
                f"runs code from the file); if you trust the file, convert it: {convert_hint(path)}")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        old = f" (an older version's .pkl you trust: {convert_hint(path)})" if path.suffix == ".pkl" else ""
        return f"{path} is not a saved predictor; expected a {SUFFIX} file ({FORMAT}) written by hwnas{old}"
    import skops.io as sio

    try:
        names = sio.get_untrusted_types(data=data)
    except Exception as e:  # noqa: BLE001 - any malformed archive is the same one-line refusal
        return f"{path} is not a saved predictor ({type(e).__name__}); expected a {SUFFIX} file ({FORMAT})"
    bad = [n for n in names if not _allowed(n)]
    if bad:
        return (f"{path} names type {bad[0]!r}, which a saved predictor may not hold; expected only classes of "
                f"predictors, search_spaces and scikit-learn, numpy arrays and plain containers")
    return None


def read(path: str | os.PathLike, expected: type | tuple[type, ...] | None = None, layout: int | None = None) -> Any:
    """The object saved in ``path`` by :func:`save`, refusing (``ValueError``, one line naming the file) a file
    that is missing, not in the format, a pickle, names a type off the allow-list, holds another class than
    ``expected`` or, when ``layout`` is given, another layout of its fitted attributes."""
    import skops.io as sio

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read saved predictor {path} ({e.strerror}); expected a {SUFFIX} file") from None
    why = _refusal(path, data)
    if why:
        raise ValueError(why)
    try:
        blob = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    except Exception as e:  # noqa: BLE001 - a file that names only allowed types yet does not rebuild
        raise ValueError(f"{path} is not a readable saved predictor ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a saved predictor; expected a {SUFFIX} file ({FORMAT}) written by hwnas")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path} has {FORMAT} version {blob.get('version')!r}; expected {VERSION}")
    obj = blob["predictor"]
    wanted = expected if isinstance(expected, tuple) else (expected,) if expected else ()
    if wanted and not isinstance(obj, wanted):
        names = " or ".join(t.__name__ for t in wanted)
        raise ValueError(f"{path} does not hold a saved {names} (it holds a {type(obj).__name__})")
    if layout is not None and blob.get("layout") != layout:
        raise ValueError(f"{path} holds a {type(obj).__name__} of layout {blob.get('layout')!r}; expected {layout} "
                         "(save it again with this version)")
    return obj
