"""Supernet training (sandwich rule + in-place distillation), BatchNorm recalibration and evaluation."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from latency_luts.load import free_cpus
from nas.data import DataSplits, resize
from nas.distributed import (
    DistContext,
    allreduce_gradients,
    average_buffers,
    broadcast_module,
    broadcast_object,
)
from nas.schema import TrainConfig
from search_spaces.base import SearchSpace

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


def random_shift(x: torch.Tensor, pad: int, rng: np.random.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (zero padding then crop), one offset per batch."""
    if pad <= 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (pad, pad, pad, pad))
    i, j = (int(v) for v in rng.integers(0, 2 * pad + 1, 2))
    return xp[..., i : i + h, j : j + w]


def random_flip(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    mask = torch.from_numpy(rng.random(len(x)) < 0.5)
    if not mask.any():
        return x
    out = x.clone()
    out[mask] = x[mask].flip(-1)
    return out


def augment(x: torch.Tensor, cfg: TrainConfig, rng: np.random.Generator) -> torch.Tensor:
    """The training augmentation of ``cfg``: random shift by up to ``augment_shift`` pixels, then (with
    ``augment_flip``) random left-right mirroring; a no-op when both are off."""
    x = random_shift(x, cfg.augment_shift, rng)
    return random_flip(x, rng) if cfg.augment_flip else x


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


def train_supernet(
    supernet: nn.Module,
    space: SearchSpace,
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
    phases: tuple[str, ...] = ()
    bounds: list[int] = [0]
    if cfg.progressive:
        phases = tuple(getattr(space, "progressive_phases", lambda: ())())
        if not phases:
            raise ValueError(f"train.progressive=true but search space {space.name!r} defines no shrinking phases")
        bounds = phase_boundaries(cfg, len(phases))
    supernet.to(device)
    opt = torch.optim.SGD(
        supernet.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    params = [p for p in supernet.parameters() if p.requires_grad]
    n = len(data.y_train)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    start_epoch, start_step, history, stats = 0, 0, [], (0.0, 0, 0)
    state = None
    if dist.is_main and checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = broadcast_object(state, dist)
    if state is not None:
        supernet.load_state_dict(state["model"])
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, start_step = int(state.get("epoch", cfg.epochs)), int(state.get("step", 0))
        history = list(state.get("history", []))
        stats = tuple(state.get("epoch_stats", (0.0, 0, 0)))
        if dist.is_main:
            log.info("resuming supernet training from %s at epoch %d, step %d", checkpoint, start_epoch, start_step)
    else:
        broadcast_module(supernet, dist)  # every rank starts from rank 0's initial weights
    largest = space.largest()
    supernet.to(memory_format=torch.channels_last)  # 1.5-2x faster depthwise convs on CPU (oneDNN)

    def save(epoch: int, step: int, epoch_stats: tuple) -> None:
        average_buffers(supernet, dist)  # BN running statistics differ between ranks
        if dist.is_main and checkpoint is not None:
            save_atomic({
                "model": supernet.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch, "step": step, "epoch_stats": epoch_stats, "history": history,
                "world_size": dist.world, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            }, checkpoint)

    stop = {"sigterm": False}
    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("sigterm", True))
    t0 = time.perf_counter()
    last_save, run_steps = time.monotonic(), 0
    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch + start_step, desc="train supernet", unit="step",
               leave=False, disable=not dist.is_main)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.threads == "auto" and epoch > start_epoch:
                apply_threads("auto", "training")  # the load may have changed since the last epoch
            phase = int(np.searchsorted(bounds, epoch, side="right")) - 1
            smallest = space.smallest_phase(phase) if phases else space.smallest()
            if phases and epoch == bounds[phase] and start_step == 0 and dist.is_main:
                log.info("progressive shrinking: phase %d/%d (%s) from epoch %d", phase + 1, len(phases),
                         phases[phase], epoch + 1)
            supernet.train()
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(cfg.seed, epoch)))
            loss_sum, correct, seen = stats if start_step else (0.0, 0, 0)
            for b in range(start_step, steps_per_epoch):
                step = epoch * steps_per_epoch + b
                rng = np.random.default_rng([cfg.seed, epoch, b])
                torch.manual_seed(_step_seed(cfg.seed, epoch, b, dist.rank))  # dropout
                for g in opt.param_groups:
                    g["lr"] = _lr_at(step, total, warmup, cfg.lr)
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size][dist.rank :: dist.world]
                xb = augment(data.x_train[idx], cfg, rng)
                xb = xb.to(device).contiguous(memory_format=torch.channels_last)
                yb = data.y_train[idx].to(device)
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = supernet(resize(xb, space.resolution(largest)), largest)
                    loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                (scaler.scale(loss) if scaler else loss).backward()
                soft = F.softmax(logits.detach().float() / cfg.kd_temperature, dim=1)
                loss_sum += float(loss.detach()) * len(yb)
                correct += int((logits.argmax(1) == yb).sum())
                seen += len(yb)
                others = [space.sample_phase(rng, phase) if phases else space.sample(rng) for _ in range(cfg.n_random)]
                for arch in [smallest] + others:
                    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        out = supernet(resize(xb, space.resolution(arch)), arch).float()
                    kd = -(soft * F.log_softmax(out / cfg.kd_temperature, dim=1)).sum(1).mean()
                    ce = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
                    sub_loss = cfg.kd_weight * kd + (1 - min(cfg.kd_weight, 1.0)) * ce
                    (scaler.scale(sub_loss) if scaler else sub_loss).backward()
                allreduce_gradients(params, dist)
                if scaler is not None:
                    scaler.unscale_(opt)
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(supernet.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                run_steps += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
                if b + 1 < steps_per_epoch:
                    due = bool(cfg.checkpoint_every_steps and (b + 1) % cfg.checkpoint_every_steps == 0)
                    due |= bool(cfg.checkpoint_every_s and time.monotonic() - last_save >= cfg.checkpoint_every_s)
                    halt = bool(cfg.stop_after_steps and run_steps >= cfg.stop_after_steps) or stop["sigterm"]
                    if dist.enabled:  # rank 0 decides, so collective calls line up
                        due, halt = broadcast_object((due, halt), dist)
                    if due or halt:
                        save(epoch, b + 1, (loss_sum, correct, seen))
                        last_save = time.monotonic()
                    if halt:
                        raise TrainingPaused(f"supernet training paused at epoch {epoch + 1}, step {b + 1}/"
                                             f"{steps_per_epoch}; rerun the same command to continue")
            start_step = 0
            record = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc_largest": correct / seen}
            if dist.enabled:
                record["world_size"] = dist.world
            if dist.is_main and (epoch + 1 == cfg.epochs or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
                record["val_acc_largest"] = subnet_accuracy(space, supernet, largest, data, "val", calib_images)
            history.append(record)
            if dist.is_main:
                log.info("epoch %d/%d: loss %.4f, train acc (largest) %.3f, val acc (largest, BN recalibrated) %s",
                         epoch + 1, cfg.epochs, record["loss"], record["train_acc_largest"],
                         record.get("val_acc_largest", "-"))
            save(epoch + 1, 0, (0.0, 0, 0))
            last_save = time.monotonic()
            halt = bool(cfg.stop_after_steps and run_steps >= cfg.stop_after_steps) or stop["sigterm"]
            if dist.enabled:
                halt = broadcast_object(halt, dist)
            if on_epoch and dist.is_main:
                on_epoch(epoch, record)
            if halt and epoch + 1 < cfg.epochs:
                raise TrainingPaused(f"supernet training paused after epoch {epoch + 1}/{cfg.epochs}; "
                                     "rerun the same command to continue")
    finally:
        bar.close()
        if old_handler is not None:
            signal.signal(signal.SIGTERM, old_handler)
    return {"history": history, "seconds": time.perf_counter() - t0, "steps_per_epoch": steps_per_epoch,
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


def _device_of(module: nn.Module | None) -> torch.device:
    p = next(module.parameters(), None) if module is not None else None
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor, r: int,
             module: nn.Module | None = None, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``fn`` on (x, y) resized to r; ``module`` is put in eval mode and restored."""
    was = module.training if module is not None else None
    if module is not None:
        module.eval()
    dev = _device_of(module)
    correct = 0
    for i in range(0, len(y), batch_size):
        pred = fn(resize(x[i : i + batch_size], r).to(dev)).argmax(1).cpu()
        correct += int((pred == y[i : i + batch_size]).sum())
    if module is not None and was:
        module.train()
    return correct / max(1, len(y))


CALIB_MODES = ("exact", "ofa")


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, r: int, batch_size: int = 256, mode: str = "exact") -> None:
    """Reset BatchNorm running statistics and re-estimate them over ``x`` (at resolution r), in batches.

    ``mode="exact"``: torch's cumulative average of each batch's mean and unbiased variance (batches weighted
    equally). ``mode="ofa"``: Once-for-All's ``set_running_statistics``: each batch's mean and *biased* variance,
    averaged with the batch sizes as weights (what the published supernets' accuracies were measured with).
    Either way every layer normalises a batch with that batch's own statistics while they are gathered.
    """
    if mode not in CALIB_MODES:
        raise ValueError(f"BN recalibration mode {mode!r} is invalid; expected one of {list(CALIB_MODES)}")
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum) for m in bns]
    sums: dict[nn.Module, list] = {}
    hooks = []
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = exact mean over batches
        if mode == "ofa":  # momentum 1: after each batch the running stats are that batch's (variance unbiased)
            m.momentum, sums[m] = 1.0, [0.0, 0.0, 0]

            def gather(mod: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
                h = inputs[0]
                n, per_channel = h.shape[0], h.numel() // h.shape[1]
                acc = sums[mod]
                acc[0] = acc[0] + mod.running_mean.double() * n
                acc[1] = acc[1] + mod.running_var.double() * ((per_channel - 1) / per_channel * n)  # biased
                acc[2] += n

            hooks.append(m.register_forward_hook(gather))
    was = model.training
    model.train()
    dev = _device_of(model)
    try:
        for i in range(0, len(x), batch_size):
            model(resize(x[i : i + batch_size], r).to(dev))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
        for m, mom in zip(bns, saved):
            m.momentum = mom
    for m, (mean, var, n) in sums.items():
        if n:
            m.running_mean.copy_(mean / n)
            m.running_var.copy_(var / n)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution in an ``nn.Sequential`` into that convolution
    (in place, eval-mode arithmetic; the BatchNorm becomes an ``Identity``) and return the model in eval mode.

    For evaluation after :func:`recalibrate_bn`: outputs agree with the unfolded model to float rounding and a
    forward pass skips one normalisation per convolution. The folded model must not be trained further.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return model


def subnet_accuracy(space: SearchSpace, supernet: nn.Module, arch: Any, data: DataSplits, split: str = "val",
                    calib_images: int = 512, calib_batch: int = 256, calib_mode: str = "exact",
                    n_eval: int | None = None) -> float:
    """Accuracy of ``arch`` extracted from ``supernet`` on the first ``n_eval`` images of ``split`` after BN
    recalibration (:func:`recalibrate_bn`) on the first ``calib_images`` training images, all as the data
    presents them at the subnet's resolution (``DataSplits.at``)."""
    r = space.resolution(arch)
    sub = space.extract(supernet, arch).to(memory_format=torch.channels_last)  # 2-3x faster on CPU
    recalibrate_bn(sub, data.at("train", r, calib_images), r, calib_batch, calib_mode)
    sub = fold_batchnorm(sub).to(memory_format=torch.channels_last)
    y = (data.y_val if split == "val" else data.y_test)[:n_eval]
    return evaluate(sub, data.at(split, r, n_eval), y, r, sub)
