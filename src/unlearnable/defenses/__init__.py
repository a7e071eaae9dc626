"""Defenses by name, and their composition.

A defense is a small callable over a batch, in the style of ``torchvision.transforms.v2``:
``defense(x, generator=None) -> Tensor`` with `x` a float B×C×H×W batch in [0, 1] on any device,
returning a float batch in [0, 1] on the same device (sharpening with ``padding="valid"`` shrinks
H×W by 2). Random defenses draw only from the explicit `generator`, which must live on the
batch's device. Adding one is a module plus one line in ``DEFENSES``.
"""

from __future__ import annotations

import functools

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from unlearnable.defenses.coin import Coin, displace, sample_displacements
from unlearnable.defenses.cutout import Cutout
from unlearnable.defenses.dat import DeconvolutionAT
from unlearnable.defenses.deconv import Deconvolve, estimate_kernels, recover, wiener_deconvolve
from unlearnable.defenses.frequency import FrequencyFilter, dct_low_pass, dct_matrix, kept_frequencies
from unlearnable.defenses.hooks import StepHook, l2_adversarial_training, linf_adversarial_training
from unlearnable.defenses.iss import BitDepthReduction, Grayscale, JpegCompression, jpeg_round_trip
from unlearnable.defenses.mixing import CutMix, Mixing, MixUp
from unlearnable.defenses.projection import OrthogonalProjection
from unlearnable.defenses.sharpen import (PADDING_MODES, RandomSharpen, StaticSharpen, sample_sharpen_kernels,
                                          sharpen, static_sharpen_kernel)
from unlearnable.data.dataset import ImageDataset
from unlearnable.defenses.ueraser import UEraserMax
from unlearnable.errors import UserInputError


class Defense(Protocol):
    """What every defense is: a callable over float B×C×H×W batches with a readable repr."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


DEFENSES: dict[str, Callable[..., Defense]] = {
    "rsk": RandomSharpen,
    "ssk": StaticSharpen,
    "ff": FrequencyFilter,
    "coin": Coin,
    "jpeg": JpegCompression,
    "gray": Grayscale,
    "bdr": BitDepthReduction,
    "cutout": Cutout,
}

DEFENSE_NAMES: tuple[str, ...] = ("none", *DEFENSES)
"""Every single name `build_defense` accepts; any "+"-chain of the names in ``DEFENSES`` works too."""

MIXING_DEFENSES: dict[str, Callable[..., Mixing]] = {
    "mixup": MixUp,
    "cutmix": CutMix,
}
"""Label-mixing defenses, training only (`training_defense`): ``mix(x, targets, generator) -> (x, targets)``."""

HOOK_DEFENSES: dict[str, Callable[..., StepHook]] = {
    "at-linf": linf_adversarial_training,
    "at-l2": l2_adversarial_training,
    "dat": DeconvolutionAT,
    "ueraser": UEraserMax,
}
"""Model-in-the-loop step hooks, training only (`training_defense`):
``hook(model, x, targets, generator, normalize) -> x``."""

PREPROCESSING_DEFENSES: dict[str, Callable[..., Callable[[ImageDataset], ImageDataset]]] = {
    "deconv": Deconvolve,
    "deconv-spectrum": functools.partial(Deconvolve, method="spectrum"),
    "ortho-proj": OrthogonalProjection,
}
"""Whole-training-set transforms, training only, applied once before training (`training_defense`):
``preprocess(dataset) -> dataset``, deterministic; at most one, first in the chain ("deconv+rsk")."""


def defense_kinds() -> dict[str, tuple[str, ...]]:
    """Every defense name, grouped by where the trainer applies it, in pipeline order."""
    after = {name for name, factory in DEFENSES.items() if getattr(factory, "after_crop", False)}
    return {"before crop/flip": tuple(name for name in DEFENSES if name not in after),
            "after crop/flip": tuple(name for name in DEFENSES if name in after),
            "label mixing, at most one": tuple(MIXING_DEFENSES),
            "model in the loop, at most one": tuple(HOOK_DEFENSES),
            "preprocessing once before training, at most one, first": tuple(PREPROCESSING_DEFENSES)}


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
    keep_percent, imagenet_variant, alpha, severity, published_quirks, quality, bits, size);
    options set to None count as not given. An unknown name,
    an option no defense in the chain takes, or an out-of-range value raises UserInputError.
    """
    names = _chain_names(spec)
    for name in names:
        if name in MIXING_DEFENSES or name in HOOK_DEFENSES or name in PREPROCESSING_DEFENSES:
            raise UserInputError(f"defense {name!r} in {spec!r} needs the labels, the model or the whole training set, so it works only in "
                                 f"training (unlearnable train --defense); image transforms are {', '.join(DEFENSES)}")
    return _compose(_construct(names, spec, options))


def _chain_names(spec: str) -> list[str]:
    """The names of a "+"-chain, lower-cased; [] for "none". Unknown names raise UserInputError."""
    names = [part.strip() for part in spec.strip().lower().split("+")]
    if names == ["none"]:
        return []
    for name in names:
        if name not in {**DEFENSES, **MIXING_DEFENSES, **HOOK_DEFENSES, **PREPROCESSING_DEFENSES}:
            known = "; ".join(f"{kind}: {', '.join(kind_names)}" for kind, kind_names in defense_kinds().items()
                              if kind_names)
            raise UserInputError(f"unknown defense {name!r} in {spec!r}: expected 'none' or a '+'-chain of known "
                                 f"names ({known}), e.g. 'rsk+ff'")
    return names


