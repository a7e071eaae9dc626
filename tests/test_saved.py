"""Saved datasets (data/saved.py): the source they keep, and stretching when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import bilinear
from unlearnable.data import load_dataset, save_dataset

pytestmark = pytest.mark.usefixtures("private_cache")


def test_saved_dataset_is_stretched_when_asked(out_of_order_folder, tmp_path: Path) -> None:
    out_of_order_folder(tmp_path / "ds")
    train = load_dataset(str(tmp_path / "ds"))
    (tmp_path / "saved").mkdir()
    save_dataset(tmp_path / "saved", train)
    ds = load_dataset(str(tmp_path / "saved"), image_size=4)
    expected = np.stack([bilinear(image, 4) for image in train.numpy_nhwc()])
    np.testing.assert_array_equal(ds.numpy_nhwc(), expected)
    assert ds.meta["image_size"] == 4 and ds.meta["source"] == train.meta["source"]


def test_saved_dataset_keeps_or_gets_a_source(out_of_order_folder, tmp_path: Path) -> None:
    out_of_order_folder(tmp_path / "ds")
    train = load_dataset(str(tmp_path / "ds"))
    (tmp_path / "saved").mkdir()
    save_dataset(tmp_path / "saved", train, train.subset([0, 1]))
    assert load_dataset(str(tmp_path / "saved")).meta["source"] == train.meta["source"]
    (tmp_path / "bare").mkdir()
    train.meta = {}
    save_dataset(tmp_path / "bare", train)
    again = load_dataset(str(tmp_path / "bare"))
    assert again.meta["source"] == {
        "spec": str(tmp_path / "bare"),
        "kind": "saved",
        "split": "train",
        "path": str(tmp_path / "bare"),
    }
    np.testing.assert_array_equal(again.images.numpy(), train.images.numpy())
