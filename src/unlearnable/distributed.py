"""torch.distributed for the commands that train, poison or prepare data across processes and machines.

Under ``torchrun`` (which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT) the first
call to `init` joins the process group with one backend per device type: gloo for CPU tensors and,
where CUDA exists, NCCL for CUDA tensors ("cpu:gloo,cuda:nccl"), so ``--device cpu`` on a GPU
machine runs on gloo. Collectives may wait up to `TIMEOUT` (2 hours): rank 0 may decode or poison a
dataset for a long time while the others wait at a barrier. Each process trains on the GPU of its
LOCAL_RANK (`training_device`). Without those variables everything here describes a world of one
process and does nothing, so the same code runs unchanged on one process.

    torchrun --nproc-per-node 4 -m unlearnable train --train DATA --out RUN          # one machine
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 --rdzv-id job1 -m unlearnable train ...    # on every machine
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from unlearnable.errors import UserInputError

TIMEOUT = timedelta(hours=2)
"""How long a collective waits for the other processes before the run fails (torch's default is 10 minutes)."""


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


def default_backend() -> str:
    """gloo for CPU tensors, plus NCCL for CUDA tensors where CUDA exists."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init(backend: str | None = None, timeout: timedelta = TIMEOUT) -> World:
    """Join the process group torchrun describes (once); the single-process World otherwise.

    A process group the caller initialised already (e.g. under ``torch.multiprocessing.spawn``) is
    used as it is. `backend` None is `default_backend()`; with CUDA, the process's current GPU becomes
    the one of its LOCAL_RANK (when the machine has that many). Raises UserInputError when the
    environment asks for several processes but lacks what the rendezvous needs.
    """
    if not dist.is_initialized() and not launched():
        return World()
    if not dist.is_initialized():
        missing = [name for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise UserInputError(
                f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; "
                "start distributed runs with torchrun --nproc-per-node N -m unlearnable ..."
            )
        backend = backend or default_backend()
        local_rank = int(os.environ["LOCAL_RANK"])
        if "nccl" in backend and local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=timeout)
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(1, torch.cuda.device_count())))
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def training_device(world: World, device: str | None) -> str | None:
    """The device a process of `world` trains on, for the ``--device`` asked for (None: the default).

    One process: `device` as it is. Under torchrun every process takes the GPU of its LOCAL_RANK:
    None (when CUDA exists) and a bare "cuda" become ``cuda:LOCAL_RANK``. An explicit "cuda:N" is
    kept where N is the process's LOCAL_RANK and refused otherwise, on every rank at once (a
    UserInputError): it would put several processes on one GPU. Other devices are returned as they are.
    """
    if not world.distributed:
        return device
    if device is None:
        return f"cuda:{world.local_rank}" if torch.cuda.is_available() else None
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return device
    if not index:
        return f"cuda:{world.local_rank}"
    if not all_agree(world, index == str(world.local_rank)):
        raise UserInputError(
            f"--device {device} under torchrun would put several processes on one GPU: each "
            "process takes the GPU of its LOCAL_RANK; pass --device cuda (choose the GPUs with "
            "CUDA_VISIBLE_DEVICES)"
        )
    return device


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
    """Where tensors for small collectives live: the CPU when the group has gloo, else the process's GPU."""
    if "gloo" in str(dist.get_backend()):
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def shard_range(count: int, world: World) -> range:
    """The contiguous block of 0..count-1 that `world.rank` handles: blocks differ in size by at most one."""
    return range(world.rank * count // world.size, (world.rank + 1) * count // world.size)