def _construct(names: list[str], spec: str, options: dict[str, Any]) -> list[Any]:
    """Call each name's factory with the options it accepts (None = not given); an option nobody takes raises."""
    options = {key: value for key, value in options.items() if value is not None}
    factories = [{**DEFENSES, **MIXING_DEFENSES, **HOOK_DEFENSES, **PREPROCESSING_DEFENSES}[name] for name in names]
    accepted = [_accepted_options(factory) for factory in factories]
    unused = sorted(set(options).difference(*accepted))
    if unused:
        raise UserInputError(f"option {unused[0]}={options[unused[0]]!r} does not apply to defense {spec!r}: "
                             f"it takes {', '.join(sorted(set().union(*accepted))) or 'no options'}")
    return [factory(**{key: value for key, value in options.items() if key in keys})
            for factory, keys in zip(factories, accepted)]


def _compose(defenses: Sequence[Defense]) -> Defense:
    if not defenses:
        return Identity()
    return defenses[0] if len(defenses) == 1 else Compose(defenses)


@dataclass(frozen=True)
class TrainingDefense:
    """A training chain split by kind, in the order the trainer applies the parts (``unlearnable.train``):

        before_crop → RandomCrop / flip (/ rotation) → after_crop → mix → hook → update

    Attributes:
        before_crop, after_crop: image transforms (``DEFENSES``; the after-crop ones have the
            class attribute ``after_crop = True``), composed in chain order; Identity() when none.
        mix: the label-mixing defense (``MIXING_DEFENSES``), or None.
        hook: the model-in-the-loop step hook (``HOOK_DEFENSES``), or None.
        preprocess: the whole-training-set transform (``PREPROCESSING_DEFENSES``) the trainer applies
            once before training, or None.
    """

    before_crop: Defense = field(default_factory=Identity)
    after_crop: Defense = field(default_factory=Identity)
    mix: Mixing | None = None
    hook: StepHook | None = None
    preprocess: Callable[[ImageDataset], ImageDataset] | None = None


def training_defense(spec: str, **options: Any) -> TrainingDefense:
    """The training defense named by `spec`: "none", or a "+"-chain of any names of ``DEFENSES``,
    at most one of ``MIXING_DEFENSES`` and at most one of ``HOOK_DEFENSES`` ("rsk+ff+at-linf", "cutmix").

    Options are routed as in `build_defense` (to every factory in the chain that takes them;
    eps, steps, filter_size, step_size, draws, mix_alpha besides the transforms' own). Transforms
    keep their chain order within their kind. An unknown name, a second mixing defense or
    hook, an option nobody takes, or a bad value raises UserInputError.
    """
    names = _chain_names(spec)
    for registry, kind in ((MIXING_DEFENSES, "label-mixing defense"), (HOOK_DEFENSES, "model-in-the-loop defense"),
                           (PREPROCESSING_DEFENSES, "preprocessing defense")):
        chosen = [name for name in names if name in registry]
        if len(chosen) > 1:
            raise UserInputError(f"{spec!r} has {len(chosen)} of the {kind}s ({', '.join(chosen)}): keep at most one")
    if any(name in PREPROCESSING_DEFENSES for name in names[1:]):
        raise UserInputError(f"{spec!r}: a preprocessing defense ({', '.join(PREPROCESSING_DEFENSES)}) runs once "
                             "before training, so put it first in the chain, e.g. 'deconv+rsk'")
    parts = list(zip(names, _construct(names, spec, options)))
    transforms = [(name, part) for name, part in parts if name in DEFENSES]
    return TrainingDefense(
        before_crop=_compose([part for name, part in transforms if not getattr(DEFENSES[name], "after_crop", False)]),
        after_crop=_compose([part for name, part in transforms if getattr(DEFENSES[name], "after_crop", False)]),
        mix=next((part for name, part in parts if name in MIXING_DEFENSES), None),
        hook=next((part for name, part in parts if name in HOOK_DEFENSES), None),
        preprocess=next((part for name, part in parts if name in PREPROCESSING_DEFENSES), None))


__all__ = ["DEFENSES", "DEFENSE_NAMES", "HOOK_DEFENSES", "MIXING_DEFENSES", "PADDING_MODES", "PREPROCESSING_DEFENSES",
           "BitDepthReduction", "Coin", "Compose", "CutMix", "Cutout", "DeconvolutionAT", "Deconvolve", "Defense", "FrequencyFilter", "Grayscale",
           "Identity", "JpegCompression", "MixUp", "Mixing", "OrthogonalProjection", "RandomSharpen", "StaticSharpen", "StepHook",
           "TrainingDefense", "UEraserMax", "build_defense", "dct_low_pass", "dct_matrix", "defense_kinds", "displace",
           "estimate_kernels", "jpeg_round_trip", "kept_frequencies", "l2_adversarial_training", "linf_adversarial_training",
           "recover", "sample_displacements", "sample_sharpen_kernels", "sharpen", "static_sharpen_kernel", "training_defense",
           "wiener_deconvolve"]
