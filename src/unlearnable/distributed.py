"""torch.distributed for the commands that train, poison or prepare data across processes and machines.

Under ``torchrun`` (which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT) the first
call to `init` joins the process group: NCCL when the process has a CUDA device, gloo otherwise.
Without those variables everything here describes a world of one process and does nothing, so the
same code runs unchanged on one process.

    torchrun --nproc-per-node 4 -m unlearnable train --train DATA --out RUN          # one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id job1 -m unlearnable train ...    # on every machine
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from unlearnable.errors import UserInputError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run.

    Attributes:
        rank: 0..size-1, global.
        size: the number of processes (1 without torchrun).
        local_rank: the process's index on its machine (its GPU index).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on the process that writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """True when torchrun (or another launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(backend: str | None = None) -> World:
    """Join the process group torchrun describes (once); the single-process World otherwise.

    A process group the caller initialised already (e.g. under ``torch.multiprocessing.spawn``) is
    used as it is. `backend` None picks NCCL when CUDA is available, else gloo. Raises
    UserInputError when the environment asks for several processes but lacks what the rendezvous needs.
    """
    if not dist.is_initialized() and not launched():
        return World()
    if not dist.is_initialized():
        missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise UserInputError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; "
                                 "start distributed runs with torchrun --nproc-per-node N -m unlearnable ...")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(1, torch.cuda.device_count())))
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def barrier(world: World) -> None:
    """Wait for every process of `world` (nothing to do for one process)."""
    if world.distributed:
        dist.barrier()


@contextlib.contextmanager
def main_first(world: World) -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (e.g. loading data that fills a shared cache)."""
    if not world.main:
        barrier(world)
    yield
    if world.main:
        barrier(world)


def all_agree(world: World, ok: bool) -> bool:
    """True when `ok` holds on every process (so that all ranks raise or none does)."""
    if not world.distributed:
        return ok
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(flag)
    return int(flag) == 0


def gather_tensors(world: World, tensor: torch.Tensor) -> list[torch.Tensor]:
    """`tensor` of every process, in rank order, on the CPU (every process passes one of the same shape)."""
    local = tensor.to(_collective_device())
    gathered = [torch.empty_like(local) for _ in range(world.size)]
    dist.all_gather(gathered, local)
    return [t.cpu() for t in gathered]


def finish() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where tensors for collectives live: the process's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_range(count: int, world: World) -> range:
    """The contiguous block of 0..count-1 that `world.rank` handles: blocks differ in size by at most one."""
    return range(world.rank * count // world.size, (world.rank + 1) * count // world.size)
