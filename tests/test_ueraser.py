"""UEraser-Max (defenses/ueraser.py): the worst of K augmentations, its ops against torchvision."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from unlearnable.defenses import (
    UEraserMax,
)
from unlearnable.defenses.ueraser import apply_op, draw_losses, equalize, posterize, ueraser_augment

pytestmark = pytest.mark.usefixtures("one_thread")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.3) / 0.3


def test_ueraser_returns_each_images_max_loss_draw(model_and_batch) -> None:
    model, x, y = model_and_batch
    out = UEraserMax(draws=5)(model, x, y, torch.Generator().manual_seed(7), normalize)
    candidates = ueraser_augment(x.repeat(5, 1, 1, 1), torch.Generator().manual_seed(7)).view(5, *x.shape)
    losses = torch.stack([draw_losses(model, c, y, normalize) for c in candidates])  # K × B, one draw at a time
    assert (losses.max(0).values - losses.min(0).values > 1e-3).all()  # the choice matters
    torch.testing.assert_close(out, candidates[losses.argmax(0), torch.arange(len(x))])
    assert model.training


def test_ueraser_ops_match_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    x = images.float() / 255
    torch.testing.assert_close(equalize(x), TF.equalize(images).float() / 255)
    bits = torch.tensor([1, 2, 3, 4, 2, 1])
    torch.testing.assert_close(
        posterize(x, bits), torch.stack([TF.posterize(i, int(b)) for i, b in zip(images, bits)]).float() / 255
    )
    factor = torch.linspace(0.1, 1.9, 6)
    for name, reference in [
        ("contrast", TF.adjust_contrast),
        ("brightness", TF.adjust_brightness),
        ("sharpness", TF.adjust_sharpness),
    ]:
        expected = torch.cat([reference(image[None], float(f)) for image, f in zip(x, factor)])
        torch.testing.assert_close(apply_op(x, name, factor), expected, atol=1e-4, rtol=0)
    angle = torch.linspace(-30, 30, 6)
    expected = torch.cat(
        [TF.rotate(image[None], float(a), TF.InterpolationMode.BILINEAR) for image, a in zip(x, angle)]
    )
    torch.testing.assert_close(apply_op(x, "rotate", angle), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(apply_op(x, "solarize", torch.full((6,), 0.5)), torch.where(x >= 0.5, 1 - x, x))
    translated = apply_op(x, "translate_x", torch.full((6,), 0.25))  # 4 of 16 pixels to the right
    torch.testing.assert_close(translated[..., 4:], x[..., :-4])
    assert (translated[..., :4] == 0).all()


def test_ueraser_augment_is_seeded_and_in_range() -> None:
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = ueraser_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, ueraser_augment(x, torch.Generator().manual_seed(1)))
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, ueraser_augment(x, torch.Generator().manual_seed(2)))
    assert (first - x).abs().flatten(1).amax(1).gt(0.05).float().mean() > 0.8  # strong augmentations
