"""Cutout (DeVries & Taylor 2017): zero one square hole per image.

Centre (cy, cx) uniform over the pixels, hole rows max(cy - s//2, 0) .. min(cy - s//2 + s, H) - 1
and likewise for columns: a square of side s clipped at the border. For even s (the published 16)
this is exactly the reference code (and the ISS code that copied it); for odd s the reference code
makes side s - 1, here it is s.
"""

from __future__ import annotations

import torch

from unlearnable.errors import UserInputError


def sample_hole_centres(batch_size: int, height: int, width: int, *,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hole centres, uniform over the pixels: rows ``randint(0, height, (B,))`` then columns ``randint(0, width, (B,))``.

    Returns:
        two (batch_size,) int64 tensors (cy, cx) on ``generator.device``.
    """
    rows = torch.randint(0, height, (batch_size,), generator=generator, device=generator.device)
    cols = torch.randint(0, width, (batch_size,), generator=generator, device=generator.device)
    return rows, cols


def _span(centres: torch.Tensor, side: int, size: int) -> torch.Tensor:
    """(B, size) bool over an axis of `size` pixels: centre - side//2 <= p < centre - side//2 + side."""
    offsets = torch.arange(size, device=centres.device) + side // 2 - centres.unsqueeze(1)
    return (offsets >= 0) & (offsets < side)


class Cutout:
    """Zero a square of side `size` (clipped at the border) at a random centre in every image.

    Args:
        size: side of the hole in pixels, an integer >= 1 (default 16, as for CIFAR-10).
    """

    """The trainer applies Cutout after RandomCrop/flip, as the reference code does."""

    def __init__(self, size: int = 16) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UserInputError(f"size={size!r} is invalid: expected an integer >= 1 (hole side in pixels, default 16)")
        self.size = size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Float B×C×H×W `x` → a new B×C×H×W tensor with one hole per image set to 0.

        `generator` (on x's device) is required.
        """
        if generator is None:
            raise ValueError("Cutout needs an explicit torch.Generator on the batch's device")
        batch, _, height, width = x.shape
        rows, cols = sample_hole_centres(batch, height, width, generator=generator)
        hole = _span(rows, self.size, height).unsqueeze(2) & _span(cols, self.size, width).unsqueeze(1)  # (B, H, W)
        return x.masked_fill(hole.unsqueeze(1), 0)

    def __repr__(self) -> str:
        return f"Cutout(size={self.size})"
