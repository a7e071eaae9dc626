"""Audit a protected dataset: does it stay unlearnable against every defense the project has?

The data owner's question. A model is trained on the protected training set under a battery of
defenses, and on the clean data as the reference; each is tested on the clean test split. The
verdict compares the best defense with what the protection took away:

    lost      = clean − undefended          (accuracy the protection costs a trainer)
    regained  = best defense − undefended
    broken    when regained ≥ lost / 2      (a defense wins back at least half)
    holds     otherwise
    no effect when lost < 10 points         (the protection does not work even undefended)
    cannot judge when clean − chance < max(2 × 10 points, 3 standard errors)   (see `judge_margin`)

Budgets: "quick" (the small CNN on a class-balanced subset, about 20 minutes on 2 CPU cores) and
"full" (CIFAR ResNet-18, the paper recipe, the whole dataset: a GPU job). Runs are kept under
OUT/runs/<data>/<defense>; an interrupted audit continues where it stopped.

Any collection. The quick budget works at 32×32 (WORKING_SIZE): every image is stretched to 32×32
(bilinear; an ImageFolder of mixed sizes is decoded at that size), the size the small CNN and the
quick recipe were tuned at, and about the most a 2-core CPU trains the battery at in 20 minutes
(cost grows with the pixels). A protection made at a larger size is audited at 32×32 too, and
shrinking also shrinks its blur, so the verdict is about a trainer who works at 32×32; the full
budget keeps the native size (a collection of mixed sizes needs an explicit `image_size` there). The
training batch fits the data (`fit_batch_size`): drop-last batches of the recipe's 256 would leave a
600-image set 2 steps an epoch, which measured 10.0% (chance) clean test accuracy on 600 CIFAR-10
images; batch 32 gave 37.4% (lr 0.2; 38.2% at lr 0.05: the learning rate is kept). Below the 5,000
images the quick budget was tuned at, it also trains for more epochs (`fit_epochs`), so that a model
sees as many images as on 5,000. When the data are too few to learn from even so, the verdict says it
cannot judge rather than "no protection".

Every argument (budget, model and battery, seed, device, image size, paths) is checked before any
data is read or written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unlearnable.app.experiments import (
    TrainingProtocol,
    check_protocol,
    check_writable,
    grid_table,
    last_accuracy,
    run_grid,
)
from unlearnable.data import ImageDataset, check_labels, load_dataset, load_saved, save_dataset, stratified_subset
from unlearnable.data.imagefolder import check_image_size
from unlearnable.errors import MissingSplitError, UserInputError
from unlearnable.io import atomic_directory, write_json

MIN_EFFECT = 10.0
"""Points of clean accuracy below which a protection counts as having no effect at all."""
JUDGE_SIGMAS = 3.0
"""Standard errors of the clean test accuracy by which it must clear chance (see `judge_margin`)."""
MIN_BATCH = 8
"""The smallest training batch the audit uses; fewer training images than this cannot be audited."""
STEPS_PER_EPOCH = 16
"""`fit_batch_size` keeps at least this many steps an epoch (the quick budget on 5,000 images has 19)."""
TUNED_IMAGES = 5_000
"""The training-set size the quick budget's 8 epochs were tuned at (500 images per class of CIFAR-10)."""
MAX_EPOCHS = 100
"""`fit_epochs` trains at most this many epochs, however small the data."""
WORKING_SIZE: dict[str, int | None] = {"quick": 32, "full": None}
"""Image side each budget trains at (None: the data's own size)."""


@dataclass(frozen=True)
class Budget:
    """A protocol (model, recipe, subset) and the battery of defenses it trains against."""

    protocol: TrainingProtocol
    defenses: dict[str, dict[str, Any]]


def _defense(spec: str, **options: Any) -> dict[str, Any]:
    return {"defense": spec, "defense_options": options}


