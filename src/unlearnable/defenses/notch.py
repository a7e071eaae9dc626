"""The adaptive defense against class-wise gratings (the ``grating`` poison): notch them out.

A defender who knows that each class carries a sinusoid of its own frequency finds it without the
key: per class, the mean power of the grayscale, mean-removed images at every DFT frequency up to
``max_cycles`` cycles per image, divided by the mean of the other classes' power there; the frequency
where that ratio peaks is the class's grating when the ratio reaches ``min_ratio`` (natural class
spectra differ by far less). Every training image then has the found frequencies removed: their
DFT bins (and the conjugate bins) set to zero on every channel, which on the DFT grid is exactly the
projection out of the cosine and sine at that frequency, whatever the phase. Natural content at those
few low frequencies goes too.
"""

from __future__ import annotations

from typing import Any

import torch

from unlearnable.data.dataset import ImageDataset
from unlearnable.defenses.base import Configurable
from unlearnable.errors import UserInputError
from unlearnable.params import Interval

MIN_RATIO = 4.0
"""A class's peak counts as a grating when its power there is at least this many times the other classes'."""


def class_power(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the mean |DFT|² of the grayscale, mean-removed images: float64 (K, H, W) (``fft2`` layout)."""
    total = torch.zeros(num_classes, *images.shape[-2:], dtype=torch.float64, device=images.device)
    labels = labels.to(images.device)
    for start in range(0, len(images), 4096):
        gray = images[start : start + 4096].double().mean(dim=1)
        gray = gray - gray.mean(dim=(1, 2), keepdim=True)
        total.index_add_(0, labels[start : start + 4096], torch.fft.fft2(gray).abs().square())
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1)
    return total / counts[:, None, None]


def find_gratings(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, max_cycles: int, min_ratio: float
) -> tuple[list[tuple[int, int]], list[float]]:
    """Per class, its peak (f_x, f_y) (cycles per image, f_x ≥ 0) where the ratio reaches `min_ratio`.

    Returns:
        (the distinct frequencies found, each class's peak ratio).
    """
    if num_classes < 2:
        raise UserInputError("notch compares each class with the others: it needs at least 2 classes")
    h, w = images.shape[-2:]
    power = class_power(images, labels, num_classes)
    others = (power.sum(dim=0, keepdim=True) - power) / (num_classes - 1)
    ratio = power / others.clamp_min(1e-12)
    fy = torch.fft.fftfreq(h, 1 / h, device=images.device).round().long()[:, None].expand(h, w)
    fx = torch.fft.fftfreq(w, 1 / w, device=images.device).round().long()[None, :].expand(h, w)
    allowed = (fx.abs() <= max_cycles) & (fy.abs() <= max_cycles) & ((fx > 0) | ((fx == 0) & (fy > 0)))
    ratio = torch.where(allowed, ratio, torch.zeros_like(ratio)).flatten(1)
    peaks, where = ratio.max(dim=1)
    found = sorted(
        {
            (int(fx.flatten()[i]), int(fy.flatten()[i]))
            for i, peak in zip(where.tolist(), peaks.tolist())
            if peak >= min_ratio
        }
    )
    return found, peaks.tolist()


def remove_frequencies(images: torch.Tensor, found: list[tuple[int, int]]) -> torch.Tensor:
    """uint8 N×C×H×W with the DFT bins ±(f_x, f_y) of every frequency in `found` zeroed, rounded and clamped."""
    if not found:
        return images.clone()
    h, w = images.shape[-2:]
    mask = torch.ones(h, w, dtype=torch.bool, device=images.device)
    for fx, fy in found:
        mask[fy % h, fx % w] = False
        mask[-fy % h, -fx % w] = False
    out = torch.empty_like(images)
    for start in range(0, len(images), 4096):
        spectrum = torch.fft.fft2(images[start : start + 4096].double()) * mask
        out[start : start + 4096] = torch.fft.ifft2(spectrum).real.round().clamp(0, 255).to(torch.uint8)
    return out


class Notch(Configurable):
    """The ``notch`` preprocessing defense: find the class-wise gratings and remove them from every
    training image (see the module docstring).

    Args:
        max_cycles: highest |f_x|, |f_y| searched, in cycles per image (≥ 1).
        min_ratio: a class's peak power ratio that counts as a grating (> 1).
    """

    PARAMETER_CONSTRAINTS = {
        "max_cycles": Interval(int, 1, None),
        "min_ratio": Interval(float, 1, None, closed="neither"),
    }

    def __init__(self, max_cycles: int = 8, min_ratio: float = MIN_RATIO) -> None:
        self._validate(max_cycles=max_cycles, min_ratio=min_ratio)
        self.max_cycles, self.min_ratio = max_cycles, float(min_ratio)

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        """A new dataset (same labels and classes) with the gratings removed; ``meta["notch"]`` =
        {"frequencies": found (f_x, f_y) list, "ratios": each class's peak ratio, settings}."""
        images = dataset.images
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise UserInputError(f"notch expects uint8 images N×C×H×W, got {images.dtype} {tuple(images.shape)}")
        found, ratios = find_gratings(images, dataset.labels, dataset.num_classes, self.max_cycles, self.min_ratio)
        record: dict[str, Any] = {
            "frequencies": [list(f) for f in found],
            "ratios": ratios,
            "max_cycles": self.max_cycles,
            "min_ratio": self.min_ratio,
        }
        return ImageDataset(
            remove_frequencies(images, found),
            dataset.labels.clone(),
            list(dataset.classes),
            {**dataset.meta, "notch": record},
        )
