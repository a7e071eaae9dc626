"""Class-wise gratings with a random phase per image: the project's own protection candidate.

Every poisoned image of class c gets the same-luminance sinusoid
δ(x, y) = eps · cos(2π(f_x·x + f_y·y)/W' + φ) on all channels, with the class's frequency
(f_x, f_y) in cycles per image (W' = W along x, H along y) and a phase φ drawn per image. It is
built from what breaks the other protections here:

- it is low-frequency (at most ``MAX_CYCLES`` cycles per image, inside the block FF keeps), smooth
  (sharpening and COIN's small displacements hardly change it) and in the luminance (grayscale
  keeps it), and its amplitude (24/255) is far above what JPEG-10 removes and an 8/255 AT budget;
- it is not a blur, so deconvolution finds nothing;
- its phase is random per image, so the class mean of δ is zero and no fixed direction carries it:
  a linear model (orthogonal projection) cannot pick it up, while a convolutional network reads the
  frequency and orientation wherever the peaks fall.

A defender who knows it exists removes it (the ``notch`` defense: find each class's peak frequency
in the class power spectra and project it out of every image), so it is not a secret-keeping
protection; see README "Our own protection".

Streams as every model-free poison (`additive.draw_streams`): the class frequencies are a
permutation of ``frequencies()`` drawn from the key stream, the phases one uniform per poisoned
image in dataset order from the sample stream.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unlearnable.attacks.additive import add_perturbations, check_eps, check_poison_args, draw_poisoned, draw_streams
from unlearnable.attacks.additive import make_key as _make_key
from unlearnable.attacks.cuda import Poison
from unlearnable.devices import default_device
from unlearnable.errors import UserInputError

MAX_CYCLES = 4
"""Largest |f_x|, |f_y| in cycles per image: FF keeps ⌊0.3·32⌋ = 9 DCT rows and columns of a 32×32
image, i.e. up to 4.5 cycles."""

MIN_CYCLES = 2.0
"""Smallest radial frequency √(f_x² + f_y²): slower ramps look like natural illumination gradients."""

EPS = 24 / 255
"""Default amplitude in [0, 1] units (PSNR about 23.7 dB on CIFAR-10)."""


def frequencies(max_cycles: int = MAX_CYCLES) -> np.ndarray:
    """The candidate (f_x, f_y): int64 (M, 2) with |f_x|, |f_y| ≤ max_cycles, radius ≥ ``MIN_CYCLES``,
    one of each ± pair (a random phase makes (f_x, f_y) and (−f_x, −f_y) the same grating), in a
    fixed order (f_x ascending, then f_y)."""
    pairs = [
        (fx, fy)
        for fx in range(max_cycles + 1)
        for fy in range(-max_cycles, max_cycles + 1)
        if (fx > 0 or fy > 0) and math.hypot(fx, fy) >= MIN_CYCLES
    ]
    return np.array(pairs, dtype=np.int64)


def class_frequencies(num_classes: int, seed: int = 0, max_cycles: int = MAX_CYCLES) -> np.ndarray:
    """Each class's grating frequency: int64 (num_classes, 2), distinct, drawn from the key stream of `seed`."""
    candidates = frequencies(max_cycles)
    if num_classes > len(candidates):
        raise UserInputError(
            f"grating has {len(candidates)} distinct frequencies up to {max_cycles} cycles for {num_classes} "
            f"classes; raise max_cycles (e.g. {max_cycles + 2})"
        )
    return candidates[draw_streams(seed)[0].permutation(len(candidates))[:num_classes]]


def gratings(freqs: torch.Tensor, phases: torch.Tensor, shape: tuple[int, int, int], eps: float) -> torch.Tensor:
    """float32 B×C×H×W: eps·cos(2π(f_x·x/W + f_y·y/H) + φ) per image, the same on every channel.

    Args:
        freqs: (B, 2) cycles per image (f_x, f_y); phases: (B,) radians; shape: (C, H, W).
    """
    c, h, w = shape
    device = freqs.device
    y = torch.arange(h, dtype=torch.float64, device=device)[:, None] / h
    x = torch.arange(w, dtype=torch.float64, device=device)[None, :] / w
    f = freqs.double()
    angle = 2 * math.pi * (f[:, 0, None, None] * x + f[:, 1, None, None] * y) + phases.double()[:, None, None]
    return (eps * torch.cos(angle)).float()[:, None].expand(-1, c, -1, -1)


def grating_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    mix: float = 1.0,
    eps: float = EPS,
    max_cycles: int = MAX_CYCLES,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Poison:
    """Add each poisoned image its class's grating at a random phase (see the module docstring).

    Args:
        images: uint8 N×C×H×W (C = 1 or 3, H and W at least 2·max_cycles + 1).
        labels: int64 (N,), values in 0..num_classes-1.
        num_classes: K, at most ``len(frequencies(max_cycles))``.
        seed: seeds the class frequencies, the mask and the phases.
        mix: fraction of images poisoned (each independently).
        eps: amplitude in [0, 1] units, in (0, 1].
        max_cycles: largest |f_x|, |f_y| in cycles per image, ≥ 2.

    Returns:
        Poison: images round(x + δ) clamped to 0..255; key with "frequencies" (K, 2) and "phases"
        (one per poisoned image, in dataset order, when at most 100,000 of them).
    """
    if not isinstance(max_cycles, int) or isinstance(max_cycles, bool) or max_cycles < 2:
        raise UserInputError(f"grating: max_cycles must be an integer ≥ 2 (got {max_cycles!r})")
    side = 2 * max_cycles + 1
    check_poison_args(images, labels, num_classes, seed, mix, min_hw=(side, side), attack="grating")
    check_eps(eps, "grating")
    freqs = class_frequencies(num_classes, seed, max_cycles)
    poisoned = draw_poisoned(seed, len(images), mix)
    phases = draw_streams(seed)[2].uniform(0, 2 * math.pi, int(poisoned.sum()))
    device = default_device(device)
    table = torch.from_numpy(freqs).to(device)
    drawn = torch.from_numpy(phases).to(device)
    shape = tuple(images.shape[1:])
    used = 0

    def perturbation(batch_labels: torch.Tensor) -> torch.Tensor:
        nonlocal used
        phase = drawn[used : used + len(batch_labels)]
        used += len(batch_labels)
        return gratings(table[batch_labels], phase, shape, eps)  # type: ignore[arg-type]

    protected = add_perturbations(images, labels, poisoned, perturbation, "round", device, progress)
    key = _make_key(
        "grating",
        {"eps": eps, "max_cycles": max_cycles, "mix": mix, "rounding": "round"},
        seed,
        poisoned,
        {"frequencies": freqs, "phases": phases},
        "unlearnable.attacks.additive.draw_streams(seed)[2].uniform(0, 2π, number of poisoned images)",
    )
    return Poison(protected, key)
