"""Training: recipes, the on-device data pipeline, the training loop, checkpoints and results.json.

In the style of airbench: the whole training set sits on the training device as uint8 N×C×H×W,
every epoch cuts a seeded permutation of it into batches (drop_last), and each batch is augmented
with batched tensor ops (SPEC §4):

    uint8 → float [0, 1] → before-crop defenses (e.g. RSK → FF; "valid" RSK shrinks 32×32 to 30×30)
          → RandomCrop(H×W, padding 4, zero fill)   re-frames a 30×30 image in a 32×32 window
          → horizontal flip (p = 0.5)
          → RandomRotation(15°, nearest, zero fill)  only with `rotate` (the CIFAR-100 recipe)
          → after-crop defenses (e.g. COIN, Cutout)
          → label mixing (MixUp / CutMix: the targets become B×K probabilities)
          → model-in-the-loop step hook (PGD adversarial training, DAT, UEraser)
          → Normalize → model → cross-entropy on the (soft) targets

The defense chain is one "+"-spec (`unlearnable.defenses.training_defense`); the older
`adversarial` option is the same PGD hook and cannot be combined with a hook in the chain. A
test batch is only Normalize: no defense, no augmentation. Every random draw of a run (epoch
permutations, defense kernels, crop offsets, flips, angles, mixing ratios, PGD starts, DAT
filters, UEraser draws) comes from one torch.Generator on the training device seeded with the
run's seed; its state, with the model's, the optimiser's and the schedule's, is checkpointed
after every epoch, so `resume=True` continues a run exactly: on CPU the result is bit-identical
to an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import pickle
import platform
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import unlearnable
from unlearnable import distributed
from unlearnable.data import ImageDataset, to_unit_float
from unlearnable.defenses import StepHook, TrainingDefense, training_defense
from unlearnable.defenses.adversarial import AdversarialTraining
from unlearnable.defenses.hooks import AutocastModel
from unlearnable.errors import UserInputError
from unlearnable.distributed import World, gather_tensors
from unlearnable.io import atomic_write_bytes, write_json
from unlearnable.training.loaders import PLACEMENTS, make_loader
from unlearnable.training.recipes import RECIPES, Recipe, _is_int, lr_factor, resolve_recipe

# --- the on-device pipeline --------------------------------------------------------------------

PREPROCESS_RECORDS = ("deconv", "ortho_proj")
"""Keys a preprocessing defense adds to the training set's meta that results.json keeps (``preprocessed``)."""

CROP_PADDING = 4
ROTATION_DEGREES = 15.0

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NORMALIZATION_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # The constants of the published code (the CIFAR-10 std is the well-known slightly-off one).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # torchvision's ImageNet constants, used by every ImageNet-100 code base.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NORMALIZATIONS = ("auto", "cifar10", "cifar100", "imagenet", "data")
IMAGENET_MIN_SIZE = 64
""""auto" takes the ImageNet constants for colour images at least this large (photos at ImageNet scale)."""
AUGMENTATIONS = ("auto", "crop", "resized-crop")
STATS_CHUNK_PIXELS = 1 << 24
MAX_SEED = 2**32 - 1
"""Seeds stay below 2³²: rank r of a torchrun run seeds its generator with seed + r·2³², so the ranks' streams
never collide, and NumPy's legacy seeding (the subsets, the CUDA key) takes the same range."""


