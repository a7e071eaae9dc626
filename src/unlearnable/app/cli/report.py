"""`unlearnable report`: a Markdown + HTML report of training runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from unlearnable.errors import UserInputError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="Markdown + HTML report of training runs")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with results.json)")
    p.add_argument("--out", default="out/report", metavar="DIR")
    p.add_argument("--title")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.report import load_run, write_report

    runs = [Path(r) for r in args.runs]
    for run_dir in runs:
        if not run_dir.is_dir():
            raise UserInputError(
                f"{run_dir} is not a directory; pass training run directories (from `unlearnable train`)"
            )
        note = load_run(run_dir)
        if isinstance(note, str):
            raise UserInputError(
                f"{note.removesuffix(' not shown.').rstrip(';. ')}: {run_dir} is not a training run; "
                f"pass run directories written by `unlearnable train`"
            )
    md, html = write_report(runs, Path(args.out), title=args.title)
    print(f"report: {md} and {html}")
