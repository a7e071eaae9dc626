"""Image-quality metrics between a protected or restored set and its clean original.

- `psnr`: one number for a whole set of uint8 images (the pooled mean squared error).
- `psnr_per_image`: one number per uint8 image of a set.
- `image_psnr`, `image_ssim`: one float image pair (numpy H×W×C in [0, 1]), e.g. a photo at its own size.
- `batch_ssim`: `image_ssim` of every pair of two float batches of the same size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) between two uint8 image tensors of the same shape (N×...), read in chunks."""
    chunk = max(1, (1 << 24) // max(1, a[0].numel()))
    squared = 0
    for s in range(0, len(a), chunk):
        d = a[s : s + chunk].to(torch.int32) - b[s : s + chunk].to(torch.int32)
        squared += int((d * d).sum())
    mse = squared / a.numel()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 N×C×H×W `images` against `reference` (peak 255): float64 (N,).

    An identical image scores 100 dB (its squared error is floored at 1e-10).
    """
    error = (images.double() - reference.double()).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(255.0**2 / error)


def image_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1] (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def image_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, radius: int = 5) -> float:
    """Mean SSIM (Wang et al. 2004) of two float H×W×C images in [0, 1]: 11×11 gaussian window σ 1.5,
    K1 0.01, K2 0.03, data range 1, per channel, averaged over the valid (unpadded) window positions
    and the channels, the convention of skimage's ``structural_similarity(gaussian_weights=True,
    use_sample_covariance=False, data_range=1)``.
    """
    x = torch.from_numpy(np.ascontiguousarray(a, np.float64)).permute(2, 0, 1)[None]
    y = torch.from_numpy(np.ascontiguousarray(b, np.float64)).permute(2, 0, 1)[None]
    return float(batch_ssim(x, y, sigma, radius)[0])


def batch_ssim(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    """`image_ssim` of every pair of float N×C×H×W images in [0, 1] (H, W > 2·radius): float64 (N,)."""
    n, c, h, w = a.shape
    x = a.double().reshape(n * c, 1, h, w)
    y = b.double().reshape(n * c, 1, h, w)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g /= g.sum()

    def mean(z: torch.Tensor) -> torch.Tensor:  # the separable gaussian window, valid positions only
        return F.conv2d(F.conv2d(z, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))

    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx**2, mean(y * y) - my**2, mean(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.reshape(n, -1).mean(dim=1)
