"""Saved datasets: the directory `unlearnable poison` writes, and how to read it back.

Layout of a saved dataset DIR:

    DIR/images.npy        uint8 N×H×W×C, the (possibly protected) training images
    DIR/labels.npy        int64 (N,)
    DIR/meta.json         classes, source, and for protected data the attack and its key
    DIR/test/images.npy   the clean test split, when the source has one (never poisoned)
    DIR/test/labels.npy
    DIR/png/<class>/<index>.png   optional lossless ImageFolder export (what an owner publishes)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from unlearnable.data.dataset import ImageDataset
from unlearnable.errors import MissingSplitError, UserInputError
from unlearnable.io import write_json


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """True when `path` is a directory holding images.npy, labels.npy and meta.json."""
    p = Path(path)
    return all((p / name).is_file() for name in ("images.npy", "labels.npy", "meta.json"))


def write_split(directory: Path, ds: ImageDataset) -> None:
    """Write images.npy (N×H×W×C) and labels.npy of `ds` into an existing `directory`."""
    np.save(directory / "images.npy", ds.numpy_nhwc())
    np.save(directory / "labels.npy", ds.labels.numpy().astype(np.int64))


def saved_source(directory: Path) -> dict[str, str]:
    """meta["source"] of a dataset made from the saved dataset `directory` (its clean original)."""
    return {"spec": str(directory), "kind": "saved", "split": "train", "path": str(Path(directory).resolve())}


def with_saved_source(ds: ImageDataset, directory: Path) -> ImageDataset:
    """`ds` (the same tensors) with meta["source"] naming the saved dataset `directory` as its clean original."""
    return ImageDataset(ds.images, ds.labels, ds.classes, {**ds.meta, "source": saved_source(directory)})


def save_dataset(directory: Path, train: ImageDataset, test: ImageDataset | None = None) -> None:
    """Write `train` (and the clean `test` split, if given) into `directory`, which must exist.

    Callers wrap this in `unlearnable.io.atomic_directory` so that nothing half-written appears.
    """
    write_split(directory, train)
    write_meta_and_test(directory, train, test)


def write_meta_and_test(directory: Path, train: ImageDataset, test: ImageDataset | None = None) -> None:
    """Write meta.json for `train` (its images and labels written already) and the `test` split, if given."""
    meta = dict(train.meta)
    meta["classes"] = list(train.classes)
    meta["num_images"] = len(train)
    meta["image_shape"] = list(train.shape)
    meta["has_test_split"] = test is not None
    write_json(directory / "meta.json", meta)
    if test is not None:
        (directory / "test").mkdir()
        write_split(directory / "test", test)


def load_saved(path: str | os.PathLike, split: str = "train", mmap: bool = True) -> ImageDataset:
    """Read a saved dataset; `mmap=True` maps images.npy from disk instead of reading it.

    split "train" gives the saved training images, "test" the clean test split saved beside them.
    """
    root = Path(path)
    if not is_saved_dataset(root):
        raise UserInputError(f"{root} is not a saved dataset (expected images.npy, labels.npy and meta.json in it)")
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserInputError(f"cannot read {root / 'meta.json'}: {e}; re-create the dataset with `unlearnable poison`") from None
    if split == "test":
        if not (root / "test" / "images.npy").is_file():
            raise MissingSplitError(f"{root} holds no test split; load the test split from the source dataset {meta.get('source', {}).get('spec', '?')!r}")
        files = root / "test"
        meta = {"source": meta.get("source"), "split": "test", "classes": meta["classes"]}
    elif split == "train":
        files = root
    else:
        raise UserInputError(f"unknown split {split!r}; use 'train' or 'test'")
    try:
        # "c" (copy-on-write) maps the file without reading it and gives a writable array,
        # so torch.from_numpy works without copying and without touching the file.
        images = np.load(files / "images.npy", mmap_mode="c" if mmap else None, allow_pickle=False)
        labels = np.load(files / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot read the arrays in {files}: {e}; the saved dataset is corrupt, re-create it") from None
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise UserInputError(f"{files} holds images {images.dtype} {images.shape} and labels {labels.shape}; expected uint8 N×H×W×C and (N,)")
    return ImageDataset.from_numpy_nhwc(images, labels, meta["classes"], meta)
