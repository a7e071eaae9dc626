"""COIN against independent references: a per-pixel loop, scipy's map_coordinates and the
published code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch

from helpers import seeded_generator, uint8_images, uint8_levels_of
from unlearnable.data.dataset import to_unit_float
from unlearnable.defenses import (
    Coin,
    build_defense,
    displace,
    sample_displacements,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _loop_displace(x: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """Reference warp, one pixel at a time: bilinear at (i + dy, j + dx), indices taken modulo H and W."""
    batch, channels, height, width = x.shape
    out = np.empty_like(x)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                row, col = i + fields[b, 1, i, j], j + fields[b, 0, i, j]
                r, c = int(np.floor(row)), int(np.floor(col))
                a, t = row - r, col - c
                r0, r1, c0, c1 = r % height, (r + 1) % height, c % width, (c + 1) % width
                out[b, :, i, j] = (
                    (1 - a) * (1 - t) * x[b, :, r0, c0]
                    + (1 - a) * t * x[b, :, r0, c1]
                    + a * (1 - t) * x[b, :, r1, c0]
                    + a * t * x[b, :, r1, c1]
                )
    return out


def test_displace_matches_a_per_pixel_loop():
    x = torch.rand((3, 3, 5, 7), generator=seeded_generator(1), dtype=torch.float64)
    fields = sample_displacements(
        3, 5, 7, 3.5, generator=seeded_generator(2), dtype=torch.float64
    )  # wraps past a full pixel
    np.testing.assert_allclose(displace(x, fields).numpy(), _loop_displace(x.numpy(), fields.numpy()), atol=1e-12)


@pytest.mark.parametrize("published_wrap, scipy_mode", [(False, "grid-wrap"), (True, "wrap")])
def test_displace_matches_scipy_map_coordinates(published_wrap, scipy_mode):
    x = torch.rand((2, 3, 6, 9), generator=seeded_generator(3), dtype=torch.float64)
    fields = sample_displacements(2, 6, 9, 2.5, generator=seeded_generator(4), dtype=torch.float64)
    rows, cols = np.meshgrid(np.arange(6), np.arange(9), indexing="ij")
    expected = [
        [
            scipy.ndimage.map_coordinates(channel, [rows + field[1], cols + field[0]], order=1, mode=scipy_mode)
            for channel in image
        ]
        for image, field in zip(x.numpy(), fields.numpy())
    ]
    np.testing.assert_allclose(displace(x, fields, published_wrap).numpy(), np.array(expected), atol=1e-12)


def test_displace_by_one_pixel_is_a_roll_and_the_published_wrap_skips_the_last_column():
    x = torch.rand((1, 2, 4, 6), generator=seeded_generator(5), dtype=torch.float64)
    fields = torch.zeros((1, 2, 4, 6), dtype=torch.float64)
    fields[:, 0] = 1  # dx = 1: output column j reads input column j + 1
    torch.testing.assert_close(displace(x, fields), torch.roll(x, -1, dims=-1), atol=1e-12, rtol=0)
    published = displace(x, fields, published_wrap=True)  # column 6 wraps to 6 mod 5 = 1, not to 0
    torch.testing.assert_close(published[..., :5], x[..., 1:], atol=1e-12, rtol=0)
    torch.testing.assert_close(published[..., 5], x[..., 1], atol=1e-12, rtol=0)


def test_displacement_statistics():
    alpha = 1.5
    fields = sample_displacements(4000, 8, 8, alpha, generator=seeded_generator(6), dtype=torch.float64)
    dx, dy = fields[:, 0].flatten().numpy(), fields[:, 1].flatten().numpy()
    for d in (dx, dy):
        assert d.min() >= -alpha and d.max() < alpha
        assert d.mean() == pytest.approx(0, abs=0.01)
        assert d.var() == pytest.approx(alpha**2 / 3, rel=0.01)
        assert scipy.stats.kstest(d[:20000], scipy.stats.uniform(-alpha, 2 * alpha).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(dx, dy)[0, 1]) < 0.01
    again = sample_displacements(4000, 8, 8, alpha, generator=seeded_generator(6), dtype=torch.float64)
    assert torch.equal(fields, again)


def test_coin_alpha_zero_is_the_identity_on_uint8_levels():
    x = to_unit_float(uint8_images((4, 3, 16, 16), smooth=False))
    for published_quirks in (False, True):
        assert torch.equal(Coin(alpha=0, published_quirks=published_quirks)(x, seeded_generator()), x)


@pytest.mark.parametrize("published_quirks", [False, True])
def test_coin_output_is_on_the_uint8_grid(published_quirks):
    x = torch.rand((4, 3, 16, 16), generator=seeded_generator(7))
    out = Coin(published_quirks=published_quirks)(x, seeded_generator())
    assert out.shape == x.shape and out.dtype == torch.float32
    levels = uint8_levels_of(out)
    assert levels.min() >= 0 and levels.max() <= 255
    assert not torch.equal(out, x)


def test_coin_rounds_the_warp_and_shares_the_field_across_channels():
    x = torch.rand((3, 1, 12, 12), generator=seeded_generator(8)).expand(3, 3, 12, 12)
    out = Coin(alpha=1.0)(x, seeded_generator(9))
    fields = sample_displacements(3, 12, 12, 1.0, generator=seeded_generator(9))  # the draw Coin makes
    assert torch.equal(out, displace(x, fields).mul(255).round().div(255))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def _published_coin(image: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The published COIN_trans on one H×W×3 uint8 image, with the given fields instead of np.random."""
    image = image.astype(np.float32) / 255.0
    shape = image.shape
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    warped = scipy.ndimage.map_coordinates(image, indices, order=1, mode="wrap").reshape(shape)
    return np.uint8(np.clip(warped, 0, 1) * 255)


