"""Workers: several processes sharing one run directory (or one Optuna study), and how they stay out of each
other's way. Start here to understand them.

A *worker* is any process of the product working on a run directory another one also works on: the same
``hwnas`` command started N times (``hydra/launcher`` multirun, a cluster array, by hand), or a benchmark's
process pool. Nothing is shared in memory; everything goes through files (and, for Optuna, the study's storage):

* **Stage locks** (:meth:`nas.rundir.StageMarkers.lock`): a stage runs once, under ``stages/<name>.lock``; the
  other workers wait for its marker and meanwhile *help* (the stage's ``help``: one unit of the holder's work).
* **Keyed folders** (:class:`KeyedFiles`): one file per key (an arch, ``strategy|arch``) in a folder valid for
  one setting (a supernet checkpoint, an export setting); a changed setting empties the folder. Every file is
  written under a process-unique temporary name and renamed (``latency_luts.files``), so no worker sees or
  leaves half a file. The
  measure and search stages' timed ONNX files (``timing_onnx/``), the search's real evaluations
  (``search_evaluations/``) and ``hwnas-bench bench=search_supernet``'s evaluation cache are keyed folders.
* **The evaluation journal** (:class:`EvaluationJournal`): over a keyed folder, a worker *claims* a key before
  evaluating it (``<key>.claim``, created exclusively, holding ``host:pid``), keeps the claim alive with a
  *heartbeat* (its mtime, touched while it evaluates), *records* the result (``<key>.json``) and gives the claim
  back. A claim whose owner is dead (its pid is gone on this host) or silent for ``grace`` seconds is *stale*:
  exactly one worker takes it over. The holder of a stage *publishes* its batch (``search_batch.json``); the
  waiting workers *take* unclaimed keys from it, so one batch is spread over every worker.
* **A shared study** (:class:`StudyWorkers`, :class:`StudyBudget`): Optuna trials carry their worker and a
  heartbeat; a dead worker's running trial is failed and enqueued again; the budget counts the whole study's
  evaluations, not one worker's (:func:`nas.search.run_budget` asks a strategy's :class:`Budget` how much room
  is left).

Resume follows from the same files: an evaluation recorded by any worker (or by a killed run) is never repeated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from latency_luts.files import atomic_path
from nas.rundir import file_stem, owner_gone, this_process, write_json_atomic

log = logging.getLogger(__name__)


class KeyedFiles:
    """A folder of files keyed by text, valid for one ``setting`` (a JSON-able dict, kept in ``key_file``,
    by default ``<folder>/key.json``): opened with another setting, the folder's files are removed first."""

    def __init__(self, folder: Path, setting: dict[str, Any], key_file: Path | None = None) -> None:
        self.dir, self.setting = Path(folder), dict(setting)
        self.key_file = Path(key_file) if key_file is not None else self.dir / "key.json"
        try:
            same = json.loads(self.key_file.read_text()) == json.loads(json.dumps(self.setting, default=str))
        except (OSError, ValueError):
            same = False
        self.matched = same  # the folder was written for this very setting
        self.reset = not same and self.dir.is_dir() and any(p != self.key_file for p in self.dir.iterdir())
        if self.reset:
            removed = self.clear()
            log.info("%s: its setting changed; removed %d old files", self.dir, removed)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not same:
            write_json_atomic(self.key_file, self.setting)

    def clear(self) -> int:
        """Remove every file of the folder (not its key file); returns how many."""
        n = 0
        for p in list(self.dir.iterdir()) if self.dir.is_dir() else ():
            if p == self.key_file:
                continue
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
        return n

    def path(self, key: str, suffix: str = ".json") -> Path:
        return self.dir / f"{file_stem(key)}{suffix}"

    def put(self, key: str, suffix: str, write: Callable[[Path], None]) -> Path:
        """The key's file, unless present written by ``write(temp_path)`` to a process-, thread- and call-unique
        temporary name ending in ``.part<suffix>`` (an exporter may read the suffix), then renamed into place."""
        path = self.path(key, suffix)
        if not path.is_file():
            with atomic_path(path, suffix=f".part{suffix}") as tmp:
                write(tmp)
        return path

    def write_json(self, key: str, row: dict[str, Any]) -> None:
        write_json_atomic(self.path(key), row)

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None

    def rows(self) -> list[dict[str, Any]]:
        """Every JSON row of the folder (every worker's), the key file left out."""
        out = []
        for p in self.dir.glob("*.json") if self.dir.is_dir() else ():
            if p == self.key_file:
                continue
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):  # pragma: no cover - written atomically; only a foreign file lands here
                log.warning("%s: skipped unreadable %s", self.dir, p)
        return out


