"""Stage 1: train the weight-sharing supernet (sandwich rule, in-place distillation) -> checkpoints/supernet.pt,
or, with ``train.import_from=FILE``, import a published supernet (Once-for-All's ``ofa_mbv3_d234_e346_k357_w1.0``
/ ``_w1.2``) into the same checkpoint format instead: every later stage uses it as if it had been trained here.

Under ``torchrun`` every rank enters this stage (see ``nas.pipeline``); only rank 0 writes files.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import OmegaConf

from nas.distributed import DistContext
from nas.rundir import RunContext, write_json_atomic
from nas.stages.common import evaluate_archs, positive_int, validate_bn_calibration
from nas.training import TrainConfig, save_atomic, subnet_accuracy, train_supernet

log = logging.getLogger(__name__)


def validate(cfg: Any) -> None:
    for key in ("train.epochs", "train.batch_size"):
        positive_int(cfg, key)
    validate_bn_calibration(cfg)
    if cfg.train.get("import_from"):
        imported_supernet(cfg)  # a wrong width, a missing key or an unreadable file fails before anything is written


def imported_supernet(cfg: Any) -> Any:
    """The supernet of ``train.import_from`` in this run's space (one-line ``ValueError`` on any mismatch)."""
    from nas.rundir import build_space
    from search_spaces.ofa_mbv3.published import import_supernet

    node = cfg.search_space
    if node.get("n_classes") is None or node.get("in_channels") is None:
        raise ValueError(f"train.import_from={cfg.train.import_from!r} needs search_space.n_classes=1000 and "
                         "search_space.in_channels=3 set explicitly (experiment=ofa_pretrained sets them)")
    return import_supernet(cfg.train.import_from, build_space(node))


def reset(ctx: RunContext) -> None:
    """A forced training starts from scratch: the mid-training checkpoint of an earlier run is removed."""
    partial = ctx.checkpoint.with_name("supernet.partial.pt")
    if partial.exists():
        partial.unlink()


def train_config(ctx: RunContext) -> TrainConfig:
    return TrainConfig(**OmegaConf.to_container(ctx.cfg.train, resolve=True))


def _import(ctx: RunContext) -> dict:
    """``train.import_from``: the published weights in our checkpoint format, and the same accuracy checks."""
    import hashlib
    from pathlib import Path

    src = Path(str(ctx.cfg.train.import_from)).expanduser()
    supernet = imported_supernet(ctx.cfg)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    origin = {"file": str(src.resolve()), "sha256": digest, "format": "ofa_mbv3",
              "width_mult": float(ctx.space.width_mult)}
    save_atomic({"model": supernet.state_dict(), "imported_from": origin}, ctx.checkpoint)
    ends = {"largest": ctx.space.largest(), "smallest": ctx.space.smallest()}
    accs = dict(zip(ends, evaluate_archs(ctx, supernet, list(ends.values()), progress=False)["val"], strict=True))
    log.info("imported %s (sha256 %s...): val accuracy after BN recalibration: largest %.3f, smallest %.3f",
             src, digest[:12], accs["largest"], accs["smallest"])
    return {"imported_from": origin, "val_acc_largest": accs["largest"], "val_acc_smallest": accs["smallest"],
            "checkpoint": str(ctx.checkpoint)}


def run(ctx: RunContext) -> dict:
    if ctx.cfg.train.get("import_from"):
        return _import(ctx)
    dist: DistContext = ctx.dist or DistContext()
    tcfg = train_config(ctx)
    with torch.random.fork_rng():  # the initial weights follow the run's seed (a resumed run loads its checkpoint)
        torch.manual_seed(int(tcfg.seed))
        supernet = ctx.space.build_supernet()
    partial = ctx.checkpoint.with_name("supernet.partial.pt")
    n_cal = int(ctx.cfg.predictor.calib_images)
    result = train_supernet(supernet, ctx.space, ctx.data, tcfg, checkpoint=partial, calib_images=n_cal, dist=dist)
    if not dist.is_main:
        return {}
    partial.replace(ctx.checkpoint)  # a finished checkpoint appears only when training is complete
    last = result["history"][-1] if result["history"] else {}
    accs = {  # train_supernet evaluates the largest subnet (same BN recalibration) after its last epoch
        "largest": last["val_acc_largest"] if "val_acc_largest" in last
        else subnet_accuracy(ctx.space, supernet, ctx.space.largest(), ctx.data, "val", n_cal),
        "smallest": subnet_accuracy(ctx.space, supernet, ctx.space.smallest(), ctx.data, "val", n_cal),
    }
    write_json_atomic(ctx.path("train_history.json"), result["history"])
    log.info("supernet val accuracy after BN recalibration: largest %.3f, smallest %.3f", accs["largest"], accs["smallest"])
    return {
        "epochs": tcfg.epochs,
        "steps_per_epoch": result["steps_per_epoch"],
        "world_size": result["world_size"],
        "device": result["device"],
        "amp": result["amp"],
        "progressive": bool(tcfg.progressive),
        "val_acc_largest": accs["largest"],
        "val_acc_smallest": accs["smallest"],
        "checkpoint": str(ctx.checkpoint),
    }
