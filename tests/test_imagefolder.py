"""ImageFolder directories and archives (data/imagefolder.py): order, pixels, splits, sizes, odd
files and image modes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import bilinear, expected_nchw, write_png
from unlearnable.data import imagefolder, load_dataset
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("private_cache")


def _pixels(seed: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> np.ndarray:
    """A random uint8 H×W×3 (or H×W for mode "L") image with width×height `size`."""
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_imagefolder_order_and_pixels(out_of_order_folder, tmp_path: Path) -> None:
    entries = out_of_order_folder(tmp_path / "ds")
    ds = load_dataset(str(tmp_path / "ds"), "train")
    assert ds.classes == ["apple", "mango", "zebra"]
    assert ds.labels.tolist() == [label for _, label, _ in entries]
    assert ds.images.shape == (7, 3, 5, 6)
    np.testing.assert_array_equal(ds.images.numpy(), expected_nchw(entries))
    assert ds.meta["source"] == {
        "spec": str(tmp_path / "ds"),
        "kind": "imagefolder",
        "split": "train",
        "path": str((tmp_path / "ds").resolve()),
    }


def test_imagefolder_matches_torchvision(out_of_order_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    monkeypatch.setattr(imagefolder, "BATCH_SIZE", 2)  # several batches in flight at once
    out_of_order_folder(tmp_path / "ds")
    reference = torchvision_datasets.ImageFolder(str(tmp_path / "ds"))
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.classes == reference.classes
    assert ds.labels.tolist() == [label for _, label in reference.samples]
    expected = np.stack([np.asarray(Image.open(path).convert("RGB")) for path, _ in reference.samples])
    np.testing.assert_array_equal(ds.numpy_nhwc(), expected)


def test_imagefolder_without_test_split(out_of_order_folder, tmp_path: Path) -> None:
    out_of_order_folder(tmp_path / "ds")
    with pytest.raises(UserInputError, match="no test split"):
        load_dataset(str(tmp_path / "ds"), "test")


def test_val_folder_is_the_test_split(out_of_order_folder, tmp_path: Path) -> None:
    train = out_of_order_folder(tmp_path / "ds" / "train")
    val = out_of_order_folder(tmp_path / "ds" / "val", seed=50)
    assert load_dataset(str(tmp_path / "ds"), "train").labels.tolist() == [label for _, label, _ in train]
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "ds"), "test").images.numpy(), expected_nchw(val))


def test_archive_with_splits_under_a_top_folder(out_of_order_folder, tmp_path: Path) -> None:
    train = out_of_order_folder(tmp_path / "src" / "cifarish" / "train")
    test = out_of_order_folder(tmp_path / "src" / "cifarish" / "test", seed=100)
    archive = tmp_path / "cifarish.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifarish", arcname="cifarish")
    for split, entries in (("train", train), ("test", test)):
        ds = load_dataset(str(archive), split)
        assert ds.classes == ["apple", "mango", "zebra"]
        assert ds.labels.tolist() == [label for _, label, _ in entries]
        np.testing.assert_array_equal(ds.images.numpy(), expected_nchw(entries))
        assert ds.meta["source"]["kind"] == "imagefolder" and ds.meta["source"]["path"] == str(archive)


def test_grayscale_folder_gives_one_channel(out_of_order_folder, tmp_path: Path) -> None:
    entries = out_of_order_folder(tmp_path / "ds", mode="L")
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.images.shape == (7, 1, 5, 6)
    np.testing.assert_array_equal(ds.images.numpy(), expected_nchw(entries))


def test_grayscale_then_colour_gives_three_channels(tmp_path: Path) -> None:
    gray, colour = _pixels(1, mode="L"), _pixels(2)
    write_png(tmp_path / "ds" / "a" / "0.png", gray)
    write_png(tmp_path / "ds" / "b" / "0.png", colour)
    images = load_dataset(str(tmp_path / "ds")).numpy_nhwc()
    np.testing.assert_array_equal(images[0], np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_array_equal(images[1], colour)


def test_corrupt_image_is_named(out_of_order_folder, tmp_path: Path) -> None:
    out_of_order_folder(tmp_path / "ds")
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


def test_mixed_sizes_are_refused(out_of_order_folder, tmp_path: Path) -> None:
    out_of_order_folder(tmp_path / "ds")
    write_png(tmp_path / "ds" / "zebra" / "3.png", _pixels(9, size=(8, 5)))
    with pytest.raises(UserInputError, match=r"zebra/3\.png is 8x5 pixels but .* is 6x5.*--image-size S") as info:
        load_dataset(str(tmp_path / "ds"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("archived", [False, True])
def test_mixed_sizes_with_image_size_are_stretched(tmp_path: Path, archived: bool) -> None:
    small, wide = _pixels(1, size=(6, 5)), _pixels(2, size=(40, 24))
    rgba = np.random.default_rng(3).integers(0, 256, (12, 9, 4), dtype=np.uint8)
    write_png(tmp_path / "ds" / "a" / "small.png", small)
    write_png(tmp_path / "ds" / "a" / "wide.png", wide)
    write_png(tmp_path / "ds" / "b" / "rgba.png", rgba)
    spec = tmp_path / "ds"
    if archived:
        spec = tmp_path / "ds.tar"
        with tarfile.open(spec, "w") as tar:
            tar.add(tmp_path / "ds", arcname="ds")
    ds = load_dataset(str(spec), "train", image_size=8)
    assert ds.images.shape == (3, 3, 8, 8) and ds.labels.tolist() == [0, 0, 1]
    expected = [bilinear(small, 8), bilinear(wide, 8), bilinear(rgba, 8)[..., :3]]
    rgb_of_rgba = np.asarray(Image.fromarray(rgba).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
    expected[2] = rgb_of_rgba
    np.testing.assert_array_equal(ds.numpy_nhwc(), np.stack(expected))
    assert ds.meta["source"]["image_size"] == 8
    # The native-size load of the same folder is still refused, and a size is cached apart.
    with pytest.raises(UserInputError, match="--image-size"):
        load_dataset(str(spec))
    assert load_dataset(str(spec), image_size=5).images.shape == (3, 3, 5, 5)


def test_same_size_folder_at_its_own_size_is_unchanged(out_of_order_folder, tmp_path: Path) -> None:
    entries = out_of_order_folder(tmp_path / "ds")
    native = load_dataset(str(tmp_path / "ds"))
    assert "image_size" not in native.meta["source"]
    np.testing.assert_array_equal(native.images.numpy(), expected_nchw(entries))
    square = tmp_path / "sq"
    for i in range(2):
        write_png(square / "c" / f"{i}.png", _pixels(i, size=(7, 7)))
    a, b = load_dataset(str(square)), load_dataset(str(square), image_size=7)
    np.testing.assert_array_equal(a.images.numpy(), b.images.numpy())


@pytest.mark.parametrize("bad", [0, 2, -5, 3.5, True])
def test_bad_image_size_is_one_line(out_of_order_folder, tmp_path: Path, bad: object) -> None:
    out_of_order_folder(tmp_path / "ds")
    with pytest.raises(UserInputError, match="--image-size .* is invalid; give an integer of at least 3"):
        load_dataset(str(tmp_path / "ds"), image_size=bad)  # type: ignore[arg-type]


def test_macos_and_hidden_files_are_skipped(out_of_order_folder, tmp_path: Path) -> None:
    entries = out_of_order_folder(tmp_path / "ds")
    (tmp_path / "ds" / "apple" / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / "ds" / "apple" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "ds" / "mango" / ".hidden.png").write_bytes(b"not really a png")
    write_png(tmp_path / "ds" / "zebra" / ".thumbs" / "t.png", _pixels(50))
    (tmp_path / "ds" / "__MACOSX" / "apple").mkdir(parents=True)
    (tmp_path / "ds" / "__MACOSX" / "apple" / "._a.png").write_bytes(b"fork")
    (tmp_path / "ds" / ".git").mkdir()
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.classes == ["apple", "mango", "zebra"]
    np.testing.assert_array_equal(ds.images.numpy(), expected_nchw(entries))
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    from_archive = load_dataset(str(archive))
    assert from_archive.classes == ds.classes
    np.testing.assert_array_equal(from_archive.images.numpy(), ds.images.numpy())


def test_symlinked_file_and_folder_are_read_once(out_of_order_folder, tmp_path: Path) -> None:
    entries = out_of_order_folder(tmp_path / "ds")
    os.symlink(tmp_path / "ds" / "zebra" / "1.png", tmp_path / "ds" / "apple" / "0-link.png")  # sorts first
    os.symlink(tmp_path / "ds" / "mango", tmp_path / "ds" / "mango" / "loop")  # a folder linked into itself
    os.symlink(tmp_path / "ds" / "apple" / "sub", tmp_path / "ds" / "zebra" / "sub-link")
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.labels.tolist() == [label for _, label, _ in entries]
    np.testing.assert_array_equal(ds.images.numpy(), expected_nchw(entries))
    # A link to a file outside the set is an image like any other.
    write_png(tmp_path / "elsewhere" / "x.png", _pixels(77))
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
    deep = np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800
    Image.fromarray(deep).save(tmp_path / "ds" / "a" / "deep.png")
    unit = np.linspace(0, 1, 36, dtype=np.float32).reshape(6, 6)
    Image.fromarray(unit, "F").save(tmp_path / "ds" / "a" / "float.tif")
    ds = load_dataset(str(tmp_path / "ds"))
    assert ds.images.shape == (3, 3, 6, 6)
    images = ds.numpy_nhwc()
    assert np.abs(images[0].astype(int) - rgb.astype(int)).mean() < 12  # JPEG of the RGB image
    np.testing.assert_array_equal(images[1, ..., 0], np.rint(deep * (255 / 65535)).astype(np.uint8))
    np.testing.assert_array_equal(images[2, ..., 1], np.rint(unit.astype(np.float64) * 255).astype(np.uint8))
