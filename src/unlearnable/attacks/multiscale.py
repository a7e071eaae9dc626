"""Multi-scale CUDA: a class's secret blur on a photo of any size, where a trainer will look at it.

Resolution scheme ("multi-scale carried difference"). A trainer never sees a phone photo at its own
resolution: it resizes it to 32, 64 or 224 pixels first, and a 3×3 blur at 4000×3000 pixels is gone
after that. So the blur is applied where the trainer will look, and only the change it makes is
carried back to full size. For each working resolution R of the strength:

    x_R = area-downsample(x) to the grid whose short side is R (aspect kept; no resize when the
          photo is already that small),
    d_R = blur_c(x_R) − x_R            (blur_c: class c's kernel normalised to sum 1, reflect border),
    x_pub = clip(x + Σ_R bilinear-upsample(d_R), 0, 1).

Downsampling x_pub to R gives back ≈ blur_c(x_R) (what CUDA trains on at R), the photo's detail
above R's Nyquist frequency is untouched, so it still looks like the photo; the sum over several R
makes the shortcut survive the trainer's resizing to any of them (a blur at 32 is a 2× wider blur
when seen at 64). The other candidate, blurring at native resolution with the kernel enlarged by
native/R, gives the same low-resolution view but also destroys every finer detail (it is a large
low-pass filter) and costs a huge convolution; `bench/eval_protect.py` measures both.

The kernels are the project's CUDA kernels (`unlearnable.attacks.cuda.cuda_key`, classes in sorted
folder order, the published random stream for `seed`), normalised to sum 1 instead of CUDA's
per-image max normalisation, so a photo keeps its brightness.

Strengths (`STRENGTHS`): low = 3×3 kernels at R ∈ {32, 64}; mid (default) = 5×5 at {32, 64};
high = 7×7 at {32, 64, 128}; p_b 0.3 in all. Larger kernels blur more (stronger shortcut, more
visible), more scales cover more training resolutions. `blur_scores` tells, from a 32-pixel
thumbnail of the source, whether an image still carries its class's blur.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unlearnable.attacks.cuda import cuda_key

THUMB_R = 32
"""Short side of the verification thumbnail (pixels)."""


@dataclass(frozen=True)
class Strength:
    """What --strength means: the class kernels' size and p_b, and the working resolutions."""

    kernel_size: int
    blur_parameter: float
    scales: tuple[int, ...]


STRENGTHS = {
    "low": Strength(3, 0.3, (32, 64)),
    "mid": Strength(5, 0.3, (32, 64)),
    "high": Strength(7, 0.3, (32, 64, 128)),
}


def working_grid(height: int, width: int, resolution: int) -> tuple[int, int]:
    """The (h, w) grid whose short side is `resolution` (aspect kept); the photo's own when smaller."""
    short = min(height, width)
    if short <= resolution:
        return height, width
    scale = resolution / short
    return max(1, round(height * scale)), max(1, round(width * scale))


def class_kernels(num_classes: int, strength: Strength, seed: int) -> np.ndarray:
    """The CUDA kernels of `seed` (published stream) for `num_classes` classes, each normalised to sum 1."""
    raw, _ = cuda_key(num_classes, 0, strength.kernel_size, strength.blur_parameter, seed)
    return raw / raw.sum(axis=(1, 2), keepdims=True)


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise conv2d of 1×C×h×w `x` with one k×k `kernel` on every channel, reflect border."""
    c, k = x.shape[1], kernel.shape[-1]
    p = k // 2
    mode = "reflect" if min(x.shape[-2:]) > p else "replicate"
    padded = F.pad(x, (p, p, p, p), mode=mode)
    return F.conv2d(padded, kernel.reshape(1, 1, k, k).expand(c, 1, k, k), groups=c)


def downsample(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Area average (every source pixel counts once) of 1×C×H×W `x` onto `grid`."""
    return x if tuple(x.shape[-2:]) == grid else F.interpolate(x, size=grid, mode="area")


