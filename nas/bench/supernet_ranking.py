"""bench=supernet_ranking: does the supernet rank subnets like training them alone would?

On digits (small-image setting) by default: train the supernet (sandwich rule, in-place distillation) for ``bench.epochs``;
draw ``bench.n_archs`` random subnets; score each by its supernet-inherited accuracy after BatchNorm
recalibration, and by training it stand-alone from scratch for the same short budget (same epochs, batch,
schedule, augmentation; ``bench.standalone_seeds`` seeds averaged). Both are scored on the held-out images
(validation + test, so ties are rarer). Output: ``spearman`` (inherited vs stand-alone; target >= 0.7),
``kendall``, ``spearman_nll`` (the same on held-out cross-entropy, which ties less than accuracy), the
stand-alone reference's own seed-to-seed Spearman (a ceiling for any ranking), and, for scale, the Spearman of the trivial size proxies (params, MACs) with stand-alone accuracy.

``bench.data`` names a ``conf/data`` option, loaded exactly as ``hwnas data=<name>`` loads it: ``digits`` (the
default: embedded, 8x8 images upsampled), ``fashion_mnist`` (Debian's IDX files, or ``bench.data_root``),
``cifar10``, ``mnist`` or ``image_folder`` from ``bench.data_root``; ``bench.data_limit`` keeps the first N
training images so the stand-alone runs fit a CPU budget. On digits every subnet reaches ~99% and the
stand-alone reference barely agrees with itself (see docs/benchmarks/supernet_ranking.md); a real task is where capacity separates
subnets.

``bench.sampling``: ``uniform`` draws the subnets with the space's uniform sampler (they cluster around the
middle of the size range); ``stratified`` draws a pool of 50 x n_archs uniform subnets, cuts it into n_archs
equal-count bins by MACs and takes one random member per bin, so the sample spans the space from its
smallest to its largest subnets the way a Pareto front does.

The work is journalled in ``bench.cache_dir``, keyed by every setting the figures depend on: the supernet's
training checkpoint (saved every few minutes, so an interrupted training resumes) and one journal line per
scored model (each subnet's inherited score, each stand-alone run). A rerun of the same command skips what is
journalled and continues with the rest; each stand-alone run is seeded by its (subnet, seed) alone, so a
resumed bench gives the figures of an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau, spearmanr
from tqdm.auto import tqdm

from nas.bench.config import as_dict, bench_config, digest
from nas.data import resize
from nas.rundir import build_data, write_json_atomic
from nas.training import TrainConfig, recalibrate_bn, train_standalone, train_supernet
from search_spaces import create_search_space

log = logging.getLogger(__name__)

SPACES = {  # bench.space -> constructor kwargs (classes and channels come from the data)
    "ofa_mbv3_small": {"name": "ofa_mbv3", "setting": "small"},
    "fbnet_small": {"name": "fbnet", "dataset": "cifar100", "input_size": 32},
}
def _load(cfg: Any):  # noqa: ANN202
    """The bench's dataset: ``bench.data`` names a ``conf/data`` option, built as ``hwnas data=<name>`` builds
    it; ``bench.data_root`` / ``bench.data_limit`` set its ``root`` / ``limit``."""
    limit = cfg.data_limit
    if limit is not None and int(limit) < 50:
        raise ValueError(f"bench.data_limit={limit} is invalid; expected null or at least 50 training images")
    settings: dict[str, Any] = {"seed": int(cfg.seed)}
    if cfg.data_root is not None:
        settings["root"] = str(cfg.data_root)
    if limit is not None:
        settings["limit"] = int(limit)
    try:
        return build_data(str(cfg.data), **settings)
    except ValueError as e:
        raise ValueError(f"bench.data={cfg.data}: {e}") from None


def _holdout(data) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    return torch.cat([data.x_val, data.x_test]), torch.cat([data.y_val, data.y_test])


@torch.no_grad()
def _score(space, model, arch, x_cal: torch.Tensor, holdout: tuple[torch.Tensor, torch.Tensor],  # noqa: ANN001
           batch_size: int = 512) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``holdout`` after BN recalibration on ``x_cal``, in batches."""
    r = space.resolution(arch)
    recalibrate_bn(model, x_cal, r)
    x, y = holdout
    model.eval()
    dev = next(model.parameters()).device  # stand-alone training runs on CUDA when there is one
    correct, nll = 0, 0.0
    for i in range(0, len(y), batch_size):
        logits = model(resize(x[i : i + batch_size], r).to(dev)).float().cpu()
        correct += int((logits.argmax(1) == y[i : i + batch_size]).sum())
        nll += float(F.cross_entropy(logits, y[i : i + batch_size], reduction="sum"))
    return correct / len(y), nll / len(y)


