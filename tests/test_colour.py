"""unshift (defenses/colour.py), the adaptive defense against DUNE's class-wise colour shifts."""

from __future__ import annotations

import pytest
import torch

from unlearnable.attacks.dune import dune_poison
from unlearnable.data import ImageDataset
from unlearnable.defenses import training_defense
from unlearnable.defenses.colour import ColourUnshift, estimate_shifts, level_histograms
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

SHIFTS = torch.tensor([[20, -10, 0], [-30, 5, 15], [0, 0, 0], [12, -12, 40]])
"""Per class and channel, in uint8 levels."""


def shifted(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DUNE's colour branch alone: every image of class c moved by SHIFTS[c] and clipped."""
    return (images.short() + SHIFTS[labels][:, :, None, None]).clamp(0, 255).to(torch.uint8)


def dataset(images: torch.Tensor, labels: torch.Tensor) -> ImageDataset:
    return ImageDataset(images, labels, ["a", "b", "c", "d"], {"attack": "test"})


def test_level_histograms_count_every_pixel_by_class_and_channel(random_set):
    images, labels = random_set(40, (3, 8, 8), classes=4, seed=1)
    hist = level_histograms(images, labels, 4)
    assert hist.shape == (4, 3, 256) and int(hist.sum()) == images.numel()
    c, ch, level = 2, 1, int(images[labels == 2][0, 1, 0, 0])
    assert int(hist[c, ch, level]) == int((images[labels == c][:, ch] == level).sum())


def test_each_class_shift_is_read_from_its_clipped_pixels(random_set):
    images, labels = random_set(400, classes=4, seed=2)
    assert torch.equal(estimate_shifts(level_histograms(shifted(images, labels), labels, 4), 1e-3), SHIFTS)


def test_unshift_restores_every_unclipped_pixel_and_records_the_shifts(random_set):
    images, labels = random_set(400, classes=4, seed=3)
    poisoned = shifted(images, labels)
    out = ColourUnshift()(dataset(poisoned, labels))
    unclipped = (poisoned > 0) & (poisoned < 255)
    assert unclipped.float().mean() > 0.9 and torch.equal(out.images[unclipped], images[unclipped])
    assert out.meta["attack"] == "test" and out.meta["unshift"] == {"shifts": SHIFTS.tolist(), "tail": 1e-3}
    assert torch.equal(out.labels, labels) and torch.equal(dataset(poisoned, labels).images, poisoned)


def test_data_reaching_both_ends_is_left_alone(random_set):
    images, labels = random_set(400, classes=4, seed=4)
    out = ColourUnshift()(dataset(images, labels))
    assert out.meta["unshift"]["shifts"] == [[0, 0, 0]] * 4 and torch.equal(out.images, images)


def test_dune_shifts_are_found_without_the_key(random_set):
    images, labels = random_set(80, (3, 16, 16), classes=4, seed=5)
    poison = dune_poison(
        images, labels, 4, steps=3, num_models=2, surrogate_epochs=2, particles=3, pso_iterations=2,
        device="cpu", progress=False,
    )  # fmt: skip
    true = torch.tensor(poison.key["shifts"]) * 255
    found = estimate_shifts(level_histograms(poison.images, labels, 4), 1e-3)
    assert true.abs().max() > 10 and (found - true).abs().max() <= 1.5


def test_registered_and_checked():
    assert training_defense("unshift").preprocess is not None
    with pytest.raises(UserInputError, match="ColourUnshift: tail must be"):
        ColourUnshift(tail=0.5)


def test_a_class_reaching_neither_end_or_without_images_gets_no_shift():
    histograms = torch.zeros(2, 3, 256, dtype=torch.int64)
    histograms[0, :, 40] = 100  # class 0: every pixel at level 40, so it never reaches 0 or 255
    assert estimate_shifts(histograms, 1e-3).tolist() == [[0, 0, 0], [0, 0, 0]]
