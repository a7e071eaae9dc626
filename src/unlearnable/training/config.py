"""A training run's configuration: `TrainConfig`, and `resolve_config`, which validates it and
resolves every "auto" (the recipe by name, the device, AMP, the memory format)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearnable.defenses import training_defense
from unlearnable.devices import default_device
from unlearnable.errors import UserInputError
from unlearnable.params import BOOLEAN, SEED, Options, StrOptions
from unlearnable.training.augment import AUGMENTATIONS, NORMALIZATIONS
from unlearnable.training.loaders import PLACEMENTS
from unlearnable.training.recipes import RECIPES, Recipe, resolve_recipe


@dataclass
class TrainConfig:
    """Everything that defines a training run (and labels its report).

    Attributes:
        out: the run directory (results.json, checkpoint.pt).
        model: a name for ``unlearnable.models.create_model`` (or the label of a module passed to `train`).
        recipe: a Recipe, or the name of one in ``RECIPES``.
        defense: a defense chain for ``training_defense`` ("none", "rsk+ff", "cutmix",
            "rsk+ff+at-linf", ...), train batches only. Adversarial training is part of the chain:
            "at-linf" or "at-l2" (PGD; its radius and step count are the options eps and steps).
        defense_options: keyword options for ``training_defense`` (e.g. keep_percent, eps, steps).
        seed: seeds the model's initialisation and the run's torch.Generator.
        device: "cpu", "cuda", "cuda:1", ... or None for CUDA when available.
        amp: bf16 autocast; "auto" = on CUDA only (bf16 is slower than fp32 on most CPUs).
        channels_last: NHWC memory format for model and inputs; "auto" = on (measured faster on CPU
            too: the small CNN 1.8×, ResNet-18 1.5× on 2 cores, `bench/bench_models.py`).
        compile: wrap the model in ``torch.compile``.
        rotate: add RandomRotation(15°) to the pipeline (the CIFAR-100 recipe).
        augment: the geometric augmentation: "crop" (RandomCrop with padding 4, the CIFAR recipe),
            "resized-crop" (RandomResizedCrop(0.08–1, 3/4–4/3), the ImageNet recipe), or "auto":
            resized-crop for images of at least 64×64, else crop. A horizontal flip follows either.
        data_placement: "device" (the training images are copied to the device), "stream" (read
            batch by batch from where they are, e.g. a memory-mapped store) or "auto" (`loaders.make_loader`).
        sync_batchnorm: with several processes (torchrun), BatchNorm statistics over the global batch
            (``nn.SyncBatchNorm``; CUDA only) instead of each process's share of it.
        normalization: where the Normalize constants come from: "auto", "cifar10", "cifar100"
            or "data" (see `normalization_stats`); unused when the recipe does not normalise.
        name: the run's name in reports (default: the name of `out`).
        train, test: how to find the data again (e.g. the dataset specs), for the report.
    """

    out: str
    model: str = "resnet18"
    recipe: Recipe | str = "paper"
    defense: str = "none"
    defense_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str | None = None
    amp: bool | str = "auto"
    channels_last: bool | str = "auto"
    compile: bool = False
    rotate: bool = False
    augment: str = "auto"
    data_placement: str = "auto"
    sync_batchnorm: bool = False
    normalization: str = "auto"
    name: str = ""
    train: str | None = None
    test: str | None = None


def resolve_device(device: str | None) -> torch.device:
    """`device` as a torch.device (None: CUDA when available, else CPU); UserInputError if unusable."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"unknown device {device!r}: expected cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported: expected cpu, cuda or cuda:N")
    return resolved


AUTO_OR_BOOLEAN = Options(StrOptions(["auto"]), BOOLEAN)
"""amp, channels_last, compile: True, False, or "auto" (decided by the device)."""


def resolve_config(config: TrainConfig) -> TrainConfig:
    """A copy of `config` with every "auto"/None resolved and every field validated.

    The recipe becomes a Recipe, the device a concrete name, amp / channels_last booleans, the name
    non-empty. Raises UserInputError.
    """
    if not isinstance(config.recipe, (Recipe, str)):
        raise UserInputError(f"recipe must be a Recipe or one of {', '.join(RECIPES)} (got {config.recipe!r})")
    recipe = resolve_recipe(config.recipe) if isinstance(config.recipe, str) else config.recipe
    if not str(config.out).strip():
        raise UserInputError(f"out must be a run directory (got {config.out!r})")
    SEED.check("seed", config.seed)  # < 2³²: rank r seeds seed + r·2³², so the ranks' streams never collide
    if not isinstance(config.defense_options, dict):
        raise UserInputError(
            f"defense_options must be a dict of option names to values (got {config.defense_options!r})"
        )
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"

    def flag(name: str, value: bool | str, auto: bool) -> bool:
        AUTO_OR_BOOLEAN.check(name, value)
        return auto if value == "auto" else bool(value)

    training_defense(config.defense, **config.defense_options)  # validates the chain and its options
    StrOptions(NORMALIZATIONS).check("normalization", config.normalization)
    StrOptions(AUGMENTATIONS).check("augment", config.augment)
    StrOptions(PLACEMENTS).check("data_placement", config.data_placement)
    if config.sync_batchnorm and not on_cuda:
        raise UserInputError(
            "sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU); drop --sync-batchnorm"
        )
    return dataclasses.replace(
        config,
        out=str(config.out),
        recipe=recipe,
        device=str(device),
        amp=flag("amp", config.amp, on_cuda),
        channels_last=flag("channels_last", config.channels_last, True),
        compile=bool(config.compile),
        rotate=bool(config.rotate),
        sync_batchnorm=bool(config.sync_batchnorm),
        name=config.name or Path(config.out).name,
    )


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The fully resolved configuration as a JSON-ready dict (the recipe as a nested dict)."""
    return json.loads(json.dumps(dataclasses.asdict(resolve_config(config))))
