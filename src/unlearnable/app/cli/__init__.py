"""The `unlearnable` command line.

Every command is a thin wrapper over a library function, in its own module here:
``app/cli/<command>.py`` with ``add_parser(subparsers)`` and ``run(args) -> int | None`` (and,
where an interrupted run keeps something, ``interrupted_note(args, command_line)``). Building the
parser imports no torch, numpy, PIL or matplotlib: ``--help``, ``<command> --help`` and ``list``
answer at once; each ``run`` imports what it needs.

Bad input ends in one line on stderr naming the problem and the fix, exit code 2, and nothing
half-written on disk. The library logs (``logging.getLogger(__name__)``, loggers under
"unlearnable") and warns (``warnings.warn``) instead of printing; `main` shows INFO lines as plain
lines on stdout and warnings as ``unlearnable <command>: warning: <message>`` on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import shlex
import sys
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType

from unlearnable import __version__
from unlearnable.app.cli.train import defense_options  # noqa: F401 - part of this module's interface
from unlearnable.errors import UserInputError

COMMANDS = (
    "poison",
    "prepare",
    "recover",
    "show",
    "demo",
    "train",
    "reproduce",
    "report",
    "audit",
    "detect",
    "compare",
    "protect",
    "verify",
    "list",
)
"""The subcommands, in the order --help lists them; each is the module app/cli/<command>.py."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def command_module(name: str) -> ModuleType:
    """The module of subcommand `name` (app/cli/<name>.py)."""
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> Parser:
    parser = Parser(
        prog="unlearnable", description="Make image datasets unlearnable and test whether they stay that way."
    )
    parser.add_argument("--version", action="version", version=f"unlearnable {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        command_module(name).add_parser(sub)
    return parser


# --- how library messages look on the terminal ---------------------------------------------------


class _Lines(logging.Handler):
    """INFO records as plain lines on stdout; WARNING and above as one line on stderr,
    ``unlearnable <command>: warning: <message>``. The streams are looked up at each record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                print(_one_line(record.levelname.lower(), message), file=sys.stderr, flush=True)
            else:
                print(message, file=sys.stdout, flush=True)
        except Exception:  # noqa: BLE001 - logging must never break the command
            self.handleError(record)


_commands: list[str] = []
"""The commands running `main` now, innermost last (threads may run `main` at the same time)."""
_lock = threading.Lock()
_handler = _Lines(logging.INFO)
_saved: dict[str, object] = {}


def _one_line(kind: str, message: object) -> str:
    prog = f"unlearnable {_commands[-1]}" if _commands else "unlearnable"
    return f"{prog}: {kind}: {' '.join(str(message).split())}"


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line: str | None = None
) -> None:
    """`warnings.showwarning` while a command runs: a UserWarning as one line, others as Python shows them."""
    if issubclass(category, UserWarning):
        print(_one_line("warning", message), file=sys.stderr if file is None else file, flush=True)
    else:
        _saved["showwarning"](message, category, filename, lineno, file, line)  # type: ignore[operator]


@contextlib.contextmanager
def rendering(command: str) -> Iterator[None]:
    """Show library log records and warnings on the terminal while `command` runs (see the module docstring)."""
    logger = logging.getLogger("unlearnable")
    with _lock:
        if not _commands:
            _saved.update(level=logger.level, showwarning=warnings.showwarning)
            logger.addHandler(_handler)
            logger.setLevel(logging.INFO)
            warnings.showwarning = _show_warning
        _commands.append(command)
    try:
        yield
    finally:
        with _lock:
            _commands.remove(command)
            if not _commands:
                logger.removeHandler(_handler)
                logger.setLevel(_saved["level"])  # type: ignore[arg-type]
                warnings.showwarning = _saved["showwarning"]  # type: ignore[assignment]


# --- dispatch ------------------------------------------------------------------------------------


def interrupted_note(args: argparse.Namespace, argv: list[str] | None = None) -> str:
    """What an interrupted command kept, and how to continue."""
    note = getattr(command_module(args.command), "interrupted_note", None)
    if note is None:
        return "nothing was written"
    return note(args, "unlearnable " + shlex.join(sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = [*(sys.argv[1:] if argv is None else argv)]  # (`list` here is the list command's module)
    try:
        with rendering(args.command):
            code = args.func(args)
    except (UserInputError, OSError) as e:
        print(f"unlearnable {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearnable {args.command}: interrupted; {interrupted_note(args, argv)}", file=sys.stderr)
        return 130
    finally:
        if "unlearnable.distributed" in sys.modules:  # a command that never imported it joined no group
            sys.modules["unlearnable.distributed"].finish()
    return code or 0
