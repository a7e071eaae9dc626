"""`unlearnable train`: train a model on a (protected) dataset with a defense; writes RUN/results.json.

Adversarial training is part of the defense chain (``--defense rsk+ff+at-linf --eps 0.0157 --steps
10``); the older ``--adversarial linf|l2`` and ``--at-steps N`` are rewritten into that chain with a
deprecation line. Without --model / --recipe the run takes resnet18 / paper on CUDA and small /
quick on the CPU (saying so). Before the first epoch the command prints what the run will cost,
from a speed measured on this machine (`unlearnable.training.cost`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from unlearnable import params as P
from unlearnable.app.cli.common import command_line, names
from unlearnable.defenses import DEFENSES, STAGES
from unlearnable.errors import UserInputError
from unlearnable.models import MODELS
from unlearnable.training import RECIPES

log = logging.getLogger(__name__)

GPU_DEFAULTS = {"model": "resnet18", "recipe": "paper"}
"""--model and --recipe when the run trains on CUDA: the paper's setting."""
CPU_DEFAULTS = {"model": "small", "recipe": "quick"}
"""--model and --recipe when the run trains on the CPU: minutes instead of days."""
PGD_HOOKS = ("at-linf", "at-l2")
"""Hooks that run `steps` extra forward + backward passes per batch (PGD)."""
DEFAULT_PGD_STEPS = 10


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a model on a (protected) dataset with a defense; writes RUN/results.json"
    )
    p.add_argument(
        "--train", required=True, metavar="DATA", help="training data: dataset name, path, or saved (protected) dataset"
    )
    p.add_argument("--test", metavar="DATA", help="test data (default: the test split of --train)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument(
        "--defense",
        default="none",
        help="defense chain: 'none' (default) or a '+'-chain, e.g. rsk+ff, cutmix, rsk+ff+at-linf "
        "(adversarial training); by stage: "
        + "; ".join(f"{description}: {names(DEFENSES, stage=stage)}" for stage, description in STAGES.items())
        + " (`unlearnable list` says what each does)",
    )
    p.add_argument(
        "--model",
        help=f"{names(MODELS)} (default: {GPU_DEFAULTS['model']} on CUDA, {CPU_DEFAULTS['model']} on the CPU)",
    )
    p.add_argument(
        "--recipe",
        help=f"{names(RECIPES)} (default: {GPU_DEFAULTS['recipe']} on CUDA, {CPU_DEFAULTS['recipe']} on the CPU)",
    )
    p.add_argument("--epochs", type=P.POSITIVE_INT, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=P.POSITIVE_INT, help="override the recipe's batch size")
    p.add_argument("--lr", type=P.POSITIVE, help="override the recipe's learning rate")
    p.add_argument("--weight-decay", type=P.NONNEGATIVE, help="override the recipe's weight decay")
    p.add_argument(
        "--eps",
        type=P.POSITIVE,
        help="PGD radius of at-linf / at-l2 in --defense (default 4/255 for at-linf, 0.5 for at-l2)",
    )
    p.add_argument("--steps", type=P.POSITIVE_INT, help="steps of at-linf, at-l2 or dat in --defense (default 10)")
    p.add_argument("--filter-size", type=int, choices=(3, 5, 7), help="dat's filter size: 3, 5 or 7 (default 5)")
    p.add_argument("--mix-alpha", type=P.POSITIVE, help="mixup / cutmix: λ ~ Beta(α, α) (default 1: uniform)")
    p.add_argument(
        "--diffusion-checkpoint",
        metavar="PATH",
        help="diffpure's DDPM trained on clean images (python bench/train_diffusion.py makes one)",
    )
    p.add_argument(
        "--t-star", type=P.Interval(float, 0, 1), help="diffpure's diffusion time as a fraction of T (default 0.1)"
    )
    p.add_argument(
        "--imagenet-variant",
        action="store_true",
        help="ff keeps int(0.4·N·p/100) frequencies per axis, the published ImageNet-100 setting",
    )
    p.add_argument(
        "--adversarial",
        choices=("linf", "l2"),
        help="deprecated: add at-linf / at-l2 to --defense instead (--adversarial linf = --defense ...+at-linf)",
    )
    p.add_argument(
        "--at-steps", type=P.POSITIVE_INT, help="deprecated: use --steps (with at-linf / at-l2 in --defense)"
    )
    p.add_argument("--rotate", action="store_true", help="RandomRotation(15°) after the flip (the CIFAR-100 recipe)")
    p.add_argument(
        "--augment",
        default="auto",
        choices=("auto", "crop", "resized-crop"),
        help="crop: RandomCrop(pad 4) (CIFAR); resized-crop: RandomResizedCrop (ImageNet); auto: "
        "resized-crop for images of at least 64×64 (default)",
    )
    p.add_argument(
        "--data-placement",
        default="auto",
        choices=("auto", "device", "stream"),
        help="device: copy the training images to the device; stream: read batches from the (memory-mapped) "
        "dataset; auto: device when they fit (default)",
    )
    p.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="under torchrun: BatchNorm statistics over the global batch (CUDA only)",
    )
    p.add_argument(
        "--train-per-class", type=P.POSITIVE_INT, help="train on a stratified subset of this many images per class"
    )
    p.add_argument(
        "--test-per-class", type=P.POSITIVE_INT, help="test on a stratified subset of this many images per class"
    )
    p.add_argument("--seed", type=P.SEED, default=0)
    p.add_argument("--device", type=P.device, default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--name", help="run name in reports (default: the --out folder name)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (results.json, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    p.set_defaults(func=run)
    return p


# --- the command line's meaning ------------------------------------------------------------------


def recipe_overrides(args: argparse.Namespace) -> dict:
    """Recipe fields given on the command line (None = keep the recipe's value)."""
    fields = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay}
    return {k: v for k, v in fields.items() if v is not None}


def defense_options(args: argparse.Namespace) -> dict:
    """Options of the --defense chain given on the command line (absent = the defense's default).

    On a command line that still has --adversarial (before `rewrite_deprecated`), --eps is that
    option's radius and is left out.
    """
    options = {
        "steps": args.steps,
        "filter_size": args.filter_size,
        "mix_alpha": args.mix_alpha,
        "imagenet_variant": True if args.imagenet_variant else None,
        "checkpoint": args.diffusion_checkpoint,
        "t_star": args.t_star,
    }
    if args.adversarial is None:
        options["eps"] = args.eps
    return {k: v for k, v in options.items() if v is not None}


def chain_names(spec: str) -> list[str]:
    """The names of a defense chain ("rsk+ff" → ["rsk", "ff"]; "none" → [])."""
    parts = [part.strip() for part in spec.strip().lower().split("+")]
    return [] if parts == ["none"] else parts


def rewrite_deprecated(args: argparse.Namespace) -> tuple[argparse.Namespace, str | None]:
    """--adversarial NORM and --at-steps N as the defense chain: (the rewritten args, the deprecation line).

    --adversarial linf appends +at-linf to --defense (or replaces "none"); --at-steps N becomes
    --steps N. --eps is then the radius of that hook, as it is for a hook given in the chain.
    Raises UserInputError when --defense already has a model-in-the-loop step, or when --at-steps
    and --steps disagree.
    """
    if args.adversarial is None and args.at_steps is None:
        return args, None
    if args.adversarial is None:  # as before: --at-steps applied to --adversarial only
        return (
            argparse.Namespace(**{**vars(args), "at_steps": None}),
            f"--at-steps {args.at_steps} is deprecated and ignored without --adversarial; give --steps with "
            f"at-linf or at-l2 in --defense",
        )
    hooks = [name for name in chain_names(args.defense) if name in DEFENSES.names(stage="hook")]
    hook = f"at-{args.adversarial}"
    if hooks:
        raise UserInputError(
            f"--adversarial {args.adversarial} adds {hook} to --defense {args.defense}, which already "
            f"has the model-in-the-loop step {hooks[0]} (at most one); drop --adversarial"
        )
    if args.at_steps is not None and args.steps is not None and args.at_steps != args.steps:
        raise UserInputError(
            f"--at-steps {args.at_steps} and --steps {args.steps} disagree: --at-steps is the old "
            f"name of --steps; give --steps only"
        )
    defense = hook if not chain_names(args.defense) else f"{args.defense}+{hook}"
    steps = args.at_steps if args.at_steps is not None else args.steps
    old = f"--adversarial {args.adversarial}" + (f" --at-steps {args.at_steps}" if args.at_steps is not None else "")
    new = f"--defense {defense}" + (f" --steps {steps}" if args.at_steps is not None else "")
    rewritten = argparse.Namespace(
        **{**vars(args), "defense": defense, "steps": steps, "adversarial": None, "at_steps": None}
    )
    return rewritten, f"{old} is deprecated and will be removed; use {new} (the same training)"


def on_cuda(device: str | None) -> bool:
    """Whether the run trains on CUDA: --device cuda[:N], or no --device on a machine with CUDA."""
    if device is not None:
        return device.split(":")[0] == "cuda"
    import torch

    return torch.cuda.is_available()


def resolve_defaults(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(model, recipe, the line saying which defaults were taken or None) for --model / --recipe not given."""
    if args.model is not None and args.recipe is not None:
        return args.model, args.recipe, None
    cuda = on_cuda(args.device)
    defaults = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    model, recipe = args.model or defaults["model"], args.recipe or defaults["recipe"]
    if cuda:
        return model, recipe, None
    taken = " ".join(
        f"--{key} {value}" for key, value in (("model", model), ("recipe", recipe)) if getattr(args, key) is None
    )
    other = " ".join(f"--{key} {GPU_DEFAULTS[key]}" for key in ("model", "recipe") if getattr(args, key) is None)
    return (
        model,
        recipe,
        (
            f"training on the CPU, so {taken} (the CPU defaults); give {other} for the paper's "
            f"setting (`unlearnable list` shows the others)"
        ),
    )


# --- what the run will cost ----------------------------------------------------------------------


def count(n: float) -> str:
    """3000000 → "3.0 M", 45000 → "45 k", 800 → "800"."""
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e4:
        return f"{n / 1e3:.0f} k"
    return f"{n:,.0f}"


def duration(seconds: float) -> str:
    """~40 s, ~12 min, ~4.1 h, ~3.2 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def passes(defense: str, options: dict) -> tuple[int, str]:
    """Forward + backward passes per training image of the chain's step hook, and how to say it."""
    hooks = [name for name in chain_names(defense) if name in DEFENSES.names(stage="hook")]
    if not hooks:
        return 1, ""
    if hooks[0] in PGD_HOOKS:
        steps = options.get("steps", DEFAULT_PGD_STEPS)
        return steps + 1, f" × {steps + 1} passes ({hooks[0]}, {steps} PGD steps)"
    return 1, f" (plus the passes of {hooks[0]}, not counted)"


def cost_line(
    images: int,
    epochs: int,
    speed: float | None,
    model: str,
    device: str,
    defense: str,
    options: dict,
    processes: int = 1,
    done: int = 0,
) -> str:
    """ "cost: 50,000 images × 60 epochs = 3.0 M image-steps; ~4.1 h at ~205 images/s measured here (resnet18, cpu)"."""
    left = epochs - done
    factor, hook = passes(defense, options)
    line = (
        f"cost: {images:,} images × {left} epoch{'s' if left != 1 else ''}"
        + (f" (of {epochs}; {done} done)" if done else "")
        + f" = {count(images * left)} image-steps{hook}"
    )
    if speed is None:
        return line
    where = f"{model}, {device}" + (f", {processes} processes" if processes > 1 else "")
    seconds = images * left * factor / (speed * processes)
    return line + f"; ~{duration(seconds)} at ~{speed:,.0f} images/s measured here ({where})"


def report_cost(
    args: argparse.Namespace, model: str, recipe: Any, options: dict, train_set: Any, device: Any, processes: int
) -> None:
    """Print what the run will cost, unless it will not train (a finished run, or one that is refused)."""
    from unlearnable.training.run_dir import run_state

    state = run_state(args.out)
    if state["files"] and (not args.resume or state["complete"]):
        return  # returned as it is, or refused by the trainer
    done = (state["epoch"] or 0) if args.resume else 0
    try:
        from unlearnable.training.cost import measure_speed

        speed: float | None = measure_speed(model, train_set.shape, train_set.num_classes, device, recipe.batch_size)
    except (RuntimeError, ValueError) as e:  # the run reports a real problem itself
        log.debug("speed not measured: %s", e)
        speed = None
    print(
        cost_line(
            len(train_set),
            recipe.epochs,
            speed,
            model,
            str(device),
            args.defense,
            options,
            processes,
            min(done, recipe.epochs),
        )
    )


# --- the command ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    args, deprecated = rewrite_deprecated(args)
    if deprecated:
        log.warning(deprecated)
    from unlearnable import distributed
    from unlearnable.data import load_dataset, stratified_subset
    from unlearnable.defenses import training_defense
    from unlearnable.training import resolve_recipe
    from unlearnable.training.trainer import TrainConfig, resolve_device, train

    model, recipe_name, defaults = resolve_defaults(args)
    MODELS.check(model)  # these three fail before any data is read
    recipe = resolve_recipe(recipe_name, **recipe_overrides(args))
    options = defense_options(args)
    training_defense(args.defense, **options)
    world = distributed.init()
    test_spec = args.test or args.train
    with distributed.main_first(world):  # rank 0 fills the decode cache, the others then read it
        train_set = load_dataset(args.train, "train", args.data_root)
        test_set = load_dataset(test_spec, "test", args.data_root)
    if args.train_per_class:
        train_set = stratified_subset(train_set, args.train_per_class, args.seed)
    if args.test_per_class:
        test_set = stratified_subset(test_set, args.test_per_class, args.seed)
    config = TrainConfig(
        out=args.out,
        model=model,
        defense=args.defense,
        defense_options=options,
        recipe=recipe,
        seed=args.seed,
        device=args.device,
        rotate=args.rotate,
        augment=args.augment,
        data_placement=args.data_placement,
        sync_batchnorm=args.sync_batchnorm,
        name=args.name or Path(args.out).name,
        train=args.train,
        test=test_spec,
    )
    device = resolve_device(distributed.training_device(world, args.device))  # every rank: it may agree on it
    if world.main:
        if defaults:
            print(f"unlearnable train: {defaults}", file=sys.stderr)
        report_cost(args, model, recipe, options, train_set, device, world.size)
    command = command_line(args)  # for the report
    results = train(config, train_set, test_set, resume=args.resume, command=command)
    final = results["final"]
    if world.main:
        print(
            f"{config.name}: test accuracy {final['test_acc_last']:.2f}% (best {final['test_acc_best']:.2f}% "
            f"at epoch {final['best_epoch']}) in {final['wall_seconds']:.0f} s -> {Path(args.out) / 'results.json'}"
        )


def interrupted_note(args: argparse.Namespace, command_line: str) -> str:
    from unlearnable.training.run_dir import interrupted_message

    return interrupted_message(args.out, command_line)
