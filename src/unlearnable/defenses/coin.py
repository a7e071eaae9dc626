"""COIN: corrupt each image with a random per-pixel displacement field and bilinear interpolation.

Per image a field dx, dy ~ U(-α, α), one value per pixel shared by the channels, and a backward
warp: output pixel (i, j) is the input bilinearly interpolated at (row i + dy[i, j], column
j + dx[i, j]), wrapping around the border; the result is quantised to uint8 levels. α = 2.0 is the
published default (severity 4 of 0.4·(s + 1)). The trainer applies it after crop/flip
(``after_crop``), as the published code does.

The published code (``scipy.ndimage.map_coordinates(..., order=1, mode="wrap")`` on every image,
then ``np.uint8``) has two quirks, reproduced only with ``published_quirks=True``: scipy's "wrap"
repeats with period N - 1 instead of N (coordinate N - 1 + t reads like t, as if the last and the
first row/column were one sample: the blend of the last with the first never happens, and
coordinate -1 reads row N - 2), and the output is truncated (floor) to uint8 instead of rounded.
"""

from __future__ import annotations

import torch

from unlearnable.defenses.base import Transform
from unlearnable.errors import UserInputError
from unlearnable.params import BOOLEAN, NONNEGATIVE, Interval, Options

SEVERITY_ALPHAS = {severity: round(0.4 * (severity + 1), 1) for severity in range(1, 8)}
"""Published severities 1..7 → α = 0.4·(s + 1): 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2."""


def sample_displacements(
    batch_size: int,
    height: int,
    width: int,
    alpha: float,
    *,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """One displacement field per image, every entry ~ U(-alpha, alpha), from one ``torch.rand`` call.

    Returns:
        (batch_size, 2, height, width) tensor on ``generator.device``: [:, 0] is dx (along columns),
        [:, 1] is dy (along rows), in [-alpha, alpha).
    """
    u = torch.rand((batch_size, 2, height, width), generator=generator, device=generator.device, dtype=dtype)
    return u.mul_(2 * alpha).sub_(alpha)


def _neighbours(
    coords: torch.Tensor, size: int, published_wrap: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps along one axis of `size` pixels: indices i0, i1 in 0..size-1 (as floats) and the weight of i1."""
    if published_wrap:  # scipy mode="wrap": coordinates outside [0, size-1] repeat with period size-1
        inside = (coords >= 0) & (coords <= size - 1)
        coords = torch.where(inside, coords, coords.remainder(size - 1))
        low = coords.floor().clamp_(max=size - 2)
        return low, low + 1, coords - low
    low = coords.floor()
    return low.remainder(size), (low + 1).remainder_(size), coords - low


def displace(x: torch.Tensor, displacements: torch.Tensor, published_wrap: bool = False) -> torch.Tensor:
    """Backward-warp every image by its own displacement field with bilinear interpolation and wrap-around.

    ``out[b, c, i, j] = x[b, c]`` bilinearly interpolated at row ``i + dy[b, i, j]``, column
    ``j + dx[b, i, j]``; indices wrap modulo H and W (periodic), or with scipy's period H - 1,
    W - 1 when `published_wrap` (needs H, W >= 2). No quantisation.

    Args:
        x: float B×C×H×W batch, any device.
        displacements: (B, 2, H, W) fields as from `sample_displacements` (dx, dy); device and
            dtype of `x`.
        published_wrap: reproduce ``scipy.ndimage.map_coordinates(mode="wrap")``.

    Returns:
        B×C×H×W tensor, dtype and device of `x`; a convex combination of input values per pixel.
    """
    batch, channels, height, width = x.shape
    dx, dy = displacements.unbind(1)  # (B, H, W) each
    rows = torch.arange(height, device=x.device, dtype=x.dtype).view(1, height, 1) + dy
    cols = torch.arange(width, device=x.device, dtype=x.dtype).view(1, 1, width) + dx
    r0, r1, wr = _neighbours(rows, height, published_wrap)
    c0, c1, wc = _neighbours(cols, width, published_wrap)
    # Flat tap indices are built in x's dtype (exact in float32 below 2^24 pixels) and converted
    # once; one gather then fetches all four taps of every pixel for every channel (measured 1.4×
    # faster on CPU than per-axis integer indices).
    r0, r1 = r0.mul_(width), r1.mul_(width)
    taps = torch.stack([r0 + c0, r0 + c1, r1 + c0, r1 + c1], dim=1).long()  # (B, 4, H, W)
    flat = x.reshape(batch, channels, height * width)
    values = flat.gather(2, taps.view(batch, 1, 4 * height * width).expand(batch, channels, -1))
    v00, v01, v10, v11 = values.view(batch, channels, 4, height, width).unbind(2)
    wc, wr = wc.unsqueeze(1), wr.unsqueeze(1)
    top = torch.lerp(v00, v01, wc)
    return top.lerp_(torch.lerp(v10, v11, wc), wr)


class Coin(Transform):
    """COIN (Li, Wang et al., AAAI 2025): random displacement + bilinear interpolation, uint8 output.

    The trainer applies COIN after RandomCrop/flip (SPEC §6).

    Args:
        alpha: half-width α of the uniform displacement, in pixels (finite, >= 0; default 2.0).
        severity: the published integer 1..7 instead of `alpha`: α = 0.4·(severity + 1).
        published_quirks: period-(N - 1) wrap and floor to uint8 levels, as the published code;
            default False: true periodic wrap and rounding, round(255·v) / 255.
    """

    PARAMETER_CONSTRAINTS = {
        "alpha": Options(None, NONNEGATIVE),
        "severity": Options(None, Interval(int, 1, 7)),
        "published_quirks": BOOLEAN,
    }
    random = True

    def __init__(self, alpha: float | None = None, severity: int | None = None, published_quirks: bool = False) -> None:
        if alpha is not None and severity is not None:
            raise UserInputError(
                f"Coin: alpha={alpha!r} and severity={severity!r} both given: give one (alpha = 0.4·(severity + 1))"
            )
        self._validate(alpha=alpha, severity=severity, published_quirks=published_quirks)
        self.alpha = SEVERITY_ALPHAS[severity] if severity is not None else 2.0 if alpha is None else float(alpha)
        self.published_quirks = published_quirks

    def make_params(self, x: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """One displacement field per image: {"fields": (B, 2, H, W)}, see `sample_displacements`."""
        assert generator is not None
        batch, _, height, width = x.shape
        return {"fields": sample_displacements(batch, height, width, self.alpha, generator=generator, dtype=x.dtype)}

    def transform(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """B×C×H×W, dtype of `x`, values k / 255 for integers k in 0..255."""
        levels = displace(x, params["fields"], self.published_quirks).clamp_(0, 1).mul_(255)
        levels = levels.floor_() if self.published_quirks else levels.round_()
        return levels.div_(255)
