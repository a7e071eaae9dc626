"""Reading and writing photo files of any mode, as floats, at their own size.

`read_photo` turns one file into a `Photo`: the colour planes as float32 H×W×C in [0, 1] (C = 3 for
colour, 1 for grayscale), the alpha plane kept aside in its own integer type, the bit depth (8 or
16), the ICC colour profile and the EXIF block. `write_photo` writes colour planes back next to the
same alpha, depth, profile and (optionally) EXIF.

Conversions (the "sensible" ones, so that a protected copy looks like its source):
- EXIF orientation 2–8 is applied to the pixels (and the alpha), so the file stands as a viewer shows
  it; the written EXIF, when kept, says orientation 1.
- RGB, L (grayscale) stay as they are; RGBA and LA keep their alpha plane unchanged.
- P (palette) becomes RGB, or RGBA when the palette has transparency: a palette cannot hold the
  new colours a blur makes, so such files are written as true-colour (same PNG format).
- 1 (bilevel) becomes L. CMYK (e.g. Adobe JPEGs) becomes RGB with PIL's conversion; its ICC
  profile describes CMYK and is dropped (an RGB file cannot carry it). YCbCr, LAB, HSV become RGB.
- 16-bit PNGs (gray, gray+alpha, RGB, RGBA) are decoded at full depth (torchvision's PNG decoder;
  PIL reduces 16-bit colour to 8 bits and reads 16-bit gray as 32-bit integers, which is why naive
  code writes them back white), worked on as floats and written back as 16-bit PNGs (own encoder).
  16-bit gray from other formats (PIL modes I;16, I) is scaled by 1/65535.
- Anything else (floating-point TIFFs, ...) is refused with `UnsupportedPhoto`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
# Formats written back as they came; every other source format is written as PNG.
SAME_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}
JPEG_QUALITY = 95
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UnsupportedPhoto(ValueError):
    """A file PIL can open but whose pixels this module does not handle (e.g. a float TIFF)."""


@dataclass
class Photo:
    """One decoded photo.

    Attributes:
        pixels: float32 H×W×C in [0, 1], C = 3 (RGB) or 1 (gray), orientation applied.
        alpha: H×W uint8 or uint16 alpha plane, or None.
        depth: 8 or 16 bits per sample.
        format: the source's PIL format name ("JPEG", "PNG", ...).
        icc: the ICC profile bytes, or None.
        exif: the EXIF block with orientation reset to 1 (bytes), or None.
        mode: the source's PIL mode (for the record), plus "→..." when converted (e.g. "P→RGBA").
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    depth: int
    format: str
    icc: bytes | None
    exif: bytes | None
    mode: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after orientation."""
        return self.pixels.shape[1], self.pixels.shape[0]


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF `orientation` (1–8) to an H×W[×C] array, as PIL's ImageOps.exif_transpose does."""
    swap = (1, 0) + tuple(range(2, array.ndim))
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(swap),
        6: lambda a: a.transpose(swap)[:, ::-1],
        7: lambda a: a.transpose(swap)[::-1, ::-1],
        8: lambda a: a.transpose(swap)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def _exif_block(image: Image.Image) -> tuple[int, bytes | None]:
    """(orientation, EXIF bytes with orientation 1) of an open image; (1, None) when it has none."""
    exif = image.getexif()
    orientation = int(exif.get(ORIENTATION, 1) or 1)
    if not exif:
        return orientation, None
    if ORIENTATION in exif:
        exif[ORIENTATION] = 1
    return orientation, exif.tobytes()


def _png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None when `data` is not a PNG."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 26:
        return None
    return data[24], data[25]


def read_photo(path: str | Path) -> Photo:
    """Decode the file `path` into a `Photo` (see `decode_photo`)."""
    return decode_photo(Path(path).read_bytes())


def decode_photo(data: bytes) -> Photo:
    """Decode a file's bytes into a `Photo` (see the module docstring for the conversions).

    Raises:
        PIL.UnidentifiedImageError / OSError: not an image, or a broken one.
        UnsupportedPhoto: an image of a kind this module does not handle.
    """
    with Image.open(io.BytesIO(data)) as image:
        fmt = image.format or "PNG"
        icc = image.info.get("icc_profile") or None
        orientation, exif = _exif_block(image)
        header = _png_header(data)
        if header is not None and header[0] == 16:
            photo = _read_png16(data, header[1], image.mode, icc, exif)
        else:
            photo = _read_pil(image, fmt, icc, exif)
    photo.pixels = orient(photo.pixels, orientation)
    if photo.alpha is not None:
        photo.alpha = orient(photo.alpha, orientation)
    return photo


def _read_png16(data: bytes, colour_type: int, mode: str, icc: bytes | None, exif: bytes | None) -> Photo:
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_png

    with warnings.catch_warnings():  # torchvision ≥ 0.29 announces TorchCodec; its PNG decoder still works
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    array = raw.permute(1, 2, 0).numpy().astype(np.uint16)  # torch uint16 → numpy via a plain copy
    colour = {0: 1, 4: 1, 2: 3, 6: 3}.get(colour_type)
    if colour is None or array.shape[2] not in (colour, colour + 1):
        raise UnsupportedPhoto(f"16-bit PNG of colour type {colour_type} is not supported")
    alpha = array[:, :, colour].copy() if array.shape[2] == colour + 1 else None
    pixels = array[:, :, :colour].astype(np.float32) / 65535.0
    return Photo(pixels, alpha, 16, "PNG", icc, exif, f"{mode}(16-bit)")


