"""What the model-free poisons share, and the simplest of them: class-wise random noise (a control).

Every poison here draws from three independent ``numpy.random.Generator`` streams spawned from
``SeedSequence(seed)``: the class secret (``key``), the per-image poison mask (``mask``: one
``random()`` per image in dataset order, poisoned iff it is < mix) and per-image noise (``sample``,
drawn for the poisoned images in dataset order). The mask therefore depends only on the seed and N,
not on the attack or its parameters, and a drawn secret does not depend on N (OPS's is searched
from the data; its seed only drives the mask).

The additive poisons work in [0, 1] units: a poisoned image becomes ``q(x + δ)`` with x = uint8/255
and q "round" (floor(clip(255·v + 0.5, 0, 255))) or "truncate" (floor(clip(255·v, 0, 255))); images
that are not poisoned are copied byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from unlearnable.attacks.cuda import COMMON_CONSTRAINTS, Poison
from unlearnable.devices import default_device
from unlearnable.errors import UserInputError
from unlearnable.params import validate_params

Rounding = Literal["round", "truncate"]

MAX_KEY_NUMBERS = 100_000
"""Secret arrays up to this many numbers are written into the key; larger ones are regenerated from the seed."""

CHUNK_PIXELS = 256 * 3 * 32 * 32
"""Values per chunk of float work on the CPU: 256 CIFAR images (3 MB of float32) stay in cache and
reuse freed memory; chunks of 2048 ran 1.3× (noise) and 3× (LSP) slower on the 2-core CPU."""
GPU_CHUNK_PIXELS = 65536 * 3 * 32 * 32
"""On a GPU, CIFAR-10 in one chunk (0.8 GB of float32): AR's per-position steps then run once."""


def draw_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """The (key, mask, sample) generators of `seed` (see the module docstring)."""
    key, mask, sample = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(key), np.random.default_rng(mask), np.random.default_rng(sample)


def draw_poisoned(seed: int, num_images: int, mix: float) -> np.ndarray:
    """bool (num_images,): image i is poisoned iff the i-th ``random()`` of the mask stream is < mix."""
    return draw_streams(seed)[1].random(num_images) < mix


