"""Quiet engine calls: converters and runtimes write notices a user cannot act on straight to the process's
stderr (native code, fd 2) or through Python loggers and warnings. One capture for every engine's device."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence

_STDERR_LOCK = threading.RLock()  # fd 2 is the process's: one capture at a time, whichever engine asks


@contextlib.contextmanager
def quiet_engine(chatty: Sequence[str], log: logging.Logger, captured: list[str] | None = None,
                 python_stderr: bool = False) -> Iterator[None]:
    """Capture fd 2 (and ``sys.stderr`` with ``python_stderr``) and python warnings; raise the ``chatty``
    loggers to ERROR. On an error the captured text is written back to stderr (the engine's own diagnostics of
    the failure) unless ``captured`` is given: then its lines are appended there for the caller's one-line
    error. Otherwise the text goes to ``log`` at DEBUG."""
    loggers = [logging.getLogger(n) for n in chatty]
    levels = [lg.level for lg in loggers]
    stream = io.StringIO()
    with _STDERR_LOCK, tempfile.TemporaryFile() as cap, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(cap.fileno(), 2)
        failed = False
        try:
            with contextlib.redirect_stderr(stream) if python_stderr else contextlib.nullcontext():
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            cap.seek(0)
            text = (cap.read().decode("utf-8", "replace") + "\n" + stream.getvalue()).strip()
            if captured is not None:
                captured.extend(text.splitlines())
            if text and failed and captured is None:
                sys.stderr.write(text + "\n")
            elif text:
                log.debug("engine output: %s", text)
