"""Data-parallel supernet training under ``torchrun`` (gloo on CPU, NCCL on GPUs).

Every rank runs the same sandwich step on its own slice of the global batch; the archs of a step come from
per-step seeds, so all ranks train the same subnets. Gradients are averaged by one flat all-reduce after the
step's backward passes (DDP's hooks assume one forward per step and a fixed set of used parameters, which the
sandwich rule breaks). Only rank 0 writes checkpoints, in the same format as a one-process run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: ``rank`` of ``world`` processes (1-process runs: 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent); a malformed value fails with one line."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(raw)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={raw!r} is invalid; expected a positive integer (set by torchrun)") from None
    if world < 1:
        raise ValueError(f"WORLD_SIZE={raw!r} is invalid; expected a positive integer (set by torchrun)")
    return world


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment; a 1-process run returns rank 0 of 1."""
    world = env_world_size()
    if world == 1:
        return DistContext()
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
        log.info("joined %s process group: rank %d of %d", backend, rank, world)
    return DistContext(rank, world, local)


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    import torch.distributed as dist

    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@torch.no_grad()
def broadcast_module(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's parameters and buffers to every rank (ranks build their supernets independently)."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def allreduce_gradients(params: list[nn.Parameter], ctx: DistContext) -> None:
    """Average the gradients of ``params`` over ranks with one flat all-reduce.

    Parameters no subnet of the step used have no gradient on any rank (all ranks train the same archs), so
    the set of gradients is the same everywhere.
    """
    if not ctx.enabled:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


@torch.no_grad()
def average_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (BatchNorm running statistics) over ranks before a checkpoint."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for b in module.buffers():
        if b.dtype.is_floating_point:
            dist.all_reduce(b)
            b /= ctx.world


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()
