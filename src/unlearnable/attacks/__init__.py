"""Attacks (poisons) by name.

An attack is a function ``(images, labels, num_classes, **params) -> Poison``: uint8 N×C×H×W in,
protected uint8 images plus a JSON-serialisable private key out; pure, vectorised and deterministic.
Adding one is a module plus one line in ``ATTACKS``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from unlearnable.attacks.additive import noise_poison
from unlearnable.attacks.ar import ar_poison
from unlearnable.attacks.cuda import Poison, cuda_key, cuda_poison
from unlearnable.attacks.lsp import lsp_poison
from unlearnable.attacks.ops import ops_poison
from unlearnable.errors import UserInputError

ATTACKS: dict[str, Callable[..., Poison]] = {
    "cuda": cuda_poison,
    "vuda": partial(cuda_poison, kernel_shape="vertical", name="vuda"),
    "huda": partial(cuda_poison, kernel_shape="horizontal", name="huda"),
    "cuda-reflect": partial(cuda_poison, border="reflect", name="cuda-reflect"),
    "ops": ops_poison,
    "lsp": lsp_poison,
    "ar": ar_poison,
    "noise": noise_poison,
}


def get_attack(name: str) -> Callable[..., Poison]:
    """The attack registered under `name`; a UserInputError listing the known names otherwise."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise UserInputError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}") from None


__all__ = ["ATTACKS", "Poison", "ar_poison", "cuda_key", "cuda_poison", "get_attack", "lsp_poison", "noise_poison",
           "ops_poison"]
