"""`unlearnable show`: a PNG grid of clean vs poisoned vs defended samples per class."""

from __future__ import annotations

import argparse

from unlearnable import params as P
from unlearnable.defenses import DEFENSES
from unlearnable.params import Interval


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("show", help="PNG grid of clean vs poisoned vs defended samples per class")
    p.add_argument("dir", metavar="DIR", help="a saved dataset (from `unlearnable poison`)")
    p.add_argument("--out", metavar="PNG", help="output picture (default DIR-samples.png beside DIR)")
    p.add_argument(
        "--defense",
        default="rsk+ff",
        help="defense for the third column: an image defense or a '+'-chain of them "
        f"({', '.join(DEFENSES.names(stage='before-crop') + DEFENSES.names(stage='after-crop'))}; "
        "default rsk+ff)",
    )
    p.add_argument("--per-class", type=Interval(int, 1, 100), default=1, help="samples per class (default 1)")
    p.add_argument(
        "--classes", type=Interval(int, 1, 1000), default=10, help="show at most this many classes (default 10)"
    )
    p.add_argument("--data-root", metavar="DIR", help="where the clean source dataset lives")
    p.add_argument("--seed", type=P.SEED, default=0, help="seed of the defense's randomness")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.show import show_command

    path = show_command(args.dir, args.out, args.defense, args.per_class, args.classes, args.data_root, args.seed)
    print(f"wrote {path}")
