"""Batches for the trainer: from data resident on the training device, or streamed from a memory-mapped store.

Both loaders serve the same batches for the same generator: each training pass is a permutation
(drawn from the run's generator, on the training device) of the loader's `indices`, cut into full
batches; a test pass is the indices in order, last batch included. Under torch.distributed each
rank's loader gets its own shard of indices (`train.shard_indices`).

- `DeviceLoader` copies the shard to the device once (CIFAR: 150 MB) and gathers batches there.
- `StreamLoader` leaves the images where they are (e.g. a memory-mapped ImageNet store of 19 GB),
  gathers each batch on the CPU in background threads (a few batches ahead, pinned when the device
  is a GPU) and copies it over asynchronously.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from unlearnable.data import ImageDataset

PLACEMENTS = ("auto", "device", "stream")
CPU_RESIDENT_FRACTION = 0.25
"""On the CPU, "auto" copies the images into memory when they take at most this share of the RAM."""
GPU_RESIDENT_FRACTION = 0.5
"""On a GPU, "auto" keeps the images there when they take at most this share of its free memory."""
PREFETCH = 4
"""Batches gathered ahead of the one being trained on (StreamLoader)."""
COPY_CHUNK_BYTES = 1 << 28
"""DeviceLoader copies the images to the device 256 MB at a time."""


def resident_bytes_allowed(device: torch.device) -> int:
    """How many bytes of images "auto" placement keeps on `device` instead of streaming them."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(GPU_RESIDENT_FRACTION * free)
    return int(CPU_RESIDENT_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def make_loader(
    dataset: ImageDataset,
    device: torch.device,
    batch_size: int,
    indices: torch.Tensor | None = None,
    placement: str = "auto",
) -> DeviceLoader | StreamLoader:
    """A loader over `dataset[indices]` (all of it when None): "device", "stream", or "auto" (see above)."""
    count = len(dataset) if indices is None else len(indices)
    if placement == "auto":
        size = count * dataset.images[0].numel() if count else 0
        placement = "device" if size <= resident_bytes_allowed(device) else "stream"
    loader = DeviceLoader if placement == "device" else StreamLoader
    return loader(dataset, device, batch_size, indices)


class DeviceLoader:
    """The images at `indices` of a dataset, copied to the training device as uint8 and served in batches.

    Args:
        dataset: uint8 N×C×H×W images and labels (may be memory-mapped: only `indices` are read).
        device: where the copy lives.
        batch_size: images per batch.
        indices: int64 (M,) positions in `dataset`; None = every image.
    """

    placement = "device"

    def __init__(
        self, dataset: ImageDataset, device: torch.device, batch_size: int, indices: torch.Tensor | None = None
    ) -> None:
        indices = torch.arange(len(dataset)) if indices is None else indices.cpu()
        self.images = torch.empty((len(indices), *dataset.shape), dtype=torch.uint8, device=device)
        # Copied in chunks, so a memory-mapped store never has a second full copy in host memory.
        step = max(1, COPY_CHUNK_BYTES // max(1, dataset.images[0].numel()))
        for start in range(0, len(indices), step):
            chunk = indices[start : start + step]
            self.images[start : start + len(chunk)] = dataset.images[chunk].to(device)
        self.labels = dataset.labels[indices].to(device)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def shuffled(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`len(self)` batches (uint8 B×C×H×W, int64 (B,)) of a seeded permutation; drop_last."""
        order = torch.randperm(len(self.labels), generator=generator, device=self.labels.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images[index], self.labels[index]

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every image once, in order, as (uint8 B×C×H×W, int64 (B,)) slices."""
        for start in range(0, len(self.labels), self.batch_size):
            yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]


class StreamLoader:
    """The images at `indices` of a dataset, read batch by batch from where they are (RAM or a memory map).

    Same arguments and batches as `DeviceLoader`. Batches are gathered in the dataset's N×H×W×C
    layout (the store's, so each image is one contiguous read) by `workers` threads, `PREFETCH`
    batches ahead, then copied to the device and made N×C×H×W-contiguous there.
    """

    placement = "stream"

    def __init__(
        self,
        dataset: ImageDataset,
        device: torch.device,
        batch_size: int,
        indices: torch.Tensor | None = None,
        workers: int = 4,
    ) -> None:
        self.nhwc = dataset.images.permute(0, 2, 3, 1)
        self.indices = torch.arange(len(dataset)) if indices is None else indices.cpu()
        self.labels = dataset.labels[self.indices].to(device)
        self.device = device
        self.batch_size = batch_size
        self.workers = workers

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def shuffled(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """As `DeviceLoader.shuffled`: the same permutation for the same generator."""
        order = torch.randperm(len(self.labels), generator=generator, device=generator.device).cpu()
        batches = [
            order[start : start + self.batch_size] for start in range(0, len(self) * self.batch_size, self.batch_size)
        ]
        yield from self._stream(batches)

    def in_order(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """As `DeviceLoader.in_order`."""
        positions = torch.arange(len(self.labels))
        yield from self._stream(
            [positions[start : start + self.batch_size] for start in range(0, len(self.labels), self.batch_size)]
        )

    def _gather(self, positions: torch.Tensor) -> torch.Tensor:
        """uint8 B×H×W×C images at `positions` (0..len-1 of this loader), pinned for a GPU."""
        batch = self.nhwc[self.indices[positions]]
        return batch.pin_memory() if self.device.type == "cuda" else batch

    def _stream(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pending: deque[tuple[torch.Tensor, Future[torch.Tensor]]] = deque()
        with ThreadPoolExecutor(self.workers) as pool:
            try:
                for positions in batches:
                    pending.append((positions, pool.submit(self._gather, positions)))
                    if len(pending) > PREFETCH:
                        yield self._ready(*pending.popleft())
                while pending:
                    yield self._ready(*pending.popleft())
            finally:
                for _, future in pending:
                    future.cancel()

    def _ready(self, positions: torch.Tensor, future: Future[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = future.result().to(self.device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
        return images, self.labels[positions.to(self.labels.device)]
