"""Model-in-the-loop step hooks: the interface, and the adversarial-training presets of SPEC §5.

A step hook replaces each training batch by one computed with the current model, between the
augmentation (and mixing) and the update: ``hook(model, x, targets, generator, normalize) -> x``,
with `x` a float B×C×H×W batch in [0, 1], `targets` int64 labels (B,) or float B×K probabilities
(after a mixing defense), `normalize` the model's input normalisation, and the result a detached
float batch shaped like `x`. Random hooks draw only from `generator` (on the batch's device).
The hooks here: "at-linf", "at-l2" (PGD, `AdversarialTraining`), "dat" (`DeconvolutionAT`) and
"ueraser" (`UEraserMax`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from unlearnable.defenses.adversarial import AdversarialTraining, Normalize


class StepHook(Protocol):
    """What every model-in-the-loop defense is (see the module docstring)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None,
                 normalize: Normalize | None = None) -> torch.Tensor: ...


def linf_adversarial_training(eps: float = 4 / 255, steps: int = 10) -> AdversarialTraining:
    """"at-linf": PGD L∞ adversarial training as the CUDA paper (SPEC §5).

    ε = 4/255 by default (the RSK+FF paper's Table 1; 8/255 and 16/255 via `eps`), `steps` steps
    of α = 1.5·ε/steps from a uniform random start.
    """
    return AdversarialTraining("linf", eps, steps)


def l2_adversarial_training(eps: float = 0.5, steps: int = 10) -> AdversarialTraining:
    """"at-l2": PGD L2 adversarial training (SPEC §5): ε = 0.5 by default (0.25, 0.75 via `eps`),
    `steps` normalised-gradient steps of α = 2.5·ε/steps, per-sample projection onto the ball."""
    return AdversarialTraining("l2", eps, steps)
