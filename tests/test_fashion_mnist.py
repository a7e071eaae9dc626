"""Fashion-MNIST's IDX files (data/fashion_mnist.py): plain and gzipped, damage, offline, download."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from unlearnable.data import fashion_mnist, load_dataset
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("private_cache")


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def _write_fashion(directory: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = fashion_mnist.FILES[split]
    for name, data in ((images_name, _idx(0x803, images)), (labels_name, _idx(0x801, labels))):
        (directory / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_idx(tmp_path: Path, gz: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 3, 3, 1], dtype=np.uint8)
    _write_fashion(tmp_path / "FashionMNIST" / "raw", "test", images, labels, gz)
    ds = load_dataset("fmnist", "test", data_root=str(tmp_path))
    assert ds.images.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(ds.images.numpy()[:, 0], images)
    assert ds.labels.tolist() == [9, 0, 3, 3, 1]
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.meta["source"] == {
        "spec": "fmnist",
        "kind": "fashion-mnist",
        "split": "test",
        "path": str(tmp_path / "FashionMNIST" / "raw"),
    }


def test_fashion_mnist_truncated_file_is_named(tmp_path: Path) -> None:
    _write_fashion(tmp_path, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserInputError, match=r"train-images-idx3-ubyte .*truncated"):
        load_dataset("fashion-mnist", "train", data_root=str(tmp_path))


def test_fashion_mnist_bad_magic_is_named(tmp_path: Path) -> None:
    _write_fashion(tmp_path, "train", np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8), gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(0x803, np.zeros((4, 1, 1), np.uint8)))
    with pytest.raises(UserInputError, match=r"train-labels-idx1-ubyte is not an IDX label file"):
        load_dataset("fashion-mnist", "train", data_root=str(tmp_path))


def test_fashion_mnist_offline_names_expected_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", ())
    with pytest.raises(UserInputError, match=re.escape(f"expected {tmp_path}/fashion-mnist/train-images-idx3-ubyte")):
        load_dataset("fashion-mnist", "train", data_root=str(tmp_path), download=False)


def test_fashion_mnist_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    images = np.full((3, 28, 28), 7, np.uint8)
    _write_fashion(mirror, "test", images, np.array([1, 2, 3], np.uint8), gz=True)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", ())
    monkeypatch.setattr(fashion_mnist, "MIRROR", mirror.as_uri() + "/")
    monkeypatch.setattr(
        fashion_mnist, "MD5", {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    )
    ds = load_dataset("fashion-mnist", "test", data_root=str(tmp_path / "root"))
    assert ds.labels.tolist() == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "root" / "fashion-mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
