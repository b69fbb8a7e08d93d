"""Stage 1: train the weight-sharing supernet (sandwich rule, in-place distillation) -> checkpoints/supernet.pt.

Under ``torchrun`` every rank enters this stage (see ``nas.pipeline``); only rank 0 writes files.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import OmegaConf

from nas.distributed import DistContext
from nas.rundir import RunContext, write_json_atomic
from nas.stages.common import positive_int
from nas.training import TrainConfig, subnet_accuracy, train_supernet

log = logging.getLogger(__name__)


def validate(cfg: Any) -> None:
    for key in ("train.epochs", "train.batch_size"):
        positive_int(cfg, key)


def reset(ctx: RunContext) -> None:
    """A forced training starts from scratch: the mid-training checkpoint of an earlier run is removed."""
    partial = ctx.checkpoint.with_name("supernet.partial.pt")
    if partial.exists():
        partial.unlink()


def train_config(ctx: RunContext) -> TrainConfig:
    return TrainConfig(**OmegaConf.to_container(ctx.cfg.train, resolve=True))


def run(ctx: RunContext) -> dict:
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