class EvaluationJournal:
    """Claims and records of evaluations over a :class:`KeyedFiles` folder (see the module doc).

    ``claim(key)`` -> True if this process now holds the key (a stale claim is taken over); ``record(key, row)``
    writes its result; ``release()`` gives this process's claims back; ``heartbeat()`` keeps them alive while a
    long evaluation runs (and gives them back if it fails); ``publish_batch`` / ``take_from_batch`` spread one
    worker's batch over the others.
    """

    def __init__(self, files: KeyedFiles, grace: float = 60.0) -> None:
        self.files, self.grace = files, float(grace)
        self.held: list[Path] = []

    def claim(self, key: str) -> bool:
        path = self.files.path(key, ".claim")
        self.files.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if not self.stale(path):
                    return False
                try:  # exactly one process wins the rename of a stale claim
                    os.rename(path, path.with_name(f"{path.name}.stale.{os.getpid()}"))
                except FileNotFoundError:
                    return False
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(this_process())
            self.held.append(path)
            return True
        return False

    def stale(self, path: Path) -> bool:
        """Whether a claim's owner is dead here, silent for ``grace`` seconds, or an earlier session of this
        very process."""
        try:
            owner, age = path.read_text().strip(), time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if owner == this_process():
            return path not in self.held
        return bool(owner_gone(owner)) or age > self.grace

    def release(self, key: str | None = None) -> None:
        """Give back the claim of ``key`` (or every claim this process holds)."""
        keep = []
        for p in self.held:
            if key is None or p == self.files.path(key, ".claim"):
                p.unlink(missing_ok=True)
            else:
                keep.append(p)
        self.held = keep

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Touch the held claims every ``grace / 6`` seconds (at least 1 s) while the body runs; an error or an
        interrupt in it gives every claim back at once."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(max(1.0, self.grace / 6)):
                for p in list(self.held):
                    try:
                        os.utime(p)
                    except FileNotFoundError:
                        pass

        thread = threading.Thread(target=beat, daemon=True, name="claim-heartbeat")
        thread.start()
        try:
            yield
        except BaseException:
            self.release()
            raise
        finally:
            stop.set()

    def record(self, key: str, row: dict[str, Any]) -> None:
        self.files.write_json(key, row)

    def rows(self) -> list[dict[str, Any]]:
        return self.files.rows()

    @staticmethod
    def publish_batch(path: Path, batch: dict[str, Any]) -> None:
        """What the holder evaluates now (``batch["keys"]`` and anything the takers need), for the others."""
        write_json_atomic(path, batch)

    def take_from_batch(self, path: Path, done: Callable[[str], bool],
                        where: dict[str, Any] | None = None) -> tuple[dict[str, Any], str] | None:
        """Claim one key of the published batch (one whose fields match ``where``) that is not ``done`` and
        nobody holds: (batch, key), or None."""
        try:
            batch = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        if any(batch.get(k) != v for k, v in (where or {}).items()):
            return None
        for key in batch.get("keys", ()):
            if not done(key) and self.claim(key):
                if done(key):  # recorded between the look and the claim
                    self.release(key)
                    continue
                return batch, key
        return None


# ---------------------------------------------------------------------------------------------- budgets
class Budget:
    """A budget of ``total`` evaluations that this process alone spends (``done`` of them recovered already).

    :func:`nas.search.run_budget` asks :meth:`room` before each ask (``None``: finished; ``0``: the rest is in
    other workers' hands, :meth:`wait`; ``n > 0``: evaluate at most ``n`` new archs) and :meth:`admit` after.
    """

    shared = False

    def __init__(self, total: int, done: int = 0) -> None:
        self.total, self.done = int(total), int(done)

    def room(self, evaluated: int) -> int | None:
        """``evaluated``: archs this call of the driver evaluated so far."""
        left = self.total - self.done - int(evaluated)
        return left if left > 0 else None

    def spent(self) -> int:
        """Evaluations done before the driver started (recovered ones)."""
        return self.done

    @property
    def retried(self) -> int:
        """Dead workers' evaluations this worker took over (none without other workers)."""
        return 0

    def admit(self, archs: list[Any]) -> list[Any]:
        return archs

    def wait(self) -> None:
        time.sleep(1.0)


