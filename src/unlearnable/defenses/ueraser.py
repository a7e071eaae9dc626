"""UEraser (Qin et al. 2023, SPEC §6): strong random augmentations, trained on the worst of K draws.

The "ueraser" step hook implements **UEraser-Max** with the published augmentation policy
(``ueraser.py`` of the authors' code, built on kornia), every parameter drawn per sample:

1. plasma brightness, p = 0.5: x + intensity·(2·P − 1), intensity ~ U(0.5, 1), roughness ~ U(0.3, 0.7);
2. plasma contrast, p = 0.5: (x − 0.5)·4·P + 0.5, roughness ~ U(0.3, 0.7);
3. channel shuffle, p = 0.5: a uniformly random permutation of the channels;
4. TrivialAugment: one op per sample, uniform over kornia's TrivialAugment list of 12 ops,
   magnitude uniform in the op's range: auto-contrast, equalize, rotate ±30°, posterize to
   1–4 bits, solarize (threshold U(0, 1)), contrast, brightness and sharpness (factor
   U(0.1, 1.9)), shear x / y (±0.3), translate x / y (±0.5 of the side). Each op as PIL /
   torchvision define it (contrast blends with the mean grey, brightness scales, sharpness
   blends with the 3×3 smoothing filter, equalize works on 8-bit levels); geometric ops are
   bilinear with zero fill about the image centre,

each result clamped to [0, 1]. P is a per-channel plasma map in [0, 1], made by spectral
synthesis, not kornia's diamond-square: white Gaussian noise shaped in Fourier space by the
amplitude spectrum f^−(h+1) of a fractal (fBm) surface with Hurst exponent h = −log2(roughness)
(diamond-square shrinks its displacements by `roughness` per halving of scale), then min-max
rescaled. Deviations from kornia, stated once: kornia's TrivialAugment picks one op per batch
(here per sample, as in the TrivialAugment paper); kornia's posterize range 0–4 bits includes 0
(a black image), here 1–4.

UEraser-Max: K = 5 augmented draws of every image; the model (in eval mode, no gradients)
scores each draw with the training cross-entropy and the trainer updates on each image's
highest-loss draw. The published code instead forwards all K·B draws in train mode and averages
the per-image maximum loss: the same gradient except for BatchNorm's batch statistics, at 1/K
of the backward cost. The draws are made in float32 with autocast off (only the scoring forward
follows the caller's autocast), so the batch returned is not rounded to bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.defenses.adversarial import Normalize, eval_mode, full_precision
from unlearnable.defenses.base import Configurable, resolve_generator
from unlearnable.defenses.iss import levels
from unlearnable.params import POSITIVE_INT

APPLY_PROBABILITY = 0.5
"""Probability of each of plasma brightness, plasma contrast and channel shuffle."""
PLASMA_ROUGHNESS = (0.3, 0.7)
BRIGHTNESS_INTENSITY = (0.5, 1.0)

TRIVIAL_AUGMENT_OPS: tuple[tuple[str, float, float], ...] = (
    ("auto_contrast", 0.0, 0.0),
    ("equalize", 0.0, 0.0),
    ("rotate", -30.0, 30.0),
    ("posterize", 1.0, 4.0),
    ("solarize", 0.0, 1.0),
    ("contrast", 0.1, 1.9),
    ("brightness", 0.1, 1.9),
    ("sharpness", 0.1, 1.9),
    ("shear_x", -0.3, 0.3),
    ("shear_y", -0.3, 0.3),
    ("translate_x", -0.5, 0.5),
    ("translate_y", -0.5, 0.5),
)
"""(name, low, high) of each TrivialAugment op; the magnitude is uniform in [low, high] (posterize: integer bits)."""

_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_LUMA = (0.299, 0.587, 0.114)


def _uniform(count: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=generator.device).mul_(high - low).add_(low)


def plasma(shape: tuple[int, ...], roughness: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fractal "plasma" maps by spectral synthesis (see the module docstring), one per (image, channel).

    Args:
        shape: (N, C, H, W).
        roughness: (N,) in (0, 1); larger is rougher (more fine detail).

    Returns:
        float32 N×C×H×W on the generator's device, each H×W map min-max rescaled to [0, 1].
    """
    n, c, height, width = shape
    device = generator.device
    noise = torch.randn(shape, generator=generator, device=device)
    freq_y = torch.fft.fftfreq(height, device=device).view(-1, 1)
    freq_x = torch.fft.rfftfreq(width, device=device).view(1, -1)
    radius = (freq_y.square() + freq_x.square()).sqrt()  # cycles per pixel; 0 at DC
    exponent = (1 - torch.log2(roughness.to(device))).view(n, 1, 1, 1)  # h + 1, h = −log2(roughness)
    amplitude = torch.where(radius > 0, radius.clamp(min=1e-6).pow(-exponent), 0.0)
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * amplitude, s=(height, width)).flatten(2)
    low, high = field.min(2, keepdim=True).values, field.max(2, keepdim=True).values
    return ((field - low) / (high - low).clamp(min=1e-12)).view(shape)