def check_poison_args(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    seed: int,
    mix: float,
    min_hw: tuple[int, int] = (1, 1),
    attack: str = "this attack",
) -> None:
    """Raise UserInputError for inputs every model-free poison refuses.

    Args:
        images: must be uint8 N×C×H×W with C = 1 or 3 and H×W at least `min_hw`.
        labels: must have N entries in 0..num_classes-1.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise UserInputError(
            f"{attack} needs uint8 N×C×H×W images with C = 1 or 3, got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[2] < min_hw[0] or images.shape[3] < min_hw[1]:
        raise UserInputError(
            f"images of {images.shape[2]}×{images.shape[3]} are too small for {attack}; it needs at least {min_hw[0]}×{min_hw[1]}"
        )
    if len(labels) != len(images):
        raise UserInputError(f"{len(labels)} labels for {len(images)} images; give one label per image")
    if num_classes < 1 or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes):
        raise UserInputError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes})")
    validate_params(attack, {"seed": seed, "mix": mix}, COMMON_CONSTRAINTS)


def check_eps(eps: float, attack: str) -> None:
    """Raise UserInputError unless 0 < eps ≤ 1 ([0, 1] pixel units)."""
    if not 0.0 < eps <= 1.0:
        raise UserInputError(
            f"--eps {eps} is out of range for {attack}; use a value in (0, 1] in [0, 1] pixel units (e.g. 8/255 = 0.0314)"
        )


def make_key(
    attack: str,
    params: dict[str, Any],
    seed: int,
    poisoned: np.ndarray,
    secrets: dict[str, np.ndarray],
    regenerate: str,
) -> dict[str, Any]:
    """The JSON-serialisable private key.

    Secret arrays of at most MAX_KEY_NUMBERS numbers go in as nested lists; larger ones are left out
    and listed under ``regenerate`` with `regenerate`, the call that recomputes them exactly.
    """
    key: dict[str, Any] = {"attack": attack, "params": params, "seed": seed}
    omitted = [name for name, array in secrets.items() if array.size > MAX_KEY_NUMBERS]
    key.update({name: array.tolist() for name, array in secrets.items() if name not in omitted})
    if omitted:
        key["regenerate"] = {"secrets": omitted, "function": regenerate}
    key["poisoned_indices"] = np.flatnonzero(poisoned).tolist()
    return key


def quantise(y: torch.Tensor, rounding: Rounding) -> torch.Tensor:
    """float y on the 0..255 scale → int32 0..255, rounded half up or truncated (in place on `y`).

    After the clamp every value is ≥ 0, where the float → int conversion (toward zero) is the floor;
    going through int32 is several times faster on CPU than a direct float → uint8 cast.
    """
    if rounding == "round":
        y.add_(0.5)
    return y.clamp_(0, 255).to(torch.int32)


def add_perturbations(
    images: torch.Tensor,
    labels: torch.Tensor,
    poisoned: np.ndarray,
    perturbation: Callable[[torch.Tensor], torch.Tensor],
    rounding: Rounding,
    device: str | torch.device | None = None,
    progress: bool = True,
    cpu_chunk_pixels: int | None = None,
) -> torch.Tensor:
    """``q(x + δ)`` for every poisoned image, chunk by chunk in dataset order; the rest copied.

    Args:
        images: uint8 N×C×H×W (may be memory-mapped; read in chunks).
        labels: int64 (N,).
        poisoned: bool (N,).
        perturbation: labels of the poisoned images of a chunk (int64 (B,) on `device`) → float32
            B×C×H×W δ in [0, 1] units on `device`; called once per chunk in dataset order, so a
            generator it draws from is consumed in dataset order whatever the chunk size.
        rounding: "round" or "truncate".
        device: where the arithmetic runs (default: CUDA when available, else CPU).
        cpu_chunk_pixels: values per chunk on the CPU (default CHUNK_PIXELS); a GPU takes
            GPU_CHUNK_PIXELS.

    Returns:
        uint8 N×C×H×W, a new tensor.
    """
    device = default_device(device)
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    pixels = GPU_CHUNK_PIXELS if device.type == "cuda" else cpu_chunk_pixels or CHUNK_PIXELS
    chunk = max(1, pixels // max(1, images[0].numel()))
    for start in tqdm(
        range(0, len(images), chunk), desc="poisoning", unit="chunk", disable=not progress or len(images) < 20_000
    ):
        stop = min(start + chunk, len(images))
        part = poisoned[start:stop]
        if not part.all():
            out[start:stop] = images[start:stop]
            if not part.any():
                continue
        # A slice when the whole chunk is poisoned (mix = 1): no gather, no scatter.
        rows = slice(start, stop) if part.all() else torch.from_numpy(np.flatnonzero(part) + start)
        x = images[rows].to(device).to(torch.float32)
        y = quantise(x.add_(perturbation(labels[rows].to(device)), alpha=255.0), rounding)
        out[rows] = y.to(torch.uint8).cpu()
    return out


def classwise_noise(num_classes: int, shape: tuple[int, ...], eps: float = 8 / 255, seed: int = 0) -> np.ndarray:
    """The noise control's secret: one pattern per class, i.i.d. uniform on [-eps, eps).

    Drawn in one call from the key stream of `seed`, so it is exactly regenerable.

    Returns:
        float32 (num_classes, C, H, W).
    """
    return draw_streams(seed)[0].uniform(-eps, eps, (num_classes, *shape)).astype(np.float32)


def noise_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    mix: float = 1.0,
    eps: float = 8 / 255,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Poison:
    """Class-wise random noise, the control: every poisoned image of class c gets pattern c added.

    Args:
        images: uint8 N×C×H×W (C = 1 or 3).
        labels: int64 (N,), values in 0..num_classes-1.
        num_classes: K, the number of patterns.
        seed: seeds the patterns and the mask.
        mix: fraction of images poisoned (each independently).
        eps: L∞ bound of the patterns in [0, 1] units (default 8/255).

    Returns:
        Poison: images round(x + pattern[label]) clamped to 0..255; key with the patterns when
        K·C·H·W ≤ MAX_KEY_NUMBERS (else regenerate them with ``classwise_noise``).
    """
    check_poison_args(images, labels, num_classes, seed, mix, attack="noise")
    check_eps(eps, "noise")
    patterns = classwise_noise(num_classes, tuple(images.shape[1:]), eps, seed)
    poisoned = draw_poisoned(seed, len(images), mix)
    device = default_device(device)
    table = torch.from_numpy(patterns).to(device)
    protected = add_perturbations(images, labels, poisoned, lambda y: table[y], "round", device, progress)
    key = make_key(
        "noise",
        {"eps": eps, "mix": mix, "rounding": "round"},
        seed,
        poisoned,
        {"patterns": patterns},
        "unlearnable.attacks.additive.classwise_noise(num_classes, (C, H, W), eps, seed)",
    )
    return Poison(protected, key)
