"""Orthogonal projection defense (Sandoval-Segura et al., NeurIPS 2023, "What Can We Learn from
Unlearnable Datasets?"; public code psandovalsegura/learn-from-unlearnable).

Additive poisons such as OPS, LSP and AR are linearly separable: a linear model reaches high
training accuracy on the poisoned images alone, and its weight rows point along the class-wise
perturbations. The defense trains a bias-free linear classifier on the flattened poisoned training
images in [0, 1], orthonormalises its K weight rows (each scaled to unit norm, then the q of a
QR decomposition of the D×K matrix) and projects every image onto their orthogonal complement:
x' = x − Q Qᵀ x. A network trained afterwards no longer sees the directions the shortcut lived in.

The published recipe for the linear model, kept here: nn.Linear(D, K, bias=False) with PyTorch's
default initialisation, plain SGD (no momentum, no weight decay) at lr 0.1, batch 1024, 20 epochs,
MultiStepLR at 50% and 75% of the epochs with gamma 0.1, cross-entropy, no normalisation.

Deviations from the published code:

- Storage. The projected images are floats that leave [0, 1]: the weight rows share a large
  component along the mean image (every input is positive), so the projection takes out most of
  each image's brightness and leaves signed values (on the quick CIFAR-10 CUDA set, [−1.2, 1.9]);
  the project's datasets are uint8. The published code trains on the floats and tests on
  unprojected test images, so the default ``storage="offset"`` keeps the original units (×255)
  and adds one global constant that restores the training set's mean brightness, then rounds and
  clamps: x'' = clamp(255·x' + c). One constant for every image adds the same vector to each, so
  it carries no class information. It clips values (9.0% of them on the quick CUDA set), but
  the alternatives, which clip little or nothing, change the contrast against the unprojected
  test images and trained worse on the quick protocol (test accuracy, clean/CUDA/OPS/LSP/AR/noise):
  offset 27.8/22.8/29.4/46.9/36.0/24.9; ``"global"`` (one affine map whose ``CLIP_QUANTILE`` and
  1 − ``CLIP_QUANTILE`` quantiles land on 0 and 255; 0.019% clipped, contrast ×0.46 on CUDA)
  22.7/18.9/10.2/35.1/23.0/23.0; ``"per-image"`` (each image's own min..max to 0..255, nothing
  clipped, but a per-image offset re-enters the removed span along Qᵀ1)
  28.3/19.3/12.4/40.2/28.6/30.2. ``meta["ortho_proj"]`` records the clipped fraction.
- Batch order. The published loader does not shuffle (DataLoader without shuffle=True); neither
  does this one, so the batch order is the dataset order. The linear model's initialisation is
  drawn from a seeded torch.Generator (``seed``), so the same data gives the same bytes.
- Training after the projection uses the project's trainer and its recipe, not the published
  strong augmentations (rotation, affine, colour jitter) or CutMix.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from unlearnable.data.dataset import ImageDataset, to_unit_float
from unlearnable.defenses.base import Configurable
from unlearnable.errors import UserInputError
from unlearnable.params import POSITIVE, POSITIVE_INT, Constraint, Interval, StrOptions, validate_params

STORAGES = ("offset", "global", "per-image")
"""How projected float images become uint8, see the module docstring."""

CLIP_QUANTILE = 1e-4
"""Share of projected values at each end that ``storage="global"`` lets clip (0 maps the full range)."""

_QUANTILE_SAMPLE = 1 << 24
"""torch.quantile takes at most 2**24 values; larger sets are measured on an evenly spaced sample."""


def train_linear(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 20,
    lr: float = 0.1,
    batch_size: int = 1024,
    seed: int = 0,
) -> tuple[torch.Tensor, float]:
    """Train the published bias-free linear classifier on float N×D `images` (in [0, 1], not normalised).

    SGD at `lr`, `batch_size` in dataset order (no shuffling, as the published loader), `epochs`
    epochs, the learning rate ×0.1 at 50% and 75% of them; the weights start as nn.Linear's default
    (uniform ±1/√D) drawn from a torch.Generator seeded with `seed`.

    Returns:
        (the K×D float32 weight matrix, the training accuracy of the last epoch in [0, 1], counted
        during the epoch as the published code does).
    """
    n, dim = images.shape
    generator = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(dim)
    weight = ((torch.rand(num_classes, dim, generator=generator) * 2 - 1) * bound).to(images.device).requires_grad_()
    optimizer = torch.optim.SGD([weight], lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [int(epochs * 0.5), int(epochs * 0.75)], gamma=0.1)
    accuracy = 0.0
    for _ in range(epochs):
        correct = 0
        for start in range(0, n, batch_size):
            x, y = images[start : start + batch_size], labels[start : start + batch_size]
            logits = x @ weight.t()
            correct += int((logits.argmax(dim=1) == y).sum())
            loss = torch.nn.functional.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        accuracy = correct / n
    return weight.detach(), accuracy


def orthonormal_basis(weight: torch.Tensor) -> torch.Tensor:
    """Q (D×K, float64, orthonormal columns) spanning the rows of the K×D `weight`, each row first scaled
    to unit norm, as the published ``get_q_matrix`` (reduced QR of the D×K matrix)."""
    rows = weight.double()
    norms = rows.norm(dim=1, keepdim=True)
    if not bool((norms > 0).all()) or not bool(torch.isfinite(rows).all()):
        raise UserInputError(
            "the linear model's weights are zero or not finite, so there is no direction to project out; "
            "lower lr or check that the training images vary"
        )
    q, _ = torch.linalg.qr((rows / norms).t(), mode="reduced")
    return q


def project_out(images: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """x − Q Qᵀ x for every row of float N×D `images` (computed in float64, returned as float64)."""
    x = images.double()
    return x - (x @ q) @ q.t()


def quantize(
    projected: torch.Tensor, storage: str = "offset", clip_quantile: float = CLIP_QUANTILE, mean: float | None = None
) -> tuple[torch.Tensor, float, dict[str, float]]:
    """Store float N×D `projected` (in [0, 1] units) as uint8 0..255 (see the module docstring for `storage`).

    `mean` is the brightness in [0, 1] that "offset" restores (default: the projected mean, i.e. no shift).

    Returns:
        (uint8 N×D, the share of values clamped at 0 or 255 by more than half a level, the map: for
        "offset" and "global" {"scale", "offset"} with x'' = scale·x' + offset on the 0..255 scale,
        for "per-image" {}).
    """
    if storage == "global":
        flat = projected.flatten()
        sample = (
            flat
            if flat.numel() <= _QUANTILE_SAMPLE
            else flat[torch.linspace(0, flat.numel() - 1, _QUANTILE_SAMPLE, dtype=torch.float64).long()]
        )
        if clip_quantile > 0:
            low, high = (
                float(v)
                for v in torch.quantile(sample, torch.tensor([clip_quantile, 1 - clip_quantile], dtype=sample.dtype))
            )
        else:
            low, high = float(flat.min()), float(flat.max())
        scale = 255.0 / (high - low) if high > low else 1.0
        offset = -low * scale if high > low else 127.5 - low
        scaled = projected * scale + offset
        mapping = {"scale": scale, "offset": offset}
    elif storage == "offset":
        target = float(projected.mean()) if mean is None else mean
        offset = 255.0 * (target - float(projected.mean()))
        scaled = projected * 255.0 + offset
        mapping = {"scale": 255.0, "offset": offset}
    elif storage == "per-image":
        lows = projected.amin(dim=1, keepdim=True)
        spans = projected.amax(dim=1, keepdim=True) - lows
        scaled = torch.where(
            spans > 0, (projected - lows) * (255.0 / spans.clamp_min(1e-12)), torch.full_like(projected, 127.5)
        )
        mapping = {}
    else:
        raise UserInputError(f"unknown ortho-proj storage {storage!r}; choose one of {', '.join(STORAGES)}")
    clipped = float(((scaled < -0.5) | (scaled > 255.5)).double().mean()) if scaled.numel() else 0.0
    return scaled.round().clamp_(0, 255).to(torch.uint8), clipped, mapping


def linear_accuracy(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 20,
    lr: float = 0.1,
    batch_size: int = 1024,
    seed: int = 0,
) -> float:
    """Training accuracy of the published linear probe on uint8 N×C×H×W `images`: how linearly separable they are."""
    return train_linear(to_unit_float(images).flatten(1), labels, num_classes, epochs, lr, batch_size, seed)[1]


def orthogonal_projection(
    dataset: ImageDataset,
    epochs: int = 20,
    lr: float = 0.1,
    batch_size: int = 1024,
    seed: int = 0,
    storage: str = "offset",
    clip_quantile: float = CLIP_QUANTILE,
) -> tuple[ImageDataset, torch.Tensor, torch.Tensor]:
    """Train the linear model on `dataset`, project its directions out of every image, store as uint8.

    Returns:
        (the projected dataset, Q (D×K float64), the projected images before quantisation (N×D
        float64, in [0, 1] units)). The dataset's ``meta`` keeps the input's and adds
        ``ortho_proj`` = {"epochs", "lr", "batch_size", "seed", "storage", "clip_quantile" (None unless
        global), "linear_train_accuracy", "clipped_fraction", "rank", "scale" and "offset" (offset and
        global storage)}.
    """
    _check_options(epochs, lr, batch_size, storage, clip_quantile)
    if len(dataset) == 0:
        raise UserInputError("the training set is empty, so there is no linear model to fit; give it some images")
    images = to_unit_float(dataset.images).flatten(1)
    labels = dataset.labels.to(images.device)
    weight, accuracy = train_linear(images, labels, dataset.num_classes, epochs, lr, batch_size, seed)
    q = orthonormal_basis(weight)
    projected = project_out(images, q)
    stored, clipped, mapping = quantize(projected, storage, clip_quantile, float(images.mean()))
    record: dict[str, Any] = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
        "storage": storage,
        "clip_quantile": clip_quantile if storage == "global" else None,
        "linear_train_accuracy": accuracy,
        "clipped_fraction": clipped,
        "rank": int(q.shape[1]),
        **mapping,
    }
    out = ImageDataset(
        stored.reshape(dataset.images.shape),
        dataset.labels.clone(),
        list(dataset.classes),
        {**dataset.meta, "ortho_proj": record},
    )
    return out, q, projected


OPTION_CONSTRAINTS: dict[str, Constraint] = {
    "epochs": POSITIVE_INT,
    "lr": POSITIVE,
    "batch_size": POSITIVE_INT,
    "storage": StrOptions(STORAGES),
    "clip_quantile": Interval(float, 0, 0.5, closed="left"),
}
"""The options of `orthogonal_projection` and `OrthogonalProjection` (published: 20 epochs, lr 0.1, batch 1024)."""


def _check_options(epochs: int, lr: float, batch_size: int, storage: str, clip_quantile: float) -> None:
    validate_params(
        "ortho-proj",
        {"epochs": epochs, "lr": lr, "batch_size": batch_size, "storage": storage, "clip_quantile": clip_quantile},
        OPTION_CONSTRAINTS,
    )


class OrthogonalProjection(Configurable):
    """The ``ortho-proj`` preprocessing defense: `orthogonal_projection` applied once to the whole training set.

    Args:
        epochs, lr, batch_size: the linear model's training (published: 20, 0.1, 1024).
        seed: seeds the linear model's initialisation.
        storage: "offset" (original units plus one constant, clamped), "global" (one affine map for the
            whole set) or "per-image" (each image to 0..255).
        clip_quantile: share of values at each end the global map may clip.
    """

    PARAMETER_CONSTRAINTS = OPTION_CONSTRAINTS

    def __init__(
        self,
        epochs: int = 20,
        lr: float = 0.1,
        batch_size: int = 1024,
        seed: int = 0,
        storage: str = "offset",
        clip_quantile: float = CLIP_QUANTILE,
    ) -> None:
        self._validate(epochs=epochs, lr=lr, batch_size=batch_size, storage=storage, clip_quantile=clip_quantile)
        self.epochs, self.lr, self.batch_size, self.seed = epochs, float(lr), batch_size, seed
        self.storage, self.clip_quantile = storage, float(clip_quantile)

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        return orthogonal_projection(
            dataset, self.epochs, self.lr, self.batch_size, self.seed, self.storage, self.clip_quantile
        )[0]
