"""COIN, ISS (JPEG, grayscale, bit-depth reduction) and Cutout against independent references:
per-pixel loops, scipy's map_coordinates, PIL, and the published code's formulas."""

from __future__ import annotations

import io

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch
from PIL import Image, ImageOps

from unlearnable.data.dataset import to_unit_float
from unlearnable.defenses import (DEFENSES, BitDepthReduction, Coin, Compose, Cutout, FrequencyFilter, Grayscale,
                                  JpegCompression, RandomSharpen, build_defense, displace, sample_displacements)
from unlearnable.defenses.cutout import sample_hole_centres
from unlearnable.errors import UserInputError

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


# --- COIN -------------------------------------------------------------------------------------

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
                out[b, :, i, j] = ((1 - a) * (1 - t) * x[b, :, r0, c0] + (1 - a) * t * x[b, :, r0, c1]
                                   + a * (1 - t) * x[b, :, r1, c0] + a * t * x[b, :, r1, c1])
    return out


def test_displace_matches_a_per_pixel_loop():
    x = torch.rand((3, 3, 5, 7), generator=_generator(1), dtype=torch.float64)
    fields = sample_displacements(3, 5, 7, 3.5, generator=_generator(2), dtype=torch.float64)  # wraps past a full pixel
    np.testing.assert_allclose(displace(x, fields).numpy(), _loop_displace(x.numpy(), fields.numpy()), atol=1e-12)


@pytest.mark.parametrize("published_wrap, scipy_mode", [(False, "grid-wrap"), (True, "wrap")])
def test_displace_matches_scipy_map_coordinates(published_wrap, scipy_mode):
    x = torch.rand((2, 3, 6, 9), generator=_generator(3), dtype=torch.float64)
    fields = sample_displacements(2, 6, 9, 2.5, generator=_generator(4), dtype=torch.float64)
    rows, cols = np.meshgrid(np.arange(6), np.arange(9), indexing="ij")
    expected = [[scipy.ndimage.map_coordinates(channel, [rows + field[1], cols + field[0]], order=1, mode=scipy_mode)
                 for channel in image] for image, field in zip(x.numpy(), fields.numpy())]
    np.testing.assert_allclose(displace(x, fields, published_wrap).numpy(), np.array(expected), atol=1e-12)


def test_displace_by_one_pixel_is_a_roll_and_the_published_wrap_skips_the_last_column():
    x = torch.rand((1, 2, 4, 6), generator=_generator(5), dtype=torch.float64)
    fields = torch.zeros((1, 2, 4, 6), dtype=torch.float64)
    fields[:, 0] = 1  # dx = 1: output column j reads input column j + 1
    torch.testing.assert_close(displace(x, fields), torch.roll(x, -1, dims=-1), atol=1e-12, rtol=0)
    published = displace(x, fields, published_wrap=True)  # column 6 wraps to 6 mod 5 = 1, not to 0
    torch.testing.assert_close(published[..., :5], x[..., 1:], atol=1e-12, rtol=0)
    torch.testing.assert_close(published[..., 5], x[..., 1], atol=1e-12, rtol=0)


def test_displacement_statistics():
    alpha = 1.5
    fields = sample_displacements(4000, 8, 8, alpha, generator=_generator(6), dtype=torch.float64)
    dx, dy = fields[:, 0].flatten().numpy(), fields[:, 1].flatten().numpy()
    for d in (dx, dy):
        assert d.min() >= -alpha and d.max() < alpha
        assert d.mean() == pytest.approx(0, abs=0.01)
        assert d.var() == pytest.approx(alpha ** 2 / 3, rel=0.01)
        assert scipy.stats.kstest(d[:20000], scipy.stats.uniform(-alpha, 2 * alpha).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(dx, dy)[0, 1]) < 0.01
    again = sample_displacements(4000, 8, 8, alpha, generator=_generator(6), dtype=torch.float64)
    assert torch.equal(fields, again)


def test_coin_alpha_zero_is_the_identity_on_uint8_levels():
    x = to_unit_float(_uint8_images((4, 3, 16, 16), smooth=False))
    for published_quirks in (False, True):
        assert torch.equal(Coin(alpha=0, published_quirks=published_quirks)(x, _generator()), x)


@pytest.mark.parametrize("published_quirks", [False, True])
def test_coin_output_is_on_the_uint8_grid(published_quirks):
    x = torch.rand((4, 3, 16, 16), generator=_generator(7))
    out = Coin(published_quirks=published_quirks)(x, _generator())
    assert out.shape == x.shape and out.dtype == torch.float32
    levels = _levels(out)
    assert levels.min() >= 0 and levels.max() <= 255
    assert not torch.equal(out, x)


def test_coin_rounds_the_warp_and_shares_the_field_across_channels():
    x = torch.rand((3, 1, 12, 12), generator=_generator(8)).expand(3, 3, 12, 12)
    out = Coin(alpha=1.0)(x, _generator(9))
    fields = sample_displacements(3, 12, 12, 1.0, generator=_generator(9))  # the draw Coin makes
    assert torch.equal(out, displace(x, fields).mul(255).round().div(255))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


