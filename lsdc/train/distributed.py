"""DDP plumbing: start from torchrun's environment, gather Python objects, know who writes files.

``torchrun --nproc_per_node=N -m lsdc.core.cli train ...`` sets RANK, LOCAL_RANK and WORLD_SIZE;
with WORLD_SIZE > 1 we join the process group (NCCL on GPU, gloo on CPU). A single process needs
no process group at all, and every helper here is then a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main rank writes files and prints progress."""
        return self.rank == 0


def setup(device_kind: str) -> Dist:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1 (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(rank, world, local_rank)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(obj, d: Dist) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def min_int(value: int, d: Dist, device: torch.device) -> int:
    """The smallest ``value`` over ranks (equal step counts keep DDP's collectives in lockstep)."""
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
