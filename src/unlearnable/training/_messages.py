"""How values and errors are quoted in the trainer's one-line messages."""

from __future__ import annotations

from typing import Any


def short(value: Any, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters with an ellipsis."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none), cut to 120 characters."""
    lines = str(error).strip().splitlines()
    return short(lines[0], 120).strip("'\"") if lines else type(error).__name__
