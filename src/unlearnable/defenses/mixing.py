"""Label-mixing defenses (SPEC §6): MixUp and CutMix over a batch and its soft targets.

A mixing defense is ``mix(x, targets, generator) -> (x, targets)``: `x` a float B×C×H×W batch
in [0, 1], `targets` float B×K class probabilities (one-hot rows for plain labels). Each image
is mixed with a partner from one random permutation of the batch, and its targets with the
partner's in the same proportion, so every row still sums to 1. The trainer applies it after
crop/flip and trains with cross-entropy on the soft targets. Per batch one λ, one permutation
(and for CutMix one box) are drawn from `generator`, which must live on the batch's device (None:
torch's global generator there).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from unlearnable.defenses.base import Configurable, resolve_generator
from unlearnable.params import POSITIVE


class Mixing(Protocol):
    """What every mixing defense is: (x, soft targets, generator) → (mixed x, mixed targets)."""

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def sample_gamma(shape: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` draws of Gamma(shape, 1) from `generator` (Marsaglia & Tsang's squeeze method).

    Each round draws a normal and a uniform per pending sample and accepts ~96% of them; shape
    < 1 is drawn as Gamma(shape + 1)·U^(1/shape). Returns float32 (count,) on the generator's device.
    """
    device = generator.device
    boosted = shape < 1
    d = shape + boosted - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.zeros(count, device=device)
    done = torch.zeros(count, dtype=torch.bool, device=device)
    while not bool(done.all()):
        z = torch.randn(count, generator=generator, device=device)
        u = torch.rand(count, generator=generator, device=device)
        v = (1 + c * z) ** 3
        accept = (v > 0) & (u.log() < 0.5 * z * z + d - d * v + d * v.clamp(min=1e-30).log())
        out = torch.where(accept & ~done, d * v, out)
        done |= accept
    if boosted:
        out = out * torch.rand(count, generator=generator, device=device).pow(1 / shape)
    return out


def sample_beta(alpha: float, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` draws of the symmetric Beta(alpha, alpha) from `generator`, float32 (count,).

    alpha = 1 is U(0, 1), drawn as one ``torch.rand``; otherwise X / (X + Y) with X, Y ~ Gamma(alpha).
    """
    if alpha == 1:
        return torch.rand(count, generator=generator, device=generator.device)
    x, y = sample_gamma(alpha, 2 * count, generator).view(2, count)
    return x / (x + y)


class MixUp(Configurable):
    """MixUp (Zhang et al. 2018): x' = λ·x + (1 − λ)·x[π], targets likewise, λ ~ Beta(α, α) per batch.

    Args:
        mix_alpha: α > 0; the default 1 is SPEC §6's λ ~ U(0, 1) (the CUDA paper's mixup run);
            the usual MixUp recipes use α = 0.2–1. (Not "alpha": COIN's option has that name.)
    """

    PARAMETER_CONSTRAINTS = {"mix_alpha": POSITIVE}

    def __init__(self, mix_alpha: float = 1.0) -> None:
        self._validate(mix_alpha=mix_alpha)
        self.mix_alpha = float(mix_alpha)

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix float B×C×H×W `x` in [0, 1] and float B×K `targets`; returns new tensors, same shapes.

        `generator`: on x's device, or None for torch's global generator there.
        """
        generator = resolve_generator(generator, x.device, type(self).__name__)
        lam = sample_beta(self.mix_alpha, 1, generator).to(x.dtype)
        partner = torch.randperm(len(x), generator=generator, device=x.device)
        mixed = lam.view(1, 1, 1, 1) * x + (1 - lam.view(1, 1, 1, 1)) * x[partner]
        return mixed, lam * targets + (1 - lam) * targets[partner]


def cutmix_box(height: int, width: int, lam: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The CutMix box for mixing ratio `lam` (0-d or (1,) tensor) as a bool H×W mask on its device.

    As the reference code (Yun et al. 2019): side ratio r = √(1 − λ), box int(r·H) × int(r·W)
    centred on a uniform random pixel, both half-sides rounded down, clipped to the image, so
    the box may be smaller than (1 − λ)·H·W.
    """
    device = generator.device
    ratio = (1 - lam.reshape(())).sqrt()
    half_h, half_w = (ratio * height).floor().div(2).floor(), (ratio * width).floor().div(2).floor()
    centre_y = torch.randint(height, (), generator=generator, device=device)
    centre_x = torch.randint(width, (), generator=generator, device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= centre_y - half_h) & (rows < centre_y + half_h)
    in_cols = (cols >= centre_x - half_w) & (cols < centre_x + half_w)
    return in_rows[:, None] & in_cols[None, :]


class CutMix(Configurable):
    """CutMix (Yun et al. 2019): paste one box of the partner image x[π] into every image.

    λ ~ Beta(α, α) sets the box size (see `cutmix_box`; one box for the whole batch), and the
    targets are mixed by the area actually kept after clipping: λ' = 1 − box area / (H·W).

    Args:
        mix_alpha: α > 0; default 1 (Beta(1, 1) = U(0, 1), SPEC §6 and the reference code).
    """

    PARAMETER_CONSTRAINTS = {"mix_alpha": POSITIVE}

    def __init__(self, mix_alpha: float = 1.0) -> None:
        self._validate(mix_alpha=mix_alpha)
        self.mix_alpha = float(mix_alpha)

    def __call__(
        self, x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix float B×C×H×W `x` in [0, 1] and float B×K `targets`; returns new tensors, same shapes.

        `generator`: on x's device, or None for torch's global generator there.
        """
        generator = resolve_generator(generator, x.device, type(self).__name__)
        height, width = x.shape[-2:]
        lam = sample_beta(self.mix_alpha, 1, generator)
        partner = torch.randperm(len(x), generator=generator, device=x.device)
        box = cutmix_box(height, width, lam, generator)
        mixed = torch.where(box, x[partner], x)
        kept = 1 - box.sum().to(targets.dtype) / (height * width)
        return mixed, kept * targets + (1 - kept) * targets[partner]
