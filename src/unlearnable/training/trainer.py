"""The training loop: `Trainer` (one run's state between epochs) and `train` (a whole run, recorded).

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

The defense chain is one "+"-spec (`unlearnable.defenses.training_defense`); adversarial training
is its "at-linf" / "at-l2" step hook. A test batch is only Normalize: no defense, no augmentation. Every random draw of a run (epoch
permutations, defense kernels, crop offsets, flips, angles, mixing ratios, PGD starts, DAT
filters, UEraser draws) comes from one torch.Generator on the training device seeded with the
run's seed; its state, with the model's, the optimiser's and the schedule's, is checkpointed
after every epoch, so `resume=True` continues a run exactly: on CPU the result is bit-identical
to an uninterrupted run.

The rest of a run lives beside this module: `augment` (the batch augmentations and Normalize),
`config` (TrainConfig, resolve_config), `results` (results.json), `checkpoint` (checkpoint.pt),
`run_dir` (resume checks, where a run stands) and `host` (what bit-exactness depends on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from unlearnable import distributed
from unlearnable.data import ImageDataset, to_unit_float
from unlearnable.defenses import StepHook, TrainingDefense, training_defense
from unlearnable.defenses.hooks import AutocastModel
from unlearnable.distributed import World, gather_tensors
from unlearnable.errors import UserInputError
from unlearnable.training._messages import first_line
from unlearnable.training.augment import (
    CROP_PADDING,
    NORMALIZATION_STATS,
    ROTATION_DEGREES,
    Normalize,
    normalization_stats,
    random_crop,
    random_flip,
    random_resized_crop,
    random_rotation,
    resolve_augment,
)
from unlearnable.training.checkpoint import save_checkpoint
from unlearnable.training.config import TrainConfig, resolve_config, resolve_device
from unlearnable.training.loaders import make_loader
from unlearnable.training.recipes import Recipe, lr_factor, resolve_recipe
from unlearnable.training.results import CHECKPOINT, RESULTS, RunResults, run_results
from unlearnable.training.run_dir import interrupted_message, open_run, run_identity

__all__ = [
    "PREPROCESS_RECORDS",
    "Trainer",
    "build_model",
    "restore",
    "run_epoch",
    "shard_indices",
    "train",
    # defined in the modules beside this one, and importable from here as before the split
    "CHECKPOINT",
    "NORMALIZATION_STATS",
    "RESULTS",
    "TrainConfig",
    "interrupted_message",
    "random_crop",
    "random_flip",
    "resolve_config",
    "resolve_device",
    "resolve_recipe",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

PREPROCESS_RECORDS = ("deconv", "ortho_proj", "dvae", "diffpure", "notch", "unshift")
"""Keys a preprocessing defense adds to the training set's meta that results.json keeps (``preprocessed``)."""


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
    return order[world.rank * per_rank : (world.rank + 1) * per_rank].sort().values


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

    def __init__(
        self,
        config: TrainConfig,
        train_set: ImageDataset,
        test_set: ImageDataset,
        model: nn.Module,
        normalization: tuple[list[float], list[float]] | None,
        world: World = World(),
    ) -> None:
        assert isinstance(config.recipe, Recipe)
        self.config, self.recipe, self.world = config, config.recipe, world
        self.device = torch.device(config.device or "cpu")
        if self.recipe.batch_size % world.size:
            raise UserInputError(
                f"batch size {self.recipe.batch_size} does not split over {world.size} processes; "
                f"use a multiple of {world.size}"
            )
        self.model = model
        self.forward = cast(nn.Module, torch.compile(model)) if config.compile else model
        self.train_forward = self.forward  # the training step's forward: through DDP with several processes
        if world.distributed:
            ddp = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self.train_forward = cast(nn.Module, torch.compile(ddp)) if config.compile else ddp
        self.defense: TrainingDefense = training_defense(config.defense, **config.defense_options)
        self.preprocessed: dict[str, Any] | None = None
        if self.defense.preprocess is not None:  # deterministic, so a resumed run sees the same images
            train_set = self.defense.preprocess(train_set)
            self.preprocessed = {key: train_set.meta[key] for key in PREPROCESS_RECORDS if key in train_set.meta}
        test_shard = torch.arange(world.rank, len(test_set), world.size) if world.distributed else None
        self.train_loader = make_loader(
            train_set,
            self.device,
            self.recipe.batch_size // world.size,
            shard_indices(len(train_set), config.seed, world),
            config.data_placement,
        )
        self.test_loader = make_loader(
            test_set, self.device, self.recipe.test_batch_size, test_shard, config.data_placement
        )
        if len(self.train_loader) == 0:
            raise UserInputError(
                f"the training set has {len(train_set)} images, fewer than one batch of "
                f"{self.recipe.batch_size}; lower the batch size"
            )
        self.image_size: tuple[int, int] = tuple(train_set.shape[1:])  # type: ignore[assignment]
        self.augmentation = resolve_augment(config.augment, self.image_size)
        self.num_classes = train_set.num_classes
        self.hook: StepHook | None = self.defense.hook  # the chain's model-in-the-loop step (at-linf, dat, ueraser)
        # The hook sees the model through bf16 autocast (with AMP) and does its own image arithmetic in
        # float32, so the batch it returns is not rounded to bf16.
        self.hook_model = AutocastModel(self.forward, self.device.type, enabled=bool(config.amp))
        mean, std = normalization if normalization is not None else (None, None)
        self.normalize = Normalize(mean, std, device=self.device)
        self.generator = torch.Generator(self.device).manual_seed(config.seed + (world.rank << 32))
        self.optimizer = torch.optim.SGD(
            model.parameters(),
            lr=self.recipe.lr,
            momentum=self.recipe.momentum,
            nesterov=self.recipe.nesterov,
            weight_decay=self.recipe.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(self.recipe, len(self.train_loader))
        )
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
        if self.hook is not None:
            x = self.hook(self.hook_model, x, targets, self.generator, self.model_input)
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
        loss_total, correct_total, seen_total = self.sum_over_ranks(loss_sum, correct, seen)
        return {
            "train_loss": loss_total / seen_total,
            "train_acc": 100 * correct_total / seen_total,
            "lr": lr,
            "train_seconds": time.perf_counter() - start,
            "images": int(seen_total),
        }

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
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "world_size": self.world.size,
            **self.random_states(),
        }
        if self.world.distributed:
            gathered = {name: gather_tensors(self.world, value) for name, value in self.random_states().items()}
            state["ranks"] = [
                {name: values[rank] for name, values in gathered.items()} for rank in range(self.world.size)
            ]
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