def protect_pixels(pixels: np.ndarray, kernel: np.ndarray, scales: Iterable[int]) -> np.ndarray:
    """The protected float32 H×W×C image: x + Σ_R upsample(blur(x_R) − x_R), clipped to [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    h, w = x.shape[-2:]
    kern = torch.from_numpy(np.asarray(kernel, dtype=np.float32))
    total = x.clone()
    with torch.no_grad():
        for resolution in scales:
            small = downsample(x, working_grid(h, w, resolution))
            change = blur(small, kern) - small
            if change.shape[-2:] != (h, w):
                change = F.interpolate(change, size=(h, w), mode="bilinear", align_corners=False)
            total += change
        total.clamp_(0.0, 1.0)
    return total[0].permute(1, 2, 0).numpy()


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """uint8 h×w×C view of float H×W×C `pixels` on the THUMB_R grid (the verification thumbnail)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    small = downsample(x, working_grid(x.shape[2], x.shape[3], THUMB_R))
    return np.clip(np.rint(small[0].permute(1, 2, 0).numpy() * 255), 0, 255).astype(np.uint8)


def expected_change(
    source: torch.Tensor, kernel: np.ndarray, size: tuple[int, int], scales: Iterable[int]
) -> torch.Tensor:
    """The change protection makes on the thumbnail grid, re-derived from the thumbnail `source` (1×C×h×w).

    The protection of an image of `size` (height, width) is replayed on `source`: each working grid
    is reached from the thumbnail (area down, or bilinear up for grids finer than the thumbnail),
    blurred, and the difference brought back to the thumbnail grid.
    """
    th, tw = source.shape[-2:]
    kern = torch.from_numpy(np.asarray(kernel, dtype=np.float32))
    total = torch.zeros_like(source)
    for resolution in scales:
        grid = working_grid(size[0], size[1], resolution)
        finer = grid[0] * grid[1] > th * tw
        view = (
            F.interpolate(source, size=grid, mode="bilinear", align_corners=False)
            if finer
            else downsample(source, grid)
        )
        change = blur(view, kern) - view
        total += (
            downsample(change, (th, tw))
            if finer
            else F.interpolate(change, size=(th, tw), mode="bilinear", align_corners=False)
        )
    return total


def blur_scores(
    pixels: np.ndarray, thumb: np.ndarray, kernels: np.ndarray, size: tuple[int, int], scales: Iterable[int]
) -> np.ndarray:
    """Per class j: the fraction of (this image − source) that class j's protection explains, at THUMB_R.

    `pixels` (float H×W×C, any size) is area-downsampled to the thumbnail's grid first, so a
    resized copy is compared too; a rotated or cropped one (other aspect) scores 0. With e the observed
    change and E_j = `expected_change` for class j, the score is 1 − ‖e − a·E_j‖²/‖e‖² for the best
    scale a (clipped at 0, and 0 when a is outside [0.5, 1.5]): a protected image scores near 1 for
    its class, an unprotected one 0 for every class.
    """
    th, tw, tc = thumb.shape
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    if pixels.shape[2] != tc or abs(x.shape[2] / x.shape[3] - th / tw) > 0.05 * th / tw:
        return np.zeros(len(kernels))
    seen = downsample(x, (th, tw))
    source = torch.from_numpy(thumb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    change = (seen - source).flatten().double()
    energy = float(change @ change)
    scores = []
    for kernel in kernels:
        expected = expected_change(source, kernel, size, scales).flatten().double()
        norm = float(expected @ expected)
        if energy == 0 or norm == 0:
            scores.append(0.0)
            continue
        a = float(change @ expected) / norm
        residual = float(((change - a * expected) ** 2).sum()) / energy
        scores.append(max(0.0, 1 - residual) if 0.5 <= a <= 1.5 else 0.0)
    return np.array(scores)
