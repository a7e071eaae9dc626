"""CIFAR (data/cifar.py): the pickles, refused globals, damage, download and the shared JPEG archive."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unlearnable.data import cifar, load_dataset
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("private_cache")


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_dict(n: int, label_key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key.encode(): rng.integers(0, 10, n).tolist(),
    }


def _write_cifar10(root: Path) -> dict[str, dict]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_dict(2, "labels", i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_dict(3, "labels", 9)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}))
    return batches


def test_cifar10_pickles(tmp_path: Path) -> None:
    batches = _write_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", data_root=str(tmp_path), download=False)
    assert train.images.shape == (10, 3, 32, 32) and train.classes == CIFAR10_CLASSES
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_array_equal(train.images.numpy().reshape(10, 3072), expected)
    np.testing.assert_array_equal(train.images.numpy()[3, 1], expected[3, 1024:2048].reshape(32, 32))
    assert train.labels.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    test = load_dataset("cifar10", "test", data_root=str(tmp_path), download=False)
    np.testing.assert_array_equal(test.images.numpy().reshape(3, 3072), batches["test_batch"][b"data"])
    assert test.meta["source"] == {"spec": "cifar10", "kind": "cifar10", "split": "test", "path": str(tmp_path)}


def test_cifar100_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class{i}" for i in range(100)]
    test = {
        "data": np.arange(4 * 3072, dtype=np.uint32).astype(np.uint8).reshape(4, 3072),
        "fine_labels": [99, 0, 5, 42],
        "coarse_labels": [1, 2, 3, 4],
    }
    (folder / "test").write_bytes(pickle.dumps(test))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["x"] * 20}))
    ds = load_dataset("cifar100", "test", data_root=str(tmp_path), download=False)
    assert ds.classes == names and ds.labels.tolist() == [99, 0, 5, 42]
    np.testing.assert_array_equal(ds.images.numpy().reshape(4, 3072), test["data"])
    with pytest.raises(UserInputError, match=r"cifar-100-python/train is missing"):
        load_dataset("cifar100", "train", data_root=str(tmp_path))


class _Exploit:
    def __reduce__(self) -> tuple:
        return os.system, ("exit 0",)


def test_cifar_pickle_with_foreign_global_is_refused(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": _Exploit()}))
    with pytest.raises(UserInputError, match=r"test_batch refers to (posix|nt)\.system"):
        load_dataset("cifar10", "test", data_root=str(tmp_path))


def test_cifar_truncated_pickle_is_named(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserInputError, match=r"cannot read .*data_batch_3"):
        load_dataset("cifar10", "train", data_root=str(tmp_path))


def _cifar10_archive(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    batches = _write_cifar10(tmp_path / "build")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, batches


def test_cifar_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, batches = _cifar10_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    root = tmp_path / "root"
    ds = load_dataset("cifar10", "test", data_root=str(root))
    np.testing.assert_array_equal(ds.images.numpy().reshape(3, 3072), batches["test_batch"][b"data"])
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]


def test_cifar_download_md5_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive, _ = _cifar10_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(UserInputError, match=r"could not download CIFAR-10 to .*root \(.*md5.*expected 0{32}\)"):
        load_dataset("cifar10", "train", data_root=str(root))
    assert list(root.iterdir()) == []


def test_cifar_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "absent.tar.gz").as_uri())
    with pytest.raises(UserInputError, match="could not download CIFAR-10 .*place cifar-10-batches-py there"):
        load_dataset("cifar10", "train", data_root=str(tmp_path / "root"))


def test_cifar_offline_names_expected_path(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=re.escape(f"expected {tmp_path}/cifar-100-python and downloading is off")):
        load_dataset("cifar100", "train", data_root=str(tmp_path), download=False)


def test_shared_cifar10_archive_test_split(shared_cifar) -> None:
    ds = load_dataset(str(shared_cifar), "test")
    assert ds.images.shape == (10000, 3, 32, 32) and ds.classes == CIFAR10_CLASSES
    assert ds.labels.bincount().tolist() == [1000] * 10
    with tarfile.open(shared_cifar, "r|gz") as tar:  # streamed: the member is near the start
        member = next(m for m in tar if m.name == "test/airplane/0000.jpg")
        first = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
    np.testing.assert_array_equal(ds.numpy_nhwc()[0], first)
