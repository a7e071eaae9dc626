"""Protocols: the paper's Table 1 (four conditions) on a dataset, at paper scale or on a CPU budget.

    clean          train on the clean training set
    cuda           train on the CUDA-protected set, no defense
    cuda+at        the same with PGD adversarial training (the defense chain "at-linf": L∞ 4/255)
    cuda+rsk+ff    the same with random sharpening + DCT low-pass filtering

The protected set is made once (CUDA with the paper's parameters: k = 3, p_b = 0.3, seed 0 on the
full training split, so the key is the published one; a subset is taken afterwards) and saved under
OUT/data/, the runs go to OUT/runs/<condition>/, the report to OUT/report/. Finished runs are
skipped and interrupted ones resumed, so re-running the command continues where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearnable import distributed
from unlearnable.app.poison import poison_to_directory
from unlearnable.attacks.apply import poison_dataset
from unlearnable.data import ImageDataset, is_saved_dataset, load_dataset, load_saved, save_dataset, stratified_subset
from unlearnable.data.imagenet import store_path
from unlearnable.data.saved import saved_source, with_saved_source
from unlearnable.errors import UserInputError
from unlearnable.io import atomic_directory, contains, shared_atomic_directory
from unlearnable.training.results import RESULTS, RunResults

logger = logging.getLogger(__name__)

CUDA_PAPER = {"kernel_size": 3, "blur_parameter": 0.3, "seed": 0}
CUDA_PAPER_IMAGENET = {"kernel_size": 9, "blur_parameter": 0.06, "seed": 0}
"""CUDA's parameters for ImageNet-100 at 224×224 (SPEC §1)."""
TABLE1_CONDITIONS = ("clean", "cuda", "cuda+at", "cuda+rsk+ff")
"""The names of the four Table-1 runs, in the order `run_table1` trains them (the report labels them)."""


@dataclass
class TrainingProtocol:
    """What to train: the model, the recipe (with overrides) and the data budget.

    Attributes:
        model: a name from unlearnable.models.
        recipe: a name from unlearnable.training.RECIPES.
        overrides: recipe fields to change (e.g. {"epochs": 10}).
        train_per_class / test_per_class: stratified subset sizes (None = everything).
        at: options (eps, steps) of the cuda+at condition's "at-linf" defense (SPEC §5).
        rotate: RandomRotation(15°) in the pipeline (the CIFAR-100 recipe).
        cuda: the CUDA poison's parameters.
        rsk_ff: options of the rsk+ff condition's defense (e.g. FF's ImageNet variant).
    """

    model: str = "resnet18"
    recipe: str = "paper"
    overrides: dict[str, Any] = field(default_factory=dict)
    train_per_class: int | None = None
    test_per_class: int | None = None
    at: dict[str, Any] = field(default_factory=lambda: {"eps": 4 / 255, "steps": 10})
    rotate: bool = False
    cuda: dict[str, Any] = field(default_factory=lambda: dict(CUDA_PAPER))
    rsk_ff: dict[str, Any] = field(default_factory=dict)


# ImageNet-100 (the paper's third row): torchvision's ResNet-18 at 224×224 with the paper's recipe,
# CUDA with k = 9, p_b = 0.06, and FF's ImageNet variant (int(0.4·N·p/100) frequencies kept, SPEC §3).
# The pipeline takes RandomResizedCrop + flip for images this size (TrainConfig.augment "auto").
IMAGENET100 = TrainingProtocol(
    model="resnet18-imagenet", recipe="paper", cuda=dict(CUDA_PAPER_IMAGENET), rsk_ff={"imagenet_variant": True}
)


# The CPU demo (run on CIFAR-10): the small CNN and the quick recipe on 1,000 training images per
# class, 8 epochs; adversarial training with 2 PGD steps instead of 10 so that the four conditions fit
# in 15 minutes on 2 cores.
DEMO = TrainingProtocol(
    model="small",
    recipe="quick",
    overrides={"epochs": 8},
    train_per_class=1000,
    test_per_class=300,
    at={"eps": 4 / 255, "steps": 2},
)


