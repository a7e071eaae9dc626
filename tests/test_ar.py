"""AR, autoregressive perturbations (attacks/ar.py), against the published process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearnable.attacks.additive import draw_streams
from unlearnable.attacks.ar import CROP, ar_coefficients, ar_crop, ar_filters, ar_noise, ar_process

pytestmark = pytest.mark.usefixtures("one_thread")


def published_ar_process(coefficients: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """One image, one conv2d per position, as the published generator."""
    x = field.clone()
    c = x.shape[0]
    for i in range(x.shape[1] - 2):
        for j in range(x.shape[2] - 2):
            x[:, i + 2, j + 2] = F.conv2d(x[:, i : i + 3, j : j + 3], coefficients.unsqueeze(1), groups=c).flatten()
    return x


def test_ar_coefficients_are_causal_sum_to_one_and_are_seeded():
    a = ar_coefficients(4, 3, seed=0)
    assert a.shape == (4, 3, 3, 3) and (a[:, :, 2, 2] == 0).all()
    np.testing.assert_allclose(a.sum((2, 3)), 1.0, atol=1e-12)
    assert len(np.unique(a.reshape(4, -1), axis=0)) == 4
    np.testing.assert_array_equal(a, ar_coefficients.__wrapped__(4, 3, 0))  # the cache returns the same search
    assert not np.array_equal(a, ar_coefficients(4, 3, seed=1))
    assert ar_coefficients(4, 1, seed=0).shape == (4, 1, 3, 3)
    # The optional published greedy criterion rejects some candidates the bound alone accepts.
    greedy = ar_coefficients(4, 3, seed=0, min_response=4.0)
    np.testing.assert_allclose(greedy.sum((2, 3)), 1.0, atol=1e-12)
    assert not np.array_equal(greedy, a)


def test_ar_process_equals_the_published_loop_and_its_own_filter_predicts_it():
    coefficients = torch.from_numpy(ar_coefficients(4, 3, seed=0).copy())
    field = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = ar_process(coefficients, field)
    for k in range(4):
        assert torch.allclose(ours[k], published_ar_process(coefficients[k], field[k]), rtol=1e-9, atol=1e-12)
    # The prediction error of class k's filter vanishes on class k's process, not on the others'.
    errors = F.conv2d(ours, ar_filters(coefficients)).abs().sum((2, 3))  # (image, filter)
    assert errors.diagonal().max() < 1e-9 and (errors + torch.eye(4)).min() > 1e-3


def test_ar_rescale_keeps_float32_finite_and_only_scales():
    growth = torch.zeros(1, 3, 3)
    growth[:, 2, 1] = 2.5  # x[r, q] = 2.5·x[r, q - 1]: grows 2.5^98 ≈ 1e39 along a 100-wide row
    field = torch.randn(2, 1, 8, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = ar_process(growth.double(), field)
    assert not torch.isfinite(ar_process(growth, field.float())).all()
    rescaled = ar_process(growth, field.float(), rescale=True)
    assert torch.isfinite(rescaled).all()
    unit = lambda x: x / x.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # noqa: E731
    assert (unit(rescaled).double() - unit(exact)).abs().max() < 1e-5


def test_ar_noise_norm_and_poison_regenerates(random_set, poison):
    coefficients = torch.from_numpy(ar_coefficients(4, 3, seed=2).copy()).float()
    field = torch.randn(6, 3, 16 + CROP, 16 + CROP, generator=torch.Generator().manual_seed(1))
    noise = ar_noise(coefficients[torch.arange(6) % 4], field, norm=0.5)
    assert noise.shape == (6, 3, 16, 16)
    assert torch.allclose(noise.flatten(1).norm(dim=1), torch.full((6,), 0.5), rtol=1e-5, atol=0)
    images, labels = random_set(30)
    p = poison("ar", images, labels, 4, seed=2, mix=0.6)
    np.testing.assert_array_equal(np.array(p.key["coefficients"]), ar_coefficients(4, 3, seed=2))
    idx = torch.tensor(p.key["poisoned_indices"])
    field = draw_streams(2)[2].standard_normal((len(idx), 3, 16 + CROP, 16 + CROP), dtype=np.float32)
    delta = ar_noise(coefficients[labels[idx]], torch.from_numpy(field))
    expected = (images[idx].float() + 255 * delta + 0.5).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images[idx], expected)


def test_ar_crop_is_the_published_one_per_image_size(poison):
    """CIFAR and STL-10 start the process 4 larger and crop 4 (36 → 32, 100 → 96); ImageNet-100
    starts from 226² and crops 2."""
    assert [ar_crop(s, s) for s in (32, 96, 223, 224, 256)] == [4, 4, 4, 2, 2]
    images = torch.zeros(2, 3, 224, 224, dtype=torch.uint8) + 128
    labels = torch.tensor([0, 1])
    p = poison("ar", images, labels, 2, seed=3)
    assert p.key["params"]["crop"] == 2
    coefficients = torch.from_numpy(ar_coefficients(2, 3, seed=3).copy()).float()
    field = draw_streams(3)[2].standard_normal((2, 3, 226, 226), dtype=np.float32)
    delta = ar_noise(coefficients[labels], torch.from_numpy(field), crop=2)
    expected = (images.float() + 255 * delta + 0.5).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images, expected)
