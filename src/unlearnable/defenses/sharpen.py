"""Sharpening defenses: a random (RSK) or static (SSK) cross-shaped 3×3 kernel per image.

The kernel is ``[[0, -n1, 0], [-n2, c, -n3], [0, -n4, 0]]``, applied depthwise (the same kernel
on every channel of an image, no channel mixing) with PyTorch ``conv2d`` semantics
(cross-correlation), then the result is clamped to [0, 1].
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from unlearnable.defenses.base import Transform
from unlearnable.params import NONNEGATIVE, Interval, StrOptions

PADDING_MODES = ("valid", "replicate", "reflect", "zeros")
"""``valid`` shrinks H×W to (H-2)×(W-2); the others pad one pixel and keep H×W."""

FINITE = Interval(float)
"""Any finite number (the kernel centre weight)."""

_NEIGHBOURS = (1, 3, 5, 7)
"""Flat (row-major 3×3) positions of n1 (top), n2 (left), n3 (right), n4 (bottom); the centre is 4."""


def static_sharpen_kernel(
    center: float = 2.5, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The SSK kernel: centre `center`, every neighbour weight (center - 1) / 4, so it sums to 1.

    Returns:
        (3, 3) tensor ``[[0, -n, 0], [-n, c, -n], [0, -n, 0]]`` on `device` with `dtype`.
    """
    n = (center - 1) / 4
    return torch.tensor([[0, -n, 0], [-n, center, -n], [0, -n, 0]], device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _kernel_distribution(
    center: float, std: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RSK kernels as an affine map of five standard normals z: vec(K) = mean + z @ loading.

    c = center + std·z0 and n_i = (c - 1)/4 + std·z_i = (center - 1)/4 + std·(z0/4 + z_i), so
    mean = vec(SSK kernel) (9,) and loading (5, 9) sends z0 to the centre (+std) and to every
    neighbour (-std/4), and z_i to neighbour i (-std).
    """
    mean = static_sharpen_kernel(center, dtype=torch.float64).flatten()
    loading = torch.zeros(5, 9, dtype=torch.float64)
    loading[0, 4] = std
    loading[0, _NEIGHBOURS] = -std / 4
    loading[range(1, 5), _NEIGHBOURS] = -std
    return mean.to(device, dtype), loading.to(device, dtype)


def sample_sharpen_kernels(
    batch_size: int,
    center: float = 2.5,
    std: float = 0.1,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw one RSK kernel per image: c ~ N(center, std²), then n1..n4 ~ N((c - 1) / 4, std²).

    The neighbours' mean uses the sampled c. All randomness comes from one
    ``torch.randn((batch_size, 5), generator=generator)`` call on the generator's device
    (column 0 drives c, columns 1-4 drive n1..n4), so a seed fixes the kernels.

    Returns:
        (batch_size, 3, 3) cross kernels ``[[0, -n1, 0], [-n2, c, -n3], [0, -n4, 0]]`` on
        ``generator.device`` with `dtype`.
    """
    z = torch.randn((batch_size, 5), generator=generator, device=generator.device, dtype=dtype)
    mean, loading = _kernel_distribution(float(center), float(std), z.device, dtype)
    return torch.addmm(mean, z, loading).view(batch_size, 3, 3)


def sharpen(x: torch.Tensor, kernels: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """Correlate every image with its own cross-shaped 3×3 kernel (depthwise), then clamp to [0, 1].

    Args:
        x: float B×C×H×W batch, values in [0, 1], any device.
        kernels: (3, 3) kernel shared by the batch, or (B, 3, 3) one per image; same device
            and dtype as `x`. Only the centre and its four neighbours are read (the corners of
            a cross kernel are zero).
        padding: one of ``PADDING_MODES``.

    Returns:
        B×C×(H-2)×(W-2) for ``valid``, B×C×H×W otherwise; dtype of `x`, values in [0, 1]. A view
        whose rows are W (or W+2) elements apart, like a torchvision crop.
    """
    if not x.is_floating_point():
        raise TypeError(f"sharpen expects a float batch in [0, 1], got {x.dtype}")
    if padding != "valid":
        x = F.pad(x, (1, 1, 1, 1), mode="constant" if padding == "zeros" else padding)
    batch, channels, height, width = x.shape
    weights = kernels.expand(batch, 3, 3).reshape(batch, 9, 1, 1).unbind(1)  # 9 × (B, 1, 1)
    # Work on flattened channels: output pixel (i, j) sits at flat index i·W + j and kernel tap
    # (r, s) reads input index i·W + j + r·W + s, so every tap is one contiguous slice and one
    # multiply-add over the whole batch. Columns j = W-2, W-1 wrap around and are cropped away.
    flat = x.reshape(batch, channels, height * width)
    out = flat.new_empty(batch, channels, (height - 2) * width)
    span = out.shape[-1] - 2
    acc = torch.mul(flat.narrow(-1, width + 1, span), weights[4], out=out.narrow(-1, 0, span))
    for tap in _NEIGHBOURS:
        acc.addcmul_(flat.narrow(-1, tap // 3 * width + tap % 3, span), weights[tap])
    acc.clamp_(0, 1)
    return out.view(batch, channels, height - 2, width).narrow(-1, 0, width - 2)


class RandomSharpen(Transform):
    """RSK: sharpen each image with a freshly sampled cross kernel (see `sample_sharpen_kernels`).

    Args:
        center: mean of the centre weight c (finite; default 2.5).
        std: standard deviation of c and of each neighbour weight (>= 0; default 0.1).
        padding: one of ``PADDING_MODES``; ``valid`` (default) maps 32×32 to 30×30.
    """

    PARAMETER_CONSTRAINTS = {"center": FINITE, "std": NONNEGATIVE, "padding": StrOptions(PADDING_MODES)}
    random = True

    def __init__(self, center: float = 2.5, std: float = 0.1, padding: str = "valid") -> None:
        self._validate(center=center, std=std, padding=padding)
        self.center, self.std, self.padding = float(center), float(std), padding

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """One kernel per image: {"kernels": (B, 3, 3)} in x's dtype, on the generator's device."""
        assert generator is not None
        return {
            "kernels": sample_sharpen_kernels(x.shape[0], self.center, self.std, generator=generator, dtype=x.dtype)
        }

    def transform(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return sharpen(x, params["kernels"], self.padding)


class StaticSharpen(Transform):
    """SSK: sharpen every image with the fixed kernel `static_sharpen_kernel(center)`.

    Args:
        center: centre weight c (finite; default 2.5); neighbours are (c - 1) / 4.
        padding: one of ``PADDING_MODES``; ``valid`` (default) maps 32×32 to 30×30.
    """

    PARAMETER_CONSTRAINTS = {"center": FINITE, "padding": StrOptions(PADDING_MODES)}

    def __init__(self, center: float = 2.5, padding: str = "valid") -> None:
        self._validate(center=center, padding=padding)
        self.center, self.padding = float(center), padding

    def transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Deterministic: the same kernel for every image."""
        kernel = static_sharpen_kernel(self.center, device=x.device, dtype=x.dtype)
        return sharpen(x, kernel, self.padding)