def summarize(runs: list[Path]) -> list[str]:
    """Lines of a plain-text table (condition, last and best test accuracy, wall time) and the effect."""
    acc: dict[str, float] = {}
    lines = [f"{'condition':<14}{'test acc':>9}{'best':>8}{'time':>8}"]
    for run in runs:
        final = read_results(run).final
        acc[run.name] = final["test_acc_last"]
        lines.append(
            f"{run.name:<14}{final['test_acc_last']:>8.2f}%{final['test_acc_best']:>7.2f}%"
            f"{final['wall_seconds']:>7.0f}s"
        )
    if {"clean", "cuda", "cuda+rsk+ff"} <= acc.keys():
        lost = acc["clean"] - acc["cuda"]
        regained = acc["cuda+rsk+ff"] - acc["cuda"]
        lines.append(
            f"CUDA costs {lost:.1f} points of clean accuracy; RSK+FF wins back {regained:.1f} of them "
            f"({100 * regained / lost:.0f}%)."
            if lost > 0
            else "CUDA did not lower the accuracy here."
        )
    return lines


def check_protocol(
    protocol: TrainingProtocol, settings: Iterable[dict[str, Any]], seed: int = 0, device: str | None = None
) -> None:
    """Check the model, recipe, seed, device and each run's settings (defense chain and options) of a protocol.

    Raises the UserInputError a training run would, but before any data is read or written.
    """
    from unlearnable.models import MODELS
    from unlearnable.training.config import TrainConfig, resolve_config
    from unlearnable.training.recipes import resolve_recipe

    MODELS.check(protocol.model)
    recipe = resolve_recipe(protocol.recipe, **protocol.overrides)
    for run in settings:
        resolve_config(
            TrainConfig(
                out="unchecked",
                model=protocol.model,
                recipe=recipe,
                seed=seed,
                device=device,
                rotate=protocol.rotate,
                **run,
            )
        )


