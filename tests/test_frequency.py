"""FF, the DCT low-pass defense, against scipy's DCT."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal
import torch

from unlearnable.defenses import (
    FrequencyFilter,
    dct_matrix,
    kept_frequencies,
)


def _scipy_low_pass(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Reference FF on B×C×H×W float64: dctn, zero outside the top-left block, idctn, clip."""
    coeffs = scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")
    mask = np.zeros(x.shape[-2:])
    mask[:rows, :cols] = 1
    return np.clip(scipy.fft.idctn(coeffs * mask, axes=(-2, -1), norm="ortho"), 0, 1)


def test_dct_matrix_is_orthonormal_and_matches_scipy():
    d = dct_matrix(7)
    torch.testing.assert_close(d @ d.T, torch.eye(7, dtype=torch.float64))
    np.testing.assert_allclose(d.numpy(), scipy.fft.dct(np.eye(7), axis=0, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("size", [(32, 32), (30, 30), (28, 28), (32, 24), (17, 30)])
def test_ff_matches_scipy_dct(rand_images, size):
    x = rand_images((3, 3, *size))
    out = FrequencyFilter()(x)
    rows, cols = int(size[0] * 30 / 100), int(size[1] * 30 / 100)
    assert out.shape == x.shape and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), _scipy_low_pass(x.double().numpy(), rows, cols), atol=1e-5)


def test_ff_float64_is_exact(rand_images):
    x = rand_images((2, 3, 30, 30), dtype=torch.float64)
    np.testing.assert_allclose(
        FrequencyFilter(keep_percent=50)(x).numpy(), _scipy_low_pass(x.numpy(), 15, 15), atol=1e-12
    )


def test_ff_keep_all_is_identity(rand_images):
    x = rand_images((2, 3, 32, 32))
    torch.testing.assert_close(FrequencyFilter(keep_percent=100)(x), x, atol=1e-5, rtol=0)


def test_ff_kept_frequencies_and_imagenet_variant(rand_images):
    assert kept_frequencies(32, 30) == 9 and kept_frequencies(30, 30) == 9 and kept_frequencies(28, 30) == 8
    assert kept_frequencies(224, 30, imagenet_variant=True) == 26  # int(0.4 · 224 · 0.3) = int(26.88)
    assert kept_frequencies(32, 30, imagenet_variant=True) == 3
    x = rand_images((2, 3, 32, 32))
    out = FrequencyFilter(imagenet_variant=True)(x)
    np.testing.assert_allclose(out.numpy(), _scipy_low_pass(x.double().numpy(), 3, 3), atol=1e-5)
