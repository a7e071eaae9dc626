"""Dataset loaders: ImageFolder directories and archives, the decode cache, IDX, CIFAR pickles, downloads."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_CIFAR
from unlearnable.data import DATASET_NAMES, cifar, fashion_mnist, imagefolder, load_dataset, save_dataset
from unlearnable.errors import UserInputError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "decode-cache"))


def _pixels(seed: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> np.ndarray:
    """A random uint8 H×W×3 (or H×W for mode "L") image with width×height `size`."""
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _make_folder(root: Path, mode: str = "RGB", seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
    """An ImageFolder of PNGs created out of order; returns (relative path, label, pixels) in torchvision order."""
    layout = [  # creation order; "zebra" files sort as strings (1, 10, 2), not as numbers
        ("zebra/2.png", 2), ("apple/b.PNG", 0), ("zebra/10.png", 2), ("mango/x.png", 1),
        ("apple/sub/a.png", 0), ("zebra/1.png", 2), ("apple/a.png", 0), ("mango/notes.txt", 1),
    ]
    written = {}
    for i, (relative, label) in enumerate(layout):
        if relative.endswith(".txt"):
            (root / relative).write_text("not an image")
            continue
        written[relative] = (label, _pixels(seed + i, mode=mode))
        _write_png(root / relative, written[relative][1])
    order = ["apple/a.png", "apple/b.PNG", "apple/sub/a.png", "mango/x.png", "zebra/1.png", "zebra/10.png", "zebra/2.png"]
    return [(relative, *written[relative]) for relative in order]


def _expected_nchw(entries: list[tuple[str, int, np.ndarray]]) -> np.ndarray:
    stacked = np.stack([pixels if pixels.ndim == 3 else pixels[..., None] for _, _, pixels in entries])
    return stacked.transpose(0, 3, 1, 2)


def test_imagefolder_order_and_pixels(tmp_path: Path) -> None:
    entries = _make_folder(tmp_path / "ds")
    ds = load_dataset(str(tmp_path / "ds"), "train")
    assert ds.classes == ["apple", "mango", "zebra"]
    assert ds.labels.tolist() == [label for _, label, _ in entries]
    assert ds.images.shape == (7, 3, 5, 6)
    np.testing.assert_array_equal(ds.images.numpy(), _expected_nchw(entries))
    assert ds.meta["source"] == {"spec": str(tmp_path / "ds"), "kind": "imagefolder", "split": "train",
                                 "path": str((tmp_path / "ds").resolve())}


def test_imagefolder_matches_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    monkeypatch.setattr(imagefolder, "BATCH_SIZE", 2)  # several batches in flight at once
    _make_folder(tmp_path / "ds")
    reference = torchvision_datasets.ImageFolder(str(tmp_path / "ds"))
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.classes == reference.classes
    assert ds.labels.tolist() == [label for _, label in reference.samples]
    expected = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in reference.samples])
    np.testing.assert_array_equal(ds.numpy_nhwc(), expected)


def test_imagefolder_without_test_split(tmp_path: Path) -> None:
    _make_folder(tmp_path / "ds")
    with pytest.raises(UserInputError, match="no test split"):
        load_dataset(str(tmp_path / "ds"), "test")


def test_val_folder_is_the_test_split(tmp_path: Path) -> None:
    train = _make_folder(tmp_path / "ds" / "train")
    val = _make_folder(tmp_path / "ds" / "val", seed=50)
    assert load_dataset(str(tmp_path / "ds"), "train").labels.tolist() == [label for _, label, _ in train]
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "ds"), "test").images.numpy(), _expected_nchw(val))


def test_archive_with_splits_under_a_top_folder(tmp_path: Path) -> None:
    train = _make_folder(tmp_path / "src" / "cifarish" / "train")
    test = _make_folder(tmp_path / "src" / "cifarish" / "test", seed=100)
    archive = tmp_path / "cifarish.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifarish", arcname="cifarish")
    for split, entries in (("train", train), ("test", test)):
        ds = load_dataset(str(archive), split)
        assert ds.classes == ["apple", "mango", "zebra"]
        assert ds.labels.tolist() == [label for _, label, _ in entries]
        np.testing.assert_array_equal(ds.images.numpy(), _expected_nchw(entries))
        assert ds.meta["source"]["kind"] == "imagefolder" and ds.meta["source"]["path"] == str(archive)


def test_grayscale_folder_gives_one_channel(tmp_path: Path) -> None:
    entries = _make_folder(tmp_path / "ds", mode="L")
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.images.shape == (7, 1, 5, 6)
    np.testing.assert_array_equal(ds.images.numpy(), _expected_nchw(entries))


def test_grayscale_then_colour_gives_three_channels(tmp_path: Path) -> None:
    gray, colour = _pixels(1, mode="L"), _pixels(2)
    _write_png(tmp_path / "ds" / "a" / "0.png", gray)
    _write_png(tmp_path / "ds" / "b" / "0.png", colour)
    images = load_dataset(str(tmp_path / "ds")).numpy_nhwc()
    np.testing.assert_array_equal(images[0], np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(images[1], colour)


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    _make_folder(tmp_path / "ds")
    (tmp_path / "ds" / "mango" / "y.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserInputError, match=r"cannot decode .*mango/y\.png"):
        load_dataset(str(tmp_path / "ds"))


def test_corrupt_member_names_archive_and_member(tmp_path: Path) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("c/0.png", _png_bytes(_pixels(0))), ("c/1.png", b"not a png"), ("d/0.png", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UserInputError, match=r"cannot decode c/1\.png in archive .*bad\.tar"):
        load_dataset(str(archive))


def test_single_class_archive_is_not_looked_into(tmp_path: Path) -> None:
    archive = tmp_path / "one.tar"
    with tarfile.open(archive, "w") as tar:
        data = _png_bytes(_pixels(0))
        info = tarfile.TarInfo("./only/0.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ds = load_dataset(str(archive))
    assert ds.classes == ["only"] and ds.numpy_nhwc().tobytes() == _pixels(0).tobytes()


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    _make_folder(tmp_path / "ds")
    _write_png(tmp_path / "ds" / "zebra" / "3.png", _pixels(9, size=(8, 5)))
    with pytest.raises(UserInputError, match=r"zebra/3\.png is 8x5 pixels but .* is 6x5.*--image-size S") as info:
        load_dataset(str(tmp_path / "ds"))
    assert "\n" not in str(info.value)


def _bilinear(pixels: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("archived", [False, True])
def test_mixed_sizes_with_image_size_are_stretched(tmp_path: Path, archived: bool) -> None:
    small, wide = _pixels(1, size=(6, 5)), _pixels(2, size=(40, 24))
    rgba = np.random.default_rng(3).integers(0, 256, (12, 9, 4), dtype=np.uint8)
    _write_png(tmp_path / "ds" / "a" / "small.png", small)
    _write_png(tmp_path / "ds" / "a" / "wide.png", wide)
    _write_png(tmp_path / "ds" / "b" / "rgba.png", rgba)
    spec = tmp_path / "ds"
    if archived:
        spec = tmp_path / "ds.tar"
        with tarfile.open(spec, "w") as tar:
            tar.add(tmp_path / "ds", arcname="ds")
    ds = load_dataset(str(spec), "train", image_size=8)
    assert ds.images.shape == (3, 3, 8, 8) and ds.labels.tolist() == [0, 0, 1]
    expected = [_bilinear(small, 8), _bilinear(wide, 8), _bilinear(rgba, 8)[..., :3]]
    rgb_of_rgba = np.asarray(Image.fromarray(rgba).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
    expected[2] = rgb_of_rgba
    np.testing.assert_array_equal(ds.numpy_nhwc(), np.stack(expected))
    assert ds.meta["source"]["image_size"] == 8
    # The native-size load of the same folder is still refused, and a size is cached apart.
    with pytest.raises(UserInputError, match="--image-size"):
        load_dataset(str(spec))
    assert load_dataset(str(spec), image_size=5).images.shape == (3, 3, 5, 5)


def test_same_size_folder_at_its_own_size_is_unchanged(tmp_path: Path) -> None:
    entries = _make_folder(tmp_path / "ds")
    native = load_dataset(str(tmp_path / "ds"))
    assert "image_size" not in native.meta["source"]
    np.testing.assert_array_equal(native.images.numpy(), _expected_nchw(entries))
    square = tmp_path / "sq"
    for i in range(2):
        _write_png(square / "c" / f"{i}.png", _pixels(i, size=(7, 7)))
    a, b = load_dataset(str(square)), load_dataset(str(square), image_size=7)
    np.testing.assert_array_equal(a.images.numpy(), b.images.numpy())


@pytest.mark.parametrize("bad", [0, 2, -5, 3.5, True])
def test_bad_image_size_is_one_line(tmp_path: Path, bad: object) -> None:
    _make_folder(tmp_path / "ds")
    with pytest.raises(UserInputError, match="--image-size .* is invalid; give an integer of at least 3"):
        load_dataset(str(tmp_path / "ds"), image_size=bad)  # type: ignore[arg-type]


def test_saved_dataset_is_stretched_when_asked(tmp_path: Path) -> None:
    _make_folder(tmp_path / "ds")
    train = load_dataset(str(tmp_path / "ds"))
    (tmp_path / "saved").mkdir()
    save_dataset(tmp_path / "saved", train)
    ds = load_dataset(str(tmp_path / "saved"), image_size=4)
    expected = np.stack([_bilinear(image, 4) for image in train.numpy_nhwc()])
    np.testing.assert_array_equal(ds.numpy_nhwc(), expected)
    assert ds.meta["image_size"] == 4 and ds.meta["source"] == train.meta["source"]


def test_macos_and_hidden_files_are_skipped(tmp_path: Path) -> None:
    entries = _make_folder(tmp_path / "ds")
    (tmp_path / "ds" / "apple" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / "ds" / "apple" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "ds" / "mango" / ".hidden.png").write_bytes(b"not really a png")
    _write_png(tmp_path / "ds" / "zebra" / ".thumbs" / "t.png", _pixels(50))
    (tmp_path / "ds" / "__MACOSX" / "apple").mkdir(parents=True)
    (tmp_path / "ds" / "__MACOSX" / "apple" / "._a.png").write_bytes(b"fork")
    (tmp_path / "ds" / ".git").mkdir()
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.classes == ["apple", "mango", "zebra"]
    np.testing.assert_array_equal(ds.images.numpy(), _expected_nchw(entries))
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    from_archive = load_dataset(str(archive))
    assert from_archive.classes == ds.classes
    np.testing.assert_array_equal(from_archive.images.numpy(), ds.images.numpy())


def test_symlinked_file_and_folder_are_read_once(tmp_path: Path) -> None:
    entries = _make_folder(tmp_path / "ds")
    os.symlink(tmp_path / "ds" / "zebra" / "1.png", tmp_path / "ds" / "apple" / "0-link.png")  # sorts first
    os.symlink(tmp_path / "ds" / "mango", tmp_path / "ds" / "mango" / "loop")  # a folder linked into itself
    os.symlink(tmp_path / "ds" / "apple" / "sub", tmp_path / "ds" / "zebra" / "sub-link")
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.labels.tolist() == [label for _, label, _ in entries]
    np.testing.assert_array_equal(ds.images.numpy(), _expected_nchw(entries))
    # A link to a file outside the set is an image like any other.
    _write_png(tmp_path / "elsewhere" / "x.png", _pixels(77))
    os.symlink(tmp_path / "elsewhere" / "x.png", tmp_path / "ds" / "mango" / "y.png")
    assert load_dataset(str(tmp_path / "ds")).labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def _jpeg_with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[:10, :, 0] = 255  # red top half, stored landscape 30×20
    (tmp_path / "ds" / "c").mkdir(parents=True)
    (tmp_path / "ds" / "c" / "DSC_0001.JPG").write_bytes(_jpeg_with_orientation(pixels, 6))  # "rotate 90° CW"
    (tmp_path / "ds" / "c" / "plain.jpg").write_bytes(_jpeg_with_orientation(pixels, 1))
    with pytest.raises(UserInputError, match=r"is 30x20 pixels but .*DSC_0001\.JPG is 20x30"):
        load_dataset(str(tmp_path / "ds"))
    upright = load_dataset(str(tmp_path / "ds"), image_size=20).numpy_nhwc()
    red = upright[..., 0].astype(int)
    # Orientation 6 shows the stored top on the right: red right half; the plain copy keeps a red top.
    assert red[0, :, 12:].mean() > 200 and red[0, :, :8].mean() < 50
    assert red[1, :8, :].mean() > 200 and red[1, 12:, :].mean() < 50


def test_cmyk_and_16_bit_images_become_8_bit(tmp_path: Path) -> None:
    rgb = _pixels(5, size=(6, 6))
    (tmp_path / "ds" / "a").mkdir(parents=True)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "ds" / "a" / "cmyk.jpg", quality=100)
    deep = (np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800)
    Image.fromarray(deep).save(tmp_path / "ds" / "a" / "deep.png")
    unit = np.linspace(0, 1, 36, dtype=np.float32).reshape(6, 6)
    Image.fromarray(unit, "F").save(tmp_path / "ds" / "a" / "float.tif")
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.images.shape == (3, 3, 6, 6)
    images = ds.numpy_nhwc()
    assert np.abs(images[0].astype(int) - rgb.astype(int)).mean() < 12  # JPEG of the RGB image
    np.testing.assert_array_equal(images[1, ..., 0], np.rint(deep * (255 / 65535)).astype(np.uint8))
    np.testing.assert_array_equal(images[2, ..., 1], np.rint(unit.astype(np.float64) * 255).astype(np.uint8))


def test_second_load_hits_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = _make_folder(tmp_path / "ds")
    archive = tmp_path / "ds.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    first = [load_dataset(str(path)) for path in (tmp_path / "ds", archive)]

    def refuse(data: bytes, size: int | None = None) -> np.ndarray:
        raise AssertionError("decoded although the cache holds the arrays")

    monkeypatch.setattr(imagefolder, "decode_image", refuse)
    for ds, path in zip(first, (tmp_path / "ds", archive)):
        again = load_dataset(str(path))
        assert again.classes == ds.classes and again.meta == ds.meta
        np.testing.assert_array_equal(again.images.numpy(), _expected_nchw(entries))
        np.testing.assert_array_equal(again.labels.numpy(), ds.labels.numpy())
    _write_png(tmp_path / "ds" / "zebra" / "3.png", entries[0][2])  # a changed listing misses the cache
    with pytest.raises(UserInputError, match="decoded although"):
        load_dataset(str(tmp_path / "ds"))


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
    assert ds.meta["source"] == {"spec": "fmnist", "kind": "fashion-mnist", "split": "test",
                                 "path": str(tmp_path / "FashionMNIST" / "raw")}


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
    monkeypatch.setattr(fashion_mnist, "MD5", {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()})
    ds = load_dataset("fashion-mnist", "test", data_root=str(tmp_path / "root"))
    assert ds.labels.tolist() == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "root" / "fashion-mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def _cifar_dict(n: int, label_key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key.encode(): rng.integers(0, 10, n).tolist()}


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
    test = {"data": np.arange(4 * 3072, dtype=np.uint32).astype(np.uint8).reshape(4, 3072),
            "fine_labels": [99, 0, 5, 42], "coarse_labels": [1, 2, 3, 4]}
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


def test_unknown_name_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in DATASET_NAMES) and "path" in message
    with pytest.raises(UserInputError, match="no such file or directory"):
        load_dataset(str(tmp_path / "absent"))
    (tmp_path / "images.zip").write_bytes(b"PK")
    with pytest.raises(UserInputError, match="neither a directory nor an archive"):
        load_dataset(str(tmp_path / "images.zip"))
    with pytest.raises(UserInputError, match="unknown split"):
        load_dataset("cifar10", "validation")


def test_saved_dataset_keeps_or_gets_a_source(tmp_path: Path) -> None:
    _make_folder(tmp_path / "ds")
    train = load_dataset(str(tmp_path / "ds"))
    (tmp_path / "saved").mkdir()
    save_dataset(tmp_path / "saved", train, train.subset([0, 1]))
    assert load_dataset(str(tmp_path / "saved")).meta["source"] == train.meta["source"]
    (tmp_path / "bare").mkdir()
    train.meta = {}
    save_dataset(tmp_path / "bare", train)
    again = load_dataset(str(tmp_path / "bare"))
    assert again.meta["source"] == {"spec": str(tmp_path / "bare"), "kind": "saved", "split": "train",
                                    "path": str(tmp_path / "bare")}
    np.testing.assert_array_equal(again.images.numpy(), train.images.numpy())


@pytest.mark.skipif(not SHARED_CIFAR.is_file(), reason="shared CIFAR-10 archive not present")
def test_shared_cifar10_archive_test_split() -> None:
    ds = load_dataset(str(SHARED_CIFAR), "test")
    assert ds.images.shape == (10000, 3, 32, 32) and ds.classes == CIFAR10_CLASSES
    assert ds.labels.bincount().tolist() == [1000] * 10
    with tarfile.open(SHARED_CIFAR, "r|gz") as tar:  # streamed: the member is near the start
        member = next(m for m in tar if m.name == "test/airplane/0000.jpg")
        first = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
    np.testing.assert_array_equal(ds.numpy_nhwc()[0], first)