BUDGETS = {
    # Cheap settings so the battery fits in about 25 minutes on 2 CPU cores: AT with 2 PGD steps,
    # UEraser with one draw (UEraser-Lite). Left out, as measured on CIFAR-10 with this protocol:
    # UEraser-Max (5 draws) and DAT, which do not learn in 8 epochs even on clean data (11.1% and
    # 14.3% clean test accuracy).
    "quick": Budget(
        TrainingProtocol(
            model="small", recipe="quick", overrides={"epochs": 8}, train_per_class=500, test_per_class=200
        ),
        {
            "none": _defense("none"),
            "rsk+ff": _defense("rsk+ff"),
            "at-linf": _defense("at-linf", steps=2),
            "at-linf-8": _defense("at-linf", eps=8 / 255, steps=2),
            "coin": _defense("coin"),
            "jpeg": _defense("jpeg"),
            "gray": _defense("gray"),
            "bdr": _defense("bdr"),
            "cutout": _defense("cutout"),
            "mixup": _defense("mixup"),
            "cutmix": _defense("cutmix"),
            "ueraser-lite": _defense("ueraser", draws=1),
            "rsk+ff+coin": _defense("rsk+ff+coin"),
            "deconv": _defense("deconv"),
            "deconv-spectrum": _defense("deconv-spectrum"),
            "deconv+rsk+ff": _defense("deconv+rsk+ff"),
            "notch": _defense("notch"),
            "unshift": _defense("unshift"),
            "unshift+jpeg": _defense("unshift+jpeg"),
            # Orthogonal projection's published 20 epochs are ~980 SGD steps on all of CIFAR-10 but 100 on
            # 5,000 images, where the linear model learns little but the mean image (27.75% on clean data);
            # 200 epochs restore the published step count (50.50% clean, 54.60% on OPS).
            "ortho-proj": _defense("ortho-proj", epochs=200),
        },
    ),
    "full": Budget(
        TrainingProtocol(model="resnet18", recipe="paper"),
        {
            "none": _defense("none"),
            "rsk+ff": _defense("rsk+ff"),
            "at-linf": _defense("at-linf"),
            "at-linf-8": _defense("at-linf", eps=8 / 255),
            "at-l2": _defense("at-l2"),
            "dat": _defense("dat"),
            "coin": _defense("coin"),
            "jpeg": _defense("jpeg"),
            "gray": _defense("gray"),
            "bdr": _defense("bdr"),
            "cutout": _defense("cutout"),
            "mixup": _defense("mixup"),
            "cutmix": _defense("cutmix"),
            "ueraser": _defense("ueraser"),
            "rsk+ff+coin": _defense("rsk+ff+coin"),
            "deconv": _defense("deconv"),
            "deconv-spectrum": _defense("deconv-spectrum"),
            "deconv+rsk+ff": _defense("deconv+rsk+ff"),
            "notch": _defense("notch"),
            "unshift": _defense("unshift"),
            "unshift+jpeg": _defense("unshift+jpeg"),
            "ortho-proj": _defense("ortho-proj"),
            # D-VAE at its published 2 × 60 epochs: hours on a CPU, so only in the GPU battery. Diffusion
            # purification needs a DDPM checkpoint trained on clean data, so it is in neither.
            "dvae": _defense("dvae"),
        },
    ),
}


def judge_margin(chance: float, test_images: int) -> float:
    """Points above chance that clean training must reach for the audit to judge a protection.

    A protection can take at most clean − chance points (an undefended model cannot usefully fall
    below chance), and the verdict calls MIN_EFFECT points "no protection": so the room must be at
    least 2 × MIN_EFFECT for "no protection" and "holds" to be told apart by more than the smallest
    effect, and JUDGE_SIGMAS binomial standard errors of an accuracy at chance on `test_images`
    images, so that the clean accuracy is not chance plus test-sampling luck (it decides on tiny test
    sets: 3σ is 20 points at 10% chance on 20 test images).
    """
    p = chance / 100
    sigma = 100 * math.sqrt(p * (1 - p) / max(test_images, 1))
    return max(2 * MIN_EFFECT, JUDGE_SIGMAS * sigma)


def cannot_judge(clean: float, chance: float, test_images: int) -> str | None:
    """The "cannot judge" verdict when clean training does not clear chance by `judge_margin`, else None."""
    margin = judge_margin(chance, test_images)
    if clean - chance >= margin:
        return None
    return (
        f"cannot judge: clean training reaches only {clean:.1f}% on this little data (chance is {chance:.1f}%); "
        f"an audit needs clean training at least {margin:.0f} points above chance to see what a protection "
        f"takes away: give more training images per class"
    )


def chance_accuracy(test_labels: torch.Tensor, num_classes: int) -> float:
    """Test accuracy (%) of always answering the most frequent test class."""
    return 100 * float(torch.bincount(test_labels, minlength=num_classes).max()) / max(len(test_labels), 1)


def protection_status(clean: float, undefended: float, defended: float) -> str:
    """The audit's rule on accuracies (%): "no protection" when the protection takes less than
    MIN_EFFECT points, "broken" when the defense wins back at least half of them, else "holds"."""
    lost = clean - undefended
    if lost < MIN_EFFECT:
        return "no protection"
    return "broken" if defended - undefended >= lost / 2 else "holds"


