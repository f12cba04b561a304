"""Data-parallel training with PyTorch DDP, started by `torchrun` (one process per GPU, or several on CPU).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them (a plain `w2s train`) everything here is a
no-op and training runs exactly as a single process. Backend: NCCL on CUDA, Gloo on CPU. Every rank draws
its own patches (its sampler is seeded with the seed and its rank); gradients are averaged by DDP, so a
step on N ranks with batch B each equals one step on the concatenated N*B batch. Only rank 0 logs to
MLflow, writes checkpoints and prints progress.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from training.errors import UserError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Context:
    """The process's place in a torchrun job; a single process when torchrun did not start it."""
    try:
        return Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None


def setup(device: torch.device, timeout_minutes: float = 30) -> tuple[Context, torch.device]:
    """Join the process group torchrun prepared; returns the context and this rank's device."""
    context = from_env()
    if not context.enabled:
        return context, device
    if device.type == "cuda":
        if torch.cuda.device_count() <= context.local_rank:
            raise UserError(f"rank {context.rank} needs GPU {context.local_rank} but this node has "
                            f"{torch.cuda.device_count()}; use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(minutes=timeout_minutes))
    return context, device


def wrap(model: torch.nn.Module, context: Context, device: torch.device) -> torch.nn.Module:
    """The module to train: DDP around `model` when distributed, else `model` itself."""
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def rank_rng(seed: int, rank: int) -> np.random.Generator:
    """Rank 0 draws what a single process would; every other rank its own independent stream."""
    return np.random.default_rng(seed if rank == 0 else [seed, rank])


def mean(value: float, context: Context, device: torch.device) -> float:
    """The average of a number over all ranks (the epoch's training loss)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def agree(flag: bool, context: Context, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (stopping on a wall-clock budget must happen at the same step)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def gather(obj: Any, context: Context) -> list[Any]:
    """Every rank's `obj`, in rank order (each rank's sampler RNG state, for resuming)."""
    if not context.enabled:
        return [obj]
    out: list[Any] = [None] * context.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()


@contextlib.contextmanager
def main_first(context: Context) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. building a data cache), the others after it, reading its output."""
    if not context.is_main:
        barrier(context)
    yield
    if context.is_main:
        barrier(context)


def shutdown(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
