"""Declarative parameter checks with one wording: "NAME must be <constraint> (got VALUE)".

`Interval` and `StrOptions` (after scikit-learn's constraints of the same names) are both argparse
``type=`` values (a command-line value out of range is a usage error: one line, exit code 2) and
checks for library functions (``.check`` raises UserInputError). A class declares its constraints
once, as scikit-learn estimators do, and checks them with `validate_params`:

    PARAMETER_CONSTRAINTS = {"std": POSITIVE, "padding": StrOptions({"same", "valid"})}
    validate_params(self, {"std": std, "padding": padding})
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from typing import Any

from unlearnable.errors import UserInputError

SEED_MAX = 2**32 - 1
"""Seeds go to numpy's RandomState (the published CUDA stream), which takes 0 .. 2³² − 1."""


class Interval:
    """Numbers of one type within bounds.

    Args:
        kind: int or float.
        low, high: bounds (None: unbounded).
        closed: "both", "left", "right" or "neither": which bounds belong to the interval.
        odd: integers only: the value must be odd (kernel sizes).
    """

    def __init__(
        self, kind: type, low: float | None = None, high: float | None = None, closed: str = "both", odd: bool = False
    ) -> None:
        self.kind, self.low, self.high, self.closed, self.odd = kind, low, high, closed, odd

    def describe(self) -> str:
        """The constraint in words, e.g. "an integer ≥ 1", "a number in (0, 1]"."""
        noun = ("an odd integer" if self.odd else "an integer") if self.kind is int else "a number"
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        low, high = (None if b is None else f"{b:d}" if self.kind is int else f"{b:g}" for b in (self.low, self.high))
        if low is not None and high is not None:
            return f"{noun} in {'[' if left else '('}{low}, {high}{']' if right else ')'}"
        if low is not None:
            return f"{noun} {'≥' if left else '>'} {low}"
        if high is not None:
            return f"{noun} {'≤' if right else '<'} {high}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        if self.high is not None and (value > self.high or (value == self.high and not right)):
            return False
        return not (self.odd and value % 2 == 0)

    def check(self, name: str, value: Any) -> Any:
        """Return `value` if it satisfies the constraint; otherwise a UserInputError naming `name`."""
        if not self.contains(value):
            raise UserInputError(f"{name} must be {self.describe()} (got {value!r})")
        return value

    def __call__(self, text: str) -> Any:
        """argparse ``type=``: parse `text` and check it (argparse names the option in its message)."""
        try:
            value = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {self.describe()} (got {text!r})") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()} (got {text!r})")
        return value

    def __repr__(self) -> str:
        return f"Interval({self.describe()})"


class StrOptions:
    """One of a fixed set of strings (case-sensitive), listed in the message in the given order."""

    def __init__(self, options: Iterable[str]) -> None:
        self.options = tuple(options)

    def describe(self) -> str:
        if len(self.options) == 1:
            return repr(self.options[0])
        return "one of " + ", ".join(repr(option) for option in self.options)

    def contains(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def check(self, name: str, value: Any) -> Any:
        if not self.contains(value):
            raise UserInputError(f"{name} must be {self.describe()} (got {value!r})")
        return value

    def __call__(self, text: str) -> str:
        if not self.contains(text):
            raise argparse.ArgumentTypeError(f"must be {self.describe()} (got {text!r})")
        return text

    def __repr__(self) -> str:
        return f"StrOptions({self.describe()})"


class Options:
    """Any of several constraints, e.g. ``Options(None, POSITIVE_INT)`` for an optional count."""

    def __init__(self, *choices: Interval | StrOptions | Booleans | None) -> None:
        self.choices = choices

    def describe(self) -> str:
        return " or ".join("None" if c is None else c.describe() for c in self.choices)

    def contains(self, value: Any) -> bool:
        return any(value is None if c is None else c.contains(value) for c in self.choices)

    def check(self, name: str, value: Any) -> Any:
        if not self.contains(value):
            raise UserInputError(f"{name} must be {self.describe()} (got {value!r})")
        return value


class Booleans:
    """The constraint "True or False" (exactly a bool: 1 and "yes" are refused)."""

    def describe(self) -> str:
        return "True or False"

    def contains(self, value: Any) -> bool:
        return isinstance(value, bool)

    def check(self, name: str, value: Any) -> Any:
        if not self.contains(value):
            raise UserInputError(f"{name} must be {self.describe()} (got {value!r})")
        return value

    def __repr__(self) -> str:
        return "Booleans()"


BOOLEAN = Booleans()


Constraint = Interval | StrOptions | Options | Booleans


def validate_params(
    owner: object | str, values: Mapping[str, Any], constraints: Mapping[str, Constraint] | None = None
) -> None:
    """Check every value against its constraint (by default the owner's ``PARAMETER_CONSTRAINTS``).

    The message names the owner: "RandomSharpen: std must be a number > 0 (got -1)".
    """
    if constraints is None:
        constraints = getattr(owner, "PARAMETER_CONSTRAINTS", {})
    label = owner if isinstance(owner, str) else type(owner).__name__
    for name, value in values.items():
        if name in constraints:
            try:
                constraints[name].check(name, value)
            except UserInputError as e:
                raise UserInputError(f"{label}: {e}") from None


POSITIVE_INT = Interval(int, 1)
NONNEGATIVE_INT = Interval(int, 0)
SEED = Interval(int, 0, SEED_MAX)
POSITIVE = Interval(float, 0, closed="neither")
NONNEGATIVE = Interval(float, 0)
FRACTION = Interval(float, 0, 1, closed="right")
"""A share in (0, 1]: 0 would do nothing, which is never what was asked for."""
KERNEL_SIZE = Interval(int, 1, 31, odd=True)
IMAGE_SIZE = Interval(int, 8, 1024)
"""Side of a stored or working image: 8 px at least, 1024 at most (ImageNet-style training uses 224)."""


def device(text: str) -> str:
    """argparse ``type=`` for --device: "cpu", "cuda" or "cuda:N", and only what this machine has."""
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return text
    if parsed.type != "cuda":
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported; use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} was asked for but this machine has no CUDA GPU; use cpu")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text!r} does not exist: this machine has {torch.cuda.device_count()} "
            f"GPU(s), cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return text
