"""unlearnable.params: declarative constraints, one wording, usable by argparse and by the library."""

from __future__ import annotations

import argparse
import math

import pytest

from unlearnable import params as P
from unlearnable.errors import UserInputError
from unlearnable.params import BOOLEAN, Interval, Options, StrOptions, validate_params


@pytest.mark.parametrize(
    "constraint,described",
    [
        (P.POSITIVE_INT, "an integer ≥ 1"),
        (P.SEED, "an integer in [0, 4294967295]"),
        (P.FRACTION, "a number in (0, 1]"),
        (P.KERNEL_SIZE, "an odd integer in [1, 31]"),
        (Interval(float, high=2.5, closed="neither"), "a number < 2.5"),
        (StrOptions(["a", "b"]), "one of 'a', 'b'"),
        (Options(None, P.POSITIVE), "None or a number > 0"),
        (BOOLEAN, "True or False"),
    ],
)
def test_constraints_describe_themselves(constraint, described: str) -> None:
    assert constraint.describe() == described


def test_intervals_refuse_bools_strings_nan_and_the_wrong_kind() -> None:
    assert P.POSITIVE.contains(1) and P.POSITIVE.contains(0.5)
    for value in (True, "1", math.nan, math.inf, 0, -1.0):
        assert not P.POSITIVE.contains(value)
    assert not P.POSITIVE_INT.contains(2.0) and not P.KERNEL_SIZE.contains(4)


def test_check_and_validate_params_name_the_parameter_and_the_owner() -> None:
    with pytest.raises(UserInputError, match=r"^std must be a number > 0 \(got -1\)$"):
        P.POSITIVE.check("std", -1)

    class Widget:
        PARAMETER_CONSTRAINTS = {"size": P.POSITIVE_INT, "mode": StrOptions(["a", "b"])}

    validate_params(Widget(), {"size": 3, "mode": "a", "unconstrained": object()})
    with pytest.raises(UserInputError, match=r"^Widget: mode must be one of 'a', 'b' \(got 'c'\)$"):
        validate_params(Widget(), {"size": 3, "mode": "c"})
    with pytest.raises(UserInputError, match=r"^recipe: size must be an integer ≥ 1 \(got 0\)$"):
        validate_params("recipe", {"size": 0}, Widget.PARAMETER_CONSTRAINTS)


def test_constraints_are_argparse_types() -> None:
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--seed", type=P.SEED)
    parser.add_argument("--mode", type=StrOptions(["fast", "slow"]))
    assert parser.parse_args(["--seed", "7", "--mode", "fast"]) == argparse.Namespace(seed=7, mode="fast")
    with pytest.raises(argparse.ArgumentError, match=r"must be an integer in \[0, 4294967295\] \(got '-1'\)"):
        parser.parse_args(["--seed", "-1"])
    with pytest.raises(argparse.ArgumentError, match="must be one of 'fast', 'slow'"):
        parser.parse_args(["--mode", "quick"])
