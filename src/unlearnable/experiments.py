"""Protocols: the paper's Table 1 (four conditions) on a dataset, at paper scale or on a CPU budget.

    clean          train on the clean training set
    cuda           train on the CUDA-protected set, no defense
    cuda+at        the same with PGD adversarial training (L∞ 4/255)
    cuda+rsk+ff    the same with random sharpening + DCT low-pass filtering

The protected set is made once (CUDA with the paper's parameters: k = 3, p_b = 0.3, seed 0 on the
full training split, so the key is the published one; a subset is taken afterwards) and saved under
OUT/data/, the runs go to OUT/runs/<condition>/, the report to OUT/report/. Finished runs are
skipped and interrupted ones resumed, so re-running the command continues where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearnable.data import ImageDataset, is_saved_dataset, load_dataset, load_saved, save_dataset, stratified_subset
from unlearnable.io import atomic_directory
from unlearnable.protect import poison_dataset

CUDA_PAPER = {"kernel_size": 3, "blur_parameter": 0.3, "seed": 0}
CONDITIONS = ("clean", "cuda", "cuda+at", "cuda+rsk+ff")


@dataclass
class Protocol:
    """What to train: the model, the recipe (with overrides) and the data budget.

    Attributes:
        model: a name from unlearnable.models.
        recipe: a name from unlearnable.train.RECIPES.
        overrides: recipe fields to change (e.g. {"epochs": 10}).
        train_per_class / test_per_class: stratified subset sizes (None = everything).
        at: the adversarial-training condition's attack (SPEC §5).
        rotate: RandomRotation(15°) in the pipeline (the CIFAR-100 recipe).
    """

    model: str = "resnet18"
    recipe: str = "paper"
    overrides: dict[str, Any] = field(default_factory=dict)
    train_per_class: int | None = None
    test_per_class: int | None = None
    at: dict[str, Any] = field(default_factory=lambda: {"norm": "linf", "eps": 4 / 255, "steps": 10})
    rotate: bool = False


# The CPU demo: Fashion-MNIST (offline here through Debian's package), the small CNN and the quick
# recipe on 1,000 training images per class, 8 epochs; adversarial training with 2 PGD steps instead
# of 10 so that the four conditions fit in 15 minutes on 2 cores.
DEMO = Protocol(model="small", recipe="quick", overrides={"epochs": 8}, train_per_class=1000, test_per_class=300,
                at={"norm": "linf", "eps": 4 / 255, "steps": 2})


def summarize(runs: list[Path]) -> list[str]:
    """Lines of a plain-text table (condition, last and best test accuracy, wall time) and the effect."""
    acc: dict[str, float] = {}
    lines = [f"{'condition':<14}{'test acc':>9}{'best':>8}{'time':>8}"]
    for run in runs:
        final = json.loads((run / "results.json").read_text())["final"]
        acc[run.name] = final["test_acc_last"]
        lines.append(f"{run.name:<14}{final['test_acc_last']:>8.2f}%{final['test_acc_best']:>7.2f}%"
                     f"{final['wall_seconds']:>7.0f}s")
    if {"clean", "cuda", "cuda+rsk+ff"} <= acc.keys():
        lost = acc["clean"] - acc["cuda"]
        regained = acc["cuda+rsk+ff"] - acc["cuda"]
        lines.append(f"CUDA costs {lost:.1f} points of clean accuracy; RSK+FF wins back {regained:.1f} of them "
                     f"({100 * regained / lost:.0f}%)." if lost > 0 else "CUDA did not lower the accuracy here.")
    return lines


def prepare_data(source: str, out: Path, protocol: Protocol, data_root: str | None = None,
                 attack_params: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Save the clean and the CUDA-protected training sets (with the clean test split) under out/data.

    Returns the two saved-dataset directories (clean, cuda); existing ones are reused.
    """
    clean_dir, cuda_dir = out / "data" / "clean", out / "data" / "cuda"
    if is_saved_dataset(clean_dir) and is_saved_dataset(cuda_dir):
        return clean_dir, cuda_dir
    train = load_dataset(source, "train", data_root)
    test = load_dataset(source, "test", data_root)
    # Poison the whole split so that the kernels and per-image draws are the published ones, then subset.
    protected = poison_dataset(train, "cuda", **(attack_params or CUDA_PAPER))
    if protocol.train_per_class is not None:
        train = stratified_subset(train, protocol.train_per_class)
        protected = subset_protected(protected, train.meta["subset"]["indices"])
    if protocol.test_per_class is not None:
        test = stratified_subset(test, protocol.test_per_class)
    with atomic_directory(clean_dir, overwrite=True) as tmp:
        save_dataset(tmp, train, test)
    # The protected set's source is the clean set saved beside it, so `show` and the report can
    # put each protected image next to its clean original.
    protected.meta["source"] = {"spec": str(clean_dir), "kind": "saved", "split": "train", "path": str(clean_dir.resolve())}
    with atomic_directory(cuda_dir, overwrite=True) as tmp:
        save_dataset(tmp, protected, test)
    return clean_dir, cuda_dir


def subset_protected(protected: ImageDataset, keep: list[int]) -> ImageDataset:
    """The images at `keep` of a protected set, with the key's poisoned indices renumbered."""
    poisoned = np.zeros(len(protected), dtype=bool)
    poisoned[protected.meta["poisoned_indices"]] = True
    sub = protected.subset(keep)
    sub.meta["poisoned_indices"] = np.flatnonzero(poisoned[keep]).tolist()
    sub.meta["subset"] = {"indices": list(keep)}
    return sub


def condition_config(name: str, protocol: Protocol) -> dict[str, Any]:
    """The defense and adversarial settings of one Table-1 condition."""
    return {
        "clean": {"defense": "none", "adversarial": None},
        "cuda": {"defense": "none", "adversarial": None},
        "cuda+at": {"defense": "none", "adversarial": dict(protocol.at)},
        "cuda+rsk+ff": {"defense": "rsk+ff", "adversarial": None},
    }[name]


def is_complete(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "results.json").read_text()).get("status") == "complete"
    except (OSError, json.JSONDecodeError):
        return False


def run_table1(source: str, out: str | Path, protocol: Protocol, data_root: str | None = None,
               seed: int = 0, device: str | None = None, conditions: tuple[str, ...] = CONDITIONS,
               progress: bool = True) -> list[Path]:
    """Train every condition (skipping finished runs, resuming interrupted ones); returns the run dirs."""
    from unlearnable.train import TrainConfig, resolve_recipe, train

    out = Path(out)
    clean_dir, cuda_dir = prepare_data(source, out, protocol, data_root)
    test = load_saved(clean_dir, "test")
    recipe = resolve_recipe(protocol.recipe, **protocol.overrides)
    runs = []
    for name in conditions:
        run_dir = out / "runs" / name
        runs.append(run_dir)
        if is_complete(run_dir):
            print(f"{name}: finished earlier, skipped")
            continue
        data_dir = clean_dir if name == "clean" else cuda_dir
        config = TrainConfig(out=str(run_dir), model=protocol.model, recipe=recipe, seed=seed, device=device,
                             rotate=protocol.rotate, name=name, train=str(data_dir), test=str(data_dir),
                             **condition_config(name, protocol))
        train(config, load_saved(data_dir), test, resume=(run_dir / "checkpoint.pt").exists(), progress=progress)
    return runs
