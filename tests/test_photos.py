"""unlearnable.data.photos: every mode read as floats at its own size, written back at its own depth."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from unlearnable.data.photos import decode_photo, encode_photo, encode_png16, orient, output_suffix, read_photo


def smooth(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(3 * xx + k) * np.cos(2 * yy - k) for k in range(c)], axis=2) * 0.4 + 0.5
    return np.clip(base + 0.03 * rng.standard_normal((h, w, c)), 0, 1)


def exif_with(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil_exif_transpose(orientation: int) -> None:
    array = (smooth(12, 20, 3) * 255).astype(np.uint8)
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif_with(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    assert np.array_equal(orient(array, orientation), expected)
    photo = decode_photo(buffer.getvalue())
    assert photo.pixels.shape[:2] == expected.shape[:2]
    assert np.array_equal(np.rint(photo.pixels * 255).astype(np.uint8), expected)
    assert photo.exif is not None
    reread = Image.open(io.BytesIO(encode_photo(photo, photo.pixels, ".png", keep_exif=True)))
    assert reread.getexif().get(0x0112) == 1 and reread.getexif().get(0x010F) == "TestCam"
    stripped = Image.open(io.BytesIO(encode_photo(photo, photo.pixels, ".png", keep_exif=False)))
    assert not stripped.getexif()


def test_sixteen_bit_gray_png_written_by_pil_is_not_white_and_round_trips(tmp_path) -> None:
    values = (smooth(20, 30, 1)[:, :, 0] * 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    photo = read_photo(tmp_path / "g16.png")
    assert photo.depth == 16 and photo.pixels.shape == (20, 30, 1)
    assert np.array_equal(np.rint(photo.pixels[:, :, 0] * 65535).astype(np.uint16), values)
    data = encode_photo(photo, photo.pixels, ".png", keep_exif=False)
    again = decode_photo(data)
    assert again.depth == 16 and np.array_equal(again.pixels, photo.pixels)
    assert np.asarray(Image.open(io.BytesIO(data))).max() == values.max()  # PIL reads our file the same


@pytest.mark.parametrize("channels,alpha", [(3, False), (3, True), (1, True)])
def test_sixteen_bit_colour_and_alpha_keep_every_bit(channels: int, alpha: bool) -> None:
    rng = np.random.default_rng(channels)
    values = rng.integers(0, 65536, (9, 7, channels), dtype=np.uint16)
    plane = rng.integers(0, 65536, (9, 7), dtype=np.uint16) if alpha else None
    photo = decode_photo(encode_png16(values, plane))
    assert photo.depth == 16
    assert np.array_equal(np.rint(photo.pixels * 65535).astype(np.uint16), values)
    assert (photo.alpha is None) == (not alpha)
    if alpha:
        assert photo.alpha.dtype == np.uint16 and np.array_equal(photo.alpha, plane)
    again = decode_photo(encode_photo(photo, photo.pixels, ".png", keep_exif=False))
    assert np.array_equal(again.pixels, photo.pixels)
    if alpha:
        assert np.array_equal(again.alpha, plane)


def test_palette_la_cmyk_and_icc() -> None:
    rgb = (smooth(10, 14, 3) * 255).astype(np.uint8)
    pal = Image.fromarray(rgb).quantize(16)
    pal.info["transparency"] = 0
    buffer = io.BytesIO()
    pal.save(buffer, "PNG", transparency=0)
    photo = decode_photo(buffer.getvalue())
    assert photo.mode == "P→RGBA" and photo.alpha is not None and photo.pixels.shape == (10, 14, 3)
    assert np.array_equal(photo.alpha == 0, np.asarray(pal) == 0)

    la = Image.fromarray(np.stack([rgb[:, :, 0], rgb[:, :, 1]], axis=2), "LA")
    buffer = io.BytesIO()
    la.save(buffer, "PNG")
    photo = decode_photo(buffer.getvalue())
    assert photo.pixels.shape == (10, 14, 1) and np.array_equal(photo.alpha, rgb[:, :, 1])
    written = Image.open(io.BytesIO(encode_photo(photo, photo.pixels, ".png", keep_exif=False)))
    assert written.mode == "LA" and np.array_equal(np.asarray(written)[:, :, 1], rgb[:, :, 1])

    cmyk = Image.fromarray(rgb).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, "JPEG", quality=95)
    photo = decode_photo(buffer.getvalue())
    assert photo.mode == "CMYK→RGB" and photo.pixels.shape == (10, 14, 3)
    assert np.abs(photo.pixels * 255 - rgb).mean() < 12  # PIL's naive CMYK→RGB, through JPEG

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", icc_profile=icc, exif=exif_with(1))
    photo = decode_photo(buffer.getvalue())
    for suffix in (".jpg", ".png", ".webp"):
        out = Image.open(io.BytesIO(encode_photo(photo, photo.pixels, suffix, keep_exif=False)))
        assert out.info.get("icc_profile") == icc, suffix
    deep = decode_photo(encode_png16((photo.pixels * 65535).astype(np.uint16), None, icc))
    assert deep.icc == icc


def test_output_suffix_and_alpha_refused_in_jpeg() -> None:
    assert output_suffix("JPEG", "same", ".JPEG") == ".JPEG"
    assert output_suffix("GIF", "same", ".gif") == ".png"
    assert output_suffix("PNG", "jpg", ".png") == ".jpg"
    photo = decode_photo(encode_png16(np.zeros((4, 4, 3), np.uint16), np.zeros((4, 4), np.uint16)))
    with pytest.raises(ValueError, match="alpha"):
        encode_photo(photo, photo.pixels, ".jpg", keep_exif=False)
