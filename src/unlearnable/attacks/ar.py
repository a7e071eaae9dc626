"""AR: autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022), model-free.

Published code: github.com/psandovalsegura/autoregressive-poisoning (``create_ar_poisons_3channel.py``,
``autoregressive.py``, ``autoregressive_param_finder.py``).

Class c owns, per channel, a causal 3×3 AR filter: 8 coefficients summing to 1 on the 3×3 window
whose bottom-right entry is the value being generated (that tap is 0; it is the "excluded" one, the
window is not centred on it). A poisoned image draws a Gaussian (H+crop)×(W+crop) field per
channel, overwrites it in raster order, every position from row 2 and column 2 on becoming the
weighted sum of its window (no innovation noise), keeps the last H×W, scales the whole C×H×W
perturbation to L2 norm ``norm`` (1.0) in [0, 1] units, adds it and rounds. The crop follows the
published settings, which are keyed on the dataset name (CIFAR-10/100, SVHN: 36 → 32, crop 4; STL-10:
100 → 96, crop 4; ImageNet-100: 226 → 224, crop 2); the project has no dataset name here and keys on
the image size instead (`ar_crop`): crop 2 when the shorter side is at least 224 px, crop 4 below.
Deviation: sizes the published code never used take the rule of their size class (e.g. 64 px: crop 4,
256 px: crop 2).

Coefficient draw. The published repository ships fixed coefficient sets found by a greedy search
script; this module re-runs that search's recipe on its own seeded stream instead of shipping sets:
candidate taps are N(0, 1), divided by their sum per channel (as published); a candidate is
rejected if any of 3 trial 36×36 processes from Gaussian starts is non-finite or has a cropped
32×32 L2 norm above √(C·32·32) (55.4 for C = 3), the expected norm of the Gaussian start itself (no
amplification). The published search's current default bound is 50 on that same L2 norm (its help
text says L∞; an earlier version had 5, which rejects even the published sets: four of the
published CIFAR-10 sets measure 19-58 here), so the two bounds are close; the project keeps its
own, which its measured AR numbers were made with. The published greedy criterion (a candidate's
last trial pattern, scaled to norm 1, must respond with at least ``min_response`` to every filter
accepted before it; response = Σ ReLU of the valid correlation with that class's filter, generated
tap -1, summed over channels; published default 10, and 3 for CIFAR-100) is available but off by
default: it is nearly unreachable (measured cross-responses: median 6, 10th percentile 2.7; four
published CIFAR-10 sets respond 5-17 to each other). The search always runs on 32×32 with crop 4,
whatever the image size.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from unlearnable.attacks.additive import (
    add_perturbations,
    check_poison_args,
    draw_poisoned,
    draw_streams,
    make_key,
)
from unlearnable.attacks.cuda import Poison
from unlearnable.devices import default_device
from unlearnable.errors import UserInputError

CROP = 4
"""The search's process is (32 + CROP)², its first CROP rows and columns dropped (the published CIFAR crop)."""
IMAGENET_CROP = 2
IMAGENET_SIZE = 224
"""From this many pixels on (the shorter side), the process starts CROP = 2 larger, as published for ImageNet-100."""


def ar_crop(height: int, width: int) -> int:
    """The published crop for H×W images: 2 from 224 px on (226 → 224), else 4 (36 → 32, 100 → 96)."""
    return IMAGENET_CROP if min(height, width) >= IMAGENET_SIZE else CROP


SEARCH_SIZE = 32
TRIALS = 3
CANDIDATES_PER_DRAW = 256
MAX_CANDIDATES = 256_000
RESCALE_AT = 1e18
CPU_CHUNK_PIXELS = 2048 * 3 * 32 * 32
"""AR's raster scan costs a few tensor calls per position whatever the chunk: larger chunks than the
other poisons' amortise them (2048 CIFAR images: 46 µs/image vs 99 at 512, 30 at 8192)."""
RESCALE_EVERY = 16


