"""Datasets: load a known dataset by name, or an ImageFolder / archive / saved dataset by path.

    load_dataset("cifar10", "test")              # CIFAR-10 from the data root (downloaded if missing)
    load_dataset("shots/", "train")              # an ImageFolder directory
    load_dataset("cifar10-jpeg.tar.gz", "test")  # an archive of one, read without extracting
    load_dataset("out/protected", "train")       # a dataset `unlearnable poison` saved
    load_dataset("imagenet100", "train", "/data/imagenet")  # a store built (once) from an ImageNet folder

Every dataset's meta["source"] = {"spec", "kind", "split", "path"} says how to load it again:
for a named dataset, `path` is the data root that holds its files; otherwise the absolute path.
"""

from __future__ import annotations

import os
from pathlib import Path

from unlearnable.data.cifar import load_cifar
from unlearnable.data.dataset import ImageDataset, stratified_subset, to_unit_float
from unlearnable.data.fashion_mnist import load_fashion_mnist
from unlearnable.data.imagefolder import (
    ARCHIVE_SUFFIXES,
    check_image_size,
    is_archive,
    load_imagefolder,
    stretch_dataset,
)
from unlearnable.data.saved import is_saved_dataset, load_saved, save_dataset
from unlearnable.errors import UserInputError

__all__ = [
    "DATASET_NAMES",
    "ImageDataset",
    "check_labels",
    "stratified_subset",
    "to_unit_float",
    "is_saved_dataset",
    "load_dataset",
    "load_saved",
    "save_dataset",
    "stretch_dataset",
]

DATASET_NAMES = ("cifar10", "cifar100", "fashion-mnist", "imagenet100")
ALIASES = {"fmnist": "fashion-mnist"}
SPLITS = ("train", "test")
DATA_ROOT_ENV = "UNLEARNABLE_DATA"


def default_data_root() -> Path:
    """Where named datasets live: $UNLEARNABLE_DATA, else ~/.cache/unlearnable/data."""
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearnable" / "data"


def load_dataset(
    spec: str, split: str = "train", data_root: str | None = None, download: bool = True, image_size: int | None = None
) -> ImageDataset:
    """Load `split` ("train" or "test") of the dataset `spec`.

    `spec` is a name from DATASET_NAMES (or an alias in ALIASES), looked up under `data_root`
    (default: `default_data_root()`) and downloaded there when missing and `download` is set;
    "imagenet100" is never downloaded: `data_root` is a store built by `unlearnable prepare`, or
    an ImageNet folder whose default store is built once into the cache (unlearnable.data.imagenet).
    Or `spec` is a path to a saved dataset directory, an ImageFolder directory, or a
    .tar/.tar.gz/.tgz archive of one. Raises UserInputError for anything the user has to fix.

    `image_size` S gives every image at S×S (bilinear stretch): an ImageFolder is decoded at that
    size, so it may mix image sizes; arrays (named and saved datasets) are resized after loading.
    None keeps the native size (an ImageFolder of mixed sizes is then refused).
    """
    if split not in SPLITS:
        raise UserInputError(f"unknown split {split!r}; use 'train' or 'test'")
    check_image_size(image_size)
    if image_size is not None and not _is_imagefolder(spec):
        return stretch_dataset(load_dataset(spec, split, data_root, download), image_size)
    name = ALIASES.get(spec, spec)
    if name == "imagenet100":
        from unlearnable.data.imagenet import load_imagenet100

        return load_imagenet100(data_root, split)
    if name in DATASET_NAMES:
        root = (Path(data_root).expanduser() if data_root else default_data_root()).resolve()
        if name == "fashion-mnist":
            return load_fashion_mnist(root, split, download, spec)
        return load_cifar(name, root, split, download, spec)
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or "/" in spec or spec.startswith((".", "~")) or is_archive(path):
            raise UserInputError(f"{spec}: no such file or directory; check the path")
        aliases = ", ".join(f"{alias} = {target}" for alias, target in ALIASES.items())
        raise UserInputError(
            f"unknown dataset {spec!r}; known names: {', '.join(DATASET_NAMES)} ({aliases}), or give "
            "the path of an ImageFolder directory, a .tar/.tar.gz/.tgz archive of one or a saved "
            "dataset"
        )
    path = path.resolve()
    if is_saved_dataset(path):
        dataset = load_saved(path, split)
        if not dataset.meta.get("source"):
            dataset.meta["source"] = {"spec": spec, "kind": "saved", "split": split, "path": str(path)}
        return dataset
    if path.is_dir() or is_archive(path):
        return load_imagefolder(path, split, spec, image_size)
    raise UserInputError(
        f"{path} is neither a directory nor an archive ({', '.join(ARCHIVE_SUFFIXES)}); give an "
        "ImageFolder directory, an archive of one, a saved dataset or a dataset name"
    )


def _is_imagefolder(spec: str) -> bool:
    """True when `spec` is a path that `load_dataset` reads as an ImageFolder directory or archive."""
    if ALIASES.get(spec, spec) in DATASET_NAMES:
        return False
    path = Path(spec).expanduser()
    return path.exists() and not is_saved_dataset(path) and (path.is_dir() or is_archive(path))


def check_labels(ds: ImageDataset, what: str) -> None:
    """Refuse labels outside 0..len(classes)-1 (e.g. a meta.json whose class list disagrees with labels.npy)."""
    if len(ds) == 0:
        return
    low, high = int(ds.labels.min()), int(ds.labels.max())
    if low < 0 or high >= ds.num_classes:
        raise UserInputError(
            f"{what} has labels from {low} to {high} but names {ds.num_classes} classes; make its "
            f"class list (meta.json or class folders) and its labels agree"
        )
