"""Shared fixtures: small datasets, models and settings the tests build themselves."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.tar.gz"


# --- environment --------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a CUDA GPU: skipped without one (``pytest -m cuda`` selects them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep decode caches and downloads of every test out of the user's home."""
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("UNLEARNABLE_DATA", str(tmp_path_factory.mktemp("data")))


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The decode cache of one test in its own tmp_path/decode-cache."""
    monkeypatch.setenv("UNLEARNABLE_CACHE", str(tmp_path / "decode-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine a busy core
    makes every parallel region wait for it (50× slower steps measured): run such tests on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch):
    """``register(registry, name, target, **tags)``: add an entry for this test only."""

    def add(registry, name: str, target, **tags) -> None:
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        registry.add(name, target, f"test entry {name}", **tags)

    return add


@pytest.fixture(scope="session")
def free_port():
    """``free_port()``: a TCP port on 127.0.0.1 that nothing listens on (for torchrun's rendezvous)."""

    def find() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return find


@pytest.fixture
def torchrun(free_port):
    """``torchrun(args, timeout)``: ``python -m torch.distributed.run`` with 2 local processes running
    ``python -m unlearnable ARGS`` (rendezvous on a free local port); the CompletedProcess, output as text."""

    def run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                   "127.0.0.1", "--master-port", str(free_port()), "-m", "unlearnable", *args]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def rand_images():
    """``rand_images(shape, seed=0, dtype=torch.float32)``: uniform random values in [0, 1) from a seeded generator."""

    def make(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)

    return make


# --- image folders and archives -----------------------------------------------------------------


def _write_image_folder(
    root: Path, classes: list[str], per_class: int, size: int = 16, seed: int = 0, mode: str = "RGB"
) -> np.ndarray:
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


@pytest.fixture(scope="session")
def image_folder():
    """``image_folder(root, classes, per_class, size=16, seed=0, mode="RGB")``: write root/<class>/<i>.png
    with random images; returns them as N×H×W×C in file order."""
    return _write_image_folder


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """An ImageFolder with train/ (3 classes × 8) and test/ (3 classes × 2) splits of 16×16 RGB PNGs."""
    root = tmp_path / "tiny"
    _write_image_folder(root / "train", ["cat", "dog", "ship"], 8, seed=1)
    _write_image_folder(root / "test", ["cat", "dog", "ship"], 2, seed=2)
    return root


