"""Saved datasets: the directory `unlearnable poison` writes, and how to read it back.

Layout of a saved dataset DIR:

    DIR/images.npy        uint8 N×H×W×C, the (possibly protected) training images
    DIR/labels.npy        int64 (N,)
    DIR/meta.json         classes, source, and for protected data the attack and its key
    DIR/test/images.npy   the clean test split, when the source has one (never poisoned)
    DIR/test/labels.npy
    DIR/png/<class>/<index>.png   optional lossless ImageFolder export, named by index
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

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
        raise UserInputError(
            f"cannot read {root / 'meta.json'}: {e}; re-create the dataset with `unlearnable poison`"
        ) from None
    if not isinstance(meta, dict):
        raise UserInputError(
            f"{root / 'meta.json'} holds no JSON object; re-create the dataset with `unlearnable poison`"
        )
    if split == "test":
        if not (root / "test" / "images.npy").is_file():
            raise MissingSplitError(
                f"{root} holds no test split; load the test split from the source dataset {meta.get('source', {}).get('spec', '?')!r}"
            )
        files = root / "test"
        meta = {"source": meta.get("source"), "split": "test", "classes": meta.get("classes")}
    elif split == "train":
        files = root
    else:
        raise UserInputError(f"unknown split {split!r}; use 'train' or 'test'")
    # "c" (copy-on-write) maps the file without reading it and gives a writable array,
    # so torch.from_numpy works without copying and without touching the file.
    images = _load_array(files / "images.npy", "c" if mmap else None)
    labels = _load_array(files / "labels.npy", None)
    check_saved(files, meta, images, labels)
    return ImageDataset.from_numpy_nhwc(images, labels, meta["classes"], meta)


def _load_array(path: Path, mmap_mode: Literal["r", "r+", "c"] | None) -> np.ndarray:
    """np.load without pickles; a damaged file (empty, truncated, not .npy) is a UserInputError naming it."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserInputError(
            f"cannot read {path}: {e or 'the file is empty'}; the saved dataset is corrupt, "
            f"re-create it with the command that wrote it"
        ) from None


META_TYPES: dict[str, type | tuple[type, ...]] = {
    "source": dict,
    "attack": str,
    "params": dict,
    "seed": int,
    "num_images": int,
    "image_shape": list,
    "has_test_split": bool,
    "unlearnable_version": str,
    "subset": dict,
    "imagenet": dict,
    "deconv": dict,
}
"""The type of each meta.json field the tool reads (absent or null is fine: not every dataset has each)."""
NUMERIC_PARAMS = frozenset({"kernel_size", "blur_parameter", "mix", "eps", "norm", "patch_size", "padding"})
"""Attack parameters that are numbers (the key's "params"); `show` and the report print them."""
META_TYPE_NAMES: dict[type | tuple[type, ...], str] = {
    dict: "a JSON object",
    str: "a string",
    int: "an integer",
    list: "a list",
    bool: "true or false",
}


def check_saved(files: Path, meta: dict, images: np.ndarray, labels: np.ndarray) -> None:
    """Refuse, in one line, arrays and meta.json fields that do not fit together (an edited or corrupt
    saved dataset): shapes, dtypes, labels outside the class list, and a key that cannot be this
    dataset's (non-finite kernels, one kernel stack per class, poisoned indices within the images)."""
    fix = "re-create the dataset with the command that wrote it"
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
        raise UserInputError(
            f"{files} holds images {images.dtype} {images.shape} and labels {labels.shape}; "
            f"expected uint8 N×H×W×C and (N,); {fix}"
        )
    if images.shape[0] == 0 or min(images.shape[1:]) == 0 or images.shape[3] not in (1, 3):
        raise UserInputError(
            f"{files} holds images of shape {images.shape}; expected at least one image N×H×W×C with C = 1 or 3; {fix}"
        )
    where = f"{files.parent if files.name == 'test' else files}/meta.json"
    for name, kind in META_TYPES.items():
        if name in meta and meta[name] is not None and not isinstance(meta[name], kind):
            raise UserInputError(f"{where}: {name!r} must be {META_TYPE_NAMES[kind]}, not {meta[name]!r:.40}; {fix}")
    for name in ("spec", "kind", "path", "split"):
        value = (meta.get("source") or {}).get(name)
        if value is not None and not isinstance(value, str):
            raise UserInputError(f"{where}: source {name!r} must be a string, not {value!r:.40}; {fix}")
    for name, value in (meta.get("params") or {}).items():
        if name in NUMERIC_PARAMS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserInputError(f"{where}: params {name!r} must be a number, not {value!r:.40}; {fix}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserInputError(
            f"{files.parent if files.name == 'test' else files}/meta.json: 'classes' must be a "
            f"non-empty list of class names; {fix}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserInputError(f"{files}/labels.npy holds {labels.dtype}; expected integers; {fix}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= len(classes):
        raise UserInputError(
            f"{files}/labels.npy holds labels {low}..{high} but meta.json lists {len(classes)} "
            f"classes (labels 0..{len(classes) - 1}); {fix}"
        )
    if "kernels" in meta:
        try:
            kernels = np.asarray(meta["kernels"], dtype=np.float64)
        except (TypeError, ValueError):
            kernels = np.zeros(0)
        if kernels.ndim not in (3, 4) or kernels.shape[0] != len(classes) or not np.isfinite(kernels).all():
            raise UserInputError(
                f"{files}/meta.json: 'kernels' must be finite numbers, one k×k kernel (or stack) "
                f"per class ({len(classes)}); got shape {kernels.shape}; {fix}"
            )
    if "poisoned_indices" in meta:
        indices = meta["poisoned_indices"]
        if (
            not isinstance(indices, list)
            or not all(isinstance(i, int) and 0 <= i < len(labels) for i in indices)
            or len(set(indices)) != len(indices)
        ):
            raise UserInputError(
                f"{files}/meta.json: 'poisoned_indices' must list distinct image indices 0..{len(labels) - 1}; {fix}"
            )
