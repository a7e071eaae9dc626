"""Adversarial training (SPEC §5): PGD in L∞ and L2, and the step hook that trains on its output.

PGD works in pixel space: `x` is the augmented (and defended) float batch in [0, 1], and the
model's input normalisation is applied inside the forward through `normalize`, so ε is in pixel
units (4/255 means four grey levels) whatever the recipe's Normalize. During the attack the model
is in eval mode, so BatchNorm uses, and does not update, its running statistics; gradients are
taken with respect to the input only (``torch.autograd.grad``), so no parameter's ``.grad`` changes.

The CUDA paper's L∞ baseline is ε = 4/255, 10 steps of α = 1.5·ε/10; its published code used
ε = 0.015 (slightly below 4/255 = 0.0157). The default here is 4/255.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.defenses.base import resolve_generator
from unlearnable.errors import UserInputError
from unlearnable.params import POSITIVE, POSITIVE_INT, Constraint, Options, StrOptions, validate_params

Normalize = Callable[[torch.Tensor], torch.Tensor]
"""Maps a float B×C×H×W batch in [0, 1] to the model's input (e.g. per-channel standardisation)."""

STEP_SIZE_FACTOR = {"linf": 1.5, "l2": 2.5}
"""Default step α = factor · ε / steps: 1.5 for L∞ (the CUDA paper), 2.5 for L2 (Madry et al.'s rule)."""


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode for the block and restore its previous train/eval mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast turned off on `x`'s device for the block: a step hook's own arithmetic on the batch.

    The model's forward keeps the caller's autocast (see `unlearnable.defenses.hooks`); the images
    a hook builds and returns must not be rounded to bf16.
    """
    return torch.autocast(x.device.type, enabled=False)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, normalize: Normalize | None) -> torch.Tensor:
    """∂ CE(model(normalize(x)), y) / ∂x, summed over the batch, without touching parameter grads.

    Returns:
        float tensor shaped like `x`. The loss is summed, not averaged, so each sample's
        gradient does not shrink with the batch size (both PGD variants only use its direction).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(normalize(x) if normalize is not None else x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each sample of B×... `t`, shaped (B, 1, ..., 1) to broadcast against it."""
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale each sample of the B×... perturbation `delta` into the L2 ball of radius `eps`."""
    return delta * (eps / _per_sample_norm(delta)).clamp(max=1.0)  # a zero norm gives inf → clamped to 1


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float,
    generator: torch.Generator | None = None,
    normalize: Normalize | None = None,
    random_start: bool = True,
) -> torch.Tensor:
    """L∞ PGD: maximise the cross-entropy within ‖x' − x‖∞ ≤ eps and 0 ≤ x' ≤ 1.

    Args:
        model: classifier over ``normalize(x)``; put in eval mode for the attack, restored after.
        x: float B×C×H×W batch in [0, 1].
        y: int64 labels (B,).
        eps: radius in pixel units (e.g. 4/255).
        steps: number of signed-gradient ascent steps.
        alpha: step size in pixel units.
        generator: source of the uniform random start in [−eps, eps] (on x's device).
        normalize: applied to the batch inside the forward (None: the identity).
        random_start: start from a uniform point of the ε-box instead of `x` itself.

    Returns:
        the adversarial batch, detached, shaped like `x`, inside the ε-box around `x` and in [0, 1].
    """
    x = x.detach()
    low, high = (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = torch.min(torch.max(x + noise.mul_(2 * eps).sub_(eps), low), high)
    else:
        x_adv = x.clone()
    with eval_mode(model):
        for _ in range(steps):
            grad = input_gradient(model, x_adv, y, normalize)
            with full_precision(x):
                x_adv = torch.min(torch.max(x_adv + alpha * grad.sign().to(x.dtype), low), high)
    return x_adv


def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    alpha: float,
    generator: torch.Generator | None = None,
    normalize: Normalize | None = None,
    random_start: bool = True,
) -> torch.Tensor:
    """L2 PGD: normalised-gradient ascent within ‖x' − x‖₂ ≤ eps per sample and 0 ≤ x' ≤ 1.

    Args and returns as `pgd_linf`, with `eps` and `alpha` L2 lengths over a whole C×H×W image
    (pixel units). The random start is uniform in the ε-ball: a Gaussian direction scaled to
    radius eps·u^(1/d), u ~ U(0, 1), d = C·H·W. Each step moves `alpha` along the per-sample
    unit gradient, then projects onto the ball and clamps to [0, 1] (clamping only shortens a
    perturbation, so the result stays in the ball).
    """
    x = x.detach()
    if random_start:
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        radius = eps * u.pow(1 / x[0].numel()).view(-1, *[1] * (x.dim() - 1))
        x_adv = (x + direction * (radius / _per_sample_norm(direction))).clamp_(0, 1)
    else:
        x_adv = x.clone()
    with eval_mode(model):
        for _ in range(steps):
            grad = input_gradient(model, x_adv, y, normalize).to(x.dtype)
            with full_precision(x):
                x_adv = x_adv + alpha * grad / _per_sample_norm(grad).clamp(min=1e-12)
                x_adv = (x + project_l2(x_adv - x, eps)).clamp_(0, 1)
    return x_adv


PGD = {"linf": pgd_linf, "l2": pgd_l2}
"""The PGD attack of each norm, as `AdversarialTraining` names them."""


@dataclass(frozen=True)
class AdversarialTraining:
    """The AT step hook: replace every training batch by its PGD adversarial batch (SPEC §5).

    The trainer calls it on the augmented (and defended) batch in [0, 1], between the
    augmentation and the model's update, and trains on the adversarial batch only.

    Attributes:
        norm: "linf" or "l2".
        eps: the radius in pixel units (L∞: per pixel, e.g. 4/255; L2: over a whole image, e.g. 0.5).
        steps: PGD steps (≥ 1).
        alpha: step size; None means ``STEP_SIZE_FACTOR[norm] · eps / steps``.
        random_start: start from a random point of the ε-ball.
    """

    norm: str = "linf"
    eps: float = 4 / 255
    steps: int = 10
    alpha: float | None = None
    random_start: bool = True

    PARAMETER_CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "norm": StrOptions(PGD),
        "eps": POSITIVE,
        "steps": POSITIVE_INT,
        "alpha": Options(None, POSITIVE),
    }

    def __post_init__(self) -> None:
        validate_params(self, {"norm": self.norm, "eps": self.eps, "steps": self.steps, "alpha": self.alpha})
        if self.alpha is None:
            object.__setattr__(self, "alpha", STEP_SIZE_FACTOR[self.norm] * self.eps / self.steps)
        object.__setattr__(self, "random_start", bool(self.random_start))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> AdversarialTraining:
        """Build from a dict such as ``{"norm": "l2", "eps": 0.5}``; unknown keys raise UserInputError."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise UserInputError(
                f"unknown adversarial option {unknown[0]!r}: expected {', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**options)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        generator: torch.Generator | None,
        normalize: Normalize | None = None,
    ) -> torch.Tensor:
        """The adversarial version of float B×C×H×W batch `x` in [0, 1] with labels `y` (detached)."""
        assert self.alpha is not None
        if self.random_start:
            generator = resolve_generator(generator, x.device, type(self).__name__)
        return PGD[self.norm](model, x, y, self.eps, self.steps, self.alpha, generator, normalize, self.random_start)

    def to_dict(self) -> dict[str, Any]:
        """The resolved options (alpha filled in), JSON-ready."""
        return asdict(self)
