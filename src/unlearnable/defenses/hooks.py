"""Model-in-the-loop step hooks: the interface, and the adversarial-training presets of SPEC §5.

A step hook replaces each training batch by one computed with the current model, between the
augmentation (and mixing) and the update: ``hook(model, x, targets, generator, normalize) -> x``,
with `x` a float B×C×H×W batch in [0, 1], `targets` int64 labels (B,) or float B×K probabilities
(after a mixing defense), `normalize` the model's input normalisation, and the result a detached
float batch shaped like `x`. Random hooks draw only from `generator` (on the batch's device; None:
torch's global generator there, see `unlearnable.defenses.base.resolve_generator`).
The hooks here: "at-linf", "at-l2" (PGD, `AdversarialTraining`), "dat" (`DeconvolutionAT`) and
"ueraser" (`UEraserMax`).

Mixed precision: the trainer passes the model wrapped in `AutocastModel`, so only the model's
forward runs under bf16 autocast; each hook does its own image arithmetic (filters, augmentations,
PGD steps) with autocast turned off (`full_precision`), so the batch it returns stays float32 even
when the whole call runs inside an autocast region.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from unlearnable.defenses.adversarial import AdversarialTraining, Normalize, full_precision

__all__ = ["AutocastModel", "StepHook", "full_precision", "l2_adversarial_training", "linf_adversarial_training"]


class StepHook(Protocol):
    """What every model-in-the-loop defense is (see the module docstring)."""

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None,
        normalize: Normalize | None = None,
    ) -> torch.Tensor: ...


def linf_adversarial_training(eps: float = 4 / 255, steps: int = 10) -> AdversarialTraining:
    """ "at-linf": PGD L∞ adversarial training as the CUDA paper (SPEC §5).

    ε = 4/255 by default (the RSK+FF paper's Table 1; 8/255 and 16/255 via `eps`), `steps` steps
    of α = 1.5·ε/steps from a uniform random start.
    """
    return AdversarialTraining("linf", eps, steps)


def l2_adversarial_training(eps: float = 0.5, steps: int = 10) -> AdversarialTraining:
    """ "at-l2": PGD L2 adversarial training (SPEC §5): ε = 0.5 by default (0.25, 0.75 via `eps`),
    `steps` normalised-gradient steps of α = 2.5·ε/steps, per-sample projection onto the ball."""
    return AdversarialTraining("l2", eps, steps)


class AutocastModel:
    """`model` whose every call runs under autocast (bf16 by default): what a step hook gets with AMP.

    Only the forward is cast; the hook's arithmetic around it is left alone. ``training``,
    ``train()`` and ``eval()`` act on the wrapped model (so `eval_mode` works on the wrapper), and
    any other attribute is the model's.

    Args:
        model: the network (or a compiled one).
        device_type: "cpu" or "cuda", as ``torch.autocast`` takes it.
        enabled: False makes the wrapper a plain call of `model`.
        dtype: the autocast dtype.
    """

    def __init__(
        self, model: nn.Module, device_type: str, enabled: bool = True, dtype: torch.dtype = torch.bfloat16
    ) -> None:
        self.model, self.device_type, self.enabled, self.dtype = model, device_type, enabled, dtype

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled):
            return self.model(*args, **kwargs)

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> AutocastModel:
        self.model.train(mode)
        return self

    def eval(self) -> AutocastModel:
        return self.train(False)

    def __getattr__(self, name: str) -> Any:
        if name == "model":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"AutocastModel({self.model!r}, {self.device_type!r}, enabled={self.enabled}, dtype={self.dtype})"
