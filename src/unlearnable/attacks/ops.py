"""OPS: One-Pixel Shortcut (Wu et al., ICLR 2023), model-free.

Per class c, in class order, choose the pixel position (r, q) and corner colour v ∈ {0, 1}^C that
maximise ``mean(|v - x|) / std(|v - x|)``, the mean and (population) standard deviation taken over
all images of the class and all channels at that pixel (x in [0, 1]), among the (position, colour)
pairs no earlier class took; then set that pixel of every poisoned image of the class to 255·v.

The score needs only per-class sums of x and x² at every pixel (|v - x| is x where v = 0 and 1 - x
where v = 1), accumulated exactly as integer sums of the uint8 values, so the search is one pass over
the data however many candidates there are. Colours are numbered as in the published code: colour
index i has channel ch = bit (C - 1 - ch) of i (channel 0 is the most significant bit).

Deviations from the published code: ties are broken by the first (row-major position, colour index)
instead of an unstable argsort; the search uses every image of the class also when ``mix < 1``; a
score 0/0 (the colour equals every image of the class at that pixel) counts as 0 and s/0 with s > 0
as +inf (the published code divides by zero).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnable.attacks.additive import (
    CHUNK_PIXELS,
    check_poison_args,
    draw_poisoned,
    make_key,
)
from unlearnable.attacks.cuda import Poison
from unlearnable.devices import default_device
from unlearnable.errors import UserInputError


def corner_colours(channels: int) -> np.ndarray:
    """int64 (2^C, C): row i is colour i in {0, 1}^C, channel 0 the most significant bit."""
    i = np.arange(2**channels)[:, None]
    return (i >> np.arange(channels - 1, -1, -1)) & 1


def class_pixel_sums(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Per class: image count n (K,), Σu and Σu² (K, C, H, W) over its images (u = uint8 value).

    float64 sums of integers below 2^53, exact and independent of the summation order.
    """
    device = torch.device(device)
    k = num_classes
    shape = tuple(images.shape[1:])
    s1 = torch.zeros(k, images[0].numel(), dtype=torch.float64, device=device)
    s2 = torch.zeros_like(s1)
    chunk = max(1, CHUNK_PIXELS // 4 // max(1, images[0].numel()))
    for start in tqdm(
        range(0, len(images), chunk), desc="OPS search", unit="chunk", disable=not progress or len(images) < 20_000
    ):
        u = images[start : start + chunk].to(device).flatten(1).to(torch.float64)
        y = labels[start : start + chunk].to(device)
        s1.index_add_(0, y, u)
        s2.index_add_(0, y, u.square_())
    n = torch.bincount(labels.to(device), minlength=k).to(torch.float64)
    return n, s1.view(k, *shape), s2.view(k, *shape)


def ops_scores(n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """The OPS objective mean(|v - x|) / std(|v - x|) for every class, colour and position.

    Args:
        n: float64 (K,) images per class.
        s1, s2: float64 (K, C, H, W) sums of u and u² (u = 255·x).

    Returns:
        float64 (K, H·W, 2^C): score of (position r·W + q, colour index).
    """
    k, c = s1.shape[:2]
    m = n.view(k, 1, 1, 1)
    x1, x2 = s1 / 255, s2 / 255**2  # Σx, Σx²: the sums of |0 - x|, |0 - x|²
    y1, y2 = m - x1, m - 2 * x1 + x2  # Σ(1 - x), Σ(1 - x)²: the sums for v = 1
    bits = torch.from_numpy(corner_colours(c)).to(s1.device, torch.bool).view(1, -1, c, 1, 1)
    d1 = torch.where(bits, y1.unsqueeze(1), x1.unsqueeze(1)).sum(2)  # (K, 2^C, H, W)
    d2 = torch.where(bits, y2.unsqueeze(1), x2.unsqueeze(1)).sum(2)
    count = (n * c).clamp(min=1).view(k, 1, 1, 1)
    mean = d1 / count
    std = (d2 / count - mean.square()).clamp(min=0).sqrt()
    score = torch.where(std > 0, mean / std.clamp(min=1e-300), torch.where(mean > 0, torch.inf, 0.0))
    return score.flatten(2).transpose(1, 2)


def ops_search(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The OPS key: per class the best (position, colour) pair not taken by an earlier class.

    Returns:
        pixels: int64 (K, 2), (row, column) per class.
        colours: int64 (K, C), values 0 or 1.
    """
    c, h, w = images.shape[1:]
    if num_classes > h * w * 2**c:
        raise UserInputError(
            f"OPS needs a distinct (pixel, colour) pair per class: {h}×{w}×{2**c} pairs are fewer than {num_classes} classes; use larger images"
        )
    scores = ops_scores(*class_pixel_sums(images, labels, num_classes, device, progress)).cpu()
    taken = torch.zeros(h * w, 2**c, dtype=torch.bool)
    best = np.empty(num_classes, dtype=np.int64)
    for k in range(num_classes):
        best[k] = int(scores[k].masked_fill(taken, -torch.inf).flatten().argmax())
        taken.view(-1)[best[k]] = True
    position, colour = np.divmod(best, 2**c)
    pixels = np.stack(np.divmod(position, w), axis=1)
    return pixels, corner_colours(c)[colour]


def ops_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    mix: float = 1.0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Poison:
    """Protect a training set with one class-wise pixel (OPS).

    Args:
        images: uint8 N×C×H×W (C = 1 or 3).
        labels: int64 (N,), values in 0..num_classes-1.
        num_classes: K; needs K ≤ H·W·2^C.
        seed: seeds only the mask (the search is deterministic).
        mix: fraction of images poisoned (each independently).

    Returns:
        Poison: each poisoned image of class c with pixel ``pixels[c]`` set to ``255·colours[c]``
        on every channel; key with ``pixels`` (K×2) and ``colours`` (K×C).
    """
    check_poison_args(images, labels, num_classes, seed, mix, attack="ops")
    device = default_device(device)
    pixels, colours = ops_search(images, labels, num_classes, device, progress)
    poisoned = draw_poisoned(seed, len(images), mix)
    protected = images.clone(memory_format=torch.contiguous_format)
    index = torch.from_numpy(np.flatnonzero(poisoned))
    y = labels[index]
    rows, cols = torch.from_numpy(pixels).unbind(1)
    protected[index, :, rows[y], cols[y]] = torch.from_numpy(colours * 255).to(torch.uint8)[y]
    key = make_key(
        "ops",
        {"mix": mix},
        seed,
        poisoned,
        {"pixels": pixels, "colours": colours},
        "unlearnable.attacks.ops.ops_search(images, labels, num_classes)",
    )
    return Poison(protected, key)
