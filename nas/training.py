"""Supernet training (sandwich rule + in-place distillation) and standalone subnet training; the evaluation of
subnets (BatchNorm recalibration, folding, accuracy) is :mod:`nas.subnet_eval`, re-exported here."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from latency_luts.load import free_cpus
from nas.augment import augment
from nas.data import DataSplits, resize
from nas.distributed import (
    DistContext,
    allreduce_gradients,
    average_buffers,
    broadcast_module,
    broadcast_object,
)
from nas.schema import TrainConfig
from nas.subnet_eval import (  # noqa: F401 - re-exported: callers import the evaluation from here
    CALIB_MODES,
    evaluate,
    fold_batchnorm,
    recalibrate_bn,
    subnet_accuracy,
)
from search_spaces.base import WeightSharingSpace

log = logging.getLogger(__name__)


def apply_threads(value: Any, what: str = "torch") -> int:
    """Set torch's intra-op threads (and the BLAS pool's) from a ``threads`` setting; return the count. An integer is used as
    given, 0/None leaves torch's choice, ``auto`` takes the CPUs free right now (:func:`latency_luts.load.
    free_cpus`): beside one CPU-bound process on 2 cores an epoch took 2.6x its idle time with 2 threads and
    1.6x with 1, because two threads on a core another process holds wait on each other."""
    if value in (None, 0):
        return torch.get_num_threads()
    if value == "auto":
        n, other = free_cpus()
        if n != torch.get_num_threads():
            busy = "unknown" if other is None else f"{other:.1f}"
            log.info("threads=auto: %s CPUs busy with other processes -> %d %s thread(s)", busy, n, what)
    else:
        n = int(value)
    torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")  # numpy/scikit-learn's BLAS (predictor fits) alike
    return n


class TrainingPaused(RuntimeError):
    """Training stopped after writing a resumable checkpoint (stop_after_steps, SIGTERM); rerun to continue."""


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * t))


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name unique to this process, thread and call, then rename."""
    from latency_luts.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def resolve_device(name: str, dist: DistContext | None = None) -> torch.device:
    """``auto`` -> cuda (this rank's GPU) when available, else cpu; an unavailable device fails with one line."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={name!r} is unavailable here (no CUDA); expected 'cpu' or 'auto'")
        if name == "cuda" and dist is not None:
            name = f"cuda:{dist.local_rank}"
    elif name != "cpu":
        raise ValueError(f"train.device={name!r} is invalid; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return torch.device(name)


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp`` on ``device`` (None = full fp32)."""
    if mode == "auto":
        mode = "fp16" if device.type == "cuda" else "off"
    if mode == "fp16" and device.type != "cuda":
        raise ValueError("train.amp='fp16' needs a CUDA device; expected 'bf16', 'off' or 'auto' on CPU")
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def phase_boundaries(cfg: TrainConfig, n_phases: int) -> list[int]:
    """First epoch of each progressive-shrinking phase (phase 0 starts at epoch 0)."""
    fr = cfg.progressive_fractions or [1.0] * n_phases
    if len(fr) != n_phases:
        raise ValueError(
            f"train.progressive_fractions has {len(fr)} shares; expected {n_phases} (one per phase of the space)"
        )
    cum = np.cumsum(fr) / np.sum(fr)
    return [0] + [int(round(c * cfg.epochs)) for c in cum[:-1]]


def _step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass
class _Run:
    """One supernet training run: what every step reads (model, optimiser, schedule, phases) and the
    progress a checkpoint records."""

    supernet: nn.Module
    space: WeightSharingSpace
    data: DataSplits
    cfg: TrainConfig
    dist: DistContext
    device: torch.device
    dtype: torch.dtype | None
    scaler: Any
    opt: torch.optim.Optimizer
    checkpoint: Path | None
    phases: tuple[str, ...] = ()
    bounds: list[int] = field(default_factory=lambda: [0])
    history: list[dict] = field(default_factory=list)
    run_steps: int = 0
    last_save: float = field(default_factory=time.monotonic)
    sigterm: bool = False

    @property
    def steps_per_epoch(self) -> int:
        return max(1, len(self.data.y_train) // self.cfg.batch_size)

    @property
    def total(self) -> int:
        return self.steps_per_epoch * self.cfg.epochs

    def halted(self) -> bool:
        return bool(self.cfg.stop_after_steps and self.run_steps >= self.cfg.stop_after_steps) or self.sigterm

    def autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def save(self, epoch: int, step: int, epoch_stats: tuple) -> None:
        average_buffers(self.supernet, self.dist)  # BN running statistics differ between ranks
        if self.dist.is_main and self.checkpoint is not None:
            save_atomic({
                "model": self.supernet.state_dict(), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": epoch, "step": step, "epoch_stats": epoch_stats, "history": self.history,
                "world_size": self.dist.world,
                "config": {k: getattr(self.cfg, k) for k in self.cfg.__dataclass_fields__},
            }, self.checkpoint)
        self.last_save = time.monotonic()


def _phases(space: WeightSharingSpace, cfg: TrainConfig) -> tuple[tuple[str, ...], list[int]]:
    """The progressive-shrinking phases of ``space`` and the first epoch of each (none without
    ``cfg.progressive``)."""
    if not cfg.progressive:
        return (), [0]
    phases = tuple(space.progressive_phases())
    if not phases:
        raise ValueError(f"train.progressive=true but search space {space.name!r} defines no shrinking phases")
    return phases, phase_boundaries(cfg, len(phases))


def _resume(run: _Run) -> tuple[int, int, tuple]:
    """Load the checkpoint, when there is one (on rank 0, then broadcast): (epoch, step, epoch statistics) to
    continue from; without one every rank starts from rank 0's initial weights."""
    state = None
    if run.dist.is_main and run.checkpoint is not None and run.checkpoint.exists():
        from nas.rundir import read_checkpoint

        state = read_checkpoint(run.checkpoint)
    state = broadcast_object(state, run.dist)
    if state is None:
        broadcast_module(run.supernet, run.dist)
        return 0, 0, (0.0, 0, 0)
    run.supernet.load_state_dict(state["model"])
    if "optimizer" in state:
        run.opt.load_state_dict(state["optimizer"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    start_epoch, start_step = int(state.get("epoch", run.cfg.epochs)), int(state.get("step", 0))
    run.history = list(state.get("history", []))
    if run.dist.is_main:
        log.info("resuming supernet training from %s at epoch %d, step %d", run.checkpoint, start_epoch, start_step)
    return start_epoch, start_step, tuple(state.get("epoch_stats", (0.0, 0, 0)))


def _sandwich_step(run: _Run, epoch: int, b: int, perm: torch.Tensor, phase: int, smallest: Any,
                   params: list[nn.Parameter]) -> tuple[float, int, int]:
    """One step: the largest subnet on labels, the smallest and ``n_random`` random ones distilled from it;
    returns the largest's summed loss, correct predictions and images."""
    cfg, space, largest = run.cfg, run.space, run.space.largest()
    rng = np.random.default_rng([cfg.seed, epoch, b])
    torch.manual_seed(_step_seed(cfg.seed, epoch, b, run.dist.rank))  # dropout
    for g in run.opt.param_groups:
        g["lr"] = _lr_at(epoch * run.steps_per_epoch + b, run.total, int(cfg.warmup_epochs * run.steps_per_epoch),
                         cfg.lr)
    idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size][run.dist.rank :: run.dist.world]
    xb = augment(run.data.x_train[idx], cfg, rng)
    xb = xb.to(run.device).contiguous(memory_format=torch.channels_last)
    yb = run.data.y_train[idx].to(run.device)
    run.opt.zero_grad(set_to_none=True)
    with run.autocast():
        logits = run.supernet(resize(xb, space.resolution(largest)), largest)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
    run.backward(loss)
    soft = F.softmax(logits.detach().float() / cfg.kd_temperature, dim=1)
    others = [space.sample_phase(rng, phase) if run.phases else space.sample(rng) for _ in range(cfg.n_random)]
    for arch in [smallest] + others:
        with run.autocast():
            out = run.supernet(resize(xb, space.resolution(arch)), arch).float()
        kd = -(soft * F.log_softmax(out / cfg.kd_temperature, dim=1)).sum(1).mean()
        ce = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
        run.backward(cfg.kd_weight * kd + (1 - min(cfg.kd_weight, 1.0)) * ce)
    allreduce_gradients(params, run.dist)
    if run.scaler is not None:
        run.scaler.unscale_(run.opt)
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(run.supernet.parameters(), cfg.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        run.opt.step()
    run.run_steps += 1
    return float(loss.detach()) * len(yb), int((logits.argmax(1) == yb).sum()), len(yb)


def _train_epoch(run: _Run, epoch: int, start_step: int, stats: tuple, bar: Any) -> tuple[float, int, int]:
    """The steps of ``epoch`` from ``start_step`` (a mid-epoch checkpoint's), saving a resumable checkpoint when
    one is due and pausing when asked to; returns the epoch's (loss sum, correct, seen)."""
    cfg, n_steps = run.cfg, run.steps_per_epoch
    phase = int(np.searchsorted(run.bounds, epoch, side="right")) - 1
    smallest = run.space.smallest_phase(phase) if run.phases else run.space.smallest()
    if run.phases and epoch == run.bounds[phase] and start_step == 0 and run.dist.is_main:
        log.info("progressive shrinking: phase %d/%d (%s) from epoch %d", phase + 1, len(run.phases),
                 run.phases[phase], epoch + 1)
    run.supernet.train()
    params = [p for p in run.supernet.parameters() if p.requires_grad]
    perm = torch.randperm(len(run.data.y_train), generator=torch.Generator().manual_seed(_step_seed(cfg.seed, epoch)))
    loss_sum, correct, seen = stats if start_step else (0.0, 0, 0)
    for b in range(start_step, n_steps):
        step_loss, step_correct, step_seen = _sandwich_step(run, epoch, b, perm, phase, smallest, params)
        loss_sum, correct, seen = loss_sum + step_loss, correct + step_correct, seen + step_seen
        bar.update(1)
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if b + 1 < n_steps:
            due = bool(cfg.checkpoint_every_steps and (b + 1) % cfg.checkpoint_every_steps == 0)
            due |= bool(cfg.checkpoint_every_s and time.monotonic() - run.last_save >= cfg.checkpoint_every_s)
            halt = run.halted()
            if run.dist.enabled:  # rank 0 decides, so collective calls line up
                due, halt = broadcast_object((due, halt), run.dist)
            if due or halt:
                run.save(epoch, b + 1, (loss_sum, correct, seen))
            if halt:
                raise TrainingPaused(f"supernet training paused at epoch {epoch + 1}, step {b + 1}/"
                                     f"{n_steps}; rerun the same command to continue")
    return loss_sum, correct, seen


def _end_epoch(run: _Run, epoch: int, stats: tuple, calib_images: int,
               on_epoch: Callable[[int, dict], None] | None) -> None:
    """Record the epoch (validation accuracy of the largest subnet when due), save the checkpoint, and pause
    when asked to."""
    cfg, dist = run.cfg, run.dist
    loss_sum, correct, seen = stats
    record = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc_largest": correct / seen}
    if dist.enabled:
        record["world_size"] = dist.world
    if dist.is_main and (epoch + 1 == cfg.epochs or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
        record["val_acc_largest"] = subnet_accuracy(run.space, run.supernet, run.space.largest(), run.data, "val",
                                                    calib_images)
    run.history.append(record)
    if dist.is_main:
        log.info("epoch %d/%d: loss %.4f, train acc (largest) %.3f, val acc (largest, BN recalibrated) %s",
                 epoch + 1, cfg.epochs, record["loss"], record["train_acc_largest"],
                 record.get("val_acc_largest", "-"))
    run.save(epoch + 1, 0, (0.0, 0, 0))
    halt = run.halted()
    if dist.enabled:
        halt = broadcast_object(halt, dist)
    if on_epoch and dist.is_main:
        on_epoch(epoch, record)
    if halt and epoch + 1 < cfg.epochs:
        raise TrainingPaused(f"supernet training paused after epoch {epoch + 1}/{cfg.epochs}; "
                             "rerun the same command to continue")


def train_supernet(
    supernet: nn.Module,
    space: WeightSharingSpace,
    data: DataSplits,
    cfg: TrainConfig,
    checkpoint: Path | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    calib_images: int = 512,
    dist: DistContext | None = None,
) -> dict[str, Any]:
    """Sandwich-rule training: each step trains the largest, the smallest and ``n_random`` random subnets.

    The largest learns from labels (with label smoothing); the others learn from the largest's detached soft
    predictions (in-place distillation). Every random choice of a step (batch order, subnets, augmentation,
    dropout) comes from seeds of (seed, epoch, step), so a run resumed from a mid-epoch checkpoint continues
    exactly as the uninterrupted run would, and all ranks of a torchrun job train the same subnets on their
    slices of the global batch. With ``cfg.progressive`` the sampled subnets follow the space's
    progressive-shrinking phases (the largest subnet stays the teacher throughout).
    """
    dist = dist or DistContext()
    apply_threads(cfg.threads, "training")
    device = resolve_device(cfg.device, dist)
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    phases, bounds = _phases(space, cfg)
    supernet.to(device)
    opt = torch.optim.SGD(
        supernet.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    run = _Run(supernet, space, data, cfg, dist, device, dtype, scaler, opt, checkpoint, phases, bounds)
    start_epoch, start_step, stats = _resume(run)
    supernet.to(memory_format=torch.channels_last)  # 1.5-2x faster depthwise convs on CPU (oneDNN)
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda *_: setattr(run, "sigterm", True))
    t0 = time.perf_counter()
    run.last_save = time.monotonic()
    bar = tqdm(total=run.total, initial=start_epoch * run.steps_per_epoch + start_step, desc="train supernet",
               unit="step", leave=False, disable=not dist.is_main)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.threads == "auto" and epoch > start_epoch:
                apply_threads("auto", "training")  # the load may have changed since the last epoch
            stats = _train_epoch(run, epoch, start_step, stats, bar)
            start_step = 0
            _end_epoch(run, epoch, stats, calib_images, on_epoch)
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return {"history": run.history, "seconds": time.perf_counter() - t0, "steps_per_epoch": run.steps_per_epoch,
            "world_size": dist.world, "device": str(device), "amp": str(dtype).replace("torch.", "") if dtype else "off"}


def train_standalone(model: nn.Module, r: int, data: DataSplits, cfg: TrainConfig, desc: str = "train subnet") -> dict:
    """Train one static subnet from its own initialisation with the supernet's recipe minus the sandwich:
    same epochs, batch, cosine LR with warm-up, label smoothing, augmentation and gradient clipping."""
    apply_threads(cfg.threads, "training")
    device = resolve_device(cfg.device)
    model.to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                          weight_decay=cfg.weight_decay)
    n = len(data.y_train)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total, warmup = steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)
    t0, losses = time.perf_counter(), []
    for epoch in tqdm(range(cfg.epochs), desc=desc, unit="epoch", leave=False):
        model.train()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(cfg.seed, epoch)))
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            rng = np.random.default_rng([cfg.seed, epoch, b])
            torch.manual_seed(_step_seed(cfg.seed, epoch, b))
            for g in opt.param_groups:
                g["lr"] = _lr_at(epoch * steps_per_epoch + b, total, warmup, cfg.lr)
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = augment(data.x_train[idx], cfg, rng).to(device)
            xb = resize(xb, r).contiguous(memory_format=torch.channels_last)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), data.y_train[idx].to(device), label_smoothing=cfg.label_smoothing)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            loss_sum += float(loss.detach())
        losses.append(loss_sum / steps_per_epoch)
    return {"losses": losses, "seconds": time.perf_counter() - t0}
