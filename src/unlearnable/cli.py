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
    from unlearnable.protect import poison_command
    from unlearnable.show import show_command
    out = Path(args.out)
    t = time.perf_counter()
    ds = poison_command(args.data, "cuda", out / "protected", args.data_root, overwrite=True,
                        kernel_size=3, blur_parameter=0.3, seed=0)
    grid = show_command(out / "protected", out / "samples.png", "rsk+ff", per_class=2, data_root=args.data_root)
    print(f"CUDA (k=3, p_b=0.3, seed 0) protected {len(ds)} {args.data} training images in "
          f"{time.perf_counter() - t:.1f} s")
    print(f"protected dataset: {out / 'protected'}   picture (clean | CUDA | CUDA+RSK+FF): {grid}")


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

    p = sub.add_parser("demo", help="protect Fashion-MNIST (offline here) with CUDA and draw what it did")
    p.add_argument("--data", default="fashion-mnist", help="dataset to protect (default fashion-mnist)")
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--out", default="out/demo", metavar="DIR", help="output directory (default out/demo)")
    p.set_defaults(func=cmd_demo)

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
