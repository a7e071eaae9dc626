"""The grating poison (the project's own candidate) and its adaptive defense, notch."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from unlearnable.attacks import ATTACKS
from unlearnable.attacks.grating import class_frequencies, frequencies, grating_poison, gratings
from unlearnable.data import ImageDataset
from unlearnable.defenses import training_defense
from unlearnable.defenses.notch import Notch, find_gratings, remove_frequencies
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def flat_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 n×3×size×size images of mid-grey plus small noise: nothing near 0 or 255 clips."""
    g = torch.Generator().manual_seed(seed)
    return (128 + 10 * torch.randn(n, 3, size, size, generator=g)).round().clamp(0, 255).to(torch.uint8)


def test_frequencies_are_low_distinct_and_one_per_sign_pair():
    f = frequencies(4)
    assert len({tuple(p) for p in f.tolist()}) == len(f)
    assert all(abs(fx) <= 4 and abs(fy) <= 4 and math.hypot(fx, fy) >= 2 for fx, fy in f.tolist())
    assert not any((-fx, -fy) in {tuple(p) for p in f.tolist()} for fx, fy in f.tolist())
    assert len(f) == 36
    drawn = class_frequencies(10, seed=3)
    assert drawn.shape == (10, 2) and len({tuple(p) for p in drawn.tolist()}) == 10
    assert np.array_equal(drawn, class_frequencies(10, seed=3)) and not np.array_equal(drawn, class_frequencies(10, 4))


def test_grating_is_the_published_formula_on_every_channel():
    δ = gratings(torch.tensor([[2, -1]]), torch.tensor([0.5]), (3, 8, 16), 0.1)
    y, x = 5, 3
    expected = 0.1 * math.cos(2 * math.pi * (2 * x / 16 - 1 * y / 8) + 0.5)
    assert δ.shape == (1, 3, 8, 16) and torch.equal(δ[0, 0], δ[0, 2])
    assert abs(float(δ[0, 1, y, x]) - expected) < 1e-6


def test_poison_adds_the_keyed_grating_and_is_deterministic():
    images, labels = flat_images(40), torch.arange(40) % 4
    poison = grating_poison(images, labels, 4, seed=1, eps=12 / 255, progress=False, device="cpu")
    key = poison.key
    assert key["attack"] == "grating" and len(key["phases"]) == 40 and key["poisoned_indices"] == list(range(40))
    freqs = torch.tensor(key["frequencies"])[labels]
    expected = images.float() + 255 * gratings(freqs, torch.tensor(key["phases"]), (3, 16, 16), 12 / 255)
    assert int((poison.images.int() - expected.add(0.5).floor().clamp(0, 255).int()).abs().max()) <= 1
    again = grating_poison(images, labels, 4, seed=1, eps=12 / 255, progress=False, device="cpu")
    assert torch.equal(again.images, poison.images)
    assert not torch.equal(
        grating_poison(images, labels, 4, seed=2, progress=False, device="cpu").images, poison.images
    )


def test_partial_poisoning_leaves_the_other_images_byte_identical():
    images, labels = flat_images(60), torch.arange(60) % 3
    poison = grating_poison(images, labels, 3, mix=0.5, progress=False, device="cpu")
    chosen = torch.zeros(60, dtype=torch.bool)
    chosen[poison.key["poisoned_indices"]] = True
    assert 0 < int(chosen.sum()) < 60 and len(poison.key["phases"]) == int(chosen.sum())
    assert torch.equal(poison.images[~chosen], images[~chosen])
    assert bool((poison.images[chosen] != images[chosen]).flatten(1).any(dim=1).all())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"eps": 0.0}, "--eps 0.0 is out of range for grating"),
        ({"max_cycles": 1}, "grating: max_cycles must be an integer ≥ 2 (got 1)"),
        ({"num_classes": 40}, "grating has 36 distinct frequencies up to 4 cycles for 40 classes"),
    ],
)
def test_bad_options_raise_one_line(options, message):
    images, labels = flat_images(40), torch.arange(40) % 4
    num_classes = options.pop("num_classes", 4)
    with pytest.raises(UserInputError, match=re.escape(message)):
        grating_poison(images, labels, num_classes, progress=False, device="cpu", **options)
    with pytest.raises(UserInputError, match="too small for grating"):
        grating_poison(flat_images(4, size=8), labels[:4], 4, progress=False, device="cpu")


def test_registered():
    assert "grating" in ATTACKS.names() and training_defense("notch").preprocess is not None


def test_notch_finds_each_class_frequency_without_the_key_and_removes_it():
    images, labels = flat_images(400), torch.arange(400) % 4
    poison = grating_poison(images, labels, 4, eps=16 / 255, progress=False, device="cpu")
    found, ratios = find_gratings(poison.images, labels, 4, max_cycles=8, min_ratio=4.0)
    assert sorted(found) == sorted(map(tuple, poison.key["frequencies"]))
    assert min(ratios) > 10
    out = Notch()(ImageDataset(poison.images, labels, ["a", "b", "c", "d"], {"attack": "grating"}))
    assert out.meta["attack"] == "grating" and out.meta["notch"]["frequencies"] == [list(f) for f in sorted(found)]
    before = (poison.images.float() - images.float()).square().mean()
    after = (out.images.float() - images.float()).square().mean()
    assert float(after) < 0.1 * float(before)


def test_notch_changes_nothing_on_clean_class_data():
    images, labels = flat_images(400, seed=5), torch.arange(400) % 4
    found, ratios = find_gratings(images, labels, 4, 8, 4.0)
    assert found == [] and max(ratios) < 4
    assert torch.equal(remove_frequencies(images, found), images)
    with pytest.raises(UserInputError, match="Notch: min_ratio must be"):
        Notch(min_ratio=1.0)
