"""ISS (JPEG, grayscale, bit-depth reduction) against PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from unlearnable.data.dataset import to_unit_float
from unlearnable.defenses import (
    BitDepthReduction,
    Grayscale,
    JpegCompression,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _uint8_images(shape: tuple[int, ...], seed: int = 0, smooth: bool = True) -> torch.Tensor:
    """Random uint8 B×C×H×W images; `smooth` box-blurs them so JPEG has something image-like to do."""
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    if smooth:
        x = torch.nn.functional.avg_pool2d(x.float(), 3, 1, 1, count_include_pad=False).round().to(torch.uint8)
    return x


def _levels(x: torch.Tensor) -> np.ndarray:
    """Float output on the uint8 grid → its integer levels (asserting it is on the grid)."""
    levels = x.double().numpy() * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    return np.round(levels).astype(int)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- JPEG --------------------------------------------------------------------------------------


def _pil_jpeg(images: torch.Tensor, quality: int) -> np.ndarray:
    """PIL's decode of PIL's encode, one uint8 C×H×W image at a time (C = 1: mode L, C = 3: RGB)."""
    out = []
    for image in images.numpy():
        buffer = io.BytesIO()
        Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0)).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        out.append(decoded[np.newaxis] if decoded.ndim == 2 else decoded.transpose(2, 0, 1))
    return np.stack(out)


@pytest.mark.parametrize(
    "channels, size, quality",
    [(3, (32, 32), 10), (3, (17, 23), 10), (3, (32, 32), 75), (1, (32, 32), 10), (1, (15, 20), 50)],
)
def test_jpeg_equals_pil_exactly(channels, size, quality):
    images = _uint8_images((5, channels, *size), seed=14)
    out = JpegCompression(quality)(to_unit_float(images))
    assert out.shape == images.shape and out.dtype == torch.float32
    expected = _pil_jpeg(images, quality)
    np.testing.assert_array_equal(_levels(out), expected)
    assert not np.array_equal(expected, images.numpy())


def test_jpeg_rounds_off_grid_input_first_and_rejects_other_channel_counts():
    x = torch.rand((2, 3, 16, 16), generator=_generator(15))
    jpeg = JpegCompression()
    assert torch.equal(jpeg(x), jpeg(x.mul(255).round().div(255)))
    assert repr(jpeg) == "JpegCompression(quality=10)"
    with pytest.raises(ValueError, match="C = 1 or 3"):
        jpeg(torch.rand(1, 4, 8, 8))


# --- grayscale and bit-depth reduction -----------------------------------------------------------


def test_grayscale_matches_pil_and_replicates_channels():
    images = _uint8_images((4, 3, 16, 16), seed=16, smooth=False)
    out = Grayscale()(to_unit_float(images))
    assert out.shape == images.shape
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    pil = np.stack([np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).convert("L")) for image in images])
    gap = np.abs(out[:, 0].double().numpy() * 255 - pil)
    assert gap.max() <= 0.52  # PIL rounds a 16-bit fixed-point luma: within half a level (+ weight rounding)
    one_channel = to_unit_float(images[:, :1])
    assert Grayscale()(one_channel) is one_channel


@pytest.mark.parametrize("bits", range(1, 9))
def test_bit_depth_reduction_equals_pil_posterize(bits):
    images = _uint8_images((3, 3, 16, 16), seed=17, smooth=False)
    out = BitDepthReduction(bits)(to_unit_float(images))
    levels = _levels(out)
    assert len(np.unique(levels)) <= 2**bits
    expected = np.stack(
        [np.asarray(ImageOps.posterize(Image.fromarray(image.permute(1, 2, 0).numpy()), bits)) for image in images]
    ).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(levels, expected)


def test_bit_depth_reduction_levels():
    x = torch.linspace(0, 1, 1001).view(1, 1, 1, 1001)
    assert sorted(set(_levels(BitDepthReduction()(x)).flatten())) == [0, 64, 128, 192]
    x = to_unit_float(_uint8_images((2, 3, 8, 8), smooth=False))
    assert torch.equal(BitDepthReduction(8)(x), x)
