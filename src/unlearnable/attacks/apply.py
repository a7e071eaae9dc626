"""Apply an attack to a dataset: the protected copy with its key in ``meta``."""

from __future__ import annotations

from typing import Any

import torch

from unlearnable import __version__
from unlearnable.attacks import ATTACKS
from unlearnable.data.dataset import ImageDataset


def poison_dataset(
    train: ImageDataset, attack: str, device: str | torch.device | None = None, **params: Any
) -> ImageDataset:
    """Protect `train` with the attack registered as `attack`; the key goes into ``meta``.

    Args:
        train: the clean training split (uint8 N×C×H×W).
        attack: a name from ``unlearnable.attacks.ATTACKS``.
        params: the attack's keyword parameters (e.g. kernel_size, blur_parameter, seed, mix, grayscale).

    Returns:
        A new ImageDataset with the protected images, the same labels and classes, and ``meta``
        holding the source description plus the attack's key (attack, params, seed, kernels,
        poisoned_indices).
    """
    poison = ATTACKS.get(attack)(train.images, train.labels, train.num_classes, device=device, **params)
    return ImageDataset(poison.images, train.labels.clone(), list(train.classes), protected_meta(train, poison.key))


def protected_meta(train: ImageDataset, key: dict) -> dict:
    """The meta of a protected copy of `train`: its source, the attack's key, the version, and the
    class list of an ImageNet store."""
    extra = {"imagenet": train.meta["imagenet"]} if "imagenet" in train.meta else {}
    return {"source": train.meta.get("source"), **key, "unlearnable_version": __version__, **extra}
