"""The `unlearnable` command line.

Every command is a thin wrapper over a library function. Bad input ends in one line on stderr naming
the problem and the fix, exit code 2, and nothing half-written on disk.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from unlearnable import __version__
from unlearnable.errors import UserInputError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="dataset name (cifar10, cifar100, fashion-mnist), an ImageFolder directory or "
                        ".tar/.tar.gz archive (with train/ and test/), or a saved dataset directory")
    p.add_argument("--data-root", metavar="DIR", help="where named datasets live or are downloaded to")


def add_attack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack", default="cuda", help="attack name (cuda, vuda, huda); default cuda")
    p.add_argument("--kernel-size", type=int, default=3, help="odd kernel size k (paper: 3 for 32×32, 9 for 224×224)")
    p.add_argument("--blur-parameter", type=float, default=0.3, help="p_b: kernel entries are U[0, p_b) (paper: 0.3; 0.06 for ImageNet-100)")
    p.add_argument("--seed", type=int, default=0, help="RandomState seed of the key; 0 is the published key")
    p.add_argument("--mix", type=float, default=1.0, help="fraction of training images poisoned, in [0, 1]")
    p.add_argument("--grayscale", action="store_true", help="grayscale CUDA: channel mean after the blur")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def attack_params(args: argparse.Namespace) -> dict:
    return {"kernel_size": args.kernel_size, "blur_parameter": args.blur_parameter, "seed": args.seed,
            "mix": args.mix, "grayscale": args.grayscale}


def cmd_poison(args: argparse.Namespace) -> None:
    from unlearnable.protect import poison_command
    t = time.perf_counter()
    ds = poison_command(args.data, args.attack, args.out, args.data_root, args.format, args.overwrite,
                        args.device, **attack_params(args))
    n = len(ds.meta["poisoned_indices"])
    print(f"{args.attack}: poisoned {n} of {len(ds)} training images in {time.perf_counter() - t:.1f} s "
          f"-> {args.out} (the key is in {Path(args.out) / 'meta.json'}; keep it private)")


def cmd_show(args: argparse.Namespace) -> None:
    from unlearnable.show import show_command
    path = show_command(args.dir, args.out, args.defense, args.per_class, args.classes, args.data_root, args.seed)
    print(f"wrote {path}")


def cmd_demo(args: argparse.Namespace) -> None:
    from unlearnable.experiments import DEMO, run_table1, summarize
    from unlearnable.report import write_report
    t = time.perf_counter()
    runs = run_table1(args.data, args.out, DEMO, args.data_root, device=args.device)
    md, html = write_report(runs, Path(args.out) / "report", title=f"CPU demo: Table 1 conditions on {args.data}")
    print("\n".join(summarize(runs)))
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


def recipe_overrides(args: argparse.Namespace) -> dict:
    """Recipe fields given on the command line (None = keep the recipe's value)."""
    fields = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "weight_decay": args.weight_decay}
    return {k: v for k, v in fields.items() if v is not None}


def adversarial_config(args: argparse.Namespace) -> dict | None:
    if args.adversarial is None:
        return None
    eps = args.eps if args.eps is not None else (4 / 255 if args.adversarial == "linf" else 0.5)
    return {"norm": args.adversarial, "eps": eps, "steps": args.at_steps}


def cmd_train(args: argparse.Namespace) -> None:
    from unlearnable.data import load_dataset, stratified_subset
    from unlearnable.train import TrainConfig, resolve_recipe, train
    train_set = load_dataset(args.train, "train", args.data_root)
    test_spec = args.test or args.train
    test_set = load_dataset(test_spec, "test", args.data_root)
    if args.train_per_class:
        train_set = stratified_subset(train_set, args.train_per_class, args.seed)
    if args.test_per_class:
        test_set = stratified_subset(test_set, args.test_per_class, args.seed)
    config = TrainConfig(out=args.out, model=args.model, defense=args.defense, recipe=resolve_recipe(args.recipe, **recipe_overrides(args)),
                         seed=args.seed, device=args.device, adversarial=adversarial_config(args), rotate=args.rotate,
                         name=args.name or Path(args.out).name, train=args.train, test=test_spec)
    results = train(config, train_set, test_set, resume=args.resume)
    final = results["final"]
    print(f"{config.name}: test accuracy {final['test_acc_last']:.2f}% (best {final['test_acc_best']:.2f}% "
          f"at epoch {final['best_epoch']}) in {final['wall_seconds']:.0f} s -> {Path(args.out) / 'results.json'}")


