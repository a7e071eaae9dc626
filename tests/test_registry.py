"""unlearnable.registry: one lookup, one error wording, lazy targets, tags."""

from __future__ import annotations

import subprocess
import sys

import pytest

from unlearnable.attacks import ATTACKS
from unlearnable.defenses import DEFENSES, STAGES
from unlearnable.errors import UserInputError
from unlearnable.models import MODELS
from unlearnable.registry import Registry
from unlearnable.training import RECIPES


def test_add_get_and_the_unknown_name_message() -> None:
    registry = Registry("widget")
    registry.add("a", len, "counts things", colour="red")
    registry.add("b", "os.path:join", "joins paths", colour="blue")
    assert registry.get("a") is len and registry["a"] is len
    import os.path

    assert registry.get("b") is os.path.join  # "module:attribute" resolved on use
    assert list(registry) == ["a", "b"] and len(registry) == 2 and "a" in registry and "c" not in registry
    assert registry.names(colour="blue") == ("b",) and registry.entry("a").summary == "counts things"
    with pytest.raises(UserInputError) as caught:
        registry.get("c")
    assert str(caught.value) == "unknown widget 'c'; known widgets: a, b"


def test_names_are_registered_once_with_a_one_line_summary() -> None:
    registry = Registry("widget")
    registry.add("a", len, "counts things")
    with pytest.raises(ValueError, match="already registered"):
        registry.add("a", len, "again")
    with pytest.raises(ValueError, match="one-line summary"):
        registry.add("b", len, "two\nlines")


def test_register_decorates_a_definition() -> None:
    registry = Registry("widget")

    @registry.register("double", "twice its input")
    def double(x: int) -> int:
        return 2 * x

    assert registry.get("double")(3) == 6


def test_every_project_entry_loads_and_defenses_carry_a_known_stage() -> None:
    for registry in (ATTACKS, DEFENSES, MODELS, RECIPES):
        for entry in registry.entries():
            assert entry.load() is not None and entry.summary and "\n" not in entry.summary
    assert {entry.tags["stage"] for entry in DEFENSES.entries()} <= set(STAGES)


def test_listing_the_registries_imports_no_torch() -> None:
    code = (
        "import sys, unlearnable.attacks as a, unlearnable.defenses as d, unlearnable.models as m, "
        "unlearnable.training as t; "
        "[e.summary for r in (a.ATTACKS, d.DEFENSES, m.MODELS, t.RECIPES) for e in r.entries()]; "
        "print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
