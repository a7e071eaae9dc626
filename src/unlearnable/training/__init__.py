"""Training: recipes, augmentation, the trainer and its results.json record, data loaders.

Importing this package costs nothing (the recipe registry is plain data); the trainer and its
torch dependencies load on first use of `train`, `TrainConfig` and the rest.

Modules, each with one job:
    recipes      optimiser, schedule and loss by name (RECIPES, Recipe, resolve_recipe)
    augment      the batched augmentations and the input normalisation
    config       TrainConfig, resolve_config, resolve_device
    loaders      batches from the device or streamed from a store
    trainer      Trainer (one run between epochs) and train (a whole run)
    results      results.json: RunResults, the one schema every reader uses
    checkpoint   checkpoint.pt: save_checkpoint, load_checkpoint
    run_dir      resume checks, and where the run in a directory stands
    host         the host and versions a run's exact numbers depend on
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearnable.registry import lazy_exports
from unlearnable.training.recipes import RECIPES, Recipe, resolve_recipe

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": "unlearnable.training.config",
        "resolve_config": "unlearnable.training.config",
        "Trainer": "unlearnable.training.trainer",
        "train": "unlearnable.training.trainer",
        "RunResults": "unlearnable.training.results",
    },
)

if TYPE_CHECKING:
    from unlearnable.training.config import TrainConfig, resolve_config
    from unlearnable.training.results import RunResults
    from unlearnable.training.trainer import Trainer, train

__all__ = ["RECIPES", "Recipe", "RunResults", "TrainConfig", "Trainer", "resolve_config", "resolve_recipe", "train"]
