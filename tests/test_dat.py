"""DAT, deconvolution-based adversarial training (defenses/dat.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.defenses import (
    DeconvolutionAT,
)
from unlearnable.defenses.dat import (
    FILTER_BOUND,
    ascend_filters,
    class_subset_losses,
    deconvolve,
    init_filters,
    rescale_per_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.3) / 0.3


def test_deconvolve_matches_conv_transpose_modules() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 12, 12, generator=g)
    weights, bias = init_filters(5, 5, g)
    assert weights.abs().max() <= 1 / 5 and bias.abs().max() <= 1 / 5
    out = deconvolve(x, weights, bias)
    for image, w, b, got in zip(x, weights, bias, out):
        layer = nn.ConvTranspose2d(1, 1, 5, padding=2)
        with torch.no_grad():
            layer.weight.copy_(w.view(1, 1, 5, 5))
            layer.bias.copy_(b.view(1))
            expected = layer(image.unsqueeze(1)).squeeze(1)  # each channel alone, the same filter
        torch.testing.assert_close(got, expected)
    rescaled = rescale_per_image(out)
    assert torch.allclose(rescaled.flatten(1).amin(1), torch.zeros(5)) and torch.allclose(
        rescaled.flatten(1).amax(1), torch.ones(5)
    )


def test_dat_raises_each_class_loss_and_keeps_filters_bounded(model_and_batch) -> None:
    model, x, y = model_and_batch
    classes, group = torch.unique(y, return_inverse=True)
    weights, bias = init_filters(len(classes), 5, torch.Generator().manual_seed(0))
    before = class_subset_losses(model, x, y, group, weights, bias, normalize).detach()
    params = [p.clone() for p in model.parameters()]
    new_weights, new_bias = ascend_filters(model, x, y, group, weights, bias, 10, 0.1, normalize)
    after = class_subset_losses(model, x, y, group, new_weights, new_bias, normalize).detach()
    assert (after > before).all()
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), params)) and model.training
    # A huge step must hit the clamp: everything stays in [−5, 5] and some values sit on the bound.
    big_weights, big_bias = ascend_filters(model, x, y, group, weights, bias, 3, 1e4, normalize)
    assert big_weights.abs().max() <= FILTER_BOUND and big_bias.abs().max() <= FILTER_BOUND
    assert (big_weights.abs() == FILTER_BOUND).any()


def test_dat_hook_output(model_and_batch) -> None:
    model, x, y = model_and_batch
    out = DeconvolutionAT(filter_size=3, steps=2)(model, x, y, torch.Generator().manual_seed(0), normalize)
    again = DeconvolutionAT(filter_size=3, steps=2)(model, x, y, torch.Generator().manual_seed(0), normalize)
    assert out.shape == x.shape and not out.requires_grad and torch.equal(out, again)
    assert torch.allclose(out.flatten(1).amin(1), torch.zeros(len(x)))
    assert torch.allclose(out.flatten(1).amax(1), torch.ones(len(x)))
    soft = DeconvolutionAT(filter_size=3, steps=2)(
        model, x, F.one_hot(y, 4).float(), torch.Generator().manual_seed(0), normalize
    )
    torch.testing.assert_close(soft, out)  # one-hot targets act as the labels
