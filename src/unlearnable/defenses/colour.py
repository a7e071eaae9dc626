"""The adaptive defense against class-wise colour shifts (DUNE's colour branch): find each shift
from the pixels it clipped, and undo it.

DUNE adds one constant per-channel shift s_c to every pixel of every image of class c and clips to
[0, 255]. That leaves a trace the key is not needed to read: with s > 0 no pixel of the class is
darker than s on that channel (its darkest pixels pile up at level s), with s < 0 none is brighter
than 255 + s. Natural photographs have pixels at both ends: on CIFAR-10 every class has 0.2-2.7 % of
its pixels at exactly 0 and at exactly 255 on every channel. So per class and channel, with ``lo``
the level below which a fraction `tail` of the class's pixels lie and ``hi`` the level above which
that fraction lies:

- lo > 0 and hi = 255: the shift is +lo, and every image of the class is moved down by lo;
- hi < 255 and lo = 0: the shift is hi − 255, and every image is moved up by 255 − hi;
- otherwise (both ends reached, or neither): no shift; that channel of the class is left as it is.

On DUNE's CIFAR-10 classes the estimates match the applied shifts to about one level. Pixels the
poison clipped stay at the far end minus the shift (their lost part cannot be recovered), and a
class whose images never reach one end naturally (a dark, low-contrast class) would be moved too.
"""

from __future__ import annotations

import torch

from unlearnable.data.dataset import ImageDataset
from unlearnable.defenses.base import Configurable
from unlearnable.params import Interval

TAIL = 1e-3
"""Fraction of a class's pixels (per channel) below ``lo`` and above ``hi``."""


def level_histograms(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class and channel, the count of pixels at each uint8 level: int64 K×C×256."""
    channels = images.shape[1]
    counts = torch.zeros(num_classes * channels * 256, dtype=torch.int64, device=images.device)
    labels = labels.to(images.device)
    offsets = torch.arange(channels, device=images.device)[None, :, None] * 256
    for start in range(0, len(images), 4096):
        batch = images[start : start + 4096].flatten(2).long()
        bins = labels[start : start + 4096, None, None] * (channels * 256) + offsets + batch
        counts += torch.bincount(bins.flatten(), minlength=counts.numel())
    return counts.view(num_classes, channels, 256)


def estimate_shifts(histograms: torch.Tensor, tail: float) -> torch.Tensor:
    """Each class's per-channel shift in uint8 levels (int64 K×C, 0 where no one-sided clip trace)
    from its level histograms (K×C×256, see the module docstring)."""
    total = histograms.sum(dim=-1, keepdim=True)
    need = (tail * total).clamp_min(1)
    lo = (histograms.cumsum(-1) >= need).int().argmax(-1)
    hi = 255 - (histograms.flip(-1).cumsum(-1) >= need).int().argmax(-1)  # a class without images: lo 0, hi 255
    shifts = torch.where((lo > 0) & (hi == 255), lo, torch.zeros_like(lo))
    return torch.where((hi < 255) & (lo == 0), hi - 255, shifts)


class ColourUnshift(Configurable):
    """The ``unshift`` preprocessing defense: estimate each class's per-channel colour shift from its
    clipped pixels and move every training image of the class back by it (see the module docstring).

    Args:
        tail: fraction of a class's pixels per channel that defines its darkest and brightest level,
            in (0, 0.5).
    """

    PARAMETER_CONSTRAINTS = {"tail": Interval(float, 0, 0.5, closed="neither")}

    def __init__(self, tail: float = TAIL) -> None:
        self._validate(tail=tail)
        self.tail = float(tail)

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        """A new dataset (same labels and classes) with the shifts undone, clamped to [0, 255];
        ``meta["unshift"]`` = {"shifts": K lists of C levels (the removed shift), "tail": tail}."""
        images = dataset.images
        labels = dataset.labels.to(images.device)
        shifts = estimate_shifts(level_histograms(images, labels, dataset.num_classes), self.tail)
        out = torch.empty_like(images)
        for start in range(0, len(images), 4096):
            batch = images[start : start + 4096].short() - shifts[labels[start : start + 4096], :, None, None]
            out[start : start + 4096] = batch.clamp(0, 255).to(torch.uint8)
        record = {"shifts": shifts.tolist(), "tail": self.tail}
        return ImageDataset(out, dataset.labels.clone(), list(dataset.classes), {**dataset.meta, "unshift": record})