def ar_process(coefficients: torch.Tensor, field: torch.Tensor, rescale: bool = False) -> torch.Tensor:
    """Run the causal AR recursion over `field` in raster order, vectorised over images and channels.

    Args:
        coefficients: (B, C, 3, 3), or (C, 3, 3) shared; entry [2, 2] (the generated value) is
            ignored. Same device and dtype as `field`.
        field: float (B, C, H', W') Gaussian start; rows 0-1 and columns 0-1 are kept as they are.
        rescale: every RESCALE_EVERY positions of a row, once a value just generated exceeds
            RESCALE_AT, divide each image's whole array (generated and pending values) by its
            largest magnitude. The recursion is linear in the start, so this only multiplies the
            result by a per-image constant; it keeps float32 finite on large images whose process
            grows (by less than 3.4e38 / RESCALE_AT within RESCALE_EVERY steps).

    Returns:
        (B, C, H', W'): position (r, q), r, q ≥ 2, replaced by Σ coefficients · field[r-2:r+1, q-2:q+1]
        with the already generated values, in raster order (times a per-image constant if rescaled).
    """
    b, c, h, w = field.shape
    x = field.permute(2, 3, 0, 1).contiguous()  # (H', W', B, C): every position is one contiguous block
    taps = coefficients.expand(b, c, 3, 3).permute(2, 3, 0, 1).clone()
    taps[2, 2] = 0
    for r in range(2, h):
        for q in range(2, w):
            # One multiply and one reduction over the 3×3 window beat eight addcmul calls on CPU for
            # chunks of a few thousand images (bench/bench_poisons.py).
            x[r, q] = (x[r - 2 : r + 1, q - 2 : q + 1] * taps).sum((0, 1))
            if rescale and (q % RESCALE_EVERY == 0 or q == w - 1) and x[r, q - 2 : q + 1].abs().amax() > RESCALE_AT:
                x.div_(x.abs().amax(dim=(0, 1, 3), keepdim=True).clamp_(min=1.0))
    return x.permute(2, 3, 0, 1)


def scale_to_norm(x: torch.Tensor, norm: float) -> torch.Tensor:
    """Each x[i] scaled to L2 norm `norm` over all its values (in place)."""
    return x.mul_(norm / x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1)))


def ar_filters(coefficients: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) coefficients → (K, C, 3, 3) prediction-error filters (the generated tap -1)."""
    filters = coefficients.clone()
    filters[:, :, 2, 2] = -1
    return filters


def search_trials(coefficients: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Cropped SEARCH_SIZE² patterns of `coefficients` (B, C, 3, 3) from fresh Gaussian starts.

    Returns:
        float64 (B, C, SEARCH_SIZE, SEARCH_SIZE); draws one standard normal (B, C, S+4, S+4) array.
    """
    size = SEARCH_SIZE + CROP
    starts = torch.from_numpy(rng.standard_normal((len(coefficients), coefficients.shape[1], size, size)))
    return ar_process(coefficients, starts)[:, :, CROP:, CROP:]


