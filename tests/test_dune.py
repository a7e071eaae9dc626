"""DUNE (attacks/dune.py): the published formulas pinned on hand-computed cases, the published random
stream and PSO update, and what every attack promises (shapes, keys, masks, seeds, checks)."""

from __future__ import annotations

import inspect
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearnable.attacks import ATTACKS
from unlearnable.attacks.additive import draw_poisoned
from unlearnable.attacks.dune import (
    colour_objective,
    dune_poison,
    ensemble_pgd,
    psnr_per_image,
    pso_shift,
    snapshot_epochs,
    ssim_per_image,
)
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"steps": 3, "num_models": 2, "surrogate_epochs": 2, "particles": 3, "pso_iterations": 2}
"""Settings small enough for a test: every stage runs, in about a second."""


def run(images, labels, classes, **params):
    return dune_poison(images, labels, classes, device="cpu", progress=False, **{**TINY, **params})


# --- the formulas ---------------------------------------------------------------------------------


def test_snapshot_epochs_are_evenly_spaced_and_end_at_the_last():
    assert snapshot_epochs(10, 5) == [2, 4, 6, 8, 10]
    assert snapshot_epochs(100, 5) == [20, 40, 60, 80, 100]  # the published checkpoints of a 100-epoch run
    assert snapshot_epochs(12, 5) == [2, 4, 7, 9, 12]
    assert snapshot_epochs(3, 1) == [3]


