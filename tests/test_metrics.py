"""unlearnable.analysis.metrics: SSIM against a hand computation and scipy's Gaussian filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.analysis.metrics import batch_ssim
from unlearnable.analysis.metrics import image_ssim as ssim


def test_ssim_against_hand_computed_and_scipy_reference() -> None:
    a = np.full((16, 16, 1), 0.6)
    b = np.full((16, 16, 1), 0.3)
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.6 * 0.3 + c1) / (0.36 + 0.09 + c1), rel=1e-9)
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    x = rng.random((30, 40, 3))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    values = []
    for ch in range(3):
        f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]  # noqa: E731
        mx, my = f(x[:, :, ch]), f(y[:, :, ch])
        vx, vy = f(x[:, :, ch] ** 2) - mx**2, f(y[:, :, ch] ** 2) - my**2
        cxy = f(x[:, :, ch] * y[:, :, ch]) - mx * my
        s = (2 * mx * my + c1) * (2 * cxy + 9e-4) / ((mx**2 + my**2 + c1) * (vx + vy + 9e-4))
        values.append(s.mean())
    assert ssim(x, y) == pytest.approx(float(np.mean(values)), rel=1e-6)
    assert ssim(x, x) == pytest.approx(1.0)


def test_batch_ssim_is_image_ssim_of_each_pair() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(4, 3, 20, 24, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    each = [ssim(x.permute(1, 2, 0).numpy(), y.permute(1, 2, 0).numpy()) for x, y in zip(a, b, strict=True)]
    assert batch_ssim(a, b).tolist() == pytest.approx(each, rel=1e-12)