@functools.lru_cache(maxsize=8)
def ar_coefficients(num_classes: int, channels: int = 3, seed: int = 0, min_response: float = 0.0) -> np.ndarray:
    """The AR secret: per class and channel 8 causal taps summing to 1 (see the module docstring).

    Draw order on the key stream of `seed`, per block of CANDIDATES_PER_DRAW candidates: taps
    (B, C, 8) standard normal; one trial start per candidate; then TRIALS - 1 more starts for each
    candidate whose first trial passed, in candidate order (``search_trials``). Candidates are judged
    in order, in float64 on the CPU whatever the poisoning device.

    Args:
        min_response: 0 disables the published greedy response criterion (the default: with this
            bound its thresholds 10 / 3 reject nearly everything; see the module docstring).

    Returns:
        float64 (K, C, 3, 3), entry [2, 2] zero, each (class, channel) summing to 1; read-only
        (the search is deterministic and its result cached).
    """
    rng = draw_streams(seed)[0]
    bound = (channels * SEARCH_SIZE**2) ** 0.5  # the expected norm of the Gaussian start: no amplification
    accepted: list[torch.Tensor] = []
    for _ in range(MAX_CANDIDATES // CANDIDATES_PER_DRAW):
        taps = rng.standard_normal((CANDIDATES_PER_DRAW, channels, 8))
        coefficients = torch.from_numpy(np.insert(taps / taps.sum(-1, keepdims=True), 8, 0.0, axis=-1))
        coefficients = coefficients.view(CANDIDATES_PER_DRAW, channels, 3, 3)
        norms = search_trials(coefficients, rng).flatten(1).norm(dim=1)
        passed = torch.nonzero(torch.isfinite(norms) & (norms <= bound)).flatten()
        if not len(passed):
            continue
        more = search_trials(coefficients[passed].repeat_interleave(TRIALS - 1, 0), rng)
        more = more.unflatten(0, (len(passed), TRIALS - 1))
        more_norms = more.flatten(2).norm(dim=2)
        for j, i in enumerate(passed.tolist()):
            if not torch.isfinite(more_norms[j]).all() or (more_norms[j] > bound).any():
                continue
            if accepted and min_response > 0:
                pattern = more[j, -1:] / more_norms[j, -1]
                response = F.relu(F.conv2d(pattern, ar_filters(torch.stack(accepted)))).sum((0, 2, 3))
                if response.min() < min_response:
                    continue
            accepted.append(coefficients[i])
            if len(accepted) == num_classes:
                found = torch.stack(accepted).numpy()
                found.flags.writeable = False
                return found
    raise UserInputError(
        f"AR found only {len(accepted)} of {num_classes} coefficient sets in {MAX_CANDIDATES} candidates; lower min_response (now {min_response})"
    )


def ar_noise(coefficients: torch.Tensor, field: torch.Tensor, norm: float = 1.0, crop: int = CROP) -> torch.Tensor:
    """AR perturbations: run the process on `field`, keep the last H×W, scale to L2 norm `norm`.

    Args:
        coefficients: (B, C, 3, 3) per image (or (C, 3, 3) shared).
        field: float (B, C, H + crop, W + crop) standard normal start.
        crop: rows and columns dropped at the top and left (`ar_crop`).

    Returns:
        float B×C×H×W, each with L2 norm `norm` (before quantisation).
    """
    return scale_to_norm(ar_process(coefficients, field, rescale=True)[:, :, crop:, crop:].contiguous(), norm)


def ar_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    mix: float = 1.0,
    norm: float = 1.0,
    min_response: float = 0.0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Poison:
    """Protect a training set with class-wise autoregressive noise (AR).

    Args:
        images: uint8 N×C×H×W (C = 1 or 3), H, W ≥ 3.
        labels: int64 (N,), values in 0..num_classes-1.
        num_classes: K coefficient sets.
        seed: seeds the coefficients, the mask and the per-image Gaussian starts.
        mix: fraction of images poisoned (each independently).
        norm: L2 norm of every perturbation in [0, 1] units over C·H·W (published 1.0).
        min_response: the coefficient search's greedy response threshold (0: off).

    Returns:
        Poison: round(x + δ) clamped; key with the coefficients (K×C×3×3, [2, 2] = 0). The starts
        come from the sample stream of `seed`: one float32 standard normal (B, C, H+crop, W+crop)
        draw per chunk of poisoned images in dataset order, crop = `ar_crop(H, W)`.
    """
    check_poison_args(images, labels, num_classes, seed, mix, (3, 3), "ar")
    c, h, w = images.shape[1:]
    if not 0.0 < norm <= (c * h * w) ** 0.5:
        raise UserInputError(
            f"--norm {norm} is out of range; use an L2 norm in (0, {(c * h * w) ** 0.5:.1f}] in [0, 1] pixel units (published: 1.0)"
        )
    if min_response < 0:
        raise UserInputError(f"min_response {min_response} is negative; use 0 (off) or a positive response threshold")
    coefficients = ar_coefficients(num_classes, c, seed, min_response)
    poisoned = draw_poisoned(seed, len(images), mix)
    sample_rng = draw_streams(seed)[2]
    device = default_device(device)
    table = torch.tensor(coefficients, dtype=torch.float32, device=device)
    crop = ar_crop(h, w)

    def perturbation(y: torch.Tensor) -> torch.Tensor:
        field = torch.from_numpy(sample_rng.standard_normal((len(y), c, h + crop, w + crop), dtype=np.float32))
        return ar_noise(table[y], field.to(device), norm, crop)

    protected = add_perturbations(images, labels, poisoned, perturbation, "round", device, progress, CPU_CHUNK_PIXELS)
    params = {"norm": norm, "crop": crop, "min_response": min_response, "mix": mix, "rounding": "round"}
    key = make_key(
        "ar",
        params,
        seed,
        poisoned,
        {"coefficients": coefficients},
        "unlearnable.attacks.ar.ar_coefficients(num_classes, C, seed, min_response)",
    )
    return Poison(protected, key)
