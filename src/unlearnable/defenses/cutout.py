"""Cutout (DeVries & Taylor 2017): zero one square hole per image.

Centre (cy, cx) uniform over the pixels, hole rows max(cy - s//2, 0) .. min(cy - s//2 + s, H) - 1
and likewise for columns: a square of side s clipped at the border. For even s (the published 16)
this is exactly the reference code (and the ISS code that copied it); for odd s the reference code
makes side s - 1, here it is s.
"""

from __future__ import annotations

import torch

from unlearnable.defenses.base import Transform
from unlearnable.params import POSITIVE_INT


def sample_hole_centres(
    batch_size: int, height: int, width: int, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
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


class Cutout(Transform):
    """Zero a square of side `size` (clipped at the border) at a random centre in every image.

    The trainer applies Cutout after RandomCrop/flip, as the reference code does.

    Args:
        size: side of the hole in pixels, an integer >= 1 (default 16, as for CIFAR-10).
    """

    PARAMETER_CONSTRAINTS = {"size": POSITIVE_INT}
    random = True

    def __init__(self, size: int = 16) -> None:
        self._validate(size=size)
        self.size = size

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The hole centres: {"rows": (B,), "cols": (B,)} int64, see `sample_hole_centres`."""
        assert generator is not None
        batch, _, height, width = x.shape
        rows, cols = sample_hole_centres(batch, height, width, generator=generator)
        return {"rows": rows, "cols": cols}

    def transform(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """A new tensor with one hole per image set to 0."""
        height, width = x.shape[-2:]
        hole = _span(params["rows"], self.size, height).unsqueeze(2) & _span(
            params["cols"], self.size, width
        ).unsqueeze(1)  # (B, H, W)
        return x.masked_fill(hole.unsqueeze(1), 0)