def verdict(
    clean: float, results: dict[str, float], chance: float | None = None, test_images: int | None = None
) -> str:
    """One line for the data owner from the clean reference and {defense: accuracy} ("none" included).

    With `chance` (%) and `test_images`, data too small to learn from gives "cannot judge: ..." first.
    """
    if chance is not None:
        refusal = cannot_judge(clean, chance, test_images or 0)
        if refusal is not None:
            return refusal
    undefended = results["none"]
    best = max((name for name in results if name != "none"), key=results.__getitem__)
    lost, regained = clean - undefended, results[best] - undefended
    figures = f"clean training {clean:.1f}%, undefended {undefended:.1f}%"
    status = protection_status(clean, undefended, results[best])
    if status == "no protection":
        return f"no protection: training on the protected data already reaches {undefended:.1f}% ({figures})"
    if status == "broken":
        return (
            f"protection broken by {best} at {results[best]:.1f}%: it wins back {regained:.1f} of the "
            f"{lost:.1f} points the protection took ({figures})"
        )
    return (
        f"protection holds: the best defense, {best}, reaches {results[best]:.1f}% and wins back only "
        f"{regained:.1f} of {lost:.1f} points ({figures})"
    )


def audit_data(
    data: str, clean: str | None, test: str | None, data_root: str | None, image_size: int | None = None
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(protected train, clean train, clean test) for an audit, at `image_size` if given; a UserInputError names what is missing."""
    from unlearnable.data import stretch_dataset
    from unlearnable.data.lineage import load_source

    protected = load_dataset(data, "train", data_root, image_size=image_size)
    clean_train: ImageDataset | None
    if clean is not None:
        clean_train = load_dataset(clean, "train", data_root, image_size=image_size)
    else:  # a dataset saved by `unlearnable poison` records its clean source
        clean_train = load_source(protected, data_root) if "attack" in protected.meta else None
        if clean_train is None:
            raise UserInputError(
                f"{data} does not lead back to its clean training data; pass the clean dataset with --clean SPEC"
            )
        if image_size is not None:
            clean_train = stretch_dataset(clean_train, image_size)
    try:
        test_set = load_dataset(test or data, "test", data_root, image_size=image_size)
    except MissingSplitError:
        if test is None:
            raise UserInputError(f"{data} has no test split; pass clean test data with --test SPEC") from None
        # --test names the test images themselves: a folder of class folders without train/ and test/
        test_set = load_dataset(test, "train", data_root, image_size=image_size)
    for name, ds in (
        (data, protected),
        (clean or "the clean source", clean_train),
        (test or f"{data} test split", test_set),
    ):
        check_labels(ds, name)
    if len(clean_train) != len(protected) or not (clean_train.labels == protected.labels).all():
        raise UserInputError(
            f"the clean data ({len(clean_train)} images) does not match {data} "
            f"({len(protected)} images) label for label; pass the dataset it was made from"
        )
    if test_set.num_classes != protected.num_classes or test_set.shape != protected.shape:
        raise UserInputError(
            f"the test data ({test_set.num_classes} classes, {_shape(test_set)}) does not fit {data} "
            f"({protected.num_classes} classes, {_shape(protected)}); pass clean test images of the "
            f"same classes with --test SPEC"
        )
    return protected, clean_train, test_set


def _shape(ds: ImageDataset) -> str:
    return "×".join(map(str, ds.shape))


def fit_batch_size(train_images: int, recipe_batch: int) -> int:
    """The training batch for `train_images` images: the recipe's, or the largest power of two that leaves
    STEPS_PER_EPOCH steps an epoch, at least MIN_BATCH. A UserInputError when fewer images than MIN_BATCH."""
    if train_images < MIN_BATCH:
        raise UserInputError(
            f"the training data has {train_images} images; an audit trains models on batches of "
            f"at least {MIN_BATCH}: give more images"
        )
    fitted = 1 << max(0, (train_images // STEPS_PER_EPOCH).bit_length() - 1)
    return min(recipe_batch, max(MIN_BATCH, fitted))


def check_audit_args(
    budget: str, seed: int, device: str | None, image_size: int | None, out: Path, inputs: tuple[str | None, ...] = ()
) -> Budget:
    """Every audit argument checked before any data is read or written; returns the budget's plan."""
    if budget not in BUDGETS:
        raise UserInputError(f"--budget {budget!r} is unknown; use one of {', '.join(BUDGETS)}")
    plan = BUDGETS[budget]
    check_image_size(image_size)
    check_protocol(plan.protocol, plan.defenses.values(), seed, device)
    check_writable(out, inputs)
    return plan


def run_audit(
    data: str,
    out: str | Path,
    budget: str = "quick",
    clean: str | None = None,
    test: str | None = None,
    data_root: str | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    image_size: int | None = None,
    command: str | None = None,
) -> tuple[str, list[str]]:
    """Train the budget's battery on `data` and the clean reference; write OUT/audit.json.

    Args:
        image_size: the working side S (images stretched to S×S); None: the budget's WORKING_SIZE.
        command: the command line that started the audit, recorded in every run's results.json.

    Returns:
        (verdict line, ending with the setting it was reached at; Markdown table lines of every run).
    """
    out = Path(out)
    plan = check_audit_args(budget, seed, device, image_size, out, (data, clean, test, data_root))
    size = image_size if image_size is not None else WORKING_SIZE.get(budget)
    dirs = {"protected": out / "data" / "protected", "clean": out / "data" / "clean"}
    if not all((d / "meta.json").is_file() for d in dirs.values()):
        protected, clean_train, test_set = audit_data(data, clean, test, data_root, size)
        if plan.protocol.train_per_class is not None:
            protected = stratified_subset(protected, plan.protocol.train_per_class)
            clean_train = stratified_subset(clean_train, plan.protocol.train_per_class)
        if plan.protocol.test_per_class is not None:
            test_set = stratified_subset(test_set, plan.protocol.test_per_class)
        fitted_protocol(plan.protocol, len(protected))  # too few images to train on: fail before writing
        # The subset's clean original is the clean subset saved beside it (for the report's samples).
        protected.meta["source"] = {
            "spec": str(dirs["clean"]),
            "kind": "saved",
            "split": "train",
            "path": str(dirs["clean"].resolve()),
        }
        protected.meta["audit_image_size"] = size
        for name, train_set in (("clean", clean_train), ("protected", protected)):
            with atomic_directory(dirs[name], overwrite=True) as tmp:
                save_dataset(tmp, train_set, test_set)
    saved = load_saved(dirs["protected"])
    test_labels = load_saved(dirs["protected"], "test").labels
    if size is not None and saved.shape[1:] != (size, size):
        raise UserInputError(
            f"{out} holds the data copies of an earlier audit at {saved.shape[1]}×{saved.shape[2]}, "
            f"not {size}×{size}; choose another --out"
        )
    from unlearnable.training.recipes import resolve_recipe

    protocol = fitted_protocol(plan.protocol, len(saved))
    recipe = resolve_recipe(protocol.recipe, **protocol.overrides)
    runs = run_grid(
        {"clean": dirs["clean"]}, {"none": plan.defenses["none"]}, out, protocol, seed, device, progress, command
    )
    runs |= run_grid({"protected": dirs["protected"]}, plan.defenses, out, protocol, seed, device, progress, command)
    results = {row: last_accuracy(path) for (column, row), path in runs.items() if column == "protected"}
    clean_acc = last_accuracy(runs["clean", "none"])
    chance = chance_accuracy(test_labels, saved.num_classes)
    line = verdict(clean_acc, results, chance, len(test_labels))
    setup = (
        f"{budget} budget at {saved.shape[1]}×{saved.shape[2]}"
        + (" (images stretched to this working size)" if size is not None else " (the data's own size)")
        + f", {len(saved)} training and {len(test_labels)} test images, batch {recipe.batch_size}, "
        f"{recipe.epochs} epochs"
    )
    write_json(
        out / "audit.json",
        {
            "data": data,
            "budget": budget,
            "verdict": line,
            "clean": clean_acc,
            "chance": chance,
            "judge_margin": judge_margin(chance, len(test_labels)),
            "protected": results,
            "setup": setup,
            "image_size": list(saved.shape[1:]),
            "batch_size": recipe.batch_size,
            "epochs": recipe.epochs,
        },
    )
    return f"{line} [{setup}]", grid_table(runs)


def fitted_protocol(protocol: TrainingProtocol, train_images: int) -> TrainingProtocol:
    """`protocol` with the training batch fitted to `train_images` (`fit_batch_size`) and, for a subset
    protocol (the quick budget), the epochs that `fit_epochs` gives."""
    from unlearnable.training.recipes import resolve_recipe

    recipe = resolve_recipe(protocol.recipe, **protocol.overrides)
    overrides = dict(protocol.overrides)
    batch = fit_batch_size(train_images, recipe.batch_size)
    if batch != recipe.batch_size:
        overrides["batch_size"] = batch
    if protocol.train_per_class is not None:
        epochs = fit_epochs(train_images, recipe.epochs)
        if epochs != recipe.epochs:
            overrides["epochs"] = epochs
    return protocol if overrides == protocol.overrides else dataclasses.replace(protocol, overrides=overrides)


def fit_epochs(train_images: int, epochs: int) -> int:
    """Epochs that show a model at least as many images as `epochs` over TUNED_IMAGES do (at most MAX_EPOCHS).

    The quick budget was tuned on 5,000 images for 8 epochs (40,000 images seen); a collection of 500
    photos trained 8 epochs has seen a tenth of that and stays near chance (21.5% clean, chance 19.6%,
    on 500 clothing photos), so small data trains for more epochs instead: 80 for 500 images, 34 for 1,192.
    """
    return min(MAX_EPOCHS, max(epochs, math.ceil(epochs * TUNED_IMAGES / train_images)))
