"""Poison a dataset and save it with its key: the `unlearnable poison` stage as a function."""

from __future__ import annotations

import ctypes
import inspect
import mmap
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from unlearnable import distributed
from unlearnable.attacks import ATTACKS
from unlearnable.attacks.apply import poison_dataset, protected_meta
from unlearnable.data import ImageDataset, is_saved_dataset, load_dataset, load_saved
from unlearnable.data.imagenet import store_path
from unlearnable.data.saved import with_saved_source, write_meta_and_test
from unlearnable.distributed import World, shard_range
from unlearnable.errors import MissingSplitError, UserInputError
from unlearnable.io import check_output, shared_atomic_directory


def streams_to_disk(attack: str) -> bool:
    """True when `attack` writes into a given output and computes a given share of rows (the CUDA family)."""
    takes = inspect.signature(ATTACKS.get(attack)).parameters
    return "out" in takes and "rows" in takes


BLOCK_BYTES = 1 << 30
"""`poison_to_directory` protects and writes back memory-mapped data 1 GiB at a time."""
MADV_DONTNEED = 4


def release_pages(images: torch.Tensor) -> None:
    """Drop this process's hold on the file-mapped pages under `images` (a slice of a memory-mapped file).

    Linux ``madvise(MADV_DONTNEED)``, applied only when the range lies inside one mapping of a file
    (/proc/self/maps): the pages leave the process's resident memory; what was written through a
    shared mapping stays in the page cache on its way to the file, and an unwritten copy-on-write
    mapping reads the file again if touched again. Without it a pass over a 19 GB store keeps every
    page it touched resident until the kernel reclaims them. Ordinary memory, and other systems,
    are left alone (there MADV_DONTNEED would zero the data).
    """
    if not sys.platform.startswith("linux") or images.numel() == 0:
        return
    first = images.data_ptr()
    last = first + images.numel() * images.element_size()
    start = first // mmap.PAGESIZE * mmap.PAGESIZE
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                low, high = (int(bound, 16) for bound in fields[0].split("-"))
                if low <= start and last <= high:
                    if len(fields) >= 6 and fields[4] != "0" and fields[5].startswith("/"):  # a file's pages
                        ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(last - start), MADV_DONTNEED)
                    return
    except OSError:
        return


