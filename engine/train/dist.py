"""torchrun support: one process per GPU (or CPU process with gloo in tests), rank 0 writes.

`torchrun --nproc_per_node=N -m engine train ...` sets RANK / LOCAL_RANK / WORLD_SIZE; without them
the trainer runs as a single process and every helper here is a no-op. G and D get separate DDP
wrappers (one DDP around both breaks on the two-phase GAN step), and the G phase runs D under
`no_sync` with D's parameters frozen, so D's gradients are neither computed nor all-reduced there.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def init(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (NCCL on GPU, gloo on CPU)."""
    info = from_env()
    if info.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP around `model` when distributed (its parameters are broadcast from rank 0 here)."""
    if not info.enabled:
        return model
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def no_sync(model: nn.Module):
    """DDP's no_sync() (skip the gradient all-reduce) or a null context."""
    m = model._orig_mod if hasattr(model, "_orig_mod") else model
    if isinstance(m, nn.parallel.DistributedDataParallel):
        return m.no_sync()
    return contextlib.nullcontext()


def all_reduce_(t: torch.Tensor, op: str = "sum", info: DistInfo | None = None) -> torch.Tensor:
    """In-place all-reduce (sum / min / max / mean); identity on a single process."""
    if info is not None and not info.enabled or not dist.is_initialized():
        return t
    ops = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
           "max": dist.ReduceOp.MAX}
    dist.all_reduce(t, op=ops[op])
    if op == "mean":
        t /= dist.get_world_size()
    return t


def any_flag(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank when any rank raised the flag (stop requests reach all ranks together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
