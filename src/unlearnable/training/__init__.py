"""Training: recipes, augmentation, the trainer and its results.json record, data loaders.

Importing this package costs nothing (the recipe registry is plain data); the trainer and its
torch dependencies load on first use of `train`, `TrainConfig` and the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearnable.registry import lazy_exports
from unlearnable.training.recipes import RECIPES, Recipe, resolve_recipe

__getattr__, __dir__ = lazy_exports(__name__, {name: "unlearnable.training.trainer" for name in (
    "TrainConfig", "Trainer", "train")})

if TYPE_CHECKING:
    from unlearnable.training.trainer import TrainConfig, Trainer, train

__all__ = ["RECIPES", "Recipe", "TrainConfig", "Trainer", "resolve_recipe", "train"]
