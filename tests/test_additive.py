"""Class-wise noise and the additive poisons' keys (attacks/additive.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.attacks.additive import MAX_KEY_NUMBERS, classwise_noise

pytestmark = pytest.mark.usefixtures("one_thread")


def test_noise_adds_the_class_pattern_and_rounds(random_set, poison):
    images, labels = random_set(40)
    p = poison("noise", images, labels, 4, eps=4 / 255, seed=7)
    patterns = classwise_noise(4, (3, 16, 16), 4 / 255, seed=7)
    np.testing.assert_array_equal(np.array(p.key["patterns"], dtype=np.float32), patterns)
    assert np.abs(patterns).max() <= 4 / 255
    expected = (images.float() + 255 * torch.from_numpy(patterns)[labels] + 0.5).clamp(0, 255).floor()
    assert torch.equal(p.images, expected.to(torch.uint8))
    assert (p.images.int() - images.int()).abs().max() <= 4


def test_large_secrets_are_left_out_of_the_key_and_regenerable(random_set, poison):
    images, labels = random_set(4, (3, 64, 64))
    p = poison("noise", images, labels, 10)  # 10·3·64·64 numbers > MAX_KEY_NUMBERS
    assert 10 * 3 * 64 * 64 > MAX_KEY_NUMBERS
    assert "patterns" not in p.key and p.key["regenerate"]["secrets"] == ["patterns"]
    assert "classwise_noise" in p.key["regenerate"]["function"]
    regenerated = torch.from_numpy(classwise_noise(10, (3, 64, 64), 8 / 255, seed=0))
    expected = (images.float() + 255 * regenerated[labels] + 0.5).clamp(0, 255).floor().to(torch.uint8)
    assert torch.equal(p.images, expected)
