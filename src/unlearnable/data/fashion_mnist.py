"""Fashion-MNIST from its four IDX files (raw or .gz), parsed directly.

IDX: a big-endian uint32 magic (0x00000803 for N×H×W uint8 images, 0x00000801 for N uint8
labels), one big-endian uint32 per dimension, then the bytes, row-major.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from unlearnable.data.cache import DownloadError, download_verified
from unlearnable.data.dataset import ImageDataset
from unlearnable.errors import UserInputError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# Searched after the data root: Debian's dataset-fashion-mnist package installs the .gz files here.
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def load_fashion_mnist(root: Path, split: str, download: bool, spec: str) -> ImageDataset:
    """Load split "train" or "test": uint8 N×1×28×28 images and labels 0..9.

    Looks in root, root/fashion-mnist, root/FashionMNIST/raw, then SYSTEM_DIRS; downloads into
    root/fashion-mnist when nothing is found and `download` is set. meta["source"]["path"] is
    the folder the files came from (passing it as the data root finds them again).
    """
    found = _locate(root, split)
    if found is None:
        target = root / "fashion-mnist"
        if not download:
            images_file, labels_file = FILES[split]
            searched = ", ".join(str(d) for d in (root, root / "FashionMNIST" / "raw", *SYSTEM_DIRS))
            raise UserInputError(
                f"Fashion-MNIST {split} files not found: expected {target / images_file}[.gz] and "
                f"{labels_file}[.gz] beside it (also searched {searched}) and downloading is off; "
                f"download them from {MIRROR} into {target}, or pass --data-root"
            )
        found = _download(target, split)
    images_path, labels_path = found
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if labels.shape[0] != images.shape[0] or labels.max(initial=0) >= len(CLASSES):
        raise UserInputError(
            f"{labels_path} holds {labels.shape[0]} labels (max {labels.max(initial=0)}) for "
            f"{images.shape[0]} images in {images_path}; expected one label 0..9 per image, replace "
            "the files"
        )
    source = {"spec": spec, "kind": "fashion-mnist", "split": split, "path": str(images_path.parent)}
    return ImageDataset(
        torch.from_numpy(images[:, None]), torch.from_numpy(labels.astype(np.int64)), list(CLASSES), {"source": source}
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in an IDX file (gzip-compressed when the name ends in .gz), checked.

    `magic` is IMAGES_MAGIC (result N×H×W) or LABELS_MAGIC (result (N,)).
    """
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as e:
        raise UserInputError(f"cannot read {path} ({e}); delete it and download it again") from None
    ndim = magic & 0xFF
    start = 4 + 4 * ndim
    kind = "image" if magic == IMAGES_MAGIC else "label"
    if len(data) < start or int.from_bytes(data[:4], "big") != magic:
        raise UserInputError(
            f"{path} is not an IDX {kind} file (magic {data[:4].hex()}, expected {magic:08x}); "
            "replace it with the Fashion-MNIST file of that name"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != start + math.prod(dims):
        raise UserInputError(
            f"{path} has {len(data) - start} data bytes but its header {dims} needs "
            f"{math.prod(dims)}; the file is truncated or corrupt, delete it and download it again"
        )
    return np.frombuffer(data, np.uint8, offset=start).reshape(dims).copy()


def _find(directory: Path, stem: str) -> Path | None:
    """directory/stem, else directory/stem.gz, else None."""
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _locate(root: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of `split` in the first folder that has both, or None."""
    images, labels = FILES[split]
    for directory in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw", *SYSTEM_DIRS):
        found = _find(directory, images), _find(directory, labels)
        if found[0] and found[1]:
            return found[0], found[1]
    return None


def _download(target: Path, split: str) -> tuple[Path, Path]:
    """Download the (images, labels) .gz files of `split` from MIRROR into `target`, md5-checked."""
    images, labels = (f"{stem}.gz" for stem in FILES[split])
    try:
        for name in (images, labels):
            download_verified(MIRROR + name, MD5[name], target / name)
    except DownloadError as e:
        raise UserInputError(
            f"could not download Fashion-MNIST to {target} ({e}); place {images} and {labels} there or pass --data-root"
        ) from None
    return target / images, target / labels
