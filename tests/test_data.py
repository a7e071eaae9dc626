"""load_dataset's names and paths (the data package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearnable.data import DATASET_NAMES, load_dataset
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("private_cache")


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