class StudyWorkers:
    """The workers of one Optuna study as seen by one of them: who it is (``host:pid:session``), the heartbeat
    of the trials it waits on, which other workers are dead, and their trials enqueued again."""

    def __init__(self, study: Any, storage: Any, grace_period: float, heartbeat_interval: float) -> None:
        self.study, self.storage = study, storage
        self.grace_period, self.heartbeat_interval = float(grace_period), float(heartbeat_interval)
        self.worker = f"{this_process()}:{uuid.uuid4().hex[:8]}"
        self.retried = 0  # dead workers' trials this worker re-enqueued

    def start_heartbeat(self, owner: Any, pending: Callable[[Any], Sequence[Any]]) -> None:
        """Refresh the heartbeat of ``pending(owner)``'s trials every ``heartbeat_interval`` seconds, until
        ``owner`` is gone."""
        stop = threading.Event()
        ref = weakref.ref(owner)

        def beat() -> None:
            while not stop.wait(self.heartbeat_interval):
                obj = ref()
                if obj is None:
                    return
                for trial in list(pending(obj)):
                    try:
                        trial.set_user_attr("heartbeat", time.time())
                    except Exception:  # told or failed meanwhile: nothing to keep alive
                        pass
                del obj

        threading.Thread(target=beat, daemon=True, name="optuna-heartbeat").start()
        weakref.finalize(owner, stop.set)

    @staticmethod
    def pid_of(trial: Any) -> int | None:
        """The pid of the worker that asked ``trial`` (``host:pid:session``), None when it has none."""
        pid = str(trial.user_attrs.get("worker", "")).split(":")[1:2]
        return int(pid[0]) if pid and pid[0].isdigit() else None

    def mark(self, trial: Any) -> None:
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("heartbeat", time.time())

    def dead(self, t: Any, now: float) -> bool:
        owner = str(t.user_attrs.get("worker", ""))
        if owner and owner.rpartition(":")[0] == this_process():
            return owner != self.worker  # an earlier session of this very process: it is not evaluating
        if owner and owner_gone(owner):
            return True
        beat = t.user_attrs.get("heartbeat")
        last = float(beat) if beat is not None else (t.datetime_start.timestamp() if t.datetime_start else now)
        return now - last > self.grace_period

    def reap(self, others: Sequence[Any]) -> int:
        """Fail the running trials of dead workers among ``others`` and enqueue each again (same parameters):
        another ask, by any worker, evaluates it. Returns how many this call re-enqueued."""
        import optuna

        now, n = time.time(), 0
        for t in others:
            if not self.dead(t, now):
                continue
            try:  # whoever fails it first re-enqueues it; a worker that loses the race gets an error here
                self.storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            except Exception:
                continue
            if t.params and "arch" in t.user_attrs and not t.user_attrs.get("yielded"):
                self.study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
                n += 1
                log.info("optuna: trial %d of dead worker %s failed and enqueued again (%s)", t.number,
                         t.user_attrs.get("worker", "?"), t.user_attrs["arch"])
        self.retried += n
        return n


class StudyBudget(Budget):
    """A budget of ``total`` evaluations that every worker of one study spends together.

    ``state()`` -> (distinct archs completed study-wide, running trials of every worker, this worker's pending
    archs -> their trial numbers), read fresh from the study (the strategy's view of it); dead workers' trials
    are reaped on the way. A worker asks only while completed plus other live workers' trials are short of
    ``total``, waits while the rest is in flight, and finishes once the study holds ``total``.
    """

    shared = True

    def __init__(self, total: int, workers: StudyWorkers,
                 state: Callable[[], tuple[int, list[Any], dict[Any, int]]]) -> None:
        super().__init__(total)
        self.workers, self.state = workers, state

    def _live_others(self, running: list[Any], mine: set[int]) -> set[int]:
        now = time.time()
        return {t.number for t in running if t.number not in mine and not self.workers.dead(t, now)}

    def room(self, evaluated: int) -> int | None:
        complete, running, pending = self.state()
        mine = set(pending.values())
        self.workers.reap([t for t in running if t.number not in mine])  # reaped ones are dead: not counted below
        if complete >= self.total:
            return None
        return max(self.total - complete - len(self._live_others(running, mine)), 0)

    def admit(self, archs: list[Any]) -> list[Any]:
        """Two workers that both saw room for one more evaluation have both asked a trial by now, and each
        sees the other's: the live running trials that reached the study first (lower numbers) take the room
        left, the rest are not evaluated (told ``unevaluated``), so the study never overshoots the budget."""
        complete, running, pending = self.state()
        mine = set(pending.values())
        live = sorted(mine | self._live_others(running, mine))
        first = set(live[:max(self.total - complete, 0)])
        return [a for a in archs if pending[a] in first]