def test_psnr_of_a_uniform_shift():
    a = torch.full((2, 3, 8, 8), 0.5)
    assert psnr_per_image(a + 0.1, a).tolist() == pytest.approx([20.0, 20.0])
    assert psnr_per_image(a, a).tolist() == [math.inf, math.inf]


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = torch.full((1, 3, 9, 9), 0.5, dtype=torch.float64), torch.full((1, 3, 9, 9), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim_per_image(a, b).item() == pytest.approx((2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1), rel=1e-12)
    assert ssim_per_image(a, a).item() == pytest.approx(1.0)


def test_ssim_uses_a_7x7_window_and_the_sample_covariance():
    """On a 7×7 image there is one window: skimage's formula with ddof=1 statistics, per channel."""
    g = np.random.default_rng(0)
    x, y = g.random((2, 7, 7)), g.random((2, 7, 7))
    expected = []
    for a, b in zip(x, y):
        ma, mb = a.mean(), b.mean()
        va, vb = a.var(ddof=1), b.var(ddof=1)
        cov = ((a - ma) * (b - mb)).sum() / 48
        c1, c2 = 0.01**2, 0.03**2
        expected.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    ours = ssim_per_image(torch.from_numpy(x)[None], torch.from_numpy(y)[None]).item()
    assert ours == pytest.approx(np.mean(expected), rel=1e-10)


class Linear2(nn.Module):
    """Two logits, w_k · x: the cross-entropy gradient towards class 1 is p₀·(w₀ − w₁)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def test_ensemble_pgd_steps_against_the_gradient_sign_and_stops_at_eps():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 3 * 8 * 8, generator=g) * 0.01
    x = torch.rand(4, 3, 8, 8, generator=g) * 0.5 + 0.25  # far from 0 and 1: no clipping
    direction = (w[0] - w[1]).sign().view(1, 3, 8, 8)
    targets = torch.ones(4, dtype=torch.int64)
    four = ensemble_pgd(x, targets, [Linear2(w)], eps=8 / 255, step_size=0.5 / 255, steps=4)
    torch.testing.assert_close(four, x - 4 * (0.5 / 255) * direction)
    # the published 30 steps of 0.5/255 overshoot 8/255: the projection holds them at the radius
    thirty = ensemble_pgd(x, targets, [Linear2(w), Linear2(w)], eps=8 / 255, step_size=0.5 / 255, steps=30)
    torch.testing.assert_close(thirty, x - (8 / 255) * direction)


def test_colour_objective_is_mean_cross_entropy_plus_the_visual_penalty():
    x = torch.full((5, 3, 8, 8), 0.5)
    uniform = [lambda z: torch.zeros(len(z), 10)] * 3  # cross-entropy log 10 whatever the target
    assert colour_objective(np.zeros(3), x, 4, uniform) == pytest.approx(math.log(10))
    # +0.2 everywhere: PSNR 10·log10(1/0.04) = 13.98 dB, 6.02 under λ = 20; SSIM 0.946 clears 0.8
    value = colour_objective(np.full(3, 0.2), x, 4, uniform, min_psnr=20.0, min_ssim=0.8)
    assert value == pytest.approx(math.log(10) + 20 - 10 * math.log10(1 / 0.04), rel=1e-6)
    c1 = 0.01**2
    ssim = (2 * 0.5 * 0.7 + c1) / (0.5**2 + 0.7**2 + c1)
    strict = colour_objective(np.full(3, 0.2), x, 4, uniform, min_psnr=0.0, min_ssim=0.99)
    assert strict == pytest.approx(math.log(10) + 0.99 - ssim, rel=1e-6)


def test_pso_draws_the_published_stream_and_keeps_a_view_of_the_global_best():
    """A flat objective: particle 0 sets the global best and nobody beats it (strict <)."""
    init = np.random.RandomState(7)
    x0 = init.rand(4, 3) * 0.2 - 0.1
    v = init.rand(4, 3) * 0.02 - 0.01
    copy = pso_shift(lambda s: 1.0, np.random.RandomState(7), 3, particles=4, iterations=3, best="copy")
    np.testing.assert_array_equal(copy, x0[0])
    # "view": the best follows particle 0, whose pull towards it is zero; returned after the last move
    x = x0[0].copy()
    for _ in range(3):
        v[0] = 0.5 * v[0] + 0.3 * (x0[0] - x)
        x = x + v[0]
    view = pso_shift(lambda s: 1.0, np.random.RandomState(7), 3, particles=4, iterations=3, best="view")
    np.testing.assert_allclose(view, x, rtol=0, atol=1e-15)


def test_pso_copy_finds_the_minimum_of_a_bowl():
    target = np.array([0.05, -0.03, 0.08])
    best = pso_shift(lambda s: float(np.sum((s - target) ** 2)), np.random.RandomState(0), 3, 10, 30, "copy")
    assert np.abs(best - target).max() < 0.01


# --- the attack -----------------------------------------------------------------------------------


def test_registered_with_the_common_signature():
    params = inspect.signature(ATTACKS["dune"]).parameters
    assert list(params)[:3] == ["images", "labels", "num_classes"]
    assert {"seed", "mix", "device", "progress"} <= set(params)
    assert params["seed"].default == 0 and params["mix"].default == 1.0
    published = {"offset": 3, "eps": 8 / 255, "step_size": 0.5 / 255, "steps": 30, "num_models": 5}
    assert {name: params[name].default for name in published} == published


def test_protected_images_key_and_mask(random_set):
    images, labels = random_set(80, (3, 16, 16), classes=4, seed=2)
    p = run(images, labels, 4, seed=3, mix=0.5)
    assert p.images.dtype == torch.uint8 and p.images.shape == images.shape
    key = json.loads(json.dumps(p.key))
    assert key["attack"] == "dune" and key["seed"] == 3 and key["params"]["mix"] == 0.5
    assert key["snapshot_epochs"] == [1, 2] and np.array(key["shifts"]).shape == (4, 3)
    poisoned = draw_poisoned(3, 80, 0.5)
    assert key["poisoned_indices"] == np.flatnonzero(poisoned).tolist()
    clean = torch.from_numpy(~poisoned)
    assert torch.equal(p.images[clean], images[clean])
    # each poisoned image moved by at most eps (spatial) + its class shift, truncated: one level more
    shift = torch.tensor(key["shifts"])[labels].view(-1, 3, 1, 1) * 255
    moved = (p.images.double() - images.double() - shift)[~clean]
    unclipped = (p.images[~clean] > 0) & (p.images[~clean] < 255)
    assert unclipped.float().mean() > 0.5 and moved[unclipped].abs().max() <= 9 + 1e-4
    assert (p.images[~clean] != images[~clean]).flatten(1).any(1).all()


def test_no_mix_changes_nothing(random_set):
    images, labels = random_set(40, (3, 16, 16), classes=4)
    p = run(images, labels, 4, mix=0.0)
    assert torch.equal(p.images, images) and p.key["poisoned_indices"] == []


def test_same_seed_same_bytes_other_seed_other_bytes(random_set):
    images, labels = random_set(40, (3, 16, 16), classes=4)
    a, b, c = run(images, labels, 4, seed=1), run(images, labels, 4, seed=1), run(images, labels, 4, seed=2)
    assert torch.equal(a.images, b.images) and a.key == b.key
    assert not torch.equal(a.images, c.images) and a.key["shifts"] != c.key["shifts"]


def test_leaves_the_callers_random_state_alone(random_set):
    images, labels = random_set(40, (3, 16, 16), classes=4)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run(images, labels, 4)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("shape", [(1, 20, 20), (3, 12, 24)])
def test_grayscale_and_other_sizes(random_set, shape):
    images, labels = random_set(40, shape, classes=4)
    p = run(images, labels, 4, offset=1)
    assert p.images.shape == images.shape and np.array(p.key["shifts"]).shape == (4, shape[0])
    assert (p.images != images).any()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"eps": 0.0}, "dune: eps must be a number in (0, 1] (got 0.0)"),
        ({"steps": -1}, "dune: steps must be an integer ≥ 0 (got -1)"),
        ({"offset": 4}, "dune: offset must be an integer in [1, 3] (got 4)"),
        ({"offset": 0}, "dune: offset must be an integer in [1, 3] (got 0)"),
        ({"pso_best": "best"}, "dune: pso_best must be one of 'view', 'copy' (got 'best')"),
        ({"min_ssim": 2.0}, "dune: min_ssim must be a number in [-1, 1] (got 2.0)"),
        ({"num_models": 3}, "dune: num_models must be an integer in [1, 2] (got 3)"),
        ({"mix": 1.5}, "dune: mix must be a number in [0, 1] (got 1.5)"),
    ],
)
def test_out_of_range_parameters_are_refused(random_set, params, message):
    images, labels = random_set(20, (3, 8, 8), classes=4)
    with pytest.raises(UserInputError) as error:
        run(images, labels, 4, **params)
    assert str(error.value) == message


def test_bad_inputs_are_refused(random_set):
    images, labels = random_set(20, (3, 6, 6), classes=4)
    with pytest.raises(UserInputError, match="too small for dune; it needs at least 7×7"):
        run(images, labels, 4)
    images, labels = random_set(20, (3, 8, 8), classes=4)
    with pytest.raises(UserInputError, match="needs uint8"):
        run(images.float(), labels, 4)
    with pytest.raises(UserInputError, match="at least 2 classes"):
        run(images, torch.zeros_like(labels), 1)