def _published_coin(image: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The published COIN_trans on one H×W×3 uint8 image, with the given fields instead of np.random."""
    image = image.astype(np.float32) / 255.
    shape = image.shape
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    warped = scipy.ndimage.map_coordinates(image, indices, order=1, mode="wrap").reshape(shape)
    return np.uint8(np.clip(warped, 0, 1) * 255)


def test_coin_published_quirks_match_the_published_code():
    images = _uint8_images((6, 3, 32, 32), seed=10)
    out = Coin(published_quirks=True)(to_unit_float(images), _generator(11))
    fields = sample_displacements(6, 32, 32, 2.0, generator=_generator(11)).numpy()
    expected = np.stack([_published_coin(image.permute(1, 2, 0).numpy(), field[0], field[1]).transpose(2, 0, 1)
                         for image, field in zip(images, fields)])
    np.testing.assert_array_equal(_levels(out), expected)


def test_coin_is_seeded_fresh_per_call_and_needs_a_generator():
    x = torch.rand((2, 3, 8, 8), generator=_generator(12))
    coin = Coin()
    g = _generator(13)
    first, second = coin(x, g), coin(x, g)
    assert not torch.equal(first, second)
    assert torch.equal(first, coin(x, _generator(13)))
    torch.manual_seed(13)
    assert torch.equal(coin(x), first)  # no generator: torch's global one


def test_coin_severity_maps_to_alpha():
    assert Coin().alpha == 2.0 and Coin(severity=4).alpha == 2.0
    assert [Coin(severity=s).alpha for s in range(1, 8)] == [0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2]
    assert repr(Coin(alpha=1.5)) == "Coin(alpha=1.5, published_quirks=False)"


# --- ISS: JPEG --------------------------------------------------------------------------------

def _pil_jpeg(images: torch.Tensor, quality: int) -> np.ndarray:
    """PIL's decode of PIL's encode, one uint8 C×H×W image at a time (C = 1: mode L, C = 3: RGB)."""
    out = []
    for image in images.numpy():
        buffer = io.BytesIO()
        Image.fromarray(image[0] if len(image) == 1 else image.transpose(1, 2, 0)).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
        out.append(decoded[np.newaxis] if decoded.ndim == 2 else decoded.transpose(2, 0, 1))
    return np.stack(out)


@pytest.mark.parametrize("channels, size, quality", [(3, (32, 32), 10), (3, (17, 23), 10), (3, (32, 32), 75),
                                                     (1, (32, 32), 10), (1, (15, 20), 50)])
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


# --- ISS: grayscale and bit-depth reduction -----------------------------------------------------

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
    assert len(np.unique(levels)) <= 2 ** bits
    expected = np.stack([np.asarray(ImageOps.posterize(Image.fromarray(image.permute(1, 2, 0).numpy()), bits))
                         for image in images]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(levels, expected)


def test_bit_depth_reduction_levels():
    x = torch.linspace(0, 1, 1001).view(1, 1, 1, 1001)
    assert sorted(set(_levels(BitDepthReduction()(x)).flatten())) == [0, 64, 128, 192]
    x = to_unit_float(_uint8_images((2, 3, 8, 8), smooth=False))
    assert torch.equal(BitDepthReduction(8)(x), x)


# --- Cutout -----------------------------------------------------------------------------------

def _devries_cutout(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, length: int) -> np.ndarray:
    """The reference Cutout (DeVries & Taylor) per image, with the given centres."""
    out = x.copy()
    height, width = x.shape[-2:]
    for image, y, x_ in zip(out, rows, cols):
        y1, y2 = np.clip(y - length // 2, 0, height), np.clip(y + length // 2, 0, height)
        x1, x2 = np.clip(x_ - length // 2, 0, width), np.clip(x_ + length // 2, 0, width)
        image[:, y1:y2, x1:x2] = 0
    return out


def test_cutout_zeroes_one_clipped_square_and_keeps_the_rest():
    x = 0.1 + 0.9 * torch.rand((64, 3, 20, 24), generator=_generator(18))  # no zeros of its own
    out = Cutout()(x, _generator(19))
    g = _generator(19)  # the draws Cutout makes: rows, then columns
    rows, cols = torch.randint(0, 20, (64,), generator=g), torch.randint(0, 24, (64,), generator=g)
    np.testing.assert_array_equal(out.numpy(), _devries_cutout(x.numpy(), rows.numpy(), cols.numpy(), 16))
    clipped = 0
    for image, result in zip(x, out):
        zeroed = result == 0
        assert torch.equal(zeroed[0], zeroed[1]) and torch.equal(zeroed[0], zeroed[2])
        hole_rows, hole_cols = zeroed[0].any(1).nonzero().flatten(), zeroed[0].any(0).nonzero().flatten()
        height, width = len(hole_rows), len(hole_cols)
        assert hole_rows.diff().eq(1).all() and hole_cols.diff().eq(1).all()  # one contiguous block ...
        assert zeroed[0].sum() == height * width  # ... that is a full rectangle
        assert 8 <= height <= 16 and 8 <= width <= 16  # the centre is inside, so at least half survives
        clipped += (height, width) != (16, 16)
        assert torch.equal(result[~zeroed], image[~zeroed])
    assert 0 < clipped < 64


def test_cutout_odd_size_has_exactly_that_side():
    out = Cutout(size=5)(0.5 + torch.zeros(200, 1, 40, 40), _generator(20))
    full = [(image[0] == 0).sum().item() for image in out]
    assert max(full) == 25


def test_cutout_is_seeded_and_needs_a_generator():
    x = torch.rand((8, 3, 16, 16), generator=_generator(21)) + 0.1
    cutout = Cutout(size=8)
    assert torch.equal(cutout(x, _generator(22)), cutout(x, _generator(22)))
    assert not torch.equal(cutout(x, _generator(22)), cutout(x, _generator(23)))
    torch.manual_seed(22)
    assert torch.equal(cutout(x), cutout(x, _generator(22)))  # no generator: torch's global one


def test_cutout_centres_are_uniform_over_the_pixels():
    rows, cols = sample_hole_centres(16000, 4, 8, generator=_generator(24))
    np.testing.assert_allclose(np.bincount(rows.numpy(), minlength=4) / 16000, 1 / 4, rtol=0.08)
    np.testing.assert_allclose(np.bincount(cols.numpy(), minlength=8) / 16000, 1 / 8, rtol=0.08)


# --- registry ---------------------------------------------------------------------------------

def test_new_defenses_are_registered_and_flag_after_crop():
    assert DEFENSES.names(stage="after-crop") == ("coin", "cutout")
    assert {"jpeg", "gray", "bdr"} <= set(DEFENSES.names(stage="before-crop"))


def test_chains_route_options_and_apply_in_order():
    defense = build_defense("rsk+ff+coin", alpha=1.0, keep_percent=40)
    assert isinstance(defense, Compose)
    rsk, ff, coin = defense.defenses
    assert ff.keep_percent == 40 and coin.alpha == 1.0
    x = torch.rand((3, 3, 32, 32), generator=_generator(25))
    g = _generator(26)
    expected = coin(ff(rsk(x, g)), g)
    torch.testing.assert_close(defense(x, _generator(26)), expected, atol=0, rtol=0)
    assert expected.shape == (3, 3, 30, 30)

    iss = build_defense("gray+bdr+jpeg+cutout", bits=3, quality=30, size=8)
    assert repr(iss) == "Compose([Grayscale(), BitDepthReduction(bits=3), JpegCompression(quality=30), Cutout(size=8)])"
    out = iss(x, _generator(27))
    assert out.shape == x.shape and torch.equal(out[:, 0], out[:, 1])
    assert build_defense("coin", severity=2).alpha == 1.2


@pytest.mark.parametrize("spec, options, mentions", [
    ("coin", {"alpha": -1}, "Coin: alpha must be None or a number ≥ 0 (got -1)"),
    ("coin", {"alpha": float("nan")}, "alpha must be None or a number ≥ 0 (got nan)"),
    ("coin", {"alpha": "big"}, "alpha must be None or a number ≥ 0 (got 'big')"),
    ("coin", {"alpha": 1.0, "severity": 4}, "both given"),
    ("coin", {"severity": 8}, "Coin: severity must be None or an integer in [1, 7] (got 8)"),
    ("coin", {"severity": 2.5}, "severity must be None or an integer in [1, 7] (got 2.5)"),
    ("coin", {"published_quirks": "yes"}, "Coin: published_quirks must be True or False (got 'yes')"),
    ("jpeg", {"quality": 0}, "JpegCompression: quality must be an integer in [1, 100] (got 0)"),
    ("jpeg", {"quality": 101}, "quality must be an integer in [1, 100] (got 101)"),
    ("jpeg", {"quality": 10.5}, "quality must be an integer in [1, 100] (got 10.5)"),
    ("bdr", {"bits": 0}, "BitDepthReduction: bits must be an integer in [1, 8] (got 0)"),
    ("bdr", {"bits": 9}, "bits must be an integer in [1, 8] (got 9)"),
    ("cutout", {"size": 0}, "Cutout: size must be an integer ≥ 1 (got 0)"),
    ("cutout", {"size": 8.0}, "Cutout: size must be an integer ≥ 1 (got 8.0)"),
    ("gray", {"quality": 10}, "quality=10"),
    ("jpeg+bdr", {"size": 4}, "size=4"),
])
def test_new_defenses_reject_bad_input(spec, options, mentions):
    with pytest.raises(UserInputError, match="^[^\n]*$") as info:
        build_defense(spec, **options)
    assert mentions in str(info.value)


# --- devices ----------------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_new_defenses_run_on_cuda():
    gpu = torch.device("cuda")
    x = to_unit_float(_uint8_images((4, 3, 32, 32), seed=28))
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
