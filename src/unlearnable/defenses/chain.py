"""Defense chains: "rsk+ff", "deconv+rsk+ff+at-linf", built from the ``DEFENSES`` registry.

A chain's parts are split by their registered stage, in the order the trainer applies them
(`TrainingDefense`). `build_defense` makes the image-only chains (`unlearnable show`, other
people's training code); `training_defense` any chain.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from unlearnable.data.dataset import ImageDataset
from unlearnable.defenses import DEFENSES, STAGES, Defense
from unlearnable.defenses.base import Transform
from unlearnable.defenses.hooks import StepHook
from unlearnable.defenses.mixing import Mixing
from unlearnable.errors import UserInputError


def defense_kinds() -> dict[str, tuple[str, ...]]:
    """Every defense name, grouped by where the trainer applies it, in pipeline order."""
    return {description: DEFENSES.names(stage=stage) for stage, description in STAGES.items()}


IMAGE_STAGES = ("before-crop", "after-crop")
"""Stages whose defenses are plain image transforms (`build_defense` takes only these)."""


class Identity(Transform):
    """The "none" defense: returns a batch unchanged (the same tensor)."""

    def transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        return x


class Compose(Transform):
    """Apply `defenses` left to right, handing the same generator to each.

    It draws nothing itself: each part draws its own parameters when it runs, on the shape the
    previous part produced (RSK's "valid" padding shrinks the images that COIN then displaces).
    """

    def __init__(self, defenses: Sequence[Defense]) -> None:
        self.defenses = tuple(defenses)

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, Any]:
        """{"generator": the generator as given}: each part resolves and checks it itself."""
        return {"generator": generator}

    def transform(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        for defense in self.defenses:
            x = defense(x, params["generator"])
        return x

    def __repr__(self) -> str:
        return f"Compose([{', '.join(map(repr, self.defenses))}])"


def _accepted_options(factory: Callable[..., Defense]) -> set[str]:
    return set(inspect.signature(factory).parameters)


def build_defense(spec: str, **options: Any) -> Defense:
    """The image defense named by `spec`: "none", one image-stage name, or a "+"-chain ("rsk+ff").

    Each option goes to every factory in the chain that accepts it (center, std, padding,
    keep_percent, imagenet_variant, alpha, severity, published_quirks, quality, bits, size);
    options set to None count as not given. An unknown name,
    an option no defense in the chain takes, or an out-of-range value raises UserInputError.
    """
    names = _chain_names(spec)
    for name in names:
        if DEFENSES.entry(name).tags["stage"] not in IMAGE_STAGES:
            raise UserInputError(
                f"defense {name!r} in {spec!r} needs the labels, the model or the whole training set, so it works only in "
                f"training (unlearnable train --defense); image transforms are "
                f"{', '.join(n for stage in IMAGE_STAGES for n in DEFENSES.names(stage=stage))}"
            )
    return _compose(_construct(names, spec, options))


def _chain_names(spec: str) -> list[str]:
    """The names of a "+"-chain, lower-cased; [] for "none". Unknown names raise UserInputError."""
    names = [part.strip() for part in spec.strip().lower().split("+")]
    if names == ["none"]:
        return []
    for name in names:
        if name not in DEFENSES:
            known = "; ".join(
                f"{kind}: {', '.join(kind_names)}" for kind, kind_names in defense_kinds().items() if kind_names
            )
            raise UserInputError(
                f"unknown defense {name!r} in {spec!r}: expected 'none' or a '+'-chain of known "
                f"names ({known}), e.g. 'rsk+ff'"
            )
    return names


def _construct(names: list[str], spec: str, options: dict[str, Any]) -> list[Any]:
    """Call each name's factory with the options it accepts (None = not given); an option nobody takes raises."""
    options = {key: value for key, value in options.items() if value is not None}
    factories = [DEFENSES.get(name) for name in names]
    accepted = [_accepted_options(factory) for factory in factories]
    unused = sorted(set(options).difference(*accepted))
    if unused:
        raise UserInputError(
            f"option {unused[0]}={options[unused[0]]!r} does not apply to defense {spec!r}: "
            f"it takes {', '.join(sorted(set().union(*accepted))) or 'no options'}"
        )
    return [
        factory(**{key: value for key, value in options.items() if key in keys})
        for factory, keys in zip(factories, accepted)
    ]


def _compose(defenses: Sequence[Defense]) -> Defense:
    if not defenses:
        return Identity()
    return defenses[0] if len(defenses) == 1 else Compose(defenses)


@dataclass(frozen=True)
class TrainingDefense:
    """A training chain split by kind, in the order the trainer applies the parts (``unlearnable.training.trainer``):

        before_crop → RandomCrop / flip (/ rotation) → after_crop → mix → hook → update

    Attributes:
        before_crop, after_crop: the image transforms of those stages, composed in chain order;
            Identity() when none.
        mix: the label-mixing defense (stage "mixing"), or None.
        hook: the model-in-the-loop step hook (stage "hook"), or None.
        preprocess: the whole-training-set transform (stage "preprocess") the trainer applies
            once before training, or None.
    """

    before_crop: Defense = field(default_factory=Identity)
    after_crop: Defense = field(default_factory=Identity)
    mix: Mixing | None = None
    hook: StepHook | None = None
    preprocess: Callable[[ImageDataset], ImageDataset] | None = None


def training_defense(spec: str, **options: Any) -> TrainingDefense:
    """The training defense named by `spec`: "none", or a "+"-chain of any registered names, with at
    most one of each of the stages "mixing", "hook" and "preprocess" ("rsk+ff+at-linf", "cutmix").

    Options are routed as in `build_defense` (to every factory in the chain that takes them;
    eps, steps, filter_size, step_size, draws, mix_alpha besides the transforms' own). Transforms
    keep their chain order within their kind. An unknown name, a second mixing defense or
    hook, an option nobody takes, or a bad value raises UserInputError.
    """
    names = _chain_names(spec)
    stage_of = {name: DEFENSES.entry(name).tags["stage"] for name in names}
    for stage, kind in (
        ("mixing", "label-mixing defense"),
        ("hook", "model-in-the-loop defense"),
        ("preprocess", "preprocessing defense"),
    ):
        chosen = [name for name in names if stage_of[name] == stage]
        if len(chosen) > 1:
            raise UserInputError(f"{spec!r} has {len(chosen)} of the {kind}s ({', '.join(chosen)}): keep at most one")
    if any(stage_of[name] == "preprocess" for name in names[1:]):
        raise UserInputError(
            f"{spec!r}: a preprocessing defense ({', '.join(DEFENSES.names(stage='preprocess'))}) runs once "
            "before training, so put it first in the chain, e.g. 'deconv+rsk'"
        )
    parts = list(zip(names, _construct(names, spec, options)))
    return TrainingDefense(
        before_crop=_compose([part for name, part in parts if stage_of[name] == "before-crop"]),
        after_crop=_compose([part for name, part in parts if stage_of[name] == "after-crop"]),
        mix=next((part for name, part in parts if stage_of[name] == "mixing"), None),
        hook=next((part for name, part in parts if stage_of[name] == "hook"), None),
        preprocess=next((part for name, part in parts if stage_of[name] == "preprocess"), None),
    )