def _pixels(seed: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> np.ndarray:
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _out_of_order_folder(root: Path, mode: str = "RGB", seed: int = 0) -> list[tuple[str, int, np.ndarray]]:
    layout = [  # creation order; "zebra" files sort as strings (1, 10, 2), not as numbers
        ("zebra/2.png", 2),
        ("apple/b.PNG", 0),
        ("zebra/10.png", 2),
        ("mango/x.png", 1),
        ("apple/sub/a.png", 0),
        ("zebra/1.png", 2),
        ("apple/a.png", 0),
        ("mango/notes.txt", 1),
    ]
    written = {}
    for i, (relative, label) in enumerate(layout):
        if relative.endswith(".txt"):
            (root / relative).write_text("not an image")
            continue
        written[relative] = (label, _pixels(seed + i, mode=mode))
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(written[relative][1]).save(root / relative)
    order = [
        "apple/a.png",
        "apple/b.PNG",
        "apple/sub/a.png",
        "mango/x.png",
        "zebra/1.png",
        "zebra/10.png",
        "zebra/2.png",
    ]
    return [(relative, *written[relative]) for relative in order]


@pytest.fixture(scope="session")
def out_of_order_folder():
    """``out_of_order_folder(root, mode="RGB", seed=0)``: an ImageFolder of 6×5 PNGs in three classes
    (one in a subfolder, one beside a text file) created out of order; returns (relative path, label,
    pixels) in torchvision's order."""
    return _out_of_order_folder


@pytest.fixture(scope="session")
def shared_cifar() -> Path:
    """The CIFAR-10 JPEG archive beside the checkout (../shared/data/cifar10-jpeg.tar.gz); skips without it."""
    if not SHARED_CIFAR.is_file():
        pytest.skip("needs the CIFAR-10 JPEG archive beside the checkout")
    return SHARED_CIFAR


@pytest.fixture(scope="module")
def imagenet_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic 4-class ImageNet tree (helpers.write_imagenet) built into a store at 64×64."""
    from helpers import write_imagenet
    from unlearnable.data.imagenet import build_store

    root = tmp_path_factory.mktemp("imagenet")
    write_imagenet(root / "tree")
    return build_store(root / "tree", root / "store", subset="all", image_size=64, progress=False)


# --- synthetic training data, a tiny model, a quick configuration --------------------------------

_BLOB_COLOURS = {
    "disc": [[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]],
    "square": [[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]],
}


def _blobs(n: int, seed: int, size: int = 32, classes: int = 4, shape: str = "disc"):
    from unlearnable.data import ImageDataset

    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor(_BLOB_COLOURS[shape][:classes], dtype=torch.float32)
    if shape == "disc":  # random labels; a disc of the class colour at a random centre
        labels = torch.randint(0, classes, (n,), generator=g)
        rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        centre = torch.randint(size // 4, 3 * size // 4, (2, n, 1, 1), generator=g)
        disc = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < (size // 5) ** 2).unsqueeze(1)
        noise = torch.rand(n, 3, size, size, generator=g) * 90
        images = torch.where(disc, colours[labels].view(n, 3, 1, 1), noise)
    elif shape == "square":  # the classes in turn; a square of the class colour on the diagonal
        labels = torch.arange(n) % classes
        images = torch.rand(n, 3, size, size, generator=g) * 80
        top = torch.randint(0, size // 2, (n,), generator=g)
        for i in range(n):
            images[i, :, top[i] : top[i] + size // 3, top[i] : top[i] + size // 3] = colours[labels[i]].view(3, 1, 1)
    else:
        raise ValueError(f"shape must be 'disc' or 'square' (got {shape!r})")
    return ImageDataset(
        images.round().to(torch.uint8),
        labels,
        ["red", "green", "blue", "yellow"][:classes],
        {"source": {"spec": f"blobs-{seed}", "kind": "synthetic"}},
    )


@pytest.fixture(scope="session")
def blobs():
    """``blobs(n, seed, size=32, classes=4, shape="disc")``: an ImageDataset of dark noisy images with one
    bright shape whose colour is the class, learnable in an epoch. "disc": random labels, a disc at a
    random centre; "square": the classes in turn, a square on the diagonal."""
    return _blobs


@pytest.fixture(scope="module")
def blob_data() -> tuple:
    """Training and test blobs (256 and 96 discs, seeds 0 and 1)."""
    return _blobs(256, seed=0), _blobs(96, seed=1)


@pytest.fixture(scope="module")
def small_blob_data() -> tuple:
    """Training and test blobs (128 and 64 discs, seeds 0 and 1): two batches of 64 an epoch."""
    return _blobs(128, seed=0), _blobs(64, seed=1)


@pytest.fixture(scope="module")
def square_blob_data() -> tuple:
    """Training and test blobs (96 and 32 squares, seeds 0 and 1)."""
    return _blobs(96, seed=0, shape="square"), _blobs(32, seed=1, shape="square")


def _tiny_net(num_classes: int = 4, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(4),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(16, num_classes),
    )


@pytest.fixture(scope="session")
def tiny_net():
    """``tiny_net(num_classes=4, dropout=0.0)``: a seeded two-conv CNN with BatchNorm (and dropout, to
    exercise the global RNG; at 0 it draws nothing)."""
    return _tiny_net


@pytest.fixture(scope="module")
def model_and_batch(blobs, tiny_net) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """tiny_net trained 15 steps on 64 square blobs (so its losses differ between inputs), and 24 of
    those images in [0, 1] with their labels."""
    model = tiny_net()
    images = blobs(64, seed=3, shape="square")
    x, y = images.images.float() / 255, images.labels
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, x[:24], y[:24]


@pytest.fixture(scope="session")
def quick_config():
    """``quick_config(out, **changes)``: two epochs of the quick recipe in batches of 64 on the CPU with the
    tiny model, with `changes` to TrainConfig."""
    from unlearnable.training.config import TrainConfig
    from unlearnable.training.recipes import resolve_recipe

    def make(out: Path, **changes) -> TrainConfig:
        recipe = resolve_recipe("quick", epochs=2, batch_size=64, test_batch_size=64)
        return dataclasses.replace(TrainConfig(out=str(out), model="tiny", recipe=recipe, device="cpu"), **changes)

    return make


@pytest.fixture(scope="session")
def tiny_protocol():
    """A TrainingProtocol of one epoch of the quick recipe in batches of 8 with the small model (and one
    PGD step for the cuda+at condition)."""
    from unlearnable.app.experiments import TrainingProtocol

    return TrainingProtocol(
        model="small",
        recipe="quick",
        overrides={"epochs": 1, "batch_size": 8, "test_batch_size": 8},
        at={"eps": 4 / 255, "steps": 1},
    )


@pytest.fixture
def crash_after_first_checkpoint(monkeypatch: pytest.MonkeyPatch):
    """``crash_after_first_checkpoint(start)``: call `start()` (a training run) with the first checkpoint
    written and then a KeyboardInterrupt."""
    import unlearnable.training.trainer as train_module

    def crash(start) -> None:
        real_save = train_module.save_checkpoint

        def save_then_crash(path: Path, state: dict) -> None:
            real_save(path, state)
            raise KeyboardInterrupt

        monkeypatch.setattr(train_module, "save_checkpoint", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            start()
        monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    return crash


# --- attacks ------------------------------------------------------------------------------------


def _random_set(n: int, shape: tuple[int, int, int] = (3, 16, 16), classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes  # every class present
    return images, labels[torch.randperm(n, generator=g)]


@pytest.fixture(scope="session")
def random_set():
    """``random_set(n, shape=(3, 16, 16), classes=4, seed=0)``: random uint8 images and shuffled labels
    with every class present."""
    return _random_set


@pytest.fixture(scope="session")
def poison():
    """``poison(name, images, labels, classes, **params)``: the registered attack on the CPU, quietly."""
    from unlearnable.attacks import ATTACKS

    def run(name: str, images: torch.Tensor, labels: torch.Tensor, classes: int, **params):
        return ATTACKS.get(name)(images, labels, classes, device="cpu", progress=False, **params)

    return run
