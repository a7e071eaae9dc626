"""`unlearnable reproduce`: the paper's Table 1 (clean, CUDA, CUDA+AT, CUDA+RSK+FF) and its report."""

from __future__ import annotations

import argparse
from pathlib import Path

from unlearnable import params as P
from unlearnable.app.cli.common import command_line, kept_runs_note, names
from unlearnable.models import MODELS
from unlearnable.training import RECIPES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "reproduce", help="the paper's Table 1: clean, CUDA, CUDA+AT, CUDA+RSK+FF, and the report"
    )
    p.add_argument(
        "--dataset",
        required=True,
        help="cifar10, cifar100 or imagenet100 (with --data-root: an ImageNet folder or a store from "
        "`unlearnable prepare`), or a path, e.g. the CIFAR-10 JPEG archive",
    )
    p.add_argument("--source", help="read the dataset from this path instead (e.g. ../shared/data/cifar10-jpeg.tar.gz)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--epochs", type=P.POSITIVE_INT, help="override the recipe's epochs (paper: 60)")
    p.add_argument("--model", help=f"{names(MODELS)}; default resnet18 (CIFAR), resnet18-imagenet (imagenet100)")
    p.add_argument("--recipe", default="paper", help=f"{names(RECIPES)}; default paper")
    p.add_argument("--rotate", action="store_true", help="RandomRotation(15°) (always on for cifar100)")
    p.add_argument("--seed", type=P.SEED, default=0)
    p.add_argument("--device", type=P.device, default=None)
    p.add_argument("--out", default="out/reproduce", metavar="DIR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    import dataclasses

    from unlearnable import distributed
    from unlearnable.app.experiments import IMAGENET100, TrainingProtocol, run_table1
    from unlearnable.app.report import write_report

    base = IMAGENET100 if args.dataset == "imagenet100" else TrainingProtocol()
    protocol = dataclasses.replace(
        base,
        model=args.model or base.model,
        recipe=args.recipe,
        overrides={"epochs": args.epochs} if args.epochs is not None else {},
        rotate=args.dataset == "cifar100" or args.rotate,
    )
    source = args.source or args.dataset
    runs = run_table1(source, args.out, protocol, args.data_root, args.seed, args.device, command=command_line(args))
    if distributed.init().main:
        md, html = write_report(runs, Path(args.out) / "report", title=f"Table 1 on {source}")
        print(f"report: {md} and {html}")


interrupted_note = kept_runs_note
