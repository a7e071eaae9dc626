"""Pure helpers shared by several test modules: the synthetic ImageNet tree (its class ids and names
are expected values in the tests that read it), small image makers, and one-line error checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unlearnable.errors import UserInputError

WNIDS = ["n00000001", "n00000002", "n00000003", "n00000004"]


NAMES = ["tench, Tinca tinca", "goldfish", "great white shark", "tiger shark"]


TRAIN_SIZES = [(40, 30), (23, 57), (64, 48), (31, 31), (50, 20), (17, 45)]  # (width, height)


VAL_SIZES = [(44, 33), (30, 40)]


CIRCLE = (WNIDS[3], 0)  # a 60×30 PNG with a centred disk: shows whether the aspect ratio survives


def smooth_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Random RGB content, smooth enough that resizing it matters."""
    small = rng.integers(0, 256, (max(2, height // 6), max(2, width // 6), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def disk_image(width: int = 60, height: int = 30, radius: float = 12.0) -> Image.Image:
    y, x = np.mgrid[:height, :width]
    inside = (x - (width - 1) / 2) ** 2 + (y - (height - 1) / 2) ** 2 <= radius**2
    return Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).convert("RGB")


def write_imagenet(root: Path, val: str = "csv", seed: int = 0) -> dict:
    """A 4-class ImageNet tree: 6 train images a class (JPEG, grayscale and CMYK JPEG, RGB, palette and
    RGBA PNG, mixed-case extensions) and 2 val images a class, laid out as `val` says:

        csv      val/*.JPEG + LOC_val_solution.csv       folders  val/<wnid>/*.JPEG
        text     val/*.JPEG + val_labels.txt             kaggle   ILSVRC/Data/CLS-LOC/... + the csv

    Returns {"train": train files in store order, "val": (file, label) in store order, "val_labels": file or None}.
    """
    rng = np.random.default_rng(seed)
    base = root / "ILSVRC" / "Data" / "CLS-LOC" if val == "kaggle" else root
    train = []
    for c, wnid in enumerate(WNIDS):
        folder = base / "train" / wnid
        folder.mkdir(parents=True)
        for i, (w, h) in enumerate(TRAIN_SIZES):
            image, name = smooth_image(rng, w, h), f"{wnid}_{i}.JPEG"
            if (wnid, i) == CIRCLE:
                image, name = disk_image(), f"{wnid}_{i}.png"
            elif (c, i) == (0, 1):
                image = image.convert("L")
            elif (c, i) == (1, 2):
                image = image.convert("CMYK")
            elif (c, i) == (2, 3):
                name = f"{wnid}_{i}.png"
            elif (c, i) == (2, 0):
                name = f"{wnid}_{i}.jpg"
            elif (c, i) == (3, 4):
                image, name = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), f"{wnid}_{i}.png"
            elif (c, i) == (3, 5):
                image, name = image.convert("RGBA"), f"{wnid}_{i}.PNG"
            image.save(folder / name, quality=90)
            train.append(folder / name)
    val_entries = []
    for k in range(2 * len(WNIDS)):  # names interleave the classes: 0, 3, 2, 1, 0, 3, 2, 1
        label, name = (3 * k) % len(WNIDS), f"ILSVRC2012_val_{k + 1:08d}.JPEG"
        folder = base / "val" / WNIDS[label] if val == "folders" else base / "val"
        folder.mkdir(parents=True, exist_ok=True)
        smooth_image(rng, *VAL_SIZES[k % 2]).save(folder / name, quality=90)
        val_entries.append((label, name, folder / name))
    labels_file = None
    if val in ("csv", "kaggle"):
        rows = [f"{name[:-5]},{WNIDS[label]} 1 2 30 40 {WNIDS[label]} 3 4 20 20" for label, name, _ in val_entries]
        (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    elif val == "text":
        labels_file = root / "val_labels.txt"
        labels_file.write_text(
            "# file wnid\n\n" + "".join(f"{name} {WNIDS[label]}\n" for label, name, _ in val_entries)
        )
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, NAMES)))
    return {"train": train, "val": [(path, label) for label, _, path in sorted(val_entries)], "val_labels": labels_file}


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def expected_nchw(entries: list[tuple[str, int, np.ndarray]]) -> np.ndarray:
    stacked = np.stack([pixels if pixels.ndim == 3 else pixels[..., None] for _, _, pixels in entries])
    return stacked.transpose(0, 3, 1, 2)


def seeded_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class AfterCropDummy:
    """A do-nothing after-crop transform, standing in for COIN / Cutout."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return "AfterCropDummy()"


def uint8_images(shape: tuple[int, ...], seed: int = 0, smooth: bool = True) -> torch.Tensor:
    """Random uint8 B×C×H×W images; `smooth` box-blurs them so JPEG has something image-like to do."""
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    if smooth:
        x = torch.nn.functional.avg_pool2d(x.float(), 3, 1, 1, count_include_pad=False).round().to(torch.uint8)
    return x


def uint8_levels_of(x: torch.Tensor) -> np.ndarray:
    """Float output on the uint8 grid → its integer levels (asserting it is on the grid)."""
    levels = x.double().numpy() * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    return np.round(levels).astype(int)


def one_line_error(call) -> str:
    with pytest.raises(UserInputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


def bilinear(pixels: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR))


def smooth_photo(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """A smooth float H×W×C photo-like image in [0, 1] (sines of random frequencies)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    f = rng.uniform(2, 6, 3)
    base = np.stack([np.sin(f[0] * xx + k + seed) * np.cos(f[1] * yy - k) for k in range(c)], axis=2) * 0.35 + 0.5
    blocks = rng.random((h // 8 + 1, w // 8 + 1, c)).repeat(8, 0).repeat(8, 1)[:h, :w] * 0.2
    return np.clip(base + blocks - 0.1 + 0.02 * rng.standard_normal((h, w, c)), 0, 1)