def train(
    config: TrainConfig,
    train_set: ImageDataset,
    test_set: ImageDataset,
    model: nn.Module | None = None,
    resume: bool = False,
    progress: bool = True,
    *,
    command: str | None = None,
) -> dict[str, Any]:
    """Train a classifier on `train_set`, test it on `test_set` every epoch, and record the run.

    Writes ``config.out/results.json`` (`RunResults`) and ``config.out/checkpoint.pt`` atomically
    after every epoch, and logs one INFO line per epoch (logger ``unlearnable.training.trainer``).

    Started by torchrun (``torchrun --nproc-per-node N -m unlearnable train ...``), every process
    runs this function: it joins the process group (`unlearnable.distributed.init`), takes GPU
    LOCAL_RANK when the device is CUDA (`distributed.training_device`), trains its shard (see
    `Trainer`), and only rank 0 writes files; every rank reads the checkpoint to resume, so with
    several machines `config.out` must be on a filesystem they share. A checkpoint resumes only
    with the world size that wrote it.

    A run directory is never overwritten: without `resume`, a directory that already holds a run
    (results.json or checkpoint.pt) is refused with a UserInputError that says where that run
    stands. With `resume`, the checkpoint must come from the same settings (the fields in
    ``run_dir.MUST_MATCH_ON_RESUME``), the same device type and world size, and the same training
    and test data (`data_fingerprint`); a difference is refused, naming each differing field with
    its old and new value. A damaged results.json or checkpoint.pt is refused with the fix.

    Args:
        config: the run; validated and resolved first (`resolve_config`).
        train_set, test_set: uint8 datasets with the same channels and classes.
        model: a ready nn.Module (moved to the device), or None to build ``create_model(config.model,
            num_classes, in_channels)`` after seeding torch with ``config.seed``.
        resume: continue from ``checkpoint.pt`` in `out` when there is one (a finished run is
            returned as is); a directory without a run starts one.
        progress: show a tqdm bar per epoch.
        command: the command line that started the run, recorded in results.json (`RunResults.command`);
            a resumed run keeps the command its checkpoint recorded.

    Returns:
        the final results.json content (`RunResults.to_dict`), with ``status`` "complete".
    """
    world = distributed.init()
    config = resolve_for_world(config, world)
    assert isinstance(config.recipe, Recipe)
    out = Path(config.out)
    _check_data(train_set, test_set)
    identity = run_identity(config, train_set, test_set, world)
    state = open_run(out, resume, identity)
    net = build_model(config, train_set, model)
    stats = normalization_stats(config.normalization, train_set) if config.recipe.normalize else None
    trainer = Trainer(config, train_set, test_set, net, None if stats is None else (stats[1], stats[2]), world)
    history = restore(trainer, state, out)
    if state is not None and isinstance(state.get("command"), str):
        command = state["command"]

    def record(complete: bool) -> RunResults:
        return run_results(
            config,
            train_set,
            test_set,
            net,
            stats,
            history,
            complete,
            trainer.preprocessed,
            (identity["train_data"], identity["test_data"]),
            pipeline={"augment": trainer.augmentation, "data_placement": trainer.train_loader.placement},
            world_size=world.size,
            command=command,
        )

    epochs = config.recipe.epochs
    for epoch in range(len(history) + 1, epochs + 1):
        history.append(run_epoch(trainer, epoch, progress and world.main))
        if world.main:
            log_epoch(config.name, history[-1], epochs)
        state = trainer.state_dict()  # every rank: it gathers the ranks' random states
        if world.main:
            save_checkpoint(
                out / CHECKPOINT, {**state, "epoch": epoch, "history": history, "run": identity, "command": command}
            )
            record(complete=epoch == epochs).write(out / RESULTS)
        distributed.barrier(world)
    final = record(complete=True)
    if world.main:
        final.write(out / RESULTS)
    distributed.barrier(world)
    return final.to_dict()


