"""Defenses by name, and their composition.

A defense is a small callable over a batch, in the style of ``torchvision.transforms.v2``:
``defense(x, generator=None) -> Tensor`` with `x` a float B×C×H×W batch in [0, 1] on any device,
returning a float batch in [0, 1] on the same device (sharpening with ``padding="valid"`` shrinks
H×W by 2). Random defenses draw only from the explicit `generator`, which must live on the
batch's device. Adding one is a module plus one line in ``DEFENSES``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from unlearnable.defenses.frequency import FrequencyFilter, dct_low_pass, dct_matrix, kept_frequencies
from unlearnable.defenses.sharpen import (PADDING_MODES, RandomSharpen, StaticSharpen, sample_sharpen_kernels,
                                          sharpen, static_sharpen_kernel)
from unlearnable.errors import UserInputError


class Defense(Protocol):
    """What every defense is: a callable over float B×C×H×W batches with a readable repr."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


DEFENSES: dict[str, Callable[..., Defense]] = {
    "rsk": RandomSharpen,
    "ssk": StaticSharpen,
    "ff": FrequencyFilter,
}

DEFENSE_NAMES: tuple[str, ...] = ("none", *DEFENSES)
"""Every single name `build_defense` accepts; any "+"-chain of the names in ``DEFENSES`` works too."""


class Identity:
    """The "none" defense: returns the batch unchanged (the same tensor)."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return "Identity()"


class Compose:
    """Apply `defenses` left to right, handing the same generator to each."""

    def __init__(self, defenses: Sequence[Defense]) -> None:
        self.defenses = tuple(defenses)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for defense in self.defenses:
            x = defense(x, generator)
        return x

    def __repr__(self) -> str:
        return f"Compose([{', '.join(map(repr, self.defenses))}])"


def _accepted_options(factory: Callable[..., Defense]) -> set[str]:
    return set(inspect.signature(factory).parameters)


def build_defense(spec: str, **options: Any) -> Defense:
    """The defense named by `spec`: "none", one name of ``DEFENSES``, or a "+"-chain ("rsk+ff").

    Each option goes to every factory in the chain that accepts it (center, std, padding,
    keep_percent, imagenet_variant); options set to None count as not given. An unknown name,
    an option no defense in the chain takes, or an out-of-range value raises UserInputError.
    """
    options = {key: value for key, value in options.items() if value is not None}
    names = [part.strip() for part in spec.strip().lower().split("+")]
    if names == ["none"]:
        factories: list[Callable[..., Defense]] = []
    else:
        unknown = [name for name in names if name not in DEFENSES]
        if unknown:
            raise UserInputError(f"unknown defense {unknown[0]!r} in {spec!r}: expected 'none' or a '+'-chain of "
                                 f"{', '.join(DEFENSES)} (e.g. 'rsk+ff')")
        factories = [DEFENSES[name] for name in names]
    accepted = [_accepted_options(factory) for factory in factories]
    unused = sorted(set(options).difference(*accepted))
    if unused:
        raise UserInputError(f"option {unused[0]}={options[unused[0]]!r} does not apply to defense {spec!r}: "
                             f"it takes {', '.join(sorted(set().union(*accepted))) or 'no options'}")
    defenses = [factory(**{key: value for key, value in options.items() if key in keys})
                for factory, keys in zip(factories, accepted)]
    if not defenses:
        return Identity()
    return defenses[0] if len(defenses) == 1 else Compose(defenses)


__all__ = ["DEFENSES", "DEFENSE_NAMES", "PADDING_MODES", "Compose", "Defense", "FrequencyFilter", "Identity",
           "RandomSharpen", "StaticSharpen", "build_defense", "dct_low_pass", "dct_matrix", "kept_frequencies",
           "sample_sharpen_kernels", "sharpen", "static_sharpen_kernel"]
