"""ISS (JPEG, grayscale, bit-depth reduction) against PIL."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers import seeded_generator, uint8_images, uint8_levels_of
from unlearnable.data.dataset import to_unit_float
from unlearnable.defenses import (
    BitDepthReduction,
    Grayscale,
    JpegCompression,
)

pytestmark = pytest.mark.usefixtures("one_thread")


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
    images = uint8_images((5, channels, *size), seed=14)
    out = JpegCompression(quality)(to_unit_float(images))
    assert out.shape == images.shape and out.dtype == torch.float32
    expected = _pil_jpeg(images, quality)
    np.testing.assert_array_equal(uint8_levels_of(out), expected)
    assert not np.array_equal(expected, images.numpy())


def test_jpeg_rounds_off_grid_input_first_and_rejects_other_channel_counts():
    x = torch.rand((2, 3, 16, 16), generator=seeded_generator(15))
    jpeg = JpegCompression()
    assert torch.equal(jpeg(x), jpeg(x.mul(255).round().div(255)))
    assert repr(jpeg) == "JpegCompression(quality=10)"
    with pytest.raises(ValueError, match="C = 1 or 3"):
        jpeg(torch.rand(1, 4, 8, 8))


# --- grayscale and bit-depth reduction -----------------------------------------------------------


def test_grayscale_matches_pil_and_replicates_channels():
    images = uint8_images((4, 3, 16, 16), seed=16, smooth=False)
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
    images = uint8_images((3, 3, 16, 16), seed=17, smooth=False)
    out = BitDepthReduction(bits)(to_unit_float(images))
    levels = uint8_levels_of(out)
    assert len(np.unique(levels)) <= 2**bits
    expected = np.stack(
        [np.asarray(ImageOps.posterize(Image.fromarray(image.permute(1, 2, 0).numpy()), bits)) for image in images]
    ).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(levels, expected)


def test_bit_depth_reduction_levels():
    x = torch.linspace(0, 1, 1001).view(1, 1, 1, 1001)
    assert sorted(set(uint8_levels_of(BitDepthReduction()(x)).flatten())) == [0, 64, 128, 192]
    x = to_unit_float(uint8_images((2, 3, 8, 8), smooth=False))
    assert torch.equal(BitDepthReduction(8)(x), x)