def check_writable(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse an output directory that is a file, is or lies inside one of the `inputs` (datasets
    given as paths), or whose nearest existing folder cannot be written to."""
    path = Path(out).expanduser().absolute()
    for given in inputs:
        if given is not None and Path(given).is_dir() and contains(Path(given).resolve(), path.resolve()):
            raise UserInputError(f"--out {out} is or lies inside the input {given}; write the experiment elsewhere")
    if path.exists() and not path.is_dir():
        raise UserInputError(f"--out {out} is a file; give a directory (it is created if missing)")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"--out {out}: cannot write into {existing}; choose a directory you can write to")


def prepare_data(
    source: str,
    out: Path,
    protocol: TrainingProtocol,
    data_root: str | None = None,
    poisons: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, Path]:
    """Save the clean training set and each protected version of it (with the clean test split).

    Args:
        source: a dataset spec for ``load_dataset``.
        out: the experiment directory; datasets go to out/data/<name>.
        protocol: gives the subset sizes.
        poisons: {name: (attack, params)}; default {"cuda": ("cuda", protocol.cuda)}. Each attack
            protects the full training split (so keys and per-image draws are those of the whole
            dataset), and the protocol's subset is taken afterwards.

    ImageNet-100 without a subset is not copied: "clean" is its store (`load_dataset`), and each
    poison is written straight to disk, split over the processes under torchrun
    (`protect.poison_to_directory`). Other sources are prepared by rank 0 alone.

    Returns:
        {"clean": dir, **{name: dir}}; datasets saved earlier are reused.
    """
    from unlearnable.attacks import ATTACKS

    poisons = {"cuda": ("cuda", protocol.cuda)} if poisons is None else poisons
    for attack, _ in poisons.values():
        ATTACKS.get(attack)  # an unknown attack fails before any data is read or written
    check_writable(out, [source, data_root])
    whole = protocol.train_per_class is None and protocol.test_per_class is None
    store = store_path(data_root) if source == "imagenet100" and whole else None
    dirs = {name: out / "data" / name for name in ("clean", *poisons)}
    if store is not None:
        dirs["clean"] = store
    if all(is_saved_dataset(d) for d in dirs.values()):
        return dirs
    world = distributed.init()
    with distributed.main_first(world):
        full = load_dataset(source, "train", data_root)
        test = load_dataset(source, "test", data_root)
    if store is not None:
        # The protected set's source is the store, so `show` and the report can put each protected
        # image next to its clean original.
        clean = with_saved_source(full, store)
        for name, (attack, params) in poisons.items():
            if not is_saved_dataset(dirs[name]):
                with shared_atomic_directory(dirs[name], world, overwrite=True) as tmp:
                    poison_to_directory(clean, attack, tmp, test, world, **params)
        return dirs
    if world.main:
        prepare_copies(full, test, dirs, protocol, poisons)
    distributed.barrier(world)
    return dirs


def prepare_copies(
    full: ImageDataset,
    test: ImageDataset,
    dirs: dict[str, Path],
    protocol: TrainingProtocol,
    poisons: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    """Save the clean training set (the protocol's subset of `full`) and each protected version in `dirs`."""
    train = full if protocol.train_per_class is None else stratified_subset(full, protocol.train_per_class)
    if protocol.test_per_class is not None:
        test = stratified_subset(test, protocol.test_per_class)
    if not is_saved_dataset(dirs["clean"]):
        with atomic_directory(dirs["clean"], overwrite=True) as tmp:
            save_dataset(tmp, train, test)
    for name, (attack, params) in poisons.items():
        if is_saved_dataset(dirs[name]):
            continue
        protected = poison_dataset(full, attack, **params)
        if protocol.train_per_class is not None:
            protected = subset_protected(protected, train.meta["subset"]["indices"])
        # The protected set's source is the clean set saved beside it, so `show` and the report can
        # put each protected image next to its clean original.
        protected.meta["source"] = saved_source(dirs["clean"])
        with atomic_directory(dirs[name], overwrite=True) as tmp:
            save_dataset(tmp, protected, test)


def subset_protected(protected: ImageDataset, keep: list[int]) -> ImageDataset:
    """The images at `keep` of a protected set, with the key's poisoned indices renumbered."""
    poisoned = np.zeros(len(protected), dtype=bool)
    poisoned[protected.meta["poisoned_indices"]] = True
    sub = protected.subset(keep)
    sub.meta["poisoned_indices"] = np.flatnonzero(poisoned[keep]).tolist()
    sub.meta["subset"] = {"indices": list(keep)}
    return sub


def condition_config(name: str, protocol: TrainingProtocol) -> dict[str, Any]:
    """The defense chain and its options of one Table-1 condition (TrainConfig fields)."""
    conditions: dict[str, dict[str, Any]] = {
        "clean": {"defense": "none"},
        "cuda": {"defense": "none"},
        "cuda+at": {"defense": "at-linf", "defense_options": dict(protocol.at)},
        "cuda+rsk+ff": {"defense": "rsk+ff", "defense_options": dict(protocol.rsk_ff)},
    }
    return conditions[name]


def read_results(run_dir: Path) -> RunResults:
    """The results.json of the run in `run_dir`; UserInputError when it is missing or damaged."""
    results = RunResults.read(run_dir / RESULTS)
    if results is None:
        raise UserInputError(f"{run_dir} has no {RESULTS}: the run has not finished an epoch")
    return results


def is_complete(run_dir: Path) -> bool:
    """True when the run in `run_dir` has finished (its results.json says so)."""
    try:
        results = RunResults.read(run_dir / RESULTS)
    except (OSError, UserInputError):
        return False
    return results is not None and results.complete


def train_once(
    run_dir: Path,
    data_dir: Path,
    protocol: TrainingProtocol,
    settings: dict[str, Any],
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    name: str | None = None,
    command: str | None = None,
) -> Path:
    """Train on the saved dataset `data_dir` (its test split for testing) unless `run_dir` is finished.

    Args:
        settings: TrainConfig fields of the condition: defense, defense_options.
        name: the run's name in reports (default: the directory's name).
        command: the command line that started the protocol, recorded in the run's results.json.

    Returns:
        run_dir; an interrupted run is resumed from its checkpoint.
    """
    from unlearnable.training.config import TrainConfig
    from unlearnable.training.recipes import resolve_recipe
    from unlearnable.training.run_dir import check_finished_run
    from unlearnable.training.trainer import train

    name = name or run_dir.name
    config = TrainConfig(
        out=str(run_dir),
        model=protocol.model,
        recipe=resolve_recipe(protocol.recipe, **protocol.overrides),
        seed=seed,
        device=device,
        rotate=protocol.rotate,
        name=name,
        train=str(data_dir),
        test=str(data_dir),
        **settings,
    )
    train_set, test_set = load_saved(data_dir), load_saved(data_dir, "test")
    if is_complete(run_dir):
        check_finished_run(config, train_set, test_set)
        logger.info("%s: finished earlier, skipped", name)
        return run_dir
    train(config, train_set, test_set, resume=(run_dir / "checkpoint.pt").exists(), progress=progress, command=command)
    return run_dir


def run_table1(
    source: str,
    out: str | Path,
    protocol: TrainingProtocol,
    data_root: str | None = None,
    seed: int = 0,
    device: str | None = None,
    conditions: tuple[str, ...] = TABLE1_CONDITIONS,
    progress: bool = True,
    command: str | None = None,
) -> list[Path]:
    """Train every condition (skipping finished runs, resuming interrupted ones); returns the run dirs.

    `command` (the command line that started the protocol, or None) is recorded in every run's
    results.json. Every argument (conditions, model, recipe, seed, device, the output directory) is checked before the
    data copies are written.
    """
    unknown = [name for name in conditions if name not in TABLE1_CONDITIONS]
    if unknown:
        raise UserInputError(f"unknown condition {unknown[0]!r}; use some of {', '.join(TABLE1_CONDITIONS)}")
    check_protocol(protocol, [condition_config(name, protocol) for name in conditions], seed, device)
    out = Path(out)
    check_writable(out, [source, data_root])
    data = prepare_data(source, out, protocol, data_root)
    return [
        train_once(
            out / "runs" / name,
            data["clean"] if name == "clean" else data["cuda"],
            protocol,
            condition_config(name, protocol),
            seed,
            device,
            progress,
            command=command,
        )
        for name in conditions
    ]


def run_grid(
    data: dict[str, Path],
    defenses: dict[str, dict[str, Any]],
    out: str | Path,
    protocol: TrainingProtocol,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[tuple[str, str], Path]:
    """Train every (dataset, defense) pair: the defense × poison table.

    Args:
        data: {column name: saved dataset dir}, e.g. from `prepare_data` (clean and each poison).
        defenses: {row name: TrainConfig fields (defense, defense_options)}.
        out: runs go to out/runs/<column>/<row> (finished ones are skipped).
        command: the command line that started the grid, recorded in every run's results.json.

    Returns:
        {(column, row): run dir}.
    """
    runs = {}
    for column, data_dir in data.items():
        for row, settings in defenses.items():
            run_dir = Path(out) / "runs" / column / row
            runs[column, row] = train_once(
                run_dir, data_dir, protocol, settings, seed, device, progress, name=f"{column}/{row}", command=command
            )
    return runs


def last_accuracy(run_dir: Path) -> float:
    """The last-epoch clean test accuracy (%) of a finished run."""
    return read_results(run_dir).final["test_acc_last"]


def grid_table(runs: dict[tuple[str, str], Path]) -> list[str]:
    """Markdown lines: one row per defense, one column per dataset, last-epoch test accuracy (%)."""
    columns = list(dict.fromkeys(column for column, _ in runs))
    rows = list(dict.fromkeys(row for _, row in runs))
    lines = ["| defense | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = [f"{last_accuracy(runs[c, row]):.2f}" if (c, row) in runs else "" for c in columns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines
