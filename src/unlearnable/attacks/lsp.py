"""LSP: Linearly Separable Perturbations (Yu et al., KDD 2022, "Availability attacks create shortcuts").

Each class owns a Gaussian cluster in a space of F = C·g_h·g_w patch colours: centre
``class_sep·s_c`` with s_c a vertex of {-1, +1}^F (distinct per class) and a random linear map A_c
(F×F, entries U[-1, 1]). A poisoned image of class c draws z ~ N(0, I_F) and gets the feature
vector ``z @ A_c + class_sep·s_c``, painted as a g_h×g_w grid of p×p constant patches (cropped to
H×W), scaled to L2 norm ``√(C·H·W)·eps`` in [0, 1] units, added, and truncated to uint8, as the
published code does. This is what the published code's ``sklearn.datasets.make_classification``
(class_sep 10, one cluster per class, all features informative) draws, re-implemented on the
project's seeded streams.

Deviations: the patch size defaults to ⌈min(H, W)/4⌉ (a 4×4 grid; 8 for 32×32 as published, but
56 for 224×224 where the published ImageNet code uses 32, i.e. ``patch_size=32``); a poisoned image
draws its own sample instead of taking one of a pre-drawn pool of N samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from unlearnable.attacks.additive import (
    add_perturbations,
    check_eps,
    check_poison_args,
    draw_poisoned,
    draw_streams,
    make_key,
)
from unlearnable.attacks.cuda import Poison
from unlearnable.errors import UserInputError

CLASS_SEP = 10.0
"""Half the side of the hypercube whose vertices are the class centres (the published value)."""


def default_patch_size(hw: tuple[int, ...]) -> int:
    """⌈min(H, W)/4⌉: a 4×4 grid of patches (8×8 patches on 32×32)."""
    return math.ceil(min(hw) / 4)


def patch_grid(hw: tuple[int, ...], patch_size: int) -> tuple[int, int]:
    """(g_h, g_w): patches per column and per row, enough to cover H×W."""
    return math.ceil(hw[0] / patch_size), math.ceil(hw[1] / patch_size)


def lsp_clusters(
    num_classes: int, num_features: int, seed: int = 0, class_sep: float = CLASS_SEP
) -> tuple[np.ndarray, np.ndarray]:
    """The LSP secret: per class a cluster centre and a linear map, from the key stream of `seed`.

    Draw order: sign vectors (K, F) uniform in {-1, +1}, then rows equal to an earlier row redrawn
    (in order, until all are distinct), then the maps (K, F, F) uniform on [-1, 1).

    Returns:
        centres: float64 (K, F), entries ±class_sep.
        maps: float64 (K, F, F).
    """
    if num_features < 63 and num_classes > 2**num_features:
        raise UserInputError(
            f"LSP needs {num_classes} distinct cluster centres but its {num_features} patch features give only {2**num_features}; use a smaller --patch-size"
        )
    rng = draw_streams(seed)[0]
    signs = rng.choice([-1.0, 1.0], size=(num_classes, num_features))
    while True:
        _, first = np.unique(signs, axis=0, return_index=True)
        repeated = np.setdiff1d(np.arange(num_classes), first)
        if not len(repeated):
            break
        signs[repeated] = rng.choice([-1.0, 1.0], size=(len(repeated), num_features))
    maps = rng.uniform(-1.0, 1.0, size=(num_classes, num_features, num_features))
    return class_sep * signs, maps


def lsp_noise(
    labels: torch.Tensor,
    centres: np.ndarray,
    maps: np.ndarray,
    rng: np.random.Generator,
    shape: tuple[int, ...],
    patch_size: int,
    eps: float = 6 / 255,
) -> torch.Tensor:
    """Draw one LSP perturbation per label, with L2 norm exactly ``√(C·H·W)·eps`` (before quantisation).

    Args:
        labels: int64 (B,), on the device the result should live on.
        centres, maps: from ``lsp_clusters`` for F = C·g_h·g_w features.
        rng: consumed in order: one standard normal (B, F) draw.
        shape: (C, H, W).
        patch_size: p, side of the constant patches.
        eps: per-value RMS of the perturbation in [0, 1] units (published 6/255).

    Returns:
        float32 B×C×H×W on ``labels.device``.
    """
    c, h, w = shape
    gh, gw = patch_grid((h, w), patch_size)
    z = rng.standard_normal((len(labels), c * gh * gw))
    y = labels.cpu().numpy()
    features = centres[y]
    for k in np.unique(y):
        features[y == k] += z[y == k] @ maps[k]
    grid = torch.from_numpy(features).to(labels.device, torch.float32).view(-1, c, gh, gw)
    noise = grid.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)[:, :, :h, :w]
    norms = noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    return noise.mul_(math.sqrt(c * h * w) * eps / norms)


def lsp_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    mix: float = 1.0,
    eps: float = 6 / 255,
    patch_size: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> Poison:
    """Protect a training set with linearly separable patch noise (LSP).

    Args:
        images: uint8 N×C×H×W (C = 1 or 3), H, W ≥ 4 with the default patch size.
        labels: int64 (N,), values in 0..num_classes-1.
        num_classes: K clusters.
        seed: seeds the clusters, the mask and the per-image samples.
        mix: fraction of images poisoned (each independently).
        eps: per-value RMS in [0, 1] units: every perturbation has L2 norm √(C·H·W)·eps (6/255).
        patch_size: side p of the patches (default ⌈min(H, W)/4⌉).

    Returns:
        Poison: truncate(x + δ); key with the centres and maps when small (else regenerate them
        with ``lsp_clusters``). The per-image samples come from the sample stream of `seed`,
        drawn for the poisoned images in dataset order.
    """
    check_poison_args(images, labels, num_classes, seed, mix, (4, 4) if patch_size is None else (1, 1), "lsp")
    check_eps(eps, "lsp")
    shape = tuple(images.shape[1:])
    patch_size = default_patch_size(shape[1:]) if patch_size is None else patch_size
    if not 1 <= patch_size <= min(shape[1:]):
        raise UserInputError(
            f"--patch-size {patch_size} is out of range; use 1 to {min(shape[1:])} (published: 8 for 32×32)"
        )
    gh, gw = patch_grid(shape[1:], patch_size)
    centres, maps = lsp_clusters(num_classes, shape[0] * gh * gw, seed)
    poisoned = draw_poisoned(seed, len(images), mix)
    sample_rng = draw_streams(seed)[2]
    protected = add_perturbations(
        images,
        labels,
        poisoned,
        lambda y: lsp_noise(y, centres, maps, sample_rng, shape, patch_size, eps),
        "truncate",
        device,
        progress,
    )
    params = {"eps": eps, "patch_size": patch_size, "class_sep": CLASS_SEP, "mix": mix, "rounding": "truncate"}
    key = make_key(
        "lsp",
        params,
        seed,
        poisoned,
        {"centres": centres, "maps": maps},
        "unlearnable.attacks.lsp.lsp_clusters(num_classes, C·g_h·g_w, seed)",
    )
    return Poison(protected, key)
