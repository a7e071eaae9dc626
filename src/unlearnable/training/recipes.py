"""Training recipes by name: optimiser, learning-rate schedule and loss (no torch needed to list them)."""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from unlearnable.errors import UserInputError
from unlearnable.params import (
    BOOLEAN,
    NONNEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Constraint,
    Interval,
    Options,
    StrOptions,
    validate_params,
)
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

    PARAMETER_CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "epochs": POSITIVE_INT,
        "batch_size": POSITIVE_INT,
        "test_batch_size": POSITIVE_INT,
        "lr": POSITIVE,
        "momentum": Interval(float, 0, 1, closed="left"),
        "nesterov": BOOLEAN,
        "weight_decay": NONNEGATIVE,
        "schedule": StrOptions(SCHEDULES),
        "gamma": Interval(float, 0, 1, closed="right"),
        "warmup_fraction": Interval(float, 0, 1, closed="left"),
        "clip_grad_norm": Options(None, POSITIVE),
        "normalize": BOOLEAN,
        "label_smoothing": Interval(float, 0, 1, closed="left"),
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(self.milestones))
        validate_params("recipe", dataclasses.asdict(self), self.PARAMETER_CONSTRAINTS)
        if not all(POSITIVE_INT.contains(m) for m in self.milestones) or list(self.milestones) != sorted(
            self.milestones
        ):
            raise UserInputError(f"recipe: milestones must be increasing epoch numbers ≥ 1 (got {self.milestones!r})")
        if self.nesterov and self.momentum == 0:
            raise UserInputError("recipe: nesterov needs momentum > 0 (got momentum 0)")


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
