"""Sharpening defenses: a random (RSK) or static (SSK) cross-shaped 3×3 kernel per image.

The kernel is ``[[0, -n1, 0], [-n2, c, -n3], [0, -n4, 0]]``, applied depthwise (the same kernel
on every channel of an image, no channel mixing) with PyTorch ``conv2d`` semantics
(cross-correlation), then the result is clamped to [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unlearnable.errors import UserInputError

PADDING_MODES = ("valid", "replicate", "reflect", "zeros")
"""``valid`` shrinks H×W to (H-2)×(W-2); the others pad one pixel and keep H×W."""


def cross_kernels(center: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Assemble cross-shaped kernels from their weights.

    Args:
        center: (B,) centre weights c.
        neighbours: (B, 4) weights n1 (top), n2 (left), n3 (right), n4 (bottom).

    Returns:
        (B, 3, 3) kernels ``[[0, -n1, 0], [-n2, c, -n3], [0, -n4, 0]]``, dtype of `center`.
    """
    zero = torch.zeros_like(center)
    n1, n2, n3, n4 = (-neighbours).unbind(dim=1)
    return torch.stack([zero, n1, zero, n2, center, n3, zero, n4, zero], dim=1).view(-1, 3, 3)


def static_sharpen_kernel(center: float = 2.5, *, device: torch.device | str | None = None,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The SSK kernel: centre `center`, every neighbour (center - 1) / 4, so it sums to 1.

    Returns:
        (3, 3) tensor on `device` with `dtype`.
    """
    c = torch.full((1,), float(center), device=device, dtype=dtype)
    return cross_kernels(c, ((c - 1) / 4).expand(1, 4))[0]


def sample_sharpen_kernels(batch_size: int, center: float = 2.5, std: float = 0.1, *,
                           generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw one RSK kernel per image: c ~ N(center, std²), then n1..n4 ~ N((c - 1) / 4, std²).

    The neighbours' mean uses the sampled c. All randomness comes from one
    ``torch.randn((batch_size, 5), generator=generator)`` call on the generator's device
    (column 0 drives c, columns 1-4 drive n1..n4), so a seed fixes the kernels.

    Returns:
        (batch_size, 3, 3) kernels on ``generator.device`` with `dtype`.
    """
    z = torch.randn((batch_size, 5), generator=generator, device=generator.device, dtype=dtype)
    c = center + std * z[:, 0]
    neighbours = ((c - 1) / 4).unsqueeze(1) + std * z[:, 1:]
    return cross_kernels(c, neighbours)


def sharpen(x: torch.Tensor, kernels: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """Correlate every image with its own 3×3 kernel (depthwise), then clamp to [0, 1].

    Args:
        x: float B×C×H×W batch, values in [0, 1], any device.
        kernels: (3, 3) kernel shared by the batch, or (B, 3, 3) one per image; same device
            and dtype as `x`.
        padding: one of ``PADDING_MODES``.

    Returns:
        B×C×(H-2)×(W-2) for ``valid``, B×C×H×W otherwise; dtype of `x`, values in [0, 1].
    """
    if not x.is_floating_point():
        raise TypeError(f"sharpen expects a float batch in [0, 1], got {x.dtype}")
    batch, channels, height, width = x.shape
    if padding in ("replicate", "reflect"):
        x = F.pad(x, (1, 1, 1, 1), mode=padding)
    # One group per (image, channel): a single grouped conv2d runs every image with its own kernel.
    groups = batch * channels
    weight = kernels.expand(batch, 3, 3).repeat_interleave(channels, dim=0).unsqueeze(1)
    out = F.conv2d(x.reshape(1, groups, *x.shape[2:]), weight, padding=int(padding == "zeros"), groups=groups)
    return out.view(batch, channels, *out.shape[2:]).clamp_(0, 1)


def _finite(name: str, value: object, expected: str) -> float:
    """`value` as a finite float, else a UserInputError naming `name`, `value` and `expected`."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise UserInputError(f"{name}={value!r} is invalid: expected {expected}")
    return number


def _check_padding(padding: str) -> str:
    if padding not in PADDING_MODES:
        raise UserInputError(f"padding={padding!r} is invalid: expected one of {', '.join(PADDING_MODES)}")
    return padding


_CENTER_EXPECTED = "a finite number (kernel centre weight, default 2.5)"
_STD_EXPECTED = "a finite number >= 0 (default 0.1)"


class RandomSharpen:
    """RSK: sharpen each image with a freshly sampled cross kernel (see `sample_sharpen_kernels`).

    Args:
        center: mean of the centre weight c (finite; default 2.5).
        std: standard deviation of c and of each neighbour weight (>= 0; default 0.1).
        padding: one of ``PADDING_MODES``; ``valid`` (default) maps 32×32 to 30×30.
    """

    def __init__(self, center: float = 2.5, std: float = 0.1, padding: str = "valid") -> None:
        self.center = _finite("center", center, _CENTER_EXPECTED)
        self.std = _finite("std", std, _STD_EXPECTED)
        if self.std < 0:
            raise UserInputError(f"std={std!r} is invalid: expected {_STD_EXPECTED}")
        self.padding = _check_padding(padding)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sharpen float B×C×H×W `x` in [0, 1]; `generator` (on x's device) is required."""
        if generator is None:
            raise ValueError("RandomSharpen needs an explicit torch.Generator on the batch's device")
        kernels = sample_sharpen_kernels(x.shape[0], self.center, self.std, generator=generator, dtype=x.dtype)
        return sharpen(x, kernels, self.padding)

    def __repr__(self) -> str:
        return f"RandomSharpen(center={self.center}, std={self.std}, padding={self.padding!r})"


class StaticSharpen:
    """SSK: sharpen every image with the fixed kernel `static_sharpen_kernel(center)`.

    Args:
        center: centre weight c (finite; default 2.5); neighbours are (c - 1) / 4.
        padding: one of ``PADDING_MODES``; ``valid`` (default) maps 32×32 to 30×30.
    """

    def __init__(self, center: float = 2.5, padding: str = "valid") -> None:
        self.center = _finite("center", center, _CENTER_EXPECTED)
        self.padding = _check_padding(padding)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sharpen float B×C×H×W `x` in [0, 1]; deterministic, `generator` is ignored."""
        kernel = static_sharpen_kernel(self.center, device=x.device, dtype=x.dtype)
        return sharpen(x, kernel, self.padding)

    def __repr__(self) -> str:
        return f"StaticSharpen(center={self.center}, padding={self.padding!r})"