def _earlier_standalone(cfg: Any, data_name: str, archs: list) -> list[dict]:  # noqa: ANN401
    """The stand-alone scores of ``bench.standalone_from`` (an earlier result JSON) as journal records, after
    checking what the JSON can tell: same space, data, epochs, seeds, and the same sampled subnets."""
    path = Path(str(cfg.standalone_from))
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"bench.standalone_from={str(path)!r} cannot be read ({e}); expected a supernet_ranking "
                         "result JSON") from None
    want = {"bench": "supernet_ranking", "space": cfg.space, "data": data_name, "epochs": int(cfg.epochs),
            "standalone_seeds": int(cfg.standalone_seeds)}
    for k, v in want.items():
        if old.get(k) != v:
            raise ValueError(f"bench.standalone_from={str(path)!r} has {k}={old.get(k)!r}; expected {v!r} (the "
                             "stand-alone scores of other settings cannot be reused)")
    names = [a.to_string() for a in archs]
    if [r["arch"] for r in old.get("archs", [])] != names:
        raise ValueError(f"bench.standalone_from={str(path)!r} scored other subnets; expected the {len(names)} "
                         "this run samples (same n_archs, sampling and seed)")
    return [{"kind": "standalone", "subnet": r["arch"], "seed": s, "acc": acc, "nll": nll, "from": str(path)}
            for r in old["archs"] for s, (acc, nll) in enumerate(zip(r["standalone_accs"], r["standalone_nlls"]))]


def sample_subnets(space, n: int, sampling: str, rng: np.random.Generator) -> list:  # noqa: ANN001
    """``n`` random subnets, uniform or stratified by MACs (see the module docstring)."""
    if sampling == "uniform":
        return space.sample_many(n, rng)
    pool = space.sample_many(50 * n, rng)
    order = np.argsort([space.macs(a) for a in pool], kind="stable")
    return [pool[int(rng.choice(b))] for b in np.array_split(order, n)]


def _check(cfg: Any) -> None:
    if str(cfg.sampling) not in ("uniform", "stratified"):
        raise ValueError(f"bench.sampling={cfg.sampling!r} is invalid; expected 'uniform' or 'stratified'")
    if cfg.space not in SPACES:
        raise ValueError(f"bench.space={cfg.space!r} is invalid; expected one of {sorted(SPACES)}")
    for key in ("n_archs", "epochs", "standalone_seeds"):
        if int(cfg[key]) < 1:
            raise ValueError(f"bench.{key}={cfg[key]} is invalid; expected a positive integer")
    if int(cfg.n_archs) < 3:
        raise ValueError(f"bench.n_archs={cfg.n_archs} is too small; expected >= 3 for a rank correlation")


