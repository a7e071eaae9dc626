"""ISS (Image Shortcut Squeezing, Liu et al. 2023): JPEG compression, grayscale, bit-depth reduction.

The published ISS code applies these to PIL images before crop/flip: ``Image.save(..., "JPEG",
quality=q)`` (4:2:0 chroma), ``transforms.Grayscale(3)`` (PIL ``convert("L")``, replicated) and
``transforms.RandomPosterize(bits, p=1)`` (PIL ``ImageOps.posterize``). Here each works on a float
B×C×H×W batch in [0, 1]; JPEG and bit-depth reduction first round to uint8 levels, round(255·x).
All three are deterministic: the generator is ignored.
"""

from __future__ import annotations

import warnings

import torch
from torchvision.io import decode_jpeg, encode_jpeg

from unlearnable.defenses.base import Transform
from unlearnable.params import Interval

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights of R, G, B (PIL's convert("L") uses them in 16-bit fixed point)."""


def levels(x: torch.Tensor) -> torch.Tensor:
    """Float `x` in [0, 1] → its 8-bit levels round(255·x), clamped to 0..255, still float (a new tensor)."""
    return x.mul(255).round_().clamp_(0, 255)


def to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """Float `x` in [0, 1] → uint8 round(255·x) (clamped), same shape and device."""
    return levels(x).to(torch.uint8)


def _check_channels(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{name} expects a B×C×H×W batch with C = 1 or 3, got shape {tuple(x.shape)}")


def jpeg_round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode every image as a JPEG at `quality` and decode it again, with libjpeg(-turbo) on the CPU.

    torchvision's CPU encoder makes the same bytes as PIL's ``save(..., "JPEG", quality=q)`` (4:2:0
    chroma subsampling for RGB, baseline), and its decoder the same pixels as PIL's. The CUDA
    encoder (nvJPEG) is not used: it is hard-wired to 4:4:4 chroma, a different defense.

    Args:
        images: uint8 B×C×H×W, C = 1 (grayscale JPEG) or 3 (RGB), on any device.
        quality: 1..100.

    Returns:
        uint8 B×C×H×W decoded images on the device of `images`.
    """
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image codecs in favour of torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        encoded = encode_jpeg(list(images.cpu()), quality=quality)
        decoded = decode_jpeg(encoded)
    return torch.stack(decoded).to(images.device)


class JpegCompression(Transform):
    """ISS JPEG: round to uint8 levels, JPEG encode/decode at `quality`, back to float k / 255.

    Args:
        quality: JPEG quality 1..100 (default 10, the ISS setting).
    """

    PARAMETER_CONSTRAINTS = {"quality": Interval(int, 1, 100)}

    def __init__(self, quality: int = 10) -> None:
        self._validate(quality=quality)
        self.quality = quality

    def transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Compress float B×C×H×W `x` in [0, 1], C = 1 or 3; deterministic."""
        _check_channels("JpegCompression", x)
        return jpeg_round_trip(to_uint8_levels(x), self.quality).to(x.dtype).div_(255)


class Grayscale(Transform):
    """ISS grayscale: luma Y = 0.299·R + 0.587·G + 0.114·B replicated to 3 channels (C = 1 passes through).

    Y is not quantised: it is within half a uint8 level of PIL's convert("L").
    """

    def transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Float B×3×H×W `x` → B×3×H×W with three equal channels; a B×1×H×W `x` is returned as is."""
        _check_channels("Grayscale", x)
        if x.shape[1] == 1:
            return x
        red, green, blue = x.unbind(1)
        luma = red * LUMA_WEIGHTS[0]
        luma.add_(green, alpha=LUMA_WEIGHTS[1]).add_(blue, alpha=LUMA_WEIGHTS[2])
        return luma.unsqueeze(1).repeat(1, 3, 1, 1)


class BitDepthReduction(Transform):
    """ISS bit-depth reduction, as PIL's ``ImageOps.posterize(bits)``: keep the top `bits` bits of each level.

    With v = round(255·x) and s = 2^(8 - bits), the output is s·⌊v / s⌋ / 255: level ℓ = ⌊v / s⌋
    in 0..2^bits - 1 maps to ℓ·s / 255. For bits = 2 that is {0, 64, 128, 192} / 255 (the top
    level is 0.753, not 1: the published ISS code darkens images this way too).

    Args:
        bits: bits kept per channel, 1..8 (default 2; 8 is the identity on uint8 levels).
    """

    PARAMETER_CONSTRAINTS = {"bits": Interval(int, 1, 8)}

    def __init__(self, bits: int = 2) -> None:
        self._validate(bits=bits)
        self.bits = bits

    def transform(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Reduce float B×C×H×W `x` in [0, 1]; deterministic."""
        step = 2 ** (8 - self.bits)
        return levels(x).div_(step).floor_().mul_(step).div_(255)
