"""Poison a dataset and save it with its key: the `unlearnable poison` stage as a function."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from unlearnable import __version__
from unlearnable.attacks import get_attack
from unlearnable.data import ImageDataset, load_dataset, save_dataset
from unlearnable.errors import MissingSplitError, UserInputError
from unlearnable.io import atomic_directory


def poison_dataset(train: ImageDataset, attack: str, device: str | None = None, **params) -> ImageDataset:
    """Protect `train` with the attack registered as `attack`; the key goes into ``meta``.

    Args:
        train: the clean training split (uint8 N×C×H×W).
        attack: a name from ``unlearnable.attacks.ATTACKS``.
        params: the attack's keyword parameters (e.g. kernel_size, blur_parameter, seed, mix, grayscale).

    Returns:
        A new ImageDataset with the protected images, the same labels and classes, and ``meta``
        holding the source description plus the attack's key (attack, params, seed, kernels,
        poisoned_indices).
    """
    poison = get_attack(attack)(train.images, train.labels, train.num_classes, device=device, **params)
    meta = {"source": train.meta.get("source"), **poison.key, "unlearnable_version": __version__}
    return ImageDataset(poison.images, train.labels.clone(), list(train.classes), meta)


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
        list(tqdm(pool.map(write, range(len(ds))), total=len(ds), desc="writing PNGs", unit="img",
                  disable=len(ds) < 5000))


def poison_command(data: str, attack: str, out: str | os.PathLike, data_root: str | None = None,
                   fmt: str = "npy", overwrite: bool = False, device: str | None = None,
                   **params) -> ImageDataset:
    """Load `data`, protect its training split, write the saved dataset to `out` atomically.

    The clean test split, when the source has one, is saved beside it (never poisoned).
    """
    if fmt not in ("npy", "png"):
        raise UserInputError(f"--format {fmt!r} is unknown; use 'npy' (arrays only) or 'png' (arrays plus a PNG ImageFolder)")
    train = load_dataset(data, "train", data_root)
    try:
        test = load_dataset(data, "test", data_root)
    except MissingSplitError:
        test = None
    protected = poison_dataset(train, attack, device=device, **params)
    with atomic_directory(out, overwrite) as tmp:
        save_dataset(tmp, protected, test)
        if fmt == "png":
            export_png(protected, tmp / "png")
    return protected


def psnr(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> float:
    """Peak signal-to-noise ratio (dB) between two uint8 image tensors of the same shape (N×...)."""
    squared = 0
    for s in range(0, len(a), chunk):
        d = a[s:s + chunk].to(torch.int32) - b[s:s + chunk].to(torch.int32)
        squared += int((d * d).sum())
    mse = squared / a.numel()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
