"""Local caches: verified downloads into the data root, and decoded ImageFolder arrays.

Decode cache layout, one entry per source (a key from `cache_key`):

    $UNLEARNABLE_CACHE/<key>/images.npy   uint8 N×H×W×C
    $UNLEARNABLE_CACHE/<key>/labels.npy   int64 (N,)
    $UNLEARNABLE_CACHE/<key>/info.json    classes, num_images and where the arrays came from

($UNLEARNABLE_CACHE defaults to ~/.cache/unlearnable/decoded.) Entries are written through
`unlearnable.io.atomic_directory`, so a reader sees a complete entry or none; an unreadable
entry counts as a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unlearnable.errors import UserInputError
from unlearnable.io import MARKER, atomic_directory, write_json

CACHE_ENV = "UNLEARNABLE_CACHE"
FORMAT_VERSION = 1


@dataclass
class Decoded:
    """Decoded images with their labels.

    Attributes:
        images: uint8 N×H×W×C, values 0..255 (C is 1 or 3).
        labels: int64 (N,), values in 0..len(classes)-1.
        classes: class names, index = label.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]


class DownloadError(Exception):
    """A download failed (network, disk or checksum); the message is the reason, one line."""


def cache_root() -> Path:
    """The decode cache directory: $UNLEARNABLE_CACHE, else ~/.cache/unlearnable/decoded."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "unlearnable" / "decoded"


def cache_key(**parts: Any) -> str:
    """The name of the cache entry for a source described by JSON-serialisable `parts`."""
    blob = json.dumps({**parts, "format": FORMAT_VERSION}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def listing_digest(entries: Iterable[tuple[str, int, int]]) -> str:
    """A digest of (relative path, size in bytes, mtime_ns) triples, in the order given."""
    digest = hashlib.sha256()
    for relative, size, mtime_ns in entries:
        digest.update(f"{relative}\0{size}\0{mtime_ns}\n".encode(errors="surrogateescape"))
    return digest.hexdigest()


def load_entry(key: str) -> Decoded | None:
    """The cached arrays for `key` (images memory-mapped copy-on-write), or None on a miss."""
    entry = cache_root() / key
    try:
        info = json.loads((entry / "info.json").read_text())
        images = np.load(entry / "images.npy", mmap_mode="c", allow_pickle=False)
        labels = np.load(entry / "labels.npy", allow_pickle=False)
        classes = [str(name) for name in info["classes"]]
        count = int(info["num_images"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[0] != count
        or labels.dtype != np.int64
        or labels.shape != (count,)
    ):
        return None
    return Decoded(images, labels, classes)


CACHE_ENTRIES = frozenset({"images.npy", "labels.npy", "info.json", MARKER})


def is_cache_entry(path: Path) -> bool:
    """True when `path` holds nothing but what `store_entry` writes (so it may be replaced)."""
    return path.is_dir() and {e.name for e in path.iterdir()} <= CACHE_ENTRIES


def store_entry(key: str, decoded: Decoded, info: dict[str, Any]) -> None:
    """Write `decoded` under `key`; a failure only warns, since the cache is an optimisation."""
    entry = cache_root() / key
    try:
        with atomic_directory(entry, overwrite=True, kind="decode cache", recognise=is_cache_entry) as tmp:
            np.save(tmp / "images.npy", decoded.images)
            np.save(tmp / "labels.npy", decoded.labels)
            write_json(tmp / "info.json", {**info, "classes": decoded.classes, "num_images": len(decoded.labels)})
    except (OSError, UserInputError) as e:  # e.g. another process writing the same entry now
        warnings.warn(f"could not write the decode cache {entry} ({e}); the next load decodes again", stacklevel=2)


def download_verified(url: str, md5: str, dest: Path) -> None:
    """Fetch `url` to `dest` through a temporary sibling file, renamed only once its md5 matches.

    Raises DownloadError with the reason; nothing is left behind on failure.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as e:
        raise DownloadError(str(e)) from None
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}", disable=None, leave=False
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DownloadError(f"md5 of {url} is {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    except (OSError, http.client.HTTPException) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise DownloadError(f"{url}: {reason}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