def random_crop(x: torch.Tensor, size: tuple[int, int], padding: int, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding, fill 0) for every image of a batch at once.

    Zero-pads the B×C×H×W batch by `padding` on every side and takes one size[0]×size[1] window
    per image at a random offset, uniform over all windows that fit (0..H+2·padding−size[0] rows,
    likewise columns). A 30×30 image gets a 32×32 window: its content re-framed with a zero border.

    Returns:
        B×C×size[0]×size[1], dtype and device of `x`.
    """
    batch, channels, height, width = x.shape
    rows, cols = size
    padded_h, padded_w = height + 2 * padding, width + 2 * padding
    if padded_h < rows or padded_w < cols:
        raise ValueError(f"cannot crop {rows}×{cols} from {height}×{width} padded by {padding}")
    top = torch.randint(padded_h - rows + 1, (batch,), generator=generator, device=x.device)
    left = torch.randint(padded_w - cols + 1, (batch,), generator=generator, device=x.device)
    # Flat index of every window pixel in the padded image: one gather for the whole batch.
    row_index = top[:, None] + torch.arange(rows, device=x.device)
    col_index = left[:, None] + torch.arange(cols, device=x.device)
    index = (row_index[:, :, None] * padded_w + col_index[:, None, :]).view(batch, 1, rows * cols)
    padded = F.pad(x, (padding,) * 4).view(batch, channels, padded_h * padded_w)
    return padded.gather(2, index.expand(batch, channels, -1)).view(batch, channels, rows, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of the B×C×H×W batch left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


RESIZED_CROP_SCALE = (0.08, 1.0)
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)
RESIZED_CROP_ATTEMPTS = 10


def resized_crop_boxes(batch: int, height: int, width: int, generator: torch.Generator,
                       scale: tuple[float, float] = RESIZED_CROP_SCALE,
                       ratio: tuple[float, float] = RESIZED_CROP_RATIO) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for `batch` images at once.

    Per image, up to 10 candidate boxes: area ~ U(scale)·H·W, aspect ratio log-uniform in `ratio`,
    w = round(√(area·ratio)), h = round(√(area/ratio)); the first that fits is taken at a uniform
    offset, and when none fits the central box of the whole image with the ratio clamped to `ratio`.

    Returns:
        int64 B×4 (top, left, h, w) on the generator's device.
    """
    device = generator.device
    area = height * width
    draws = (batch, RESIZED_CROP_ATTEMPTS)
    target = torch.empty(draws, device=device).uniform_(*scale, generator=generator) * area
    log_ratio = torch.empty(draws, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_ratio.exp()
    w = (target * aspect).sqrt().round().long()
    h = (target / aspect).sqrt().round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1, keepdim=True)  # the first candidate that fits (0 when none does)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    if width / height < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    found = fits.any(1)
    w = torch.where(found, w, fallback_w)
    h = torch.where(found, h, fallback_h)
    u = torch.rand(batch, 2, device=device, generator=generator)
    top = torch.where(found, (u[:, 0] * (height - h + 1)).long(), (height - fallback_h) // 2)
    left = torch.where(found, (u[:, 1] * (width - w + 1)).long(), (width - fallback_w) // 2)
    return torch.stack([top, left, h, w], 1)


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3), bilinear) per image of a batch.

    Boxes from `resized_crop_boxes`; each is resampled to `size` bilinearly as torchvision resizes the
    cropped image (``interpolate(..., align_corners=False)``: half-pixel centres, sample positions
    clamped to the box, so no pixel outside it leaks in), in one ``grid_sample`` for the batch. No
    antialiasing: on a store at the training size every box is at most the image, so it is only
    ever enlarged (or kept), and antialiasing would not change it.

    Args:
        x: float B×C×H×W.
        size: (rows, cols) of the output.

    Returns:
        float B×C×size[0]×size[1].
    """
    batch, _, height, width = x.shape
    top, left, h, w = resized_crop_boxes(batch, height, width, generator).to(x.dtype).unbind(1)

    def sample_positions(start: torch.Tensor, extent: torch.Tensor, count: int, full: int) -> torch.Tensor:
        # Output pixel v reads input position start + clamp((v + 0.5)·extent/count − 0.5, 0, extent − 1),
        # which grid_sample (align_corners=False) takes as 2·(position + 0.5)/full − 1.
        v = torch.arange(count, device=x.device, dtype=x.dtype) + 0.5
        inside = (v * (extent / count)[:, None] - 0.5).clamp(min=0).minimum(extent[:, None] - 1)
        return (start[:, None] + inside + 0.5) * (2 / full) - 1

    rows = sample_positions(top, h, size[0], height)  # B×rows
    cols = sample_positions(left, w, size[1], width)  # B×cols
    grid = torch.stack([cols[:, None, :].expand(-1, size[0], -1), rows[:, :, None].expand(-1, -1, size[1])], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_rotation(x: torch.Tensor, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomRotation(degrees, nearest, fill 0) per image: angle ~ U(−degrees, degrees).

    Rotates each B×C×H×W image about its centre with ``affine_grid`` + ``grid_sample``
    (nearest neighbour, zero outside); the sampling grid is corrected for H ≠ W.
    """
    batch, _, height, width = x.shape
    angle = torch.rand(batch, generator=generator, device=x.device).mul_(2).sub_(1).mul_(math.radians(degrees))
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin * height / width, zero], 1),
                         torch.stack([sin * width / height, cos, zero], 1)], 1)  # B×2×3
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def normalization_stats(choice: str, train_set: ImageDataset) -> tuple[str, list[float], list[float]]:
    """(name, mean, std) of the per-channel standardisation for `train_set`.

    `choice` "cifar10" / "cifar100" / "imagenet" gives the published constants, "data" the mean
    and std of every pixel of the training images per channel (in [0, 1] units, read in chunks),
    and "auto" the CIFAR constants when the training set is 3×32×32 with CIFAR-10's classes or
    CIFAR-100's 100 fine classes, the ImageNet constants for colour images of at least 64×64,
    otherwise "data".
    """
    if choice == "auto":
        choice = "data"
        channels, height, width = train_set.shape
        if train_set.shape == (3, 32, 32):
            classes = tuple(train_set.classes)
            if classes == CIFAR10_CLASSES:
                choice = "cifar10"
            elif len(classes) == 100 and classes[0] == "apple" and classes[-1] == "worm":
                choice = "cifar100"
        elif channels == 3 and min(height, width) >= IMAGENET_MIN_SIZE:
            choice = "imagenet"
    if choice in NORMALIZATION_STATS:
        mean, std = NORMALIZATION_STATS[choice]
        return choice, list(mean), list(std)
    channels = train_set.shape[0]
    total, squares, count = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    step = max(1, STATS_CHUNK_PIXELS // train_set.images[0].numel())
    for start in range(0, len(train_set), step):
        chunk = train_set.images[start:start + step].to(torch.float64).transpose(0, 1).reshape(channels, -1) / 255
        total += chunk.sum(1)
        squares += chunk.square().sum(1)
        count += chunk.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=1e-12).sqrt()
    return "data", mean.tolist(), std.tolist()


class Normalize:
    """x ↦ (x − mean) / std per channel, or the identity when `mean` is None."""

    def __init__(self, mean: list[float] | None, std: list[float] | None, device: torch.device) -> None:
        self.mean = None if mean is None else torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.mean is None else (x - self.mean) / self.std


