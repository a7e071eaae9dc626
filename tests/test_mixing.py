"""MixUp and CutMix (defenses/mixing.py): the mixing ratio against the pixels and the targets."""

from __future__ import annotations

import pytest
import scipy.stats
import torch

from unlearnable.defenses import (
    CutMix,
    MixUp,
)
from unlearnable.defenses.mixing import sample_beta

pytestmark = pytest.mark.usefixtures("one_thread")


def one_class_per_image(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random images and one-hot targets with every image of its own class (so targets reveal the partner)."""
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)), torch.eye(n)


def partners(mixed_targets: torch.Tensor) -> torch.Tensor:
    """Each image's partner, read off targets where image i is the only one of class i."""
    own = mixed_targets.diagonal()
    others = mixed_targets - torch.diag(own)
    return torch.where(own < 1 - 1e-6, others.argmax(1), torch.arange(len(own)))


@pytest.mark.parametrize("seed", range(5))
def test_mixup_lambda_matches_the_pixels(seed: int) -> None:
    x, targets = one_class_per_image(16, seed)
    mixed, mixed_targets = MixUp()(x, targets, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(16))
    partner = partners(mixed_targets)
    assert sorted(partner.tolist()) == list(range(16))  # a permutation
    moved = partner != torch.arange(16)
    lam = mixed_targets.diagonal()[moved][0]  # one λ for the batch: every moved image keeps λ of itself
    torch.testing.assert_close(mixed_targets.diagonal()[moved], lam.expand(int(moved.sum())))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partner])


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_box_area_matches_the_targets(seed: int) -> None:
    x, targets = one_class_per_image(16, seed)
    mixed, mixed_targets = CutMix()(x, targets, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(16))
    partner = partners(mixed_targets)
    moved = partner != torch.arange(16)
    box = (mixed != x).any(1).any(0)  # H×W: pixels that came from a partner (random images never coincide)
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    if box.any():  # one rectangle
        assert box.sum() == len(rows) * len(cols) == box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].sum()
    kept = 1 - box.float().mean()
    torch.testing.assert_close(mixed_targets.diagonal()[moved], kept.expand(int(moved.sum())))
    torch.testing.assert_close(mixed, torch.where(box, x[partner], x))  # the same box in every image


def test_mixing_ratio_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    uniform = sample_beta(1.0, 4000, g)
    assert scipy.stats.kstest(uniform.numpy(), "uniform").pvalue > 1e-3
    for alpha in (0.4, 2.0):
        draws = sample_beta(alpha, 4000, g)
        assert scipy.stats.kstest(draws.numpy(), scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    # One λ per batch: the same seed gives the same mix, whatever α = 1 means elsewhere.
    x, targets = one_class_per_image(8, 0)
    first = MixUp()(x, targets, torch.Generator().manual_seed(3))
    second = MixUp()(x, targets, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
