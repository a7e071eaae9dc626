"""`unlearnable demo`: the quick CPU protocol (clean, CUDA, CUDA+AT, CUDA+RSK+FF) and its report."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable import params as P
from unlearnable.app.cli.common import command_line, kept_runs_note


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="the quick CPU protocol: clean, CUDA, CUDA+AT, CUDA+RSK+FF on CIFAR-10, and the report"
    )
    p.add_argument(
        "--data",
        default="cifar10",
        help="dataset (default cifar10: found under --data-root or downloaded; a CIFAR-10 ImageFolder "
        "archive works too)",
    )
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--device", type=P.device, default=None)
    p.add_argument("--out", default="out/demo", metavar="DIR", help="output directory (default out/demo)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.experiments import DEMO, run_table1, summarize
    from unlearnable.app.report import write_report

    t = time.perf_counter()
    runs = run_table1(args.data, args.out, DEMO, args.data_root, device=args.device, command=command_line(args))
    md, html = write_report(runs, Path(args.out) / "report", title=f"CPU demo: Table 1 conditions on {args.data}")
    print("\n".join(summarize(runs)))
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


interrupted_note = kept_runs_note