# --- configuration -----------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """Everything that defines a training run (and labels its report).

    Attributes:
        out: the run directory (results.json, checkpoint.pt).
        model: a name for ``unlearnable.models.create_model`` (or the label of a module passed to `train`).
        recipe: a Recipe, or the name of one in ``RECIPES``.
        defense: a defense chain for ``training_defense`` ("none", "rsk+ff", "cutmix",
            "rsk+ff+at-linf", ...), train batches only.
        defense_options: keyword options for ``training_defense`` (e.g. keep_percent, eps, steps).
        seed: seeds the model's initialisation and the run's torch.Generator.
        device: "cpu", "cuda", "cuda:1", ... or None for CUDA when available.
        adversarial: None, or PGD adversarial training options (`AdversarialTraining`: norm
            "linf"/"l2", eps, steps, alpha None → 1.5·eps/steps (L∞) / 2.5·eps/steps (L2), random_start).
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
    adversarial: dict[str, Any] | None = None
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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserInputError(f"unknown device {device!r}: expected cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise UserInputError(f"device {device!r} is not supported: expected cpu, cuda or cuda:N")
    return resolved


def resolve_config(config: TrainConfig) -> TrainConfig:
    """A copy of `config` with every "auto"/None resolved and every field validated.

    The recipe becomes a Recipe, the device a concrete name, amp / channels_last booleans, the
    adversarial options complete (alpha filled in), the name non-empty. Raises UserInputError.
    """
    if not isinstance(config.recipe, (Recipe, str)):
        raise UserInputError(f"recipe must be a Recipe or one of {', '.join(RECIPES)} (got {config.recipe!r})")
    recipe = resolve_recipe(config.recipe) if isinstance(config.recipe, str) else config.recipe
    if not str(config.out).strip():
        raise UserInputError(f"out must be a run directory (got {config.out!r})")
    if not _is_int(config.seed, 0) or config.seed > MAX_SEED:
        raise UserInputError(f"seed must be an integer from 0 to {MAX_SEED} (got {config.seed!r})")
    if not isinstance(config.defense_options, dict):
        raise UserInputError(f"defense_options must be a dict of option names to values (got {config.defense_options!r})")
    if config.adversarial is not None and not isinstance(config.adversarial, dict):
        raise UserInputError(f"adversarial must be None or a dict of PGD options (got {config.adversarial!r})")
    device = resolve_device(config.device)
    on_cuda = device.type == "cuda"

    def flag(name: str, value: bool | str, auto: bool) -> bool:
        if value == "auto":
            return auto
        if not isinstance(value, bool):
            raise UserInputError(f"{name} must be true, false or 'auto' (got {value!r})")
        return value

    defense = training_defense(config.defense, **config.defense_options)  # validates spec and options
    if defense.hook is not None and config.adversarial is not None:
        raise UserInputError(f"defense {config.defense!r} already has a model-in-the-loop step ({defense.hook!r}), "
                             "so adversarial training cannot be added too; drop --adversarial or that part of "
                             "the chain")
    if config.normalization not in NORMALIZATIONS:
        raise UserInputError(f"normalization must be one of {', '.join(NORMALIZATIONS)} (got {config.normalization!r})")
    if config.augment not in AUGMENTATIONS:
        raise UserInputError(f"augment must be one of {', '.join(AUGMENTATIONS)} (got {config.augment!r})")
    if config.data_placement not in PLACEMENTS:
        raise UserInputError(f"data_placement must be one of {', '.join(PLACEMENTS)} (got {config.data_placement!r})")
    if config.sync_batchnorm and not on_cuda:
        raise UserInputError("sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm does not run on the CPU); "
                             "drop --sync-batchnorm")
    adversarial = None
    if config.adversarial is not None:
        adversarial = AdversarialTraining.from_options(dict(config.adversarial)).to_dict()
    return dataclasses.replace(config, out=str(config.out), recipe=recipe, device=str(device), adversarial=adversarial,
                               amp=flag("amp", config.amp, on_cuda),
                               channels_last=flag("channels_last", config.channels_last, True),
                               compile=bool(config.compile), rotate=bool(config.rotate),
                               sync_batchnorm=bool(config.sync_batchnorm),
                               name=config.name or Path(config.out).name)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The fully resolved configuration as a JSON-ready dict (the recipe as a nested dict)."""
    return json.loads(json.dumps(dataclasses.asdict(resolve_config(config))))


# --- the trainer -------------------------------------------------------------------------------

def shard_indices(count: int, seed: int, world: World) -> torch.Tensor | None:
    """The training images rank `world.rank` holds: None (all of them) for one process.

    With several processes a seeded permutation of 0..count-1 is cut into `world.size` equal shards
    (the count // size remainder is left out, so every rank takes the same number of steps); each
    shard is sorted, so a memory-mapped store is read in file order.
    """
    if not world.distributed:
        return None
    per_rank = count // world.size
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[world.rank * per_rank:(world.rank + 1) * per_rank].sort().values


def resolve_augment(choice: str, image_size: tuple[int, int]) -> str:
    """"crop" or "resized-crop" for `choice` ("auto": resized-crop for images of at least 64×64)."""
    if choice != "auto":
        return choice
    return "resized-crop" if min(image_size) >= IMAGENET_MIN_SIZE else "crop"


class Trainer:
    """One run's state between epochs: model, optimiser, schedule, pipeline and generator.

    Under torch.distributed (`world` of several processes) every process holds its shard of the
    training set (`shard_indices`) and every `world.size`-th test image, trains on batches of
    batch_size / world.size through DistributedDataParallel (gradients averaged, so the step is the
    one for the global batch), draws from its own generator (seeded with seed + rank·2³²; rank 0's is
    the single-process one), and sums its metrics with the others'.

    Args:
        config: a resolved TrainConfig (see `resolve_config`).
        train_set, test_set: the data (this rank's shards are placed per ``config.data_placement``).
        model: the network, already on the device (with SyncBatchNorm layers when asked for).
        normalization: (mean, std) per channel, or None for no standardisation.
        world: the processes of the run (`unlearnable.distributed.init`).
    """

    def __init__(self, config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset, model: nn.Module,
                 normalization: tuple[list[float], list[float]] | None, world: World = World()) -> None:
        assert isinstance(config.recipe, Recipe)
        self.config, self.recipe, self.world = config, config.recipe, world
        self.device = torch.device(config.device or "cpu")
        if self.recipe.batch_size % world.size:
            raise UserInputError(f"batch size {self.recipe.batch_size} does not split over {world.size} processes; "
                                 f"use a multiple of {world.size}")
        self.model = model
        self.forward: nn.Module = torch.compile(model) if config.compile else model  # type: ignore[assignment]
        self.train_forward = self.forward  # the training step's forward: through DDP with several processes
        if world.distributed:
            ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.train_forward = torch.compile(ddp) if config.compile else ddp
        self.defense: TrainingDefense = training_defense(config.defense, **config.defense_options)
        self.preprocessed: dict[str, Any] | None = None
        if self.defense.preprocess is not None:  # deterministic, so a resumed run sees the same images
            train_set = self.defense.preprocess(train_set)
            self.preprocessed = {key: train_set.meta[key] for key in PREPROCESS_RECORDS if key in train_set.meta}
        test_shard = torch.arange(world.rank, len(test_set), world.size) if world.distributed else None
        self.train_loader = make_loader(train_set, self.device, self.recipe.batch_size // world.size,
                                        shard_indices(len(train_set), config.seed, world), config.data_placement)
        self.test_loader = make_loader(test_set, self.device, self.recipe.test_batch_size, test_shard,
                                       config.data_placement)
        if len(self.train_loader) == 0:
            raise UserInputError(f"the training set has {len(train_set)} images, fewer than one batch of "
                                 f"{self.recipe.batch_size}; lower the batch size")
        self.image_size: tuple[int, int] = tuple(train_set.shape[1:])  # type: ignore[assignment]
        self.augmentation = resolve_augment(config.augment, self.image_size)
        self.num_classes = train_set.num_classes
        # The step hook: the chain's (at-linf, at-l2, dat, ueraser) or the `adversarial` option's PGD.
        self.attack: StepHook | None = self.defense.hook
        if config.adversarial is not None:
            self.attack = AdversarialTraining(**config.adversarial)
        # The hook sees the model through bf16 autocast (with AMP) and does its own image arithmetic in
        # float32, so the batch it returns is not rounded to bf16.
        self.hook_model = AutocastModel(self.forward, self.device.type, enabled=bool(config.amp))
        self.normalize = Normalize(*(normalization or (None, None)), device=self.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed + (world.rank << 32))
        self.optimizer = torch.optim.SGD(model.parameters(), lr=self.recipe.lr, momentum=self.recipe.momentum,
                                         nesterov=self.recipe.nesterov, weight_decay=self.recipe.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           lr_factor(self.recipe, len(self.train_loader)))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.recipe.label_smoothing)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when the config asks for AMP, else nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.config.amp))

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float B×C×H×W in [0, 1] → what the model eats: normalised, in the configured memory format."""
        x = self.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 B×C×H×W training images → float B×C×H×W in [0, 1] (H×W of the dataset): the
        before-crop defenses, RandomCrop(pad 4) or RandomResizedCrop, flip, optionally rotation,
        then the after-crop defenses, all drawn from the run's generator."""
        x = self.defense.before_crop(to_unit_float(images), self.generator)
        if self.augmentation == "resized-crop":
            x = random_resized_crop(x, self.image_size, self.generator)
        else:
            x = random_crop(x, self.image_size, CROP_PADDING, self.generator)
        x = random_flip(x, self.generator)
        if self.config.rotate:
            x = random_rotation(x, ROTATION_DEGREES, self.generator)
        return self.defense.after_crop(x, self.generator)

    def update(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a model-ready batch: forward, loss, backward, clip, SGD, schedule.

        `targets` are int64 labels (B,) or, after a mixing defense, float B×K probabilities (the
        recipe's cross-entropy, label smoothing included, takes either).

        Returns:
            (loss, logits), detached: the batch's mean training loss and its B×K logits.
        """
        with self.autocast():
            logits = self.train_forward(inputs)
        loss = self.criterion(logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.recipe.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), logits.detach()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a uint8 batch, mix it, run the step hook (AT, DAT, UEraser) on it, and update on it.

        The hook sees the training targets: the labels, or the mixed probabilities after a mixing defense.
        """
        x = self.augment(images)
        targets = labels
        if self.defense.mix is not None:
            x, targets = self.defense.mix(x, F.one_hot(labels, self.num_classes).to(x.dtype), self.generator)
        if self.attack is not None:
            x = self.attack(self.hook_model, x, targets, self.generator, self.model_input)  # type: ignore[arg-type]
        return self.update(self.model_input(x), targets)

    def train_epoch(self, bar: tqdm) -> dict[str, float]:
        """One pass over a fresh permutation of the training set.

        Returns:
            {"train_loss", "train_acc" (%), "lr" (at the epoch's first step), "train_seconds", "images"}.
        """
        self.model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        start = time.perf_counter()
        for step, (images, labels) in enumerate(self.train_loader.shuffled(self.generator), 1):
            loss, logits = self.train_step(images, labels)
            loss_sum += loss * len(labels)
            correct += (logits.argmax(1) == labels).sum()
            seen += len(labels)
            bar.update()
            if step % 10 == 0 or step == len(self.train_loader):  # reading a value syncs the GPU: not every step
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}")
        loss_total, correct_total, seen = self.sum_over_ranks(loss_sum, correct, seen)
        return {"train_loss": loss_total / seen, "train_acc": 100 * correct_total / seen, "lr": lr,
                "train_seconds": time.perf_counter() - start, "images": int(seen)}

    def sum_over_ranks(self, *values: torch.Tensor | float) -> list[float]:
        """The sums of `values` over every process (the values themselves for one process)."""
        totals = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        if self.world.distributed:
            dist.all_reduce(totals)
        return totals.tolist()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(mean cross-entropy, accuracy %) on the test set, inputs only normalised.

        With several processes each tests its share with rank 0's BatchNorm statistics (the
        parameters are equal everywhere; without SyncBatchNorm the running statistics are not).
        """
        self.model.eval()
        if self.world.distributed:
            for buffer in self.model.buffers():
                dist.broadcast(buffer, 0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for images, labels in self.test_loader.in_order():
            with self.autocast():
                logits = self.forward(self.model_input(to_unit_float(images)))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        loss_total, correct_total, count = self.sum_over_ranks(loss_sum, correct, len(self.test_loader.labels))
        return loss_total / count, 100 * correct_total / count

    def random_states(self) -> dict[str, torch.Tensor]:
        """This process's random-number states (uint8 tensors on the CPU)."""
        states = {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return states

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: tensors, dicts, lists and numbers only.

        A collective with several processes: every rank calls it; "ranks" then holds each rank's
        random states, in rank order.
        """
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "world_size": self.world.size, **self.random_states()}
        if self.world.distributed:
            gathered = {name: gather_tensors(self.world, value) for name, value in self.random_states().items()}
            state["ranks"] = [{name: values[rank] for name, values in gathered.items()}
                              for rank in range(self.world.size)]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        states = state["ranks"][self.world.rank] if self.world.distributed else state
        # Generator.set_state and torch.(cuda.)set_rng_state take CPU byte tensors only, whatever the
        # generator's device: a state loaded onto the GPU would be refused.
        self.generator.set_state(_cpu_bytes(states["generator"]))
        torch.set_rng_state(_cpu_bytes(states["torch_rng"]))
        if "cuda_rng" in states and self.device.type == "cuda":
            torch.cuda.set_rng_state(_cpu_bytes(states["cuda_rng"]), self.device)


def _cpu_bytes(state: torch.Tensor) -> torch.Tensor:
    """A random-number state as the setters want it: a uint8 tensor on the CPU."""
    return state.to(device="cpu", dtype=torch.uint8)


# --- the run: files, resume, results.json ------------------------------------------------------

RESULTS = "results.json"
CHECKPOINT = "checkpoint.pt"
_MUST_MATCH_ON_RESUME = ("model", "recipe", "defense", "defense_options", "seed", "adversarial", "rotate",
                         "augment", "sync_batchnorm", "normalization")
_DATA_MUST_MATCH = ("num_images", "shape", "classes", "digest")
"""Fields of a data fingerprint (`data_fingerprint`) a resumed run must see again; the spec and the
recorded source may differ (a dataset moved or named by another path is the same data)."""
DIGEST_IMAGES = 2048
"""`data_fingerprint` hashes rows of at most this many images, evenly spaced over the dataset."""
DIGEST_ROWS = 8
"""... and of each such image at most this many whole rows (all channels), evenly spaced."""


def train(config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset, model: nn.Module | None = None,
          resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train a classifier on `train_set`, test it on `test_set` every epoch, and record the run.

    Writes ``config.out/results.json`` (see `results_dict`) and ``config.out/checkpoint.pt``
    atomically after every epoch.

    Started by torchrun (``torchrun --nproc-per-node N -m unlearnable train ...``), every process
    runs this function: it joins the process group (`unlearnable.distributed.init`), takes GPU
    LOCAL_RANK when the device is CUDA (`distributed.training_device`), trains its shard (see
    `Trainer`), and only rank 0 writes files; every rank reads the checkpoint to resume, so with
    several machines `config.out` must be on a filesystem they share. A checkpoint resumes only
    with the world size that wrote it.

    A run directory is never overwritten: without `resume`, a directory that already holds a run
    (results.json or checkpoint.pt) is refused with a UserInputError that says where that run
    stands. With `resume`, the checkpoint must come from the same settings (the fields in
    ``_MUST_MATCH_ON_RESUME``), the same device type and world size, and the same training and
    test data (`data_fingerprint`); a difference is refused, naming each differing field with its
    old and new value. A damaged results.json or checkpoint.pt is refused with the fix.

    Args:
        config: the run; validated and resolved first (`resolve_config`).
        train_set, test_set: uint8 datasets with the same channels and classes.
        model: a ready nn.Module (moved to the device), or None to build ``create_model(config.model,
            num_classes, in_channels)`` after seeding torch with ``config.seed``.
        resume: continue from ``checkpoint.pt`` in `out` when there is one (a finished run is
            returned as is); a directory without a run starts one.
        progress: show a tqdm bar per epoch.

    Returns:
        the final results dict (as written to results.json), with ``status`` "complete".
    """
    world = distributed.init()
    config = dataclasses.replace(config, device=distributed.training_device(world, config.device))
    config = resolve_config(config)
    assert isinstance(config.recipe, Recipe)
    out = Path(config.out)
    _check_data(train_set, test_set)
    identity = run_identity(config, train_set, test_set, world)
    state = open_run(out, resume, identity)

    torch.manual_seed(config.seed)
    device = torch.device(config.device or "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # GPU kernels are nondeterministic anyway: take the fastest
    net = model if model is not None else _create_model(config.model, train_set)
    if config.sync_batchnorm:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
    stats = normalization_stats(config.normalization, train_set) if config.recipe.normalize else None
    trainer = Trainer(config, train_set, test_set, net, None if stats is None else (stats[1], stats[2]), world)
    history: list[dict[str, Any]] = []
    if state is not None:
        try:
            trainer.load_state_dict(state)
        except (KeyError, IndexError, RuntimeError, ValueError) as e:
            raise UserInputError(f"cannot resume {out}: {CHECKPOINT} does not fit this run ({_first_line(e)}); "
                                 "choose another --out") from None
        history = state["history"]

    def results(complete: bool) -> dict[str, Any]:
        return {**results_dict(config, train_set, test_set, net, stats, history, complete, trainer.preprocessed,
                               (identity["train_data"], identity["test_data"])),
                "pipeline": {"augment": trainer.augmentation, "data_placement": trainer.train_loader.placement},
                "world_size": world.size}

    epochs = config.recipe.epochs
    for epoch in range(len(history) + 1, epochs + 1):
        start = time.perf_counter()
        with tqdm(total=len(trainer.train_loader), desc=f"epoch {epoch}/{epochs}", unit="batch",
                  disable=not (progress and world.main), dynamic_ncols=True) as bar:
            record = trainer.train_epoch(bar)
            test_loss, test_acc = trainer.evaluate()
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.1f}",
                            test_acc=f"{test_acc:.2f}")
        history.append({"epoch": epoch, "train_loss": record["train_loss"], "train_acc": record["train_acc"],
                        "test_loss": test_loss, "test_acc": test_acc, "lr": record["lr"],
                        "seconds": time.perf_counter() - start, "train_seconds": record["train_seconds"],
                        "images_per_s": record["images"] / record["train_seconds"]})
        state = trainer.state_dict()  # every rank: it gathers the ranks' random states
        if world.main:
            save_checkpoint(out / CHECKPOINT, {**state, "epoch": epoch, "history": history, "run": identity})
            write_json(out / RESULTS, results(complete=epoch == epochs))
        distributed.barrier(world)
    final = results(complete=True)
    if world.main:
        write_json(out / RESULTS, final)
    distributed.barrier(world)
    return final


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` `state` to `path` atomically (loadable with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint `save_checkpoint` wrote, every tensor on the CPU; UserInputError when it is damaged.

    Loaded with ``map_location="cpu"``: the random-number states must reach ``Generator.set_state``
    and ``torch.(cuda.)set_rng_state`` as CPU byte tensors, and ``load_state_dict`` moves the model's
    and the optimiser's tensors to wherever the model lives.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # not damage: the CLI reports these as they are
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise UserInputError(f"cannot resume: {path} is damaged ({_first_line(e)}); it cannot be continued: move it "
                             f"and {path.with_name(RESULTS).name} away to start over, or choose another --out") from None
    missing = [key for key in ("model", "optimizer", "scheduler", "epoch", "history") if key not in state] \
        if isinstance(state, dict) else ["everything"]
    if missing:
        raise UserInputError(f"cannot resume: {path} is not a training checkpoint (no {missing[0]!r}); move it away "
                             "to start over, or choose another --out")
    return state


def read_results(path: Path) -> dict[str, Any] | None:
    """The results.json at `path`: None when there is none; UserInputError when it is not valid JSON."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        results = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path} is damaged ({_first_line(e)}); delete it and run again with --resume: it is "
                             f"rewritten from {CHECKPOINT}") from None
    if not isinstance(results, dict):
        raise UserInputError(f"{path} is damaged (not a JSON object); delete it and run again with --resume: it is "
                             f"rewritten from {CHECKPOINT}")
    return results


def run_state(out: str | Path) -> dict[str, Any]:
    """Where the run in directory `out` stands, from its files, without raising.

    The checkpoint is read lazily (memory-mapped, no tensor data): it is written before results.json
    after every epoch, so it is the one that is never behind.

    Returns:
        {"files": names of checkpoint.pt / results.json present, "epoch": the last finished epoch
        (None when neither file says), "epochs": the run's total (or None), "complete": every epoch
        is done}.
    """
    out = Path(out)
    files = [name for name in (CHECKPOINT, RESULTS) if (out / name).is_file()]
    try:
        results = read_results(out / RESULTS) or {}
    except (UserInputError, OSError):
        results = {}
    history = results.get("epochs")
    epoch = len(history) if isinstance(history, list) else None
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    if CHECKPOINT in files:
        try:
            state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True, mmap=True)
            epoch = int(state["epoch"])
            if isinstance(state.get("run"), dict):
                config = state["run"].get("config") or config
        except Exception:  # noqa: BLE001 - a damaged checkpoint: say what results.json says
            pass
    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else {}
    epochs = recipe.get("epochs")
    complete = results.get("status") == "complete" or (epoch is not None and epoch == epochs)
    return {"files": files, "epoch": epoch, "epochs": epochs, "complete": complete}


def describe_run(out: str | Path) -> str:
    """"OUT holds a finished run ..." / "an interrupted run at epoch E of N" / "an earlier run": the run in `out`."""
    where = run_state(out)
    if where["complete"]:
        return f"{out} holds a finished run ({where['epochs']} epochs)"
    if where["epoch"] is not None:
        return f"{out} holds an interrupted run at epoch {where['epoch']} of {where['epochs']}"
    return f"{out} holds an earlier run ({', '.join(where['files'])})"


def interrupted_message(out: str | Path, command: str | None = None) -> str:
    """What an interrupted `train` kept in `out` and how to continue it: one line for the CLI to print.

    Args:
        out: the run directory.
        command: the command line that was interrupted (e.g. ``"unlearnable train --train cifar10
            --out runs/a"``); the advice is that line with --resume (added when it lacks it).
    """
    where = run_state(out)
    again = command if command else "the same command"
    if not where["files"]:
        return f"no epoch had finished, so nothing was kept in {out}; run {again} again to start over"
    if command:
        again = command if "--resume" in command.split() else f"{command} --resume"
    else:
        again = "the same command with --resume"
    if where["complete"]:
        return f"{out} holds the finished run ({', '.join(where['files'])}); {again} returns it as it is"
    if where["epoch"] is not None:
        kept = f"epoch {where['epoch']} of {where['epochs']} is kept in {out} ({', '.join(where['files'])})"
    else:
        kept = f"{out} keeps {', '.join(where['files'])}"
    return f"{kept}; continue with: {again}"


def check_finished_run(config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset) -> None:
    """Refuse to count the finished run in ``config.out`` as this one when its settings or data differ
    (`check_same_run`): a rerun that skips finished runs must not report a run trained otherwise."""
    world = distributed.init()
    config = resolve_config(dataclasses.replace(config, device=distributed.training_device(world, config.device)))
    out = Path(config.out)
    state = load_checkpoint(out / CHECKPOINT) if (out / CHECKPOINT).is_file() else {}
    recorded = state.get("run") if isinstance(state.get("run"), dict) else _identity_from_results(
        read_results(out / RESULTS) or {})
    check_same_run(run_identity(config, train_set, test_set, world), recorded, out)


def open_run(out: Path, resume: bool, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to continue from (None: start afresh), after every check of the directory `out`.

    Raises UserInputError: `out` holds a run and `resume` is off; or resuming is impossible (a
    damaged file, results.json without checkpoint.pt) or would mix two runs (`check_same_run`).
    """
    has_checkpoint = (out / CHECKPOINT).is_file()
    if not resume:
        if has_checkpoint or (out / RESULTS).is_file():
            where = run_state(out)
            advice = ("pass --resume to keep it as it is, or choose another --out" if where["complete"]
                      else "continue it with --resume, or choose another --out")
            raise UserInputError(f"{describe_run(out)}; {advice}")
        return None
    previous = read_results(out / RESULTS)
    if not has_checkpoint:
        if previous is None:
            return None  # nothing to continue: a new run
        if previous.get("status") == "complete":
            raise UserInputError(f"{out} holds a finished run but no {CHECKPOINT} to resume from; choose another --out")
        raise UserInputError(f"cannot resume: {describe_run(out)} but its {CHECKPOINT} is missing; choose another "
                             f"--out, or delete {out / RESULTS} to start over")
    state = load_checkpoint(out / CHECKPOINT)
    recorded = state.get("run") if isinstance(state.get("run"), dict) else _identity_from_results(previous or {})
    check_same_run(identity, recorded, out)
    return state


def run_identity(config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset,
                 world: distributed.World) -> dict[str, Any]:
    """What a resumed run must share with the run it continues (JSON-ready; kept in every checkpoint)."""
    return {"config": config_to_dict(config), "world_size": world.size,
            "train_data": data_fingerprint(train_set, config.train),
            "test_data": data_fingerprint(test_set, config.test)}


def _identity_from_results(results: dict[str, Any]) -> dict[str, Any]:
    """The identity of a run whose checkpoint predates ``run`` records: what its results.json says."""
    return {key: results[key] for key in ("config", "world_size", "train_data", "test_data") if key in results}


def data_fingerprint(dataset: ImageDataset, spec: str | None = None) -> dict[str, Any]:
    """Enough of a dataset to tell it from another at resume time, computed in well under a second.

    Keys: spec (how it was named, for the reader), num_images, shape, classes, and digest: SHA-256
    over the labels, the shape, and `DIGEST_ROWS` whole rows (every channel) of `DIGEST_IMAGES`
    images evenly spaced over the dataset, the rows evenly spaced and shifted by one per image.
    Whole rows keep the reads of a memory-mapped N×H×W×C store to a few pages per image; a poison
    that touches a few pixels of many images still changes the digest, though one confined to a
    few images outside the sample would not.
    """
    count = len(dataset)
    channels, height, width = dataset.shape
    digest = hashlib.sha256()
    digest.update(json.dumps([count, channels, height, width]).encode())
    digest.update(dataset.labels.to(torch.int64).contiguous().numpy().tobytes())
    if count:
        images = torch.linspace(0, count - 1, min(count, DIGEST_IMAGES), dtype=torch.float64).round().long().unique()
        rows = torch.linspace(0, height - 1, min(height, DIGEST_ROWS), dtype=torch.float64).round().long().unique()
        rows = (rows[None, :] + images[:, None]) % height  # shifted per image, so every row is sampled somewhere
        sample = dataset.images[images[:, None], :, rows, :]  # images × rows × C × W: only those bytes are read
        digest.update(sample.contiguous().numpy().tobytes())
    return {"spec": spec, "num_images": count, "shape": [channels, height, width], "classes": list(dataset.classes),
            "digest": digest.hexdigest()}


def check_same_run(current: dict[str, Any], recorded: dict[str, Any], out: Path) -> None:
    """Resuming with other settings, another device type or other data would mix two runs: refuse it.

    Both are `run_identity` records; a field the recorded run lacks (an older version's) is not
    checked. The message names each differing field with its old → new value, never whole records.
    """
    old_config, new_config = recorded.get("config") or {}, current["config"]
    differences: list[str] = []
    for key in _MUST_MATCH_ON_RESUME:
        if key in old_config:
            differences += _differences(key, old_config[key], new_config[key])
    if old_config.get("device") is not None:
        old_type, new_type = _device_type(old_config["device"]), _device_type(new_config["device"])
        if old_type != new_type:
            differences.append(f"device type {old_type} → {new_type}")
    for part, label in (("train_data", "training data"), ("test_data", "test data")):
        old_data, new_data = recorded.get(part) or {}, current[part]
        changed = [change for key in _DATA_MUST_MATCH if key in old_data
                   for change in _differences(f"{label} {key}", old_data[key], new_data[key])]
        if changed and old_data.get("spec") != new_data.get("spec"):
            changed.append(f"{label} spec {_short(old_data.get('spec'))} → {_short(new_data.get('spec'))}")
        differences += changed
    if differences:
        raise UserInputError(f"cannot resume {out}: it was started with other settings or data: "
                             f"{'; '.join(differences)}; use the same ones, or choose another --out")
    old_size = recorded.get("world_size", 1)
    if old_size != current["world_size"]:
        raise UserInputError(f"cannot resume {out}: it was trained by {old_size} processes, now "
                             f"{current['world_size']}; the data shards and random streams depend on it, so resume "
                             f"with torchrun --nproc-per-node {old_size} (in all), or choose another --out")


def _device_type(device: str) -> str:
    return str(device).split(":")[0]


def _differences(name: str, old: Any, new: Any) -> list[str]:
    """["name.sub old → new", ...] for the leaves where `old` and `new` differ (dicts compared key by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(set(old) | set(new), key=str)
                for change in _differences(f"{name}.{key}", old.get(key), new.get(key))]
    if old == new:
        return []
    if isinstance(old, list) and isinstance(new, list) and len(repr(old)) + len(repr(new)) > 80:
        if len(old) != len(new):
            return [f"{name} {len(old)} items → {len(new)} items"]
        index = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        return [f"{name}[{index}] {_short(old[index])} → {_short(new[index])}"]
    return [f"{name} {_short(old)} → {_short(new)}"]


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return _short(lines[0], 120).strip("'\"") if lines else type(error).__name__


def results_dict(config: TrainConfig, train_set: ImageDataset, test_set: ImageDataset, model: nn.Module,
                 normalization: tuple[str, list[float], list[float]] | None, history: list[dict[str, Any]],
                 complete: bool, preprocessed: dict[str, Any] | None = None,
                 fingerprints: tuple[dict[str, Any], dict[str, Any]] | None = None) -> dict[str, Any]:
    """The content of results.json for a resolved `config` after the epochs in `history`.

    `fingerprints` are the (train, test) `data_fingerprint` records when already computed.

    Keys: name, config (resolved), model {name, class, parameters}, normalization {stats, mean,
    std} or null, versions, device, host (`host_info`: threads, CPU model and capability, ... —
    what bit-exactness on the CPU depends on), deterministic (+ note), seed, train_data / test_data
    {source, attack, num_images, shape, num_classes, classes, spec, digest}, epochs (one record per
    epoch: epoch, train_loss, train_acc, test_loss, test_acc, lr, seconds, train_seconds,
    images_per_s), final {test_acc_last, test_acc_best, best_epoch, wall_seconds, images_per_s},
    status ("running" | "complete"), and with a preprocessing defense, preprocessed (what it
    recorded in the training set's meta, e.g. "deconv": the estimated kernels). Accuracies are
    percentages; train_* are measured on the batches the model trains on (defended, mixed, after
    the step hook) with the recipe's loss, train_acc against the original labels; test_loss is
    plain cross-entropy.
    """
    device = torch.device(config.device or "cpu")
    on_cuda = device.type == "cuda"
    train_print, test_print = fingerprints or (data_fingerprint(train_set, config.train),
                                               data_fingerprint(test_set, config.test))
    best = max(history, key=lambda record: record["test_acc"]) if history else None
    train_seconds = sum(record["train_seconds"] for record in history)
    images = sum(record["images_per_s"] * record["train_seconds"] for record in history)
    results = {
        "name": config.name,
        "config": config_to_dict(config),
        "model": {"name": config.model, "class": type(model).__name__,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "normalization": None if normalization is None else dict(zip(("stats", "mean", "std"), normalization)),
        "versions": versions(),
        "device": torch.cuda.get_device_name(device) if on_cuda else _cpu_name(),
        "host": host_info(device),
        "deterministic": not on_cuda,
        "seed": config.seed,
        "train_data": {**_data_summary(train_set), **train_print},
        "test_data": {**_data_summary(test_set), **test_print},
        "epochs": history,
        "final": {"test_acc_last": history[-1]["test_acc"] if history else None,
                  "test_acc_best": best["test_acc"] if best else None,
                  "best_epoch": best["epoch"] if best else None,
                  "wall_seconds": sum(record["seconds"] for record in history),
                  "images_per_s": images / train_seconds if train_seconds else None},
        "status": "complete" if complete else "running",
    }
    if preprocessed is not None:
        results["preprocessed"] = preprocessed
    if on_cuda:
        results["note"] = ("GPU kernels (cuDNN autotuning, atomics in backward passes) are nondeterministic: "
                           "reruns with the same seed differ slightly")
    else:
        results["note"] = ("CPU runs repeat bit for bit on the same machine with the same host.threads, "
                           "host.cpu_capability and versions; a change in any of them changes the numbers slightly")
    return results


def _cpu_name() -> str:
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def host_info(device: torch.device | None = None) -> dict[str, Any]:
    """What a run's exact numbers depend on besides the code, the data and the seed.

    Keys: threads (``torch.get_num_threads()``: a CPU reduction splits its work per thread, so the
    float sums change with it), cpu (the model name), cpu_capability (the SIMD kernels ATen
    dispatches to, e.g. AVX2 / AVX512: their float arithmetic differs), onednn (the oneDNN version,
    which picks convolution kernels by ISA), deterministic_algorithms (``torch.use_deterministic_algorithms``),
    and on CUDA cudnn (its version) and cudnn_benchmark.
    """
    info: dict[str, Any] = {"threads": torch.get_num_threads(), "cpu": _cpu_model(),
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "onednn": _onednn_version(),
                            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
    if device is not None and device.type == "cuda":
        info["cudnn"] = torch.backends.cudnn.version()
        info["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _onednn_version() -> str | None:
    found = re.search(r"MKL-DNN v([\w.]+)|oneDNN v([\w.]+)", torch.__config__.show())
    return (found.group(1) or found.group(2)) if found else None


def versions() -> dict[str, str]:
    """Versions of the software that produced a result."""
    import torchvision

    return {"unlearnable": unlearnable.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "numpy": np.__version__}


def _data_summary(dataset: ImageDataset) -> dict[str, Any]:
    return {"source": dataset.meta.get("source"), "attack": dataset.meta.get("attack"), "num_images": len(dataset),
            "shape": list(dataset.shape), "num_classes": dataset.num_classes, "classes": list(dataset.classes)}


def _create_model(name: str, train_set: ImageDataset) -> nn.Module:
    from unlearnable.models import create_model

    return create_model(name, train_set.num_classes, in_channels=train_set.shape[0])


def _check_data(train_set: ImageDataset, test_set: ImageDataset) -> None:
    if train_set.shape[0] != test_set.shape[0]:
        raise UserInputError(f"the training images have {train_set.shape[0]} channels but the test images "
                             f"{test_set.shape[0]}; give a test split of the same dataset")
    if len(test_set) == 0 or int(test_set.labels.max()) >= train_set.num_classes:
        raise UserInputError(f"the test labels do not fit the training set's {train_set.num_classes} classes; give "
                             "a test split of the same dataset")