def shuffle_channels(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Permute the channels of each image of B×C×H×W `x` by its own uniformly random permutation."""
    order = torch.rand(x.shape[:2], generator=generator, device=x.device).argsort(1)
    return x.gather(1, order.view(*order.shape, 1, 1).expand_as(x))


def _grey(x: torch.Tensor) -> torch.Tensor:
    """B×1×H×W luma (ITU-R 601) of RGB batches, the channel mean otherwise."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    return (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: other + factor·(x − other), clamped to [0, 1]; factor (B,)."""
    return (other + factor.view(-1, 1, 1, 1) * (x - other)).clamp_(0, 1)


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 1] (a constant channel is left as it is)."""
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(high > low, (x - low) / (high - low).clamp(min=1e-12), x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram-equalise each channel on its 8-bit levels, as torchvision's ``equalize`` on uint8.

    Returns float B×C×H×W with values k/255.
    """
    batch, channels, height, width = x.shape
    values = levels(x).long().view(batch * channels, height * width)
    ones = torch.ones(values.shape, device=x.device)
    hist = torch.zeros(batch * channels, 256, device=x.device).scatter_add_(1, values, ones)
    top_count = hist.gather(1, values.max(1, keepdim=True).values)
    step = (height * width - top_count).div(255).floor()  # torchvision: all but the top level's pixels / 255
    lut = (hist.cumsum(1) + step.div(2).floor()).div(step.clamp(min=1)).floor()
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    equalized = lut.gather(1, values).div(255)
    flat = x.reshape(batch * channels, height * width)
    return torch.where(step > 0, equalized.to(x.dtype), flat).view_as(x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` (B,) bits of each 8-bit level (values k/255)."""
    mask = (255 << (8 - bits.to(torch.int32))) & 255
    return (levels(x).to(torch.int32) & mask.view(-1, 1, 1, 1)).to(x.dtype).div_(255)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert every value ≥ the image's `threshold` (B,)."""
    return torch.where(x >= threshold.view(-1, 1, 1, 1), 1 - x, x)


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL/torchvision sharpness: blend with the [[1, 1, 1], [1, 5, 1], [1, 1, 1]]/13 smoothing (border kept)."""
    channels = x.shape[1]
    kernel = x.new_ones(3, 3)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(channels, 1, 3, 3)
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = F.conv2d(x, kernel, groups=channels)
    return _blend(x, smooth, factor)


def affine_warp(x: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """The geometric TrivialAugment op `name` with per-image `magnitude` (B,), about the centre.

    Rotation in degrees, shear as the pixel-space factor, translation as a fraction of the side;
    bilinear sampling, zero outside. One ``affine_grid`` + ``grid_sample`` for the batch.
    """
    height, width = x.shape[-2:]

    def part(op: str) -> torch.Tensor:
        return magnitude if name == op else torch.zeros_like(magnitude)

    angle = part("rotate").deg2rad()
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([cos, (part("shear_x") - sin) * height / width, -2 * part("translate_x")], 1),
            torch.stack([(sin + part("shear_y")) * width / height, cos, -2 * part("translate_y")], 1),
        ],
        1,
    ).to(x.dtype)  # B×2×3, output → input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_op(x: torch.Tensor, name: str, magnitude: torch.Tensor) -> torch.Tensor:
    """TrivialAugment op `name` (see ``TRIVIAL_AUGMENT_OPS``) on float B×C×H×W `x` with magnitudes (B,)."""
    if name in _GEOMETRIC:
        return affine_warp(x, name, magnitude)
    if name == "auto_contrast":
        return auto_contrast(x)
    if name == "equalize":
        return equalize(x)
    if name == "posterize":
        return posterize(x, magnitude.round())
    if name == "solarize":
        return solarize(x, magnitude)
    if name == "contrast":
        return _blend(x, _grey(x).mean((1, 2, 3), keepdim=True).expand_as(x), magnitude)
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), magnitude)
    if name == "sharpness":
        return sharpness(x, magnitude)
    raise ValueError(f"unknown TrivialAugment op {name!r}")


def trivial_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One uniformly chosen op of ``TRIVIAL_AUGMENT_OPS`` per image, magnitude uniform in its range.

    Each op runs once on the sub-batch that chose it (12 batched calls, no loop over images).
    """
    count = len(x)
    choice = torch.randint(len(TRIVIAL_AUGMENT_OPS), (count,), generator=generator, device=x.device)
    fraction = torch.rand(count, generator=generator, device=x.device)
    out = x.clone()
    for index, (name, low, high) in enumerate(TRIVIAL_AUGMENT_OPS):
        chosen = choice == index
        if bool(chosen.any()):
            out[chosen] = apply_op(x[chosen], name, low + (high - low) * fraction[chosen])
    return out


def ueraser_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw of the UEraser policy (steps 1–4 of the module docstring) for every image of `x`.

    Args:
        x: float B×C×H×W in [0, 1]; generator: on x's device.

    Returns:
        float B×C×H×W in [0, 1].
    """
    count = len(x)
    applied = torch.rand(3, count, 1, 1, 1, generator=generator, device=x.device) < APPLY_PROBABILITY
    intensity = _uniform(count, *BRIGHTNESS_INTENSITY, generator).view(-1, 1, 1, 1).to(x.dtype)
    bright = plasma(x.shape, _uniform(count, *PLASMA_ROUGHNESS, generator), generator).to(x.dtype)
    x = torch.where(applied[0], (x + intensity * (2 * bright - 1)).clamp(0, 1), x)
    contrast_map = plasma(x.shape, _uniform(count, *PLASMA_ROUGHNESS, generator), generator).to(x.dtype)
    x = torch.where(applied[1], ((x - 0.5) * 4 * contrast_map + 0.5).clamp(0, 1), x)
    x = torch.where(applied[2], shuffle_channels(x, generator), x)
    return trivial_augment(x, generator)


def draw_losses(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, normalize: Normalize | None) -> torch.Tensor:
    """Per-image cross-entropy (float32 (B,)) of `model` in eval mode on `x`, without gradients."""
    with torch.no_grad(), eval_mode(model):
        logits = model(normalize(x) if normalize is not None else x)
    return F.cross_entropy(logits.float(), targets, reduction="none")


class UEraserMax(Configurable):
    """The "ueraser" step hook: UEraser-Max (see the module docstring).

    Args:
        draws: K ≥ 1 augmented draws per image (default 5, the paper's).
    """

    PARAMETER_CONSTRAINTS = {"draws": POSITIVE_INT}

    def __init__(self, draws: int = 5) -> None:
        self._validate(draws=draws)
        self.draws = draws

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None,
        normalize: Normalize | None = None,
    ) -> torch.Tensor:
        """Each image's highest-loss draw, float B×C×H×W in [0, 1], detached.

        `targets` are int64 labels (B,) or float B×K probabilities (after a mixing defense).
        """
        generator = resolve_generator(generator, x.device, type(self).__name__)
        batch = len(x)
        with full_precision(x):  # the augmentations in float32 even inside a caller's bf16 autocast
            candidates = ueraser_augment(x.detach().repeat(self.draws, 1, 1, 1), generator)
        losses = draw_losses(model, candidates, targets.repeat(self.draws, *[1] * (targets.dim() - 1)), normalize)
        worst = losses.view(self.draws, batch).argmax(0)
        return candidates.reshape(self.draws, batch, *x.shape[1:])[worst, torch.arange(batch, device=x.device)]
