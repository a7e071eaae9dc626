"""Cutout against the reference of DeVries & Taylor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import seeded_generator
from unlearnable.defenses import (
    Cutout,
)
from unlearnable.defenses.cutout import sample_hole_centres

pytestmark = pytest.mark.usefixtures("one_thread")


def _devries_cutout(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, length: int) -> np.ndarray:
    """The reference Cutout (DeVries & Taylor) per image, with the given centres."""
    out = x.copy()
    height, width = x.shape[-2:]
    for image, y, x_ in zip(out, rows, cols):
        y1, y2 = np.clip(y - length // 2, 0, height), np.clip(y + length // 2, 0, height)
        x1, x2 = np.clip(x_ - length // 2, 0, width), np.clip(x_ + length // 2, 0, width)
        image[:, y1:y2, x1:x2] = 0
    return out


def test_cutout_zeroes_one_clipped_square_and_keeps_the_rest():
    x = 0.1 + 0.9 * torch.rand((64, 3, 20, 24), generator=seeded_generator(18))  # no zeros of its own
    out = Cutout()(x, seeded_generator(19))
    g = seeded_generator(19)  # the draws Cutout makes: rows, then columns
    rows, cols = torch.randint(0, 20, (64,), generator=g), torch.randint(0, 24, (64,), generator=g)
    np.testing.assert_array_equal(out.numpy(), _devries_cutout(x.numpy(), rows.numpy(), cols.numpy(), 16))
    clipped = 0
    for image, result in zip(x, out):
        zeroed = result == 0
        assert torch.equal(zeroed[0], zeroed[1]) and torch.equal(zeroed[0], zeroed[2])
        hole_rows, hole_cols = zeroed[0].any(1).nonzero().flatten(), zeroed[0].any(0).nonzero().flatten()
        height, width = len(hole_rows), len(hole_cols)
        assert hole_rows.diff().eq(1).all() and hole_cols.diff().eq(1).all()  # one contiguous block ...
        assert zeroed[0].sum() == height * width  # ... that is a full rectangle
        assert 8 <= height <= 16 and 8 <= width <= 16  # the centre is inside, so at least half survives
        clipped += (height, width) != (16, 16)
        assert torch.equal(result[~zeroed], image[~zeroed])
    assert 0 < clipped < 64


def test_cutout_odd_size_has_exactly_that_side():
    out = Cutout(size=5)(0.5 + torch.zeros(200, 1, 40, 40), seeded_generator(20))
    full = [(image[0] == 0).sum().item() for image in out]
    assert max(full) == 25


def test_cutout_is_seeded_and_needs_a_generator():
    x = torch.rand((8, 3, 16, 16), generator=seeded_generator(21)) + 0.1
    cutout = Cutout(size=8)
    assert torch.equal(cutout(x, seeded_generator(22)), cutout(x, seeded_generator(22)))
    assert not torch.equal(cutout(x, seeded_generator(22)), cutout(x, seeded_generator(23)))
    torch.manual_seed(22)
    assert torch.equal(cutout(x), cutout(x, seeded_generator(22)))  # no generator: torch's global one


def test_cutout_centres_are_uniform_over_the_pixels():
    rows, cols = sample_hole_centres(16000, 4, 8, generator=seeded_generator(24))
    np.testing.assert_allclose(np.bincount(rows.numpy(), minlength=4) / 16000, 1 / 4, rtol=0.08)
    np.testing.assert_allclose(np.bincount(cols.numpy(), minlength=8) / 16000, 1 / 8, rtol=0.08)
