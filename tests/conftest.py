"""Shared fixtures: small datasets the tests build themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


def write_image_folder(root: Path, classes: list[str], per_class: int, size: int = 16, seed: int = 0,
                       mode: str = "RGB") -> np.ndarray:
    """Write root/<class>/<i>.png with random smooth-ish images; returns them as N×H×W×C in file order."""
    rng = np.random.default_rng(seed)
    images = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            channels = 1 if mode == "L" else 3
            array = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
            Image.fromarray(array[:, :, 0] if mode == "L" else array).save(root / c / f"{i:03d}.png")
            images.append(array)
    return np.stack(images)


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """An ImageFolder with train/ (3 classes × 8) and test/ (3 classes × 2) splits of 16×16 RGB PNGs."""
    root = tmp_path / "tiny"
    write_image_folder(root / "train", ["cat", "dog", "ship"], 8, seed=1)
    write_image_folder(root / "test", ["cat", "dog", "ship"], 2, seed=2)
    return root


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep decode caches and downloads of every test out of the user's home."""
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("UNLEARNABLE_DATA", str(tmp_path_factory.mktemp("data")))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine a busy core
    makes every parallel region wait for it (50× slower steps measured): run such tests on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def crash_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch, start) -> None:
    """Call `start()` (a training run) with the first checkpoint written and then a KeyboardInterrupt."""
    import unlearnable.training.trainer as train_module
    real_save = train_module.save_checkpoint

    def save_then_crash(path: Path, state: dict) -> None:
        real_save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        start()
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch):
    """``register(registry, name, target, **tags)``: add an entry for this test only."""
    def add(registry, name: str, target, **tags) -> None:
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        registry.add(name, target, f"test entry {name}", **tags)
    return add