def test_coin_published_quirks_match_the_published_code():
    images = uint8_images((6, 3, 32, 32), seed=10)
    out = Coin(published_quirks=True)(to_unit_float(images), seeded_generator(11))
    fields = sample_displacements(6, 32, 32, 2.0, generator=seeded_generator(11)).numpy()
    expected = np.stack(
        [
            _published_coin(image.permute(1, 2, 0).numpy(), field[0], field[1]).transpose(2, 0, 1)
            for image, field in zip(images, fields)
        ]
    )
    np.testing.assert_array_equal(uint8_levels_of(out), expected)


def test_coin_is_seeded_fresh_per_call_and_needs_a_generator():
    x = torch.rand((2, 3, 8, 8), generator=seeded_generator(12))
    coin = Coin()
    g = seeded_generator(13)
    first, second = coin(x, g), coin(x, g)
    assert not torch.equal(first, second)
    assert torch.equal(first, coin(x, seeded_generator(13)))
    torch.manual_seed(13)
    assert torch.equal(coin(x), first)  # no generator: torch's global one


def test_coin_severity_maps_to_alpha():
    assert Coin().alpha == 2.0 and Coin(severity=4).alpha == 2.0
    assert [Coin(severity=s).alpha for s in range(1, 8)] == [0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2]
    assert repr(Coin(alpha=1.5)) == "Coin(alpha=1.5, published_quirks=False)"


# --- devices -----------------------------------------------------------------------------------


@pytest.mark.cuda
def test_iss_coin_and_cutout_run_on_cuda():
    gpu = torch.device("cuda")
    x = to_unit_float(uint8_images((4, 3, 32, 32), seed=28))
    for spec in ("jpeg", "gray", "bdr"):  # deterministic: the CPU result is the reference
        out = build_defense(spec)(x.to(gpu))
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), build_defense(spec)(x), atol=1e-6, rtol=0)
    for spec in ("coin", "cutout"):  # random: draws on the CUDA generator, reference from the same draws
        out = build_defense(spec)(x.to(gpu), torch.Generator(gpu).manual_seed(0))
        assert out.device.type == "cuda" and out.shape == x.shape
    fields = sample_displacements(4, 32, 32, 2.0, generator=torch.Generator(gpu).manual_seed(0))
    out = Coin()(x.to(gpu), torch.Generator(gpu).manual_seed(0))
    expected = displace(x, fields.cpu()).mul(255).round().div(255)
    assert (out.cpu() - expected).abs().max().item() <= 1 / 255 + 1e-6  # a level where rounding ties differ
