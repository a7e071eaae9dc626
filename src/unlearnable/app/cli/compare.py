"""`unlearnable compare`: the defense × poison table (every defense on every poison and on clean data),
kept as OUT/table.md, a report, and the benchmark files (app/benchmark.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable.app.cli.common import BUDGET_NAMES, add_training_run_args, command_line, kept_runs_note
from unlearnable.attacks import ATTACKS

DEFAULT_POISONS = "cuda,ops,lsp,ar,noise"
PRESET_NAMES = ("benchmark",)
"""= tuple(unlearnable.app.benchmark.PRESETS)."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare",
        help="the defense × poison table: train every defense on every poison and on clean data",
        description="Train every defense on every poison variant and on the clean data (finished cells are "
        "skipped, so rerunning continues an interrupted table). Writes OUT/table.md, OUT/report/, and the "
        "benchmark: OUT/benchmark.json and .csv (one entry per finished cell), OUT/benchmark.md and .html "
        "(the table, a heat map, how to read it) and OUT/benchmark.png.",
    )
    p.add_argument("--data", required=True, metavar="SPEC", help="the clean dataset to poison")
    columns = p.add_mutually_exclusive_group()
    columns.add_argument(
        "--poisons",
        metavar="COLUMNS",
        help=f"comma-separated columns, each an attack ({', '.join(ATTACKS)}) with its defaults, or with "
        "parameters as NAME:KEY=VALUE+KEY=VALUE (keys kernel_size, blur_parameter, grayscale=true|false, eps, "
        "norm, patch_size, mix, seed; e.g. cuda:kernel_size=5, cuda:kernel_size=9+mix=0.5), or clean (always "
        f"trained, first column); default {DEFAULT_POISONS}",
    )
    columns.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        help="benchmark: the published columns (clean, cuda, cuda-reflect, cuda:kernel_size=5, "
        "cuda:kernel_size=9, cuda:blur_parameter=0.5, cuda:grayscale=true, vuda, huda, cuda:mix=0.5, ops, lsp, "
        "ar, noise) and the project's own grating",
    )
    p.add_argument("--defenses", help="comma-separated defense chains (default: the audit battery of --budget)")
    p.add_argument("--budget", default="quick", choices=BUDGET_NAMES, help="protocol as for `audit`")
    add_training_run_args(p, "out/compare")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.audit import BUDGETS, fitted_protocol
    from unlearnable.app.benchmark import (
        PRESETS,
        check_fits,
        check_page_files,
        data_summary,
        parse_columns,
        plan_rows,
        run_benchmark,
    )
    from unlearnable.app.experiments import grid_table
    from unlearnable.app.report import write_report

    plan = BUDGETS[args.budget]
    rows = plan_rows(plan.defenses, args.defenses)  # every name and value checked before any work
    columns = parse_columns(PRESETS[args.preset] if args.preset else args.poisons or DEFAULT_POISONS)
    check_page_files(args.out)
    t = time.perf_counter()
    images, image_hw = data_summary(args.data, args.data_root, plan.protocol.train_per_class)
    check_fits(columns, image_hw)
    protocol = fitted_protocol(plan.protocol, images)
    title = f"Defenses × poisons on {args.data}"
    runs = run_benchmark(
        args.data,
        args.out,
        protocol,
        columns,
        rows,
        args.data_root,
        args.seed,
        args.device,
        command=command_line(args),
        title=title,
    )
    md, html = write_report(list(runs.values()), Path(args.out) / "report", title=title)
    labels = {c.key: c.label for c in columns}
    table = "\n".join(grid_table({(labels[column], row): run for (column, row), run in runs.items()}))
    (Path(args.out) / "table.md").write_text(table + "\n")
    print(table)
    print(
        f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}; "
        f"benchmark: {Path(args.out) / 'benchmark.md'}, .html, .json and .csv"
    )


interrupted_note = kept_runs_note
