"""`unlearnable audit`: train against every defense of a battery; verdict: does the protection hold?"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable import params as P
from unlearnable.app.cli.common import BUDGET_NAMES, add_training_run_args, command_line, kept_runs_note


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("audit", help="train against every defense; verdict: does the protection hold?")
    p.add_argument("data", metavar="DATA", help="the protected dataset (e.g. from `unlearnable poison`)")
    p.add_argument(
        "--budget",
        default="quick",
        choices=BUDGET_NAMES,
        help="quick: small CNN at 32×32 on up to 500 images per class, batch fitted to the data, ~20 min "
        "on 2 CPU cores; full: ResNet-18, paper recipe, all data at its own size (GPU)",
    )
    p.add_argument(
        "--image-size",
        type=P.IMAGE_SIZE,
        metavar="S",
        help="working image side: every image is stretched to S×S (bilinear), so a collection of mixed "
        "sizes can be audited (default: 32 for --budget quick, the data's own size for full)",
    )
    p.add_argument(
        "--clean",
        metavar="SPEC",
        help="the clean training data DATA was made from (default: the source recorded in DATA)",
    )
    p.add_argument("--test", metavar="SPEC", help="clean test data (default: DATA's test split)")
    add_training_run_args(p, "out/audit")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.audit import run_audit
    from unlearnable.app.report import write_report

    t = time.perf_counter()
    line, table = run_audit(
        args.data,
        args.out,
        args.budget,
        args.clean,
        args.test,
        args.data_root,
        args.seed,
        args.device,
        image_size=args.image_size,
        command=command_line(args),
    )
    runs = sorted(Path(args.out).glob("runs/*/*"))
    md, html = write_report(runs, Path(args.out) / "report", title=f"Audit of {args.data}")
    print("\n".join(table))
    print(f"verdict: {line}")
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


interrupted_note = kept_runs_note