def _read_pil(image: Image.Image, fmt: str, icc: bytes | None, exif: bytes | None) -> Photo:
    mode = image.mode
    label = mode
    if mode == "P":
        target = "RGBA" if "transparency" in image.info else "RGB"
        image, label = image.convert(target), f"P→{target}"
    elif mode == "PA":
        image, label = image.convert("RGBA"), "PA→RGBA"
    elif mode == "1":
        image, label = image.convert("L"), "1→L"
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image, label = image.convert("RGB"), f"{mode}→RGB"
        if mode == "CMYK":
            icc = None  # a CMYK profile does not describe the RGB pixels
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image).astype(np.float32)
        if values.min() < 0 or values.max() > 65535:
            raise UnsupportedPhoto(f"{mode} image with values outside 0..65535")
        return Photo((values / 65535.0)[:, :, None], None, 16, fmt, icc, exif, label)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        raise UnsupportedPhoto(f"image mode {image.mode} is not supported")
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    colour = 3 if image.mode.startswith("RGB") else 1
    alpha = array[:, :, colour].copy() if image.mode in ("RGBA", "LA") else None
    pixels = array[:, :, :colour].astype(np.float32) / 255.0
    return Photo(pixels, alpha, 8, fmt, icc, exif, label)


def output_suffix(source_format: str, choice: str, source_suffix: str) -> str:
    """The file suffix of the protected copy for --format `choice` ("same", "png", "jpg").

    "same" keeps the source's suffix for JPEG, PNG, WebP, TIFF and BMP sources; others become .png.
    """
    if choice == "png":
        return ".png"
    if choice == "jpg":
        return ".jpg"
    return source_suffix if source_format in SAME_FORMATS else ".png"


def quantise(pixels: np.ndarray, depth: int) -> np.ndarray:
    """float [0, 1] → uint8 / uint16 by rounding (clipped)."""
    top = 65535.0 if depth == 16 else 255.0
    dtype = np.uint16 if depth == 16 else np.uint8
    return np.clip(np.rint(pixels * top), 0, top).astype(dtype)


def write_photo(
    path: str | Path, photo: Photo, pixels: np.ndarray, suffix: str, keep_exif: bool, quality: int = JPEG_QUALITY
) -> None:
    """Write `encode_photo`'s bytes to `path`."""
    Path(path).write_bytes(encode_photo(photo, pixels, suffix, keep_exif, quality))


def encode_photo(photo: Photo, pixels: np.ndarray, suffix: str, keep_exif: bool, quality: int = JPEG_QUALITY) -> bytes:
    """Encode float `pixels` (H×W×C in [0, 1]) with `photo`'s alpha, depth and profile, as `suffix` says.

    16-bit photos stay 16-bit in PNG (own encoder, filter-free rows, zlib level 6); a JPEG output
    of a 16-bit photo is 8-bit (JPEG has no 16-bit form). JPEG is written at `quality` without
    chroma subsampling (4:4:4), so the colour of the protection is not averaged away. The ICC
    profile is always kept; the EXIF block only with `keep_exif`.
    """
    kind = {
        ".jpg": "JPEG",
        ".jpeg": "JPEG",
        ".png": "PNG",
        ".webp": "WEBP",
        ".tif": "TIFF",
        ".tiff": "TIFF",
        ".bmp": "BMP",
    }[suffix.lower()]
    exif = photo.exif if keep_exif else None
    if photo.depth == 16 and kind == "PNG":
        return encode_png16(quantise(pixels, 16), photo.alpha, photo.icc, exif)
    values = quantise(pixels, 8)
    alpha = photo.alpha
    if alpha is not None and alpha.dtype == np.uint16:
        alpha = (alpha.astype(np.uint32) * 255 + 32767) // 65535
    if alpha is not None and kind in ("JPEG", "BMP"):
        raise UnsupportedPhoto(f"{kind} cannot hold an alpha channel")
    planes = values if alpha is None else np.concatenate([values, alpha.astype(np.uint8)[:, :, None]], axis=2)
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[planes.shape[2]]
    image = Image.fromarray(planes[:, :, 0] if mode == "L" else planes, mode)
    options: dict = {}
    if photo.icc:
        options["icc_profile"] = photo.icc
    if exif:
        options["exif"] = exif
    if kind == "JPEG":
        options.update(quality=quality, subsampling=0)
    elif kind == "WEBP":
        options.update(quality=quality)
    elif kind == "PNG":
        options.update(compress_level=6)
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png16(
    values: np.ndarray, alpha: np.ndarray | None, icc: bytes | None = None, exif: bytes | None = None
) -> bytes:
    """A 16-bit PNG of uint16 H×W×C `values` (C = 1 or 3) plus an optional uint16 (or uint8) alpha."""
    height, width, colour = values.shape
    planes = values
    if alpha is not None:
        a16 = alpha.astype(np.uint16) * 257 if alpha.dtype == np.uint8 else alpha
        planes = np.concatenate([values, a16[:, :, None]], axis=2)
    colour_type = {(1, False): 0, (1, True): 4, (3, False): 2, (3, True): 6}[(colour, alpha is not None)]
    rows = planes.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 per row
    out = [_PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))]
    if icc:
        out.append(_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    out += [_chunk(b"IDAT", zlib.compress(raw, 6)), _chunk(b"IEND", b"")]
    return b"".join(out)
