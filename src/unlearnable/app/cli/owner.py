"""The data owner's commands, `unlearnable protect` and `unlearnable verify` (app/cli/protect.py and
app/cli/verify.py); `register(subparsers)` adds both to a parser."""

from __future__ import annotations

import argparse

from unlearnable.app.cli import protect, verify

cmd_protect = protect.run
cmd_verify = verify.run


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `protect` and `verify` subcommands to `sub` (a parser's subparsers)."""
    protect.add_parser(sub)
    verify.add_parser(sub)
