"""Training recipes (training/recipes.py): the published ones, overrides, checks and schedules."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from unlearnable.errors import UserInputError
from unlearnable.training.recipes import RECIPES, Recipe, lr_factor, resolve_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def test_published_recipes() -> None:
    paper, cuda = RECIPES["paper"], RECIPES["cuda-paper"]
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (60, 512, 0.1, 0.9, 5e-4)
    assert (paper.schedule, paper.clip_grad_norm, paper.normalize, paper.label_smoothing) == ("cosine", 5.0, True, 0)
    assert (cuda.epochs, cuda.schedule, cuda.milestones, cuda.gamma) == (100, "step", (40, 80), 0.1)
    assert cuda.normalize is False
    assert (cuda.lr, cuda.batch_size, cuda.clip_grad_norm, cuda.weight_decay) == (0.1, 512, 5.0, 5e-4)
    assert RECIPES["quick"].epochs <= 15


def test_resolve_recipe_overrides_and_errors() -> None:
    assert resolve_recipe("paper", epochs=3, clip_grad_norm=None) == Recipe(name="paper", epochs=3, clip_grad_norm=None)
    assert [RECIPES.get(name).name for name in RECIPES] == list(RECIPES)
    assert resolve_recipe("cuda-paper", milestones=[2, 4]).milestones == (2, 4)
    with pytest.raises(UserInputError, match="paper, cuda-paper, quick"):
        resolve_recipe("fast")
    with pytest.raises(UserInputError, match="unknown recipe field 'epoch'.*epochs"):
        resolve_recipe("paper", epoch=3)
    for bad in (
        {"epochs": 0},
        {"lr": -1.0},
        {"schedule": "exp"},
        {"label_smoothing": 1.0},
        {"milestones": (5, 2)},
        {"batch_size": 2.5},
        {"clip_grad_norm": 0},
    ):
        name, value = next(iter(bad.items()))
        with pytest.raises(UserInputError, match=rf"^recipe: {name} must be .* \(got {re.escape(repr(value))}\)$"):
            resolve_recipe("paper", **bad)


def test_schedules_match_torch_per_epoch_schedulers() -> None:
    """ "cosine" and "step" equal CosineAnnealingLR / MultiStepLR stepped once an epoch."""
    steps_per_epoch = 3
    for recipe, make in [
        (resolve_recipe("paper", epochs=7), lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)),
        (
            resolve_recipe("cuda-paper", epochs=7, milestones=(2, 5)),
            lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [2, 5], 0.1),
        ),
    ]:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=recipe.lr)
        reference, expected = make(optimizer), []
        for _ in range(recipe.epochs):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            reference.step()
        factor = lr_factor(recipe, steps_per_epoch)
        got = [
            recipe.lr * factor(epoch * steps_per_epoch + s)
            for epoch in range(recipe.epochs)
            for s in range(steps_per_epoch)
        ]
        assert got == pytest.approx([lr for lr in expected for _ in range(steps_per_epoch)], rel=1e-12)


def test_linear_warmup_schedule() -> None:
    recipe = resolve_recipe("quick", epochs=4, warmup_fraction=0.25)
    factor = [lr_factor(recipe, 10)(step) for step in range(40)]
    assert factor[9] == 1.0 and factor[:10] == sorted(factor[:10]) and factor[0] == 0.1
    assert factor[10:] == sorted(factor[10:], reverse=True) and 0 < factor[-1] < 0.05
    short = [lr_factor(resolve_recipe("quick", epochs=1), 4)(step) for step in range(4)]  # warm-up of 0.4 steps
    assert max(short) == short[0] == 1.0


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("epochs", 0, "recipe: epochs must be an integer ≥ 1 (got 0)"),
        ("epochs", -3, "recipe: epochs must be an integer ≥ 1 (got -3)"),
        ("batch_size", 0, "recipe: batch_size must be an integer ≥ 1 (got 0)"),
        ("test_batch_size", -1, "recipe: test_batch_size must be an integer ≥ 1 (got -1)"),
        ("lr", 0.0, "recipe: lr must be a number > 0 (got 0.0)"),
        ("lr", -0.1, "recipe: lr must be a number > 0 (got -0.1)"),
        ("lr", float("nan"), "recipe: lr must be a number > 0 (got nan)"),
        ("lr", float("inf"), "recipe: lr must be a number > 0 (got inf)"),
        ("momentum", 1.0, "recipe: momentum must be a number in [0, 1) (got 1.0)"),
        ("weight_decay", -1e-4, "recipe: weight_decay must be a number ≥ 0 (got -0.0001)"),
    ],
)
def test_recipe_values_are_checked_uniformly(field: str, value, expected: str) -> None:
    with pytest.raises(UserInputError) as caught:
        resolve_recipe("quick", **{field: value})
    assert str(caught.value) == expected
