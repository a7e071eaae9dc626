"""`unlearnable list`: every dataset name, attack, defense (by stage), model and recipe, with one line each.

Reads only the registries, so it never imports torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from unlearnable.app.cli.common import DATASET_ALIASES, DATASET_NAMES

DATASETS = {
    "cifar10": "CIFAR-10: 50,000 + 10,000 32×32 colour images, 10 classes (downloaded when missing)",
    "cifar100": "CIFAR-100: 50,000 + 10,000 32×32 colour images, 100 classes (downloaded when missing)",
    "fashion-mnist": "Fashion-MNIST: 60,000 + 10,000 28×28 grayscale images, 10 classes (downloaded when missing)",
    "imagenet100": "ImageNet-100: 100 ImageNet classes at 224×224, from the store `unlearnable prepare` builds "
    "(--data-root)",
}
"""One line per name in DATASET_NAMES."""
PATHS = "or a path: an ImageFolder directory or .tar/.tar.gz archive (train/ and test/), or a saved dataset"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("list", help="known datasets, attacks, defenses, models and recipes, one line each")
    p.set_defaults(func=run)
    return p


def lines() -> list[str]:
    """The listing, one entry a line, the summaries in one aligned column."""
    from unlearnable.attacks import ATTACKS
    from unlearnable.defenses import DEFENSES, STAGES
    from unlearnable.models import MODELS
    from unlearnable.training import RECIPES

    aliases = {name: [alias for alias, target in DATASET_ALIASES.items() if target == name] for name in DATASET_NAMES}
    datasets = [(name + "".join(f" ({alias})" for alias in aliases[name]), DATASETS[name]) for name in DATASET_NAMES]
    by_stage = {
        stage: [(e.name, e.summary) for e in DEFENSES.entries() if e.tags.get("stage") == stage] for stage in STAGES
    }
    rows = [
        *datasets,
        *((e.name, e.summary) for registry in (ATTACKS, MODELS, RECIPES) for e in registry.entries()),
        *(row for group in by_stage.values() for row in group),
    ]
    column = 4 + max(len(name) for name, _ in rows) + 2  # defenses are indented 4, the rest 2

    def table(entries: Iterable[tuple[str, str]], indent: str = "  ") -> list[str]:
        return [f"{indent}{name}".ljust(column) + summary for name, summary in entries]

    out = [f"datasets (--data, --train: a name below, {PATHS}):", *table(datasets)]
    out += ["", "attacks (poison --attack):", *table((e.name, e.summary) for e in ATTACKS.entries())]
    out += [
        "",
        "defenses (train --defense: 'none' or a '+'-chain, e.g. rsk+ff, rsk+ff+coin, cutmix, rsk+ff+at-linf), "
        "by stage:",
    ]
    for stage, description in STAGES.items():
        entries = by_stage[stage]
        if entries:
            out += [f"  {description}: {', '.join(name for name, _ in entries)}", *table(entries, "    ")]
    out += ["", "models (train --model):", *table((e.name, e.summary) for e in MODELS.entries())]
    out += ["", "recipes (train --recipe):", *table((e.name, e.summary) for e in RECIPES.entries())]
    return out


def run(args: argparse.Namespace) -> None:
    print("\n".join(lines()))
