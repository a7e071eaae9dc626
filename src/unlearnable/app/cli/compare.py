"""`unlearnable compare`: the defense × poison table (every defense on every poison and on clean data)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable.app.cli.common import BUDGET_NAMES, add_training_run_args, command_line, kept_runs_note
from unlearnable.attacks import ATTACKS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="the defense × poison table: train every defense on every poison and on clean data"
    )
    p.add_argument("--data", required=True, metavar="SPEC", help="the clean dataset to poison")
    p.add_argument(
        "--poisons",
        default="cuda,ops,lsp,ar,noise",
        help=f"comma-separated attacks ({', '.join(ATTACKS)}); default cuda,ops,lsp,ar,noise, each with its defaults",
    )
    p.add_argument("--defenses", help="comma-separated defense chains (default: the audit battery of --budget)")
    p.add_argument("--budget", default="quick", choices=BUDGET_NAMES, help="protocol as for `audit`")
    add_training_run_args(p, "out/compare")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.audit import BUDGETS, fitted_protocol
    from unlearnable.app.experiments import grid_table, prepare_data, run_grid
    from unlearnable.app.report import write_report
    from unlearnable.defenses import training_defense

    plan = BUDGETS[args.budget]
    defenses = (
        plan.defenses
        if args.defenses is None
        else {name: plan.defenses.get(name, {"defense": name}) for name in args.defenses.split(",")}
    )
    for settings in defenses.values():
        training_defense(settings["defense"], **settings.get("defense_options", {}))  # fail before any work
    poisons: dict[str, tuple[str, dict]] = {name: (name, {}) for name in args.poisons.split(",")}
    for attack in poisons:
        ATTACKS.get(attack)
    t = time.perf_counter()
    protocol = fitted_protocol(plan.protocol, training_images(args.data, args.data_root, plan.protocol.train_per_class))
    data = prepare_data(args.data, Path(args.out), protocol, args.data_root, poisons)
    runs = run_grid(data, defenses, args.out, protocol, args.seed, args.device, command=command_line(args))
    md, html = write_report(list(runs.values()), Path(args.out) / "report", title=f"Defenses × poisons on {args.data}")
    table = "\n".join(grid_table(runs))
    (Path(args.out) / "table.md").write_text(table + "\n")
    print(table)
    print(f"total {time.perf_counter() - t:.0f} s; report: {md} and {html}")


interrupted_note = kept_runs_note


def training_images(spec: str, data_root: str | None, per_class: int | None) -> int:
    """How many training images a protocol taking `per_class` per class gets from `spec`."""
    import numpy as np

    from unlearnable.data import load_dataset

    train = load_dataset(spec, "train", data_root)
    counts = np.bincount(train.labels.numpy(), minlength=train.num_classes)
    return int(np.minimum(counts, per_class).sum()) if per_class else len(train)
