"""Image-quality metrics between a protected or restored set and its clean original."""

from __future__ import annotations

import numpy as np
import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) between two uint8 image tensors of the same shape (N×...), read in chunks."""
    chunk = max(1, (1 << 24) // max(1, a[0].numel()))
    squared = 0
    for s in range(0, len(a), chunk):
        d = a[s:s + chunk].to(torch.int32) - b[s:s + chunk].to(torch.int32)
        squared += int((d * d).sum())
    mse = squared / a.numel()
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
