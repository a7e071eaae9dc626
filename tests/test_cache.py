"""The decode cache (data/cache.py)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unlearnable.data import imagefolder, load_dataset
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("private_cache")


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _expected_nchw(entries: list[tuple[str, int, np.ndarray]]) -> np.ndarray:
    stacked = np.stack([pixels if pixels.ndim == 3 else pixels[..., None] for _, _, pixels in entries])
    return stacked.transpose(0, 3, 1, 2)


def test_second_load_hits_the_cache(out_of_order_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entries = out_of_order_folder(tmp_path / "ds")
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
