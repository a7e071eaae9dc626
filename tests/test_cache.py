"""The decode cache (data/cache.py)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from helpers import expected_nchw, write_png
from unlearnable.data import imagefolder, load_dataset
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("private_cache")


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
        np.testing.assert_array_equal(again.images.numpy(), expected_nchw(entries))
        np.testing.assert_array_equal(again.labels.numpy(), ds.labels.numpy())
    write_png(tmp_path / "ds" / "zebra" / "3.png", entries[0][2])  # a changed listing misses the cache
    with pytest.raises(UserInputError, match="decoded although"):
        load_dataset(str(tmp_path / "ds"))