def poison_to_directory(
    train: ImageDataset,
    attack: str,
    directory: Path,
    test: ImageDataset | None = None,
    world: World = World(),
    device: str | None = None,
    **params,
) -> ImageDataset:
    """Protect `train` straight into the saved dataset `directory` (which exists and is empty).

    For the attacks of `streams_to_disk` the protected images go into a memory-mapped
    directory/images.npy chunk by chunk, never whole in memory (ImageNet-100 at 224² is 19 GB), a
    1 GiB block at a time whose mapped pages are then released (`release_pages`), and each process
    of `world` computes its contiguous share of images; the key is drawn in full by
    every process (it is cheap) and rank 0 writes labels, meta.json and the test split. Other
    attacks protect in memory on one process. Every process calls this.

    Returns:
        The saved dataset, read back memory-mapped.
    """
    if streams_to_disk(attack):
        nhwc = (len(train), *train.shape[1:], train.shape[0])
        if world.main:
            np.lib.format.open_memmap(directory / "images.npy", mode="w+", dtype=np.uint8, shape=nhwc).flush()
        distributed.barrier(world)
        images = np.load(directory / "images.npy", mmap_mode="r+")
        out = torch.from_numpy(images).permute(0, 3, 1, 2)
        mine = shard_range(len(train), world)
        step = max(1, BLOCK_BYTES // train.images[0].numel())
        with tqdm(total=len(mine), desc=f"{attack}", unit="img", disable=not world.main or len(mine) < 20_000) as bar:
            for start in range(mine.start, mine.stop, step):
                block = range(start, min(start + step, mine.stop))
                key = ATTACKS.get(attack)(
                    train.images,
                    train.labels,
                    train.num_classes,
                    device=device,
                    out=out,
                    rows=block,
                    progress=False,
                    **params,
                ).key
                images.flush()
                release_pages(out[block.start : block.stop])
                release_pages(train.images[block.start : block.stop])
                bar.update(len(block))
        protected = ImageDataset(out, train.labels, list(train.classes), protected_meta(train, key))
    elif world.distributed:
        raise UserInputError(f"attack {attack!r} cannot be split across processes; run it without torchrun")
    else:
        protected = poison_dataset(train, attack, device, **params)
        np.save(directory / "images.npy", protected.numpy_nhwc())
    if world.main:
        np.save(directory / "labels.npy", train.labels.numpy().astype(np.int64))
        write_meta_and_test(directory, protected, test)
    distributed.barrier(world)
    return load_saved(directory)


def class_dir_names(classes: list[str]) -> list[str]:
    """Folder names for an ImageFolder export whose sorted order gives back the same labels.

    Names are kept (with '/' replaced by '-') when they are unique and already sorted; otherwise
    each is prefixed with its zero-padded label, e.g. ``03-Dress``.
    """
    names = [c.replace("/", "-").replace(os.sep, "-") for c in classes]
    if names == sorted(names) and len(set(names)) == len(names):
        return names
    width = len(str(len(names) - 1))
    return [f"{i:0{width}d}-{n}" for i, n in enumerate(names)]


def export_png(ds: ImageDataset, root: Path, workers: int = 4) -> None:
    """Write `ds` as an ImageFolder of lossless PNGs: root/<class>/<index>.png (index = dataset order).

    Single-channel images are written as 8-bit grayscale, three-channel as RGB; reading the folder
    back gives the identical bytes.
    """
    dirs = class_dir_names(ds.classes)
    for d in dirs:
        (root / d).mkdir(parents=True)
    width = len(str(len(ds) - 1))
    labels = ds.labels.tolist()

    def write(i: int) -> None:
        array = ds.images[i].permute(1, 2, 0).numpy()
        image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
        image.save(root / dirs[labels[i]] / f"{i:0{width}d}.png", optimize=False)

    with ThreadPoolExecutor(workers) as pool:
        list(
            tqdm(
                pool.map(write, range(len(ds))), total=len(ds), desc="writing PNGs", unit="img", disable=len(ds) < 5000
            )
        )


def poison_command(
    data: str,
    attack: str,
    out: str | os.PathLike,
    data_root: str | None = None,
    fmt: str = "npy",
    overwrite: bool = False,
    device: str | None = None,
    **params,
) -> ImageDataset:
    """Load `data`, protect its training split, write the saved dataset to `out` atomically.

    The clean test split, when the source has one, is saved beside it (never poisoned). Under
    torchrun the processes split the images (`poison_to_directory`).
    """
    if fmt not in ("npy", "png"):
        raise UserInputError(
            f"--format {fmt!r} is unknown; use 'npy' (arrays only) or 'png' (arrays plus a PNG ImageFolder)"
        )
    inputs = [data] + ([data_root] if data_root else [])
    check_output(out, overwrite, inputs)
    ATTACKS.get(attack)  # an unknown name fails before anything is read
    world = distributed.init()
    with distributed.main_first(world):  # rank 0 fills the decode cache, the others then read it
        train = load_dataset(data, "train", data_root)
        try:
            test = load_dataset(data, "test", data_root)
        except MissingSplitError:
            test = None
    if data == "imagenet100" or is_saved_dataset(data):  # `show` and the report find the clean images there
        train = with_saved_source(train, store_path(data_root) if data == "imagenet100" else Path(data))
    with shared_atomic_directory(out, world, overwrite, inputs=inputs, kind="saved dataset") as tmp:
        protected = poison_to_directory(train, attack, tmp, test, world, device, **params)
        if fmt == "png" and world.main:
            export_png(protected, tmp / "png")
    return load_saved(out)