def resolve_for_world(config: TrainConfig, world: World) -> TrainConfig:
    """`config` resolved (`resolve_config`) for this process: under torchrun a CUDA run takes GPU LOCAL_RANK."""
    return resolve_config(dataclasses.replace(config, device=distributed.training_device(world, config.device)))


def build_model(config: TrainConfig, train_set: ImageDataset, model: nn.Module | None = None) -> nn.Module:
    """The network of a resolved `config` on its device: `model`, or ``create_model(config.model, ...)``
    built after seeding torch with ``config.seed``; with SyncBatchNorm layers when asked for, in the
    configured memory format. On CUDA, cuDNN autotuning is turned on (GPU kernels are
    nondeterministic anyway: take the fastest)."""
    torch.manual_seed(config.seed)
    device = torch.device(config.device or "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    net = model if model is not None else _create_model(config.model, train_set)
    if config.sync_batchnorm:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    return net.to(device, memory_format=memory_format)  # type: ignore[call-overload]  # missing from torch's stubs


def restore(trainer: Trainer, state: dict[str, Any] | None, out: Path) -> list[dict[str, Any]]:
    """Load a checkpoint's `state` into `trainer` and return its epoch records ([] for a new run)."""
    if state is None:
        return []
    try:
        trainer.load_state_dict(state)
    except (KeyError, IndexError, RuntimeError, ValueError) as e:
        raise UserInputError(
            f"cannot resume {out}: {CHECKPOINT} does not fit this run ({first_line(e)}); choose another --out"
        ) from None
    return state["history"]


def run_epoch(trainer: Trainer, epoch: int, progress: bool) -> dict[str, Any]:
    """Train epoch `epoch` and test after it, under a tqdm bar when `progress`; the epoch's record
    for results.json (see `RunResults.epochs`)."""
    epochs = trainer.recipe.epochs
    start = time.perf_counter()
    with tqdm(
        total=len(trainer.train_loader),
        desc=f"epoch {epoch}/{epochs}",
        unit="batch",
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        record = trainer.train_epoch(bar)
        test_loss, test_acc = trainer.evaluate()
        bar.set_postfix(
            loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.1f}", test_acc=f"{test_acc:.2f}"
        )
    return {
        "epoch": epoch,
        "train_loss": record["train_loss"],
        "train_acc": record["train_acc"],
        "test_loss": test_loss,
        "test_acc": test_acc,
        "lr": record["lr"],
        "seconds": time.perf_counter() - start,
        "train_seconds": record["train_seconds"],
        "images_per_s": record["images"] / record["train_seconds"],
    }


def log_epoch(name: str, record: dict[str, Any], epochs: int) -> None:
    """One INFO line for a finished epoch's record."""
    logger.info(
        "%s: epoch %d/%d: train loss %.3f, train acc %.1f%%, test loss %.3f, test acc %.2f%% (%.1f s)",
        name,
        record["epoch"],
        epochs,
        record["train_loss"],
        record["train_acc"],
        record["test_loss"],
        record["test_acc"],
        record["seconds"],
    )


def _create_model(name: str, train_set: ImageDataset) -> nn.Module:
    from unlearnable.models import create_model

    return create_model(name, train_set.num_classes, in_channels=train_set.shape[0])


def _check_data(train_set: ImageDataset, test_set: ImageDataset) -> None:
    if train_set.shape[0] != test_set.shape[0]:
        raise UserInputError(
            f"the training images have {train_set.shape[0]} channels but the test images "
            f"{test_set.shape[0]}; give a test split of the same dataset"
        )
    if len(test_set) == 0 or int(test_set.labels.max()) >= train_set.num_classes:
        raise UserInputError(
            f"the test labels do not fit the training set's {train_set.num_classes} classes; give "
            "a test split of the same dataset"
        )
