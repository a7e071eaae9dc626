"""Audit a protected dataset: does it stay unlearnable against every defense the project has?

The data owner's question. A model is trained on the protected training set under a battery of
defenses, and on the clean data as the reference; each is tested on the clean test split. The
verdict compares the best defense with what the protection took away:

    lost      = clean − undefended          (accuracy the protection costs a trainer)
    regained  = best defense − undefended
    broken    when regained ≥ lost / 2      (a defense wins back at least half)
    holds     otherwise
    no effect when lost < 10 points         (the protection does not work even undefended)

Budgets: "quick" (the small CNN on a class-balanced subset, about 20 minutes on 2 CPU cores) and
"full" (CIFAR ResNet-18, the paper recipe, the whole dataset: a GPU job). Runs are kept under
OUT/runs/<data>/<defense>; an interrupted audit continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearnable.data import ImageDataset, load_dataset, save_dataset, stratified_subset
from unlearnable.errors import MissingSplitError, UserInputError
from unlearnable.experiments import Protocol, grid_table, last_accuracy, run_grid
from unlearnable.io import atomic_directory, write_json

MIN_EFFECT = 10.0
"""Points of clean accuracy below which a protection counts as having no effect at all."""


@dataclass(frozen=True)
class Budget:
    """A protocol (model, recipe, subset) and the battery of defenses it trains against."""

    protocol: Protocol
    defenses: dict[str, dict[str, Any]]


def _defense(spec: str, **options: Any) -> dict[str, Any]:
    return {"defense": spec, "defense_options": options}


BUDGETS = {
    # Cheap settings so the battery fits in about 20 minutes on 2 CPU cores: AT with 2 PGD steps,
    # UEraser with one draw (UEraser-Lite). Left out, as measured on CIFAR-10 with this protocol:
    # UEraser-Max (5 draws) and DAT, which do not learn in 8 epochs even on clean data (11.1% and
    # 14.3% clean test accuracy).
    "quick": Budget(
        Protocol(model="small", recipe="quick", overrides={"epochs": 8}, train_per_class=500, test_per_class=200),
        {"none": _defense("none"), "rsk+ff": _defense("rsk+ff"), "at-linf": _defense("at-linf", steps=2),
         "coin": _defense("coin"), "jpeg": _defense("jpeg"), "gray": _defense("gray"), "bdr": _defense("bdr"),
         "cutout": _defense("cutout"), "mixup": _defense("mixup"), "cutmix": _defense("cutmix"),
         "ueraser-lite": _defense("ueraser", draws=1), "rsk+ff+coin": _defense("rsk+ff+coin"),
         "deconv": _defense("deconv")}),
    "full": Budget(
        Protocol(model="resnet18", recipe="paper"),
        {"none": _defense("none"), "rsk+ff": _defense("rsk+ff"), "at-linf": _defense("at-linf"),
         "at-linf-8": _defense("at-linf", eps=8 / 255), "at-l2": _defense("at-l2"), "dat": _defense("dat"),
         "coin": _defense("coin"), "jpeg": _defense("jpeg"), "gray": _defense("gray"), "bdr": _defense("bdr"),
         "cutout": _defense("cutout"), "mixup": _defense("mixup"), "cutmix": _defense("cutmix"),
         "ueraser": _defense("ueraser"), "rsk+ff+coin": _defense("rsk+ff+coin"), "deconv": _defense("deconv")}),
}


def verdict(clean: float, results: dict[str, float]) -> str:
    """One line for the data owner from the clean reference and {defense: accuracy} ("none" included)."""
    undefended = results["none"]
    best = max((name for name in results if name != "none"), key=results.__getitem__)
    lost, regained = clean - undefended, results[best] - undefended
    figures = f"clean training {clean:.1f}%, undefended {undefended:.1f}%"
    if lost < MIN_EFFECT:
        return f"no protection: training on the protected data already reaches {undefended:.1f}% ({figures})"
    if regained >= lost / 2:
        return (f"protection broken by {best} at {results[best]:.1f}%: it wins back {regained:.1f} of the "
                f"{lost:.1f} points the protection took ({figures})")
    return (f"protection holds: the best defense, {best}, reaches {results[best]:.1f}% and wins back only "
            f"{regained:.1f} of {lost:.1f} points ({figures})")


def audit_data(data: str, clean: str | None, test: str | None, data_root: str | None) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(protected train, clean train, clean test) for an audit; a UserInputError names what is missing."""
    from unlearnable.show import load_source

    protected = load_dataset(data, "train", data_root)
    if clean is not None:
        clean_train = load_dataset(clean, "train", data_root)
    else:  # a dataset saved by `unlearnable poison` records its clean source
        clean_train = load_source(protected, data_root) if "attack" in protected.meta else None
        if clean_train is None:
            raise UserInputError(f"{data} does not lead back to its clean training data; pass the clean "
                                 f"dataset with --clean SPEC")
    if len(clean_train) != len(protected) or not (clean_train.labels == protected.labels).all():
        raise UserInputError(f"the clean data ({len(clean_train)} images) does not match {data} "
                             f"({len(protected)} images) label for label; pass the dataset it was made from")
    try:
        test_set = load_dataset(test or data, "test", data_root)
    except MissingSplitError:
        raise UserInputError(f"{data} has no test split; pass clean test data with --test SPEC") from None
    return protected, clean_train, test_set


def run_audit(data: str, out: str | Path, budget: str = "quick", clean: str | None = None, test: str | None = None,
              data_root: str | None = None, seed: int = 0, device: str | None = None,
              progress: bool = True) -> tuple[str, list[str]]:
    """Train the budget's battery on `data` and the clean reference; write OUT/audit.json.

    Returns:
        (verdict line, Markdown table lines of every run).
    """
    if budget not in BUDGETS:
        raise UserInputError(f"--budget {budget!r} is unknown; use one of {', '.join(BUDGETS)}")
    plan, out = BUDGETS[budget], Path(out)
    dirs = {"protected": out / "data" / "protected", "clean": out / "data" / "clean"}
    if not all((d / "meta.json").is_file() for d in dirs.values()):
        protected, clean_train, test_set = audit_data(data, clean, test, data_root)
        if plan.protocol.train_per_class is not None:
            protected = stratified_subset(protected, plan.protocol.train_per_class)
            clean_train = stratified_subset(clean_train, plan.protocol.train_per_class)
        if plan.protocol.test_per_class is not None:
            test_set = stratified_subset(test_set, plan.protocol.test_per_class)
        # The subset's clean original is the clean subset saved beside it (for the report's samples).
        protected.meta["source"] = {"spec": str(dirs["clean"]), "kind": "saved", "split": "train",
                                    "path": str(dirs["clean"].resolve())}
        for name, train_set in (("clean", clean_train), ("protected", protected)):
            with atomic_directory(dirs[name], overwrite=True) as tmp:
                save_dataset(tmp, train_set, test_set)
    runs = run_grid({"clean": dirs["clean"]}, {"none": plan.defenses["none"]}, out, plan.protocol, seed, device, progress)
    runs |= run_grid({"protected": dirs["protected"]}, plan.defenses, out, plan.protocol, seed, device, progress)
    results = {row: last_accuracy(path) for (column, row), path in runs.items() if column == "protected"}
    clean_acc = last_accuracy(runs["clean", "none"])
    line = verdict(clean_acc, results)
    write_json(out / "audit.json", {"data": data, "budget": budget, "verdict": line, "clean": clean_acc,
                                     "protected": results})
    return line, grid_table(runs)
