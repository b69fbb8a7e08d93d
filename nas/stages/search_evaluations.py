"""The search stage's real evaluations: subnet accuracy (BN recalibrated) on val and test, journalled as they
finish, over the workers' evaluation journal (:class:`nas.workers.EvaluationJournal`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from nas.rundir import RunContext, this_process, write_csv_atomic
from nas.stages.common import evaluate_archs
from nas.workers import EvaluationJournal, KeyedFiles

log = logging.getLogger(__name__)
BATCH = "search_batch.json"  # the batch the search stage's holder is evaluating now, for other workers to share


class RealEvaluations:
    """Accuracy of subnets extracted from the supernet (BN recalibrated), journalled as they finish.

    Each evaluation is one small JSON file in ``search_evaluations/`` keyed by strategy and arch (a keyed
    folder, :class:`nas.workers.KeyedFiles`): workers sharing the run directory never clobber each other, and an
    arch whose accuracy any of them recorded is never evaluated again; an arch is claimed (keyed by the arch)
    before it is evaluated. ``search_evaluations.csv`` is the journal's table, rewritten from those files after
    every batch. The journal belongs to one supernet checkpoint (``search_evaluations.json``): a retrained
    supernet starts a fresh one.
    """

    COLUMNS = ("arch", "strategy", "round", "val_accuracy", "test_accuracy", "worker")
    DIR = "search_evaluations"

    def __init__(self, ctx: RunContext, strategy: str) -> None:
        self.ctx, self.strategy = ctx, strategy
        self.path = ctx.path("search_evaluations.csv")
        key = {**ctx.checkpoint_key(), "calib_images": int(ctx.cfg.predictor.calib_images)}
        files = KeyedFiles(ctx.path(self.DIR), key, key_file=ctx.path("search_evaluations.json"))
        if not files.matched and self.path.is_file():
            log.info("search: the supernet changed since %s was written; starting a fresh journal", self.path)
            self.path.unlink()
        elif files.matched and self.path.is_file() and not files.rows():  # a table written before per-arch files
            for i, row in enumerate(pd.read_csv(self.path).to_dict("records")):
                files.write_json(f"{row['strategy']}|{row['arch']}", {**row, "t": float(i)})
        grace = OmegaConf.select(ctx.cfg, "search.strategy.grace_period", default=None)
        self.journal = EvaluationJournal(files, float(grace or 60.0))
        self.dir: Path = files.dir
        self.acc: dict[str, tuple[float, float]] = {}
        self.rows: list[dict[str, Any]] = []
        self.read()
        if self.rows:
            log.info("search: %d real evaluations found in %s (none will be repeated)", len(self.rows), self.dir)
        self._supernet = None

    def read(self) -> None:
        """Every worker's evaluations on disk, in the order they finished."""
        self.rows = sorted(self.journal.rows(), key=lambda r: float(r.get("t", 0.0)))
        for r in self.rows:
            self.acc.setdefault(r["arch"], (float(r["val_accuracy"]), float(r["test_accuracy"])))

    def mine(self) -> list[str]:
        """This strategy's journalled archs, in order."""
        return [r["arch"] for r in self.rows if r["strategy"] == self.strategy]

    def claim(self, key: str) -> bool:
        """Claim an arch nobody evaluated; False if another live worker holds it or its result is in."""
        if not self.journal.claim(key):
            return False
        self.read()  # a worker may have journalled it and dropped its claim since this process last looked
        if key in self.acc:
            self.journal.release(key)
            return False
        return True

    def evaluate_one(self, arch: Any, desc: str) -> None:
        """Evaluate an arch this process has claimed (the claim is kept alive meanwhile, given back on error)."""
        if self._supernet is None:
            self._supernet = self.ctx.load_supernet()
        with self.journal.heartbeat():
            res = evaluate_archs(self.ctx, self._supernet, [arch], ("val", "test"), desc=desc, progress=False)
        self.acc[arch.to_string()] = (float(res["val"][0]), float(res["test"][0]))

    def evaluate(self, archs: Sequence[Any], round_: int, desc: str, wait: bool = False) -> np.ndarray:
        """Validation accuracy of each arch; evaluates (and journals) only those nobody evaluated, claiming
        one arch at a time so that other workers can take the rest of the batch (:meth:`help_with`). An arch
        another live worker is evaluating is waited for (``wait``: its journal row, or its claim going stale,
        which this process then takes over) or answered ``nan`` (not evaluated here; the strategy yields it)."""
        self.read()
        keys = [a.to_string() for a in archs]
        todo = list({k: a for a, k in zip(archs, keys, strict=True) if k not in self.acc}.values())
        with tqdm(total=len(todo), desc=desc, unit="subnet", leave=False) as bar:
            while True:
                mine = 0
                for a in todo:
                    if a.to_string() not in self.acc and self.claim(a.to_string()):
                        self.evaluate_one(a, desc)
                        mine += 1
                self.read()
                left = [a for a in todo if a.to_string() not in self.acc]
                bar.update(len(todo) - len(left) - bar.n)
                if not left or not wait:
                    break
                if not mine:
                    time.sleep(0.5)  # the rest is with other live workers: wait for their journal rows
        busy = {k for k in keys if k not in self.acc}
        if busy:
            log.info("search: %d of %d subnets are being evaluated by another worker; not repeated here",
                     len(busy), len(keys))
        self.record([k for k in keys if k not in busy], round_)
        return np.array([self.acc[k][0] if k in self.acc else np.nan for k in keys])

    def record(self, keys: Sequence[str], round_: int) -> None:
        """Journal each of these evaluated archs for this strategy, once (rows others wrote count), then give
        back this process's claims and rewrite the journal's table."""
        journalled = set(self.mine())
        now = time.time()
        for i, k in enumerate(keys):
            if k not in journalled:
                journalled.add(k)
                v, t = self.acc[k]
                row = {"arch": k, "strategy": self.strategy, "round": int(round_), "val_accuracy": v,
                       "test_accuracy": t, "worker": this_process(), "t": now + i * 1e-6}
                self.journal.record(f"{self.strategy}|{k}", row)
        self.read()
        self.journal.release()  # the results are journalled: the claims have done their work
        write_csv_atomic(self.path, pd.DataFrame(self.rows, columns=list(self.COLUMNS)))

    def publish(self, round_: int, archs: Sequence[Any]) -> None:
        """The batch this process (the stage's holder) evaluates now, for the waiting workers to share."""
        self.journal.publish_batch(self.ctx.path(BATCH), {"strategy": self.strategy, "round": int(round_),
                                                          "keys": [a.to_string() for a in archs]})

    def help_with(self) -> bool:
        """Evaluate and journal one unclaimed arch of the holder's published batch (``search_batch.json``) of this
        strategy; True if it did."""
        self.read()
        taken = self.journal.take_from_batch(self.ctx.path(BATCH), done=lambda k: k in self.acc,
                                             where={"strategy": self.strategy})
        if taken is None:
            return False
        batch, key = taken
        self.read()
        if key in self.acc:  # journalled between the look and the claim
            self.journal.release(key)
            return False
        round_ = int(batch["round"])
        self.evaluate_one(self.ctx.space.parse(key), f"{self.strategy}: help with batch {round_ + 1}")
        self.record([key], round_)
        log.info("search: evaluated %s of the holder's batch %d", key, round_ + 1)
        return True
