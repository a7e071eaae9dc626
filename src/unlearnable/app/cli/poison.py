"""`unlearnable poison`: protect a dataset's training split and save it with its key."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable.app.cli.common import add_attack_args, add_data_args, attack_params


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("poison", help="protect a dataset's training split and save it with its key")
    add_data_args(p)
    add_attack_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (written atomically)")
    p.add_argument(
        "--format",
        default="npy",
        choices=("npy", "png"),
        help="npy: arrays only; png: also an ImageFolder of lossless PNGs in DIR/png, named by index (to "
        "publish a photo folder under its own file names and sizes, use `unlearnable protect`)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.poison import poison_command

    t = time.perf_counter()
    ds = poison_command(
        args.data,
        args.attack,
        args.out,
        args.data_root,
        args.format,
        args.overwrite,
        args.device,
        **attack_params(args),
    )
    n = len(ds.meta["poisoned_indices"])
    print(
        f"{args.attack}: poisoned {n} of {len(ds)} training images in {time.perf_counter() - t:.1f} s "
        f"-> {args.out} (the key is in {Path(args.out) / 'meta.json'}; keep it private)"
    )
