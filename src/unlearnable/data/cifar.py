"""CIFAR-10 and CIFAR-100 in the layout torchvision (and the original "python version") uses.

    <data_root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    <data_root>/cifar-100-python/{train, test, meta}

Each file is a pickled dict: b"data" is uint8 N×3072 (the 3 colour planes of a 32×32 image,
row-major), the labels are a list of N ints (CIFAR-100: the 100 fine labels). The pickles are
read with an unpickler that only rebuilds numpy arrays and refuses every other global.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from unlearnable.data.cache import DownloadError, download_verified
from unlearnable.data.dataset import ImageDataset
from unlearnable.errors import UserInputError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

# What a pickled numpy array needs: _reconstruct/ndarray/dtype (protocols 0-4, as in the real
# files) and _frombuffer (protocol 5, what pickle.dump writes by default under numpy >= 1.16).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


@dataclass(frozen=True)
class _Layout:
    """Where one CIFAR variant keeps its files and what its dicts call things."""

    title: str
    folder: str
    splits: dict[str, tuple[str, ...]]
    meta_file: str
    label_key: str
    names_key: str


_LAYOUTS = {
    "cifar10": _Layout(
        "CIFAR-10",
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": _Layout(
        "CIFAR-100",
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy globals an array needs."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UserInputError(
                f"{self.path} refers to {module}.{name}, which a CIFAR file never does; refusing to "
                "unpickle it, delete it and download the dataset again"
            ) from None


def load_cifar(name: str, root: Path, split: str, download: bool, spec: str) -> ImageDataset:
    """Load split "train" or "test" of `name` ("cifar10" or "cifar100") from `root`.

    Downloads and extracts the archive into `root` when its folder is missing and `download` is
    set. Images are uint8 N×3×32×32; meta["source"]["path"] is `root`, the data root to pass again.
    """
    layout = _LAYOUTS[name]
    folder = root / layout.folder
    if not folder.is_dir():
        url, md5 = (CIFAR10_URL, CIFAR10_MD5) if name == "cifar10" else (CIFAR100_URL, CIFAR100_MD5)
        if not download:
            raise UserInputError(
                f"{layout.title} not found: expected {folder} and downloading is off; download and "
                f"extract {url} into {root}, or pass --data-root"
            )
        _download(layout, url, md5, root)
    meta = _unpickle(folder / layout.meta_file, layout)
    classes = [_text(label) for label in _field(meta, layout.names_key, folder / layout.meta_file)]
    parts = [_read_batch(folder / file, layout, len(classes)) for file in layout.splits[split]]
    images = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([labels for _, labels in parts])
    source = {"spec": spec, "kind": name, "split": split, "path": str(root)}
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes, {"source": source})


def _download(layout: _Layout, url: str, md5: str, root: Path) -> None:
    """Download the archive at `url` into `root`, check `md5`, extract it and rename its folder into place."""
    archive = root / url.rsplit("/", 1)[-1]
    try:
        download_verified(url, md5, archive)
        try:
            with tempfile.TemporaryDirectory(prefix=f".{layout.folder}.", dir=root) as tmp:
                with tarfile.open(archive, "r:*") as tar:
                    tar.extractall(tmp, filter="data")
                if not (Path(tmp) / layout.folder).is_dir():
                    raise DownloadError(f"{archive.name} has no {layout.folder} folder")
                os.replace(Path(tmp) / layout.folder, root / layout.folder)
        finally:
            archive.unlink(missing_ok=True)
    except (DownloadError, OSError, tarfile.TarError, EOFError, zlib.error) as e:
        raise UserInputError(
            f"could not download {layout.title} to {root} ({e}); place {layout.folder} there or pass --data-root"
        ) from None


def _unpickle(path: Path, layout: _Layout) -> dict[str, Any]:
    """The dict pickled in `path`, with bytes keys decoded to str."""
    if not path.is_file():
        raise UserInputError(f"{path} is missing; restore it, or delete {path.parent} to download {layout.title} again")
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, path).load()
    except UserInputError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as e:
        raise UserInputError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt, delete "
            f"{path.parent} to download {layout.title} again"
        ) from None
    if not isinstance(obj, dict):
        raise UserInputError(
            f"{path} holds a {type(obj).__name__}, not a CIFAR dict; delete {path.parent} to "
            f"download {layout.title} again"
        )
    return {_text(key): value for key, value in obj.items()}


def _field(batch: dict[str, Any], key: str, path: Path) -> Any:
    """batch[key], or a UserInputError naming the file."""
    if key not in batch:
        raise UserInputError(
            f"{path} has no {key!r} entry (it has {sorted(batch)}); it is not a CIFAR file of this kind, replace it"
        )
    return batch[key]


def _read_batch(path: Path, layout: _Layout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N×3072 images and int64 (N,) labels of one batch file, checked."""
    batch = _unpickle(path, layout)
    data = _field(batch, "data", path)
    labels = np.asarray(_field(batch, layout.label_key, path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserInputError(
            f"{path}: 'data' is not a uint8 N×3072 array; the file is corrupt, delete "
            f"{path.parent} to download {layout.title} again"
        )
    if (
        labels.shape != (data.shape[0],)
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels.size and (labels.min() < 0 or labels.max() >= num_classes))
    ):
        raise UserInputError(
            f"{path}: {layout.label_key!r} is not {data.shape[0]} labels in 0..{num_classes - 1}; "
            f"the file is corrupt, delete {path.parent} to download {layout.title} again"
        )
    return data, labels.astype(np.int64)


def _text(value: str | bytes) -> str:
    """A str from a str or latin-1 bytes (keys and names written by Python 2)."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
