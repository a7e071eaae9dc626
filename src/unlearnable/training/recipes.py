"""Training recipes by name: optimiser, learning-rate schedule and loss (no torch needed to list them)."""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unlearnable.errors import UserInputError
from unlearnable.registry import Registry

SCHEDULES = ("cosine", "step", "linear-warmup")


@dataclass(frozen=True)
class Recipe:
    """Optimiser, learning-rate schedule and loss of a run: SGD with momentum on cross-entropy.

    Attributes:
        name: the recipe this one was made from (its key in ``RECIPES``; "custom" otherwise).
        epochs: passes over the training set.
        batch_size: training batch; the last incomplete batch of an epoch is dropped.
        lr: peak learning rate.
        momentum, nesterov: SGD momentum.
        weight_decay: L2 penalty on every parameter (BatchNorm and biases included, as the papers).
        schedule: "cosine" (half cosine from lr towards 0, stepped per epoch), "step" (×gamma at
            each epoch in `milestones`, stepped per epoch) or "linear-warmup" (per step: linear
            rise to lr over the first `warmup_fraction` of all steps, then linear decay to 0).
        milestones, gamma: for "step".
        warmup_fraction: for "linear-warmup", in [0, 1).
        clip_grad_norm: clip the global gradient norm to this value before each step; None = off.
        normalize: standardise inputs per channel (see `normalization_stats`).
        label_smoothing: of the training cross-entropy (the test loss is plain cross-entropy).
        test_batch_size: batch size for evaluation.
    """

    name: str = "custom"
    epochs: int = 60
    batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_fraction: float = 0.0
    clip_grad_norm: float | None = 5.0
    normalize: bool = True
    label_smoothing: float = 0.0
    test_batch_size: int = 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        checks = [
            ("epochs", _is_int(self.epochs, 1), "an integer >= 1"),
            ("batch_size", _is_int(self.batch_size, 1), "an integer >= 1"),
            ("test_batch_size", _is_int(self.test_batch_size, 1), "an integer >= 1"),
            ("lr", _is_number(self.lr) and self.lr > 0, "a number > 0"),
            ("momentum", _is_number(self.momentum) and 0 <= self.momentum < 1, "a number in [0, 1)"),
            (
                "nesterov",
                isinstance(self.nesterov, bool) and (not self.nesterov or self.momentum > 0),
                "true or false (true needs momentum > 0)",
            ),
            ("weight_decay", _is_number(self.weight_decay) and self.weight_decay >= 0, "a number >= 0"),
            ("schedule", self.schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
            (
                "milestones",
                all(_is_int(m, 1) for m in self.milestones) and list(self.milestones) == sorted(self.milestones),
                "increasing epoch numbers >= 1",
            ),
            ("gamma", _is_number(self.gamma) and 0 < self.gamma <= 1, "a number in (0, 1]"),
            (
                "warmup_fraction",
                _is_number(self.warmup_fraction) and 0 <= self.warmup_fraction < 1,
                "a number in [0, 1)",
            ),
            (
                "clip_grad_norm",
                self.clip_grad_norm is None or (_is_number(self.clip_grad_norm) and self.clip_grad_norm > 0),
                "a number > 0, or None to turn it off",
            ),
            ("normalize", isinstance(self.normalize, bool), "true or false"),
            (
                "label_smoothing",
                _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
                "a number in [0, 1)",
            ),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise UserInputError(f"{name} must be {expected} (got {getattr(self, name)!r})")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


_PAPER = Recipe(
    name="paper",
    epochs=60,
    batch_size=512,
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-4,
    schedule="cosine",
    clip_grad_norm=5.0,
    normalize=True,
)

RECIPES = Registry("recipe")
RECIPES.add(
    "paper", _PAPER, "the RSK+FF paper's Table 1: SGD 0.1, cosine, 60 epochs, batch 512 (Kim & Sandoval-Segura 2024)"
)
RECIPES.add(
    "cuda-paper",
    dataclasses.replace(
        _PAPER, name="cuda-paper", epochs=100, schedule="step", milestones=(40, 80), gamma=0.1, normalize=False
    ),
    "the CUDA paper's runs: SGD 0.1, steps at 40 and 80, 100 epochs, no normalisation (Sadasivan et al. 2023)",
)
# A small CNN on a 2-core CPU in about a dozen epochs, in the manner of airbench and one-cycle
# training: a peak rate twice the paper's, reached by a linear warm-up over the first 10% of
# the steps (the first steps, on BatchNorm's first noisy statistics, stay small), then a linear
# decay to zero (airbench's triangular schedule for short runs); Nesterov momentum;
# label smoothing 0.2 against over-confidence on few data; batch 256: on a CPU as fast per
# image as 512, with twice the steps. Measured once (seed 0, "small" model, 500 + 100 images
# per class of the CIFAR-10 JPEG copy, ~170 s a run on one core), last-epoch test accuracy:
# this recipe 62.8%; lr 0.4 63.6%; batch 512 57.8%; the paper's cosine at lr 0.1 without
# smoothing or Nesterov 61.4% (one seed, 1,000 test images: gaps under ~3 points are noise).
RECIPES.add(
    "quick",
    Recipe(
        name="quick",
        epochs=12,
        batch_size=256,
        lr=0.2,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="linear-warmup",
        warmup_fraction=0.1,
        clip_grad_norm=5.0,
        normalize=True,
        label_smoothing=0.2,
    ),
    "a small CNN on a CPU in a dozen epochs: SGD 0.2, linear warm-up and decay, label smoothing 0.2",
)


def resolve_recipe(name: str, **overrides: Any) -> Recipe:
    """The recipe `name` from ``RECIPES`` with some fields replaced, validated.

    Every override given is applied (``clip_grad_norm=None`` turns clipping off). An unknown
    recipe name or field, or an invalid value, raises UserInputError naming the valid ones.
    """
    recipe = RECIPES.get(name)
    fields = [f.name for f in dataclasses.fields(Recipe)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise UserInputError(f"unknown recipe field {unknown[0]!r}: expected some of {', '.join(fields)}")
    return dataclasses.replace(recipe, **overrides)


def lr_factor(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate multiplier as a function of the 0-based optimiser step (for LambdaLR).

    "cosine" and "step" are constant within an epoch (stepped per epoch, as the papers'
    CosineAnnealingLR(T_max=epochs) and MultiStepLR stepped once an epoch).
    """
    total = recipe.epochs * steps_per_epoch
    warmup = recipe.warmup_fraction * total

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        if recipe.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / recipe.epochs))
        if recipe.schedule == "step":
            return recipe.gamma ** bisect.bisect_right(recipe.milestones, epoch)
        if step < warmup:
            return min(1.0, (step + 1) / warmup)  # a warm-up shorter than one step must not overshoot
        return max(0.0, (total - step) / (total - warmup))

    return factor
