"""One registry mechanism for attacks, defenses, models and recipes (after timm's registries).

Each package declares what it provides in its ``__init__``, beside the modules that define it:

    ATTACKS = Registry("attack")
    ATTACKS.add("cuda", "unlearnable.attacks.cuda:cuda_poison", "per-class random blur (Sadasivan et al., CVPR 2023)")

A target is "module:attribute" and is imported only when the entry is used, so listing names and
summaries (``unlearnable list``, ``--help``) never imports torch. Code outside the project adds its
own with ``@ATTACKS.register("name", "summary")`` on the definition. Every lookup of an unknown name
raises the same UserInputError, listing the known names.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from unlearnable.errors import UserInputError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered name.

    Attributes:
        name: the name users type ("cuda", "rsk", "resnet18", "quick").
        target: "module:attribute" (imported on first use), or the object itself.
        summary: one line for ``unlearnable list``.
        tags: registry-specific facts known without importing the target (a defense's stage).
    """

    name: str
    target: Any
    summary: str
    tags: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        """The registered object, importing its module if the target is a "module:attribute" string."""
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class Registry:
    """Names → objects of one kind, in registration order.

    Args:
        kind: the singular noun used in messages ("attack", "defense", "model", "recipe").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: Any, summary: str, **tags: Any) -> None:
        """Register `target` (an object or "module:attribute") as `name`; a name registered twice raises ValueError."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not summary or "\n" in summary:
            raise ValueError(f"{self.kind} {name!r} needs a one-line summary")
        self._entries[name] = Entry(name, target, summary, dict(tags))

    def register(self, name: str, summary: str, **tags: Any) -> Callable[[T], T]:
        """Decorator form of `add` for a definition: ``@REGISTRY.register("name", "one line")``."""

        def decorate(obj: T) -> T:
            self.add(name, obj, summary, **tags)
            return obj

        return decorate

    def check(self, name: str) -> None:
        """A UserInputError listing the known names unless `name` is registered; imports nothing."""
        if name not in self._entries:
            raise UserInputError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self._entries)}")

    def entry(self, name: str) -> Entry:
        self.check(name)
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The object registered as `name` (imported on first use); unknown names raise UserInputError."""
        return self.entry(name).load()

    def names(self, **tags: Any) -> tuple[str, ...]:
        """The registered names, in registration order; with `tags`, only entries whose tags match them all."""
        return tuple(
            name
            for name, entry in self._entries.items()
            if all(entry.tags.get(key) == value for key, value in tags.items())
        )

    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries.values())

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package that imports its submodules on first use (PEP 562).

    `exports` maps each public name to the submodule that defines it, so that
    ``from unlearnable.defenses import RandomSharpen`` still works while ``import unlearnable.defenses``
    (and the registry in it) costs nothing.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
