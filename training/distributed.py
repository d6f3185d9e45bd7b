"""Several GPUs for one ``cdss-train fit``: PyTorch DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node N -m training fit ...`` starts N processes. Each trains every fold
together with the others: each process takes its share of every epoch's batches (``shard``),
DDP averages the gradients, so the weights stay the same in every process. ``--batch-size`` is
per process. Only the first process (rank 0) writes checkpoints, predictions and ``fit.json``;
a resumed run starts all processes from the same ``last.pt``. Without ``torchrun`` (one
process) nothing here changes anything. NCCL joins the processes on CUDA, gloo on CPU (which is
how the tests run it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def join() -> Process:
    """This process's place among ``torchrun``'s (its environment), joined into the group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Process()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return Process(dist.get_rank(), world_size)


def device_of(process: Process, setting: str) -> str:
    """Under torchrun with CUDA, each process takes the GPU of its local rank."""
    if process.distributed and setting in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return setting


def wrap(network: torch.nn.Module, process: Process, device: torch.device) -> torch.nn.Module:
    """The network as DDP sees it when distributed, else the network itself."""
    if not process.distributed:
        return network
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda"
                                   else None)


def shard(batches: list, process: Process) -> list:
    """This process's batches: every world_size-th, the same count in every process (DDP
    needs each process to take the same number of steps; up to world_size - 1 batches of the
    epoch are left out)."""
    usable = len(batches) - len(batches) % process.world_size
    return batches[:usable][process.rank::process.world_size]


def barrier(process: Process) -> None:
    if process.distributed:
        dist.barrier()


def leave(process: Process) -> None:
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()