def cmd_reproduce(args: argparse.Namespace) -> None:
    from unlearnable.experiments import Protocol, run_table1
    from unlearnable.report import write_report
    protocol = Protocol(model=args.model, recipe=args.recipe,
                        overrides={"epochs": args.epochs} if args.epochs else {},
                        rotate=args.dataset == "cifar100" or args.rotate)
    source = args.source or args.dataset
    runs = run_table1(source, args.out, protocol, args.data_root, args.seed, args.device)
    md, html = write_report(runs, Path(args.out) / "report", title=f"Table 1 on {source}")
    print(f"report: {md} and {html}")


def cmd_report(args: argparse.Namespace) -> None:
    from unlearnable.report import write_report
    md, html = write_report([Path(r) for r in args.runs], Path(args.out), title=args.title)
    print(f"report: {md} and {html}")


def cmd_list(args: argparse.Namespace) -> None:
    from unlearnable.attacks import ATTACKS
    from unlearnable.data import DATASET_NAMES
    from unlearnable.defenses import DEFENSE_NAMES
    print("datasets:", ", ".join(DATASET_NAMES), "(or a path)")
    print("attacks: ", ", ".join(sorted(ATTACKS)))
    print("defenses:", ", ".join(DEFENSE_NAMES), "(chain with '+', e.g. rsk+ff)")


def build_parser() -> Parser:
    parser = Parser(prog="unlearnable", description="Make image datasets unlearnable and test whether they stay that way.")
    parser.add_argument("--version", action="version", version=f"unlearnable {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("poison", help="protect a dataset's training split and save it with its key")
    add_data_args(p)
    add_attack_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (written atomically)")
    p.add_argument("--format", default="npy", choices=("npy", "png"),
                   help="npy: arrays only; png: also an ImageFolder of lossless PNGs in DIR/png (what an owner publishes)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=cmd_poison)

    p = sub.add_parser("show", help="PNG grid of clean vs poisoned vs defended samples per class")
    p.add_argument("dir", metavar="DIR", help="a saved dataset (from `unlearnable poison`)")
    p.add_argument("--out", metavar="PNG", help="output picture (default DIR/samples.png)")
    p.add_argument("--defense", default="rsk+ff", help="defense for the third column (default rsk+ff)")
    p.add_argument("--per-class", type=int, default=1, help="samples per class (default 1)")
    p.add_argument("--classes", type=int, default=10, help="show at most this many classes (default 10)")
    p.add_argument("--data-root", metavar="DIR", help="where the clean source dataset lives")
    p.add_argument("--seed", type=int, default=0, help="seed of the defense's randomness")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("demo", help="the quick CPU protocol: clean, CUDA, CUDA+AT, CUDA+RSK+FF on Fashion-MNIST, and the report")
    p.add_argument("--data", default="fashion-mnist", help="dataset (default fashion-mnist, offline here)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="out/demo", metavar="DIR", help="output directory (default out/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model on a (protected) dataset with a defense; writes RUN/results.json")
    p.add_argument("--train", required=True, metavar="DATA", help="training data: dataset name, path, or saved (protected) dataset")
    p.add_argument("--test", metavar="DATA", help="test data (default: the test split of --train)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--defense", default="none", help="defense transform, e.g. rsk+ff (default none)")
    p.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    p.add_argument("--recipe", default="paper", help="paper, cuda-paper or quick (default paper)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")
    p.add_argument("--adversarial", choices=("linf", "l2"), help="PGD adversarial training")
    p.add_argument("--eps", type=float, help="PGD radius (default 4/255 for linf, 0.5 for l2)")
    p.add_argument("--at-steps", type=int, default=10, help="PGD steps (default 10)")
    p.add_argument("--rotate", action="store_true", help="RandomRotation(15°) after the flip (the CIFAR-100 recipe)")
    p.add_argument("--train-per-class", type=int, help="train on a stratified subset of this many images per class")
    p.add_argument("--test-per-class", type=int, help="test on a stratified subset of this many images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--name", help="run name in reports (default: the --out folder name)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory (results.json, checkpoint.pt)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in RUN")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("reproduce", help="the paper's Table 1: clean, CUDA, CUDA+AT, CUDA+RSK+FF, and the report")
    p.add_argument("--dataset", required=True, help="cifar10 or cifar100 (or a path, e.g. the CIFAR-10 JPEG archive)")
    p.add_argument("--source", help="read the dataset from this path instead (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (paper: 60)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--recipe", default="paper")
    p.add_argument("--rotate", action="store_true", help="RandomRotation(15°) (always on for cifar100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="out/reproduce", metavar="DIR")
    p.set_defaults(func=cmd_reproduce)

    p = sub.add_parser("report", help="Markdown + HTML report of training runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with results.json)")
    p.add_argument("--out", default="out/report", metavar="DIR")
    p.add_argument("--title")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("list", help="known datasets, attacks and defenses")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserInputError as e:
        print(f"unlearnable {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"unlearnable {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearnable {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0
