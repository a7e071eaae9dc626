"""The in-memory dataset container shared by every stage of the flow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×C×H×W (0..255) → float32 in [0, 1] on the same device, as torchvision's ToTensor (x/255)."""
    return images.to(torch.float32).div_(255)


@dataclass
class ImageDataset:
    """A labelled image dataset.

    Attributes:
        images: uint8 tensor N×C×H×W, values 0..255. May be a zero-copy view of a
            memory-mapped N×H×W×C array on disk (then it is not contiguous).
        labels: int64 tensor of shape (N,), values in 0..len(classes)-1.
        classes: class names, index = label.
        meta: free-form JSON-serialisable metadata (source, split, attack key, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 N×C×H×W, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 of shape ({self.images.shape[0]},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    @classmethod
    def from_numpy_nhwc(
        cls, images: np.ndarray, labels: np.ndarray, classes: list[str], meta: dict[str, Any] | None = None
    ) -> ImageDataset:
        """Wrap an N×H×W×C (or N×H×W) uint8 array without copying it."""
        if images.ndim == 3:
            images = images[..., None]
        return cls(
            torch.from_numpy(images).permute(0, 3, 1, 2),
            torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
            list(classes),
            dict(meta or {}),
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def numpy_nhwc(self) -> np.ndarray:
        """The images as a contiguous uint8 N×H×W×C numpy array (the on-disk layout)."""
        return np.ascontiguousarray(self.images.permute(0, 2, 3, 1).numpy())

    def subset(self, indices: torch.Tensor | np.ndarray | list[int]) -> ImageDataset:
        """The images at `indices`, in that order (copies)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return ImageDataset(
            self.images[idx].contiguous(), self.labels[idx].clone(), list(self.classes), dict(self.meta)
        )


def stratified_subset(ds: ImageDataset, per_class: int, seed: int = 0) -> ImageDataset:
    """The first `per_class` images of every class after a seeded shuffle, in dataset order.

    Deterministic for a given seed; classes with fewer images keep all of them. The subset's
    ``meta["subset"]`` records the indices taken from `ds`.
    """
    order = np.random.default_rng(seed).permutation(len(ds))
    labels = ds.labels.numpy()[order]
    keep = np.sort(np.concatenate([order[labels == c][:per_class] for c in range(ds.num_classes)]))
    out = ds.subset(keep)
    out.meta = {**ds.meta, "subset": {"per_class": per_class, "seed": seed, "indices": keep.tolist()}}
    return out