class _Journal:
    """The scored models of one setting (``journal.jsonl`` in its cache folder), keyed (kind, subnet, seed):
    a rerun reuses them instead of training again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[tuple, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.done[rec["kind"], rec["subnet"], rec.get("seed")] = rec
        self.reused = len(self.done)
        if self.reused:
            log.info("supernet_ranking: %d scored models journalled in %s are reused", self.reused, path)

    def get(self, kind: str, subnet: str, seed: int | None = None) -> dict | None:
        return self.done.get((kind, subnet, seed))

    def record(self, rec: dict) -> dict:
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        self.done[rec["kind"], rec["subnet"], rec.get("seed")] = rec
        return rec


def _score_archs(cfg: Any, space: Any, supernet: Any, archs: list[Any], data: Any, tcfg: TrainConfig,
                 journal: _Journal) -> tuple[list[dict], int]:
    """Per arch: its inherited accuracy and NLL (extracted from ``supernet``) beside those of ``standalone_seeds``
    stand-alone trainings (journalled ones reused); returns the rows and the hold-out size."""
    x_cal, holdout = data.x_train[: int(cfg.calib_images)], _holdout(data)  # built once, scored many times
    rows = []
    for i, arch in enumerate(tqdm(archs, desc="inherited vs stand-alone", unit="subnet")):
        name = arch.to_string()
        inh = journal.get("inherited", name)
        if inh is None:
            acc, nll = _score(space, space.extract(supernet, arch), arch, x_cal, holdout)
            inh = journal.record({"kind": "inherited", "subnet": name, "acc": acc, "nll": nll})
        alone = []
        for s in range(int(cfg.standalone_seeds)):
            rec = journal.get("standalone", name, s)
            if rec is None:
                torch.manual_seed(10_000 + 97 * i + s)
                fresh = space.extract(space.build_supernet(), arch)  # a freshly initialised static subnet
                scfg = replace(tcfg, seed=1000 * s + i)
                train_standalone(fresh, space.resolution(arch), data, scfg, desc=f"subnet {i + 1}")
                acc, nll = _score(space, fresh, arch, x_cal, holdout)
                rec = journal.record({"kind": "standalone", "subnet": name, "seed": s, "acc": acc, "nll": nll})
            alone.append(rec)
        accs, nlls = [r["acc"] for r in alone], [r["nll"] for r in alone]
        rows.append({"arch": name, "params": int(space.params(arch)), "macs": int(space.macs(arch)),
                     "inherited_acc": inh["acc"], "standalone_acc": float(np.mean(accs)),
                     "standalone_accs": accs, "inherited_nll": inh["nll"],
                     "standalone_nll": float(np.mean(nlls)), "standalone_nlls": nlls})
    return rows, len(holdout[1])


def _correlations(rows: list[dict]) -> dict[str, Any]:
    """Rank agreement of inherited and stand-alone accuracy (and NLL), and of the closed-form costs with
    stand-alone accuracy."""
    inh = np.array([r["inherited_acc"] for r in rows])
    alone = np.array([r["standalone_acc"] for r in rows])
    return {
        "spearman": float(spearmanr(inh, alone).statistic),
        "kendall": float(kendalltau(inh, alone).statistic),
        "spearman_nll": float(spearmanr([r["inherited_nll"] for r in rows], [r["standalone_nll"] for r in rows]).statistic),
        "spearman_params_vs_standalone": float(spearmanr([r["params"] for r in rows], alone).statistic),
        "spearman_macs_vs_standalone": float(spearmanr([r["macs"] for r in rows], alone).statistic),
        "inherited_acc_mean": float(inh.mean()), "standalone_acc_mean": float(alone.mean()),
        "standalone_acc_range": [float(alone.min()), float(alone.max())],
    }


def _seed_agreement(rows: list[dict], standalone_seeds: int) -> dict[str, float]:
    """With >= 2 stand-alone seeds: how repeatable the reference itself is (seed 0 vs seed 1)."""
    if standalone_seeds < 2:
        return {}
    acc = np.array([r["standalone_accs"] for r in rows])
    nll = np.array([r["standalone_nlls"] for r in rows])
    return {"standalone_seed_spearman": float(spearmanr(acc[:, 0], acc[:, 1]).statistic),
            "standalone_seed_spearman_nll": float(spearmanr(nll[:, 0], nll[:, 1]).statistic)}


def run(cfg: Any) -> dict:
    cfg = bench_config("supernet_ranking", cfg)
    _check(cfg)
    data = _load(cfg)
    torch.set_num_threads(int(cfg.threads))
    extra = {"kernel_transform": bool(cfg.kernel_transform)} if SPACES[cfg.space]["name"] == "ofa_mbv3" else {}
    space = create_search_space(**SPACES[cfg.space], **extra, n_classes=data.n_classes, in_channels=data.channels)
    tcfg = TrainConfig(epochs=int(cfg.epochs), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
                       n_random=int(cfg.n_random), seed=int(cfg.seed), threads=int(cfg.threads),
                       checkpoint_every_s=0)
    # every setting the figures depend on (not threads, out or cache_dir)
    key = {k: v for k, v in as_dict(cfg).items() if k not in ("threads", "out", "cache_dir", "standalone_from")}
    work = Path(str(cfg.cache_dir)) / digest(key)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(work / "key.json", key)
    journal = _Journal(work / "journal.jsonl")
    archs = sample_subnets(space, int(cfg.n_archs), str(cfg.sampling), np.random.default_rng(int(cfg.seed) + 1))
    if cfg.standalone_from:  # checked before an hour of training, not after
        for rec in _earlier_standalone(cfg, data.name, archs):
            if journal.get("standalone", rec["subnet"], rec["seed"]) is None:
                journal.record(rec)
    t0 = time.perf_counter()
    torch.manual_seed(int(cfg.seed))
    supernet = space.build_supernet()
    log.info("training the %s supernet on %s %s for %d epochs", cfg.space, data.name, data.sizes(), tcfg.epochs)
    train_supernet(supernet, space, data, replace(tcfg, checkpoint_every_s=300), checkpoint=work / "supernet.pt")
    t_super = time.perf_counter() - t0
    rows, n_holdout = _score_archs(cfg, space, supernet, archs, data, tcfg, journal)
    result = {
        "bench": "supernet_ranking", "space": cfg.space, "data": data.name, "n_archs": len(rows),
        "sampling": str(cfg.sampling),
        "epochs": tcfg.epochs, "standalone_seeds": int(cfg.standalone_seeds), "holdout_images": n_holdout,
        **_correlations(rows),
        "supernet_seconds": round(t_super, 1), "seconds": round(time.perf_counter() - t0, 1),
        "journal": str(journal.path), "reused_from_journal": journal.reused,
        "archs": rows,
        **_seed_agreement(rows, int(cfg.standalone_seeds)),
    }
    write_json_atomic(Path(cfg.out), result)
    return result
