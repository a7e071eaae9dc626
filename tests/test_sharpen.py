"""The sharpening defenses (RSK, SSK) against direct correlation with scipy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch
import torch.nn.functional as F

from unlearnable.defenses import (
    RandomSharpen,
    StaticSharpen,
    build_defense,
    sample_sharpen_kernels,
    static_sharpen_kernel,
)


def _scipy_sharpen(x: np.ndarray, kernels: np.ndarray, pad_mode: str | None = None) -> np.ndarray:
    """Reference sharpening: per image and channel, numpy pad then scipy valid correlation, clip."""
    out = []
    for image, kernel in zip(x, kernels):
        channels = [np.pad(ch, 1, mode=pad_mode) if pad_mode else ch for ch in image]
        out.append([scipy.signal.correlate2d(ch, kernel, mode="valid") for ch in channels])
    return np.clip(np.array(out), 0, 1)


# --- SSK ---------------------------------------------------------------------------------------


def test_ssk_kernel_sums_to_one():
    kernel = static_sharpen_kernel(3.0)
    assert kernel.sum().item() == pytest.approx(1.0)
    assert kernel[1, 1].item() == 3.0 and kernel[0, 1].item() == -0.5
    assert kernel[0, 0].item() == kernel[2, 2].item() == 0


def test_ssk_matches_direct_correlation(rand_images):
    x = rand_images((3, 3, 12, 10))
    out = StaticSharpen()(x)
    assert out.shape == (3, 3, 10, 8)
    kernels = np.broadcast_to(static_sharpen_kernel(dtype=torch.float64).numpy(), (3, 3, 3))
    np.testing.assert_allclose(out.numpy(), _scipy_sharpen(x.double().numpy(), kernels), atol=1e-5)


def test_ssk_keeps_constant_image_constant():
    x = torch.full((2, 3, 8, 8), 0.3)
    torch.testing.assert_close(StaticSharpen()(x), torch.full((2, 3, 6, 6), 0.3))
    same = StaticSharpen(padding="replicate")(x)  # replicate keeps the border constant too
    torch.testing.assert_close(same, x)


@pytest.mark.parametrize("padding, pad_mode", [("replicate", "edge"), ("reflect", "reflect"), ("zeros", "constant")])
def test_sharpen_same_padding_matches_numpy_pad(rand_images, padding, pad_mode):
    x = rand_images((2, 3, 9, 11))
    out = StaticSharpen(center=3.0, padding=padding)(x)
    kernels = np.broadcast_to(static_sharpen_kernel(3.0, dtype=torch.float64).numpy(), (2, 3, 3))
    assert out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), _scipy_sharpen(x.double().numpy(), kernels, pad_mode), atol=1e-5)


# --- RSK ---------------------------------------------------------------------------------------


def test_rsk_kernel_statistics():
    kernels = sample_sharpen_kernels(20000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c = kernels[:, 1, 1]
    neighbours = -torch.stack([kernels[:, 0, 1], kernels[:, 1, 0], kernels[:, 1, 2], kernels[:, 2, 1]], dim=1)
    assert c.mean().item() == pytest.approx(2.5, abs=0.005)
    assert c.std().item() == pytest.approx(0.1, abs=0.005)
    assert (kernels[:, [0, 0, 2, 2], [0, 2, 0, 2]] == 0).all()
    for n in neighbours.T:  # n = (c - 1) / 4 + noise: slope 0.25, intercept -0.25, residual std 0.1
        slope, intercept = np.polyfit(c.numpy(), n.numpy(), 1)
        assert slope == pytest.approx(0.25, abs=0.03) and intercept == pytest.approx(-0.25, abs=0.08)
        assert (n - (c - 1) / 4).std().item() == pytest.approx(0.1, abs=0.005)


def test_rsk_kernels_fresh_per_sample_and_per_call_and_seeded(rand_images):
    g = torch.Generator().manual_seed(0)
    first, second = sample_sharpen_kernels(8, generator=g), sample_sharpen_kernels(8, generator=g)
    assert len(set(first[:, 1, 1].tolist())) == 8
    assert not torch.equal(first, second)
    torch.testing.assert_close(sample_sharpen_kernels(8, generator=torch.Generator().manual_seed(0)), first)

    x = rand_images((4, 3, 32, 32))
    rsk = RandomSharpen()
    out_a = rsk(x, torch.Generator().manual_seed(5))
    assert torch.equal(out_a, rsk(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(out_a, rsk(x, torch.Generator().manual_seed(6)))


def test_rsk_equals_per_image_conv2d_with_its_kernel(rand_images):
    x = rand_images((5, 3, 32, 32))
    out = RandomSharpen()(x, torch.Generator().manual_seed(3))
    kernels = sample_sharpen_kernels(5, generator=torch.Generator().manual_seed(3))
    assert out.shape == (5, 3, 30, 30)
    assert out.min().item() >= 0 and out.max().item() <= 1
    for image, kernel, result in zip(x, kernels, out):
        expected = F.conv2d(image.unsqueeze(1), kernel.view(1, 1, 3, 3)).squeeze(1).clamp(0, 1)
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)


def test_rsk_same_padding_keeps_size(rand_images):
    out = RandomSharpen(padding="replicate")(rand_images((2, 3, 32, 32)), torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 32, 32) and 0 <= out.min().item() and out.max().item() <= 1


def test_rsk_without_a_generator_draws_from_torchs_global_one(rand_images):
    x = rand_images((2, 3, 8, 8))
    torch.manual_seed(5)
    first = RandomSharpen()(x)
    assert torch.equal(first, RandomSharpen()(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, RandomSharpen()(x))  # the global generator moved on


# --- devices -----------------------------------------------------------------------------------


@pytest.mark.cuda
def test_sharpening_and_ff_run_on_cuda(rand_images):
    x = rand_images((4, 3, 32, 32))
    gpu = torch.device("cuda")
    for spec in ("ssk+ff", "ff", "ssk"):  # deterministic: the CPU result is the reference
        out = build_defense(spec)(x.to(gpu))
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), build_defense(spec)(x), atol=1e-5, rtol=0)
    out = build_defense("rsk+ff")(x.to(gpu), torch.Generator(gpu).manual_seed(0))
    assert out.device.type == "cuda" and out.shape == (4, 3, 30, 30)
    # RSK draws on the CUDA generator; the reference is CPU conv2d with those kernels.
    kernels = sample_sharpen_kernels(4, generator=torch.Generator(gpu).manual_seed(0)).cpu()
    out = RandomSharpen()(x.to(gpu), torch.Generator(gpu).manual_seed(0))
    expected = torch.stack(
        [F.conv2d(image.unsqueeze(1), k.view(1, 1, 3, 3)).squeeze(1) for image, k in zip(x, kernels)]
    ).clamp(0, 1)
    torch.testing.assert_close(out.cpu(), expected, atol=1e-5, rtol=0)
