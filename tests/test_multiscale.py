"""unlearnable.attacks.multiscale: the data owner's blur, carried to full size, survives downsampling."""

from __future__ import annotations

import numpy as np
import torch

from helpers import smooth_photo
from unlearnable.analysis.metrics import image_psnr as psnr
from unlearnable.attacks.multiscale import STRENGTHS, blur, class_kernels, downsample, protect_pixels, working_grid


def test_protection_survives_downsampling_to_the_working_grids() -> None:
    x = smooth_photo(300, 420, 3, 7).astype(np.float32)
    kernel = class_kernels(10, STRENGTHS["mid"], 0)[3]
    y = protect_pixels(x, kernel, (32,))
    grid = working_grid(300, 420, 32)
    assert grid == (32, 45)
    tx = torch.from_numpy(x).permute(2, 0, 1)[None]
    ty = torch.from_numpy(y).permute(2, 0, 1)[None]
    want = blur(downsample(tx, grid), torch.from_numpy(kernel))
    got = downsample(ty, grid)
    other = blur(downsample(tx, grid), torch.from_numpy(class_kernels(10, STRENGTHS["mid"], 0)[4]))
    assert (got - want).abs().mean() < 0.5 * (downsample(tx, grid) - want).abs().mean()
    assert (got - want).abs().mean() < (got - other).abs().mean()
    assert psnr(x, y) > 18
