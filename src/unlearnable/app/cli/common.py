"""Argument helpers shared by several commands, and the few constants the parsers need.

Everything here is importable without torch, numpy, PIL or matplotlib: `unlearnable --help`,
`unlearnable <command> --help` and `unlearnable list` build every parser from this module, the
parameter constraints (`unlearnable.params`) and the registries. Names the parsers list come from the
registries (ATTACKS, DEFENSES, MODELS, RECIPES); the few constants below live in modules that import
torch, so they are copied here and tests/test_cli.py checks each copy against its owner.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
from typing import Any

from unlearnable import params as P
from unlearnable.errors import UserInputError

DATASET_NAMES = ("cifar10", "cifar100", "fashion-mnist", "imagenet100")
"""= unlearnable.data.DATASET_NAMES (the named datasets `load_dataset` knows)."""
DATASET_ALIASES = {"fmnist": "fashion-mnist"}
"""= unlearnable.data.ALIASES."""
BUDGET_NAMES = ("quick", "full")
"""= tuple(unlearnable.app.audit.BUDGETS): the protocols of `audit` and `compare`."""

ATTACK_OPTIONS = ("kernel_size", "blur_parameter", "grayscale", "eps", "norm", "patch_size")
"""Attack-specific options: default None (not given); each goes only to the attacks that take it."""


def names(registry: Any, **tags: Any) -> str:
    """ "a, b, c": the names in `registry` (with `tags`, only those entries), for help texts."""
    return ", ".join(registry.names(**tags))


def add_data_args(p: argparse.ArgumentParser) -> None:
    """--data SPEC (required) and --data-root."""
    p.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="dataset name (cifar10, cifar100, fashion-mnist), an ImageFolder directory or "
        ".tar/.tar.gz archive (with train/ and test/), or a saved dataset directory",
    )
    p.add_argument("--data-root", metavar="DIR", help="where named datasets live or are downloaded to")


def add_training_run_args(p: argparse.ArgumentParser, out: str) -> None:
    """--data-root, --seed, --device and --out (default `out`) of the commands that train several runs."""
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--seed", type=P.SEED, default=0)
    p.add_argument("--device", type=P.device, default=None)
    p.add_argument("--out", default=out, metavar="DIR", help=f"output directory (default {out})")


def add_attack_args(p: argparse.ArgumentParser) -> None:
    """--attack and its options, --seed, --mix and --device (`poison`)."""
    from unlearnable.attacks import ATTACKS

    p.add_argument("--attack", default="cuda", help=f"attack name ({names(ATTACKS)}); default cuda")
    p.add_argument(
        "--kernel-size",
        type=P.KERNEL_SIZE,
        help="cuda/vuda/huda: odd kernel size k (default 3; paper: 3 for 32×32, 9 for 224×224)",
    )
    p.add_argument(
        "--blur-parameter",
        type=P.POSITIVE,
        help="cuda/vuda/huda: p_b, kernel entries are U[0, p_b) (default 0.3; 0.06 for ImageNet-100)",
    )
    p.add_argument(
        "--seed", type=P.SEED, default=0, help="seed of the key (cuda: RandomState seed, 0 is the published key)"
    )
    p.add_argument("--mix", type=P.FRACTION, default=1.0, help="fraction of training images poisoned, in (0, 1]")
    p.add_argument("--grayscale", action="store_true", default=None, help="cuda/vuda/huda: channel mean after the blur")
    p.add_argument(
        "--eps",
        type=P.POSITIVE,
        help="noise: L∞ bound of the class patterns (default 8/255); lsp: per-value RMS, "
        "every perturbation has L2 norm √(C·H·W)·eps (default 6/255)",
    )
    p.add_argument(
        "--norm", type=P.POSITIVE, help="ar: L2 norm of every perturbation over C·H·W in [0, 1] units (default 1.0)"
    )
    p.add_argument(
        "--patch-size",
        type=P.POSITIVE_INT,
        help="lsp: side of the constant patches (default ⌈min(H, W)/4⌉: 8 for 32×32)",
    )
    p.add_argument("--device", type=P.device, default=None, help="cpu or cuda (default: cuda when available)")


def attack_params(args: argparse.Namespace) -> dict:
    """seed, mix and the attack options given; one the attack does not take is a UserInputError."""
    from unlearnable.attacks import ATTACKS

    takes = inspect.signature(ATTACKS.get(args.attack)).parameters
    params = {"seed": args.seed, "mix": args.mix}
    for name in ATTACK_OPTIONS:
        if getattr(args, name) is None:
            continue
        if name not in takes:
            own = [f"--{n.replace('_', '-')}" for n in ATTACK_OPTIONS if n in takes]
            raise UserInputError(
                f"--{name.replace('_', '-')} does not apply to --attack {args.attack}; "
                f"it takes {', '.join(own + ['--seed', '--mix'])}"
            )
        params[name] = getattr(args, name)
    return params


def kept_runs_note(args: argparse.Namespace, command_line: str) -> str:
    """What an interrupted command that trains several runs (demo, reproduce, audit, compare) kept."""
    return (
        f"finished runs are kept under {args.out} and the run in progress at its last checkpoint: run the "
        f"same command to continue"
    )


def command_line(args: argparse.Namespace) -> str:
    """The command line that started this command, as results.json and the report record it."""
    return "unlearnable " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
