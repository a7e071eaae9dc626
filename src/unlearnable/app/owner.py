"""Data owners: protect a real photo collection at its own resolution, publish it, verify it later.

`protect_folder(PHOTOS, PUBLISHED)` writes a copy of an ImageFolder collection (PHOTOS/<class>/...,
nested folders allowed inside a class) in which every photo carries its class's secret CUDA blur,
at the photo's own pixel size and format, and a private key beside it. `verify_folder(PUBLISHED,
KEY)` says, file by file, whether the published copy is complete, untouched and still protected.

The blur itself, at the resolutions a trainer looks at, is `unlearnable.attacks.multiscale`.

Metadata: by default the EXIF block (GPS position, camera serial, time...) is dropped, for privacy;
the ICC colour profile is always kept, so colours look the same. ``metadata="keep"`` keeps the EXIF
with the orientation tag set to 1 (the pixels are already rotated upright).

Files: classes are the non-hidden subfolders of PHOTOS. Skipped and counted: hidden names (any path
part starting with ".": `._x.jpg`, `.DS_Store`, dotfiles, hidden folders), Windows' `Thumbs.db`
and `desktop.ini`, files without an image suffix, files outside any class folder, and files that do
not decode (`unreadable`). A file reached twice through symbolic links (a linked file, a linked
folder) is read once, under its non-link path when there is one (else the first in sorted order);
its other paths are counted as `duplicates` and not published. Empty class folders are published
empty and counted.

Atomic and resumable: PUBLISHED is built in the sibling ``.<name>.partial`` and renamed into place
when complete. Every finished file is recorded (with its digest) in the partial folder as it is
written; an interrupted run (Ctrl-C, kill -9) leaves the partial folder, and the next run with the
same source and settings re-checks each recorded file's digest and the source's size and time, and
continues; different settings start it over. An existing PUBLISHED is replaced only with
``overwrite=True`` and only when the key at `key` lists every file it holds (this tool wrote it).

The key (JSON, default ``<PUBLISHED>.key.json`` beside PUBLISHED, never inside it) holds the
scheme, strength, kernels, seed, class names, and per file: source and published paths, sha256 of
both files, size, mode, whether it was protected, and a 32-pixel thumbnail of the source (about 4 KB
a photo) that lets `verify_folder` test whether a changed file still carries its class's blur.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

from unlearnable.attacks.multiscale import (
    STRENGTHS,
    THUMB_R,
    Strength,
    blur_scores,
    class_kernels,
    protect_pixels,
    thumbnail,
)
from unlearnable.data.photos import Photo, UnsupportedPhoto, decode_photo, encode_photo, output_suffix
from unlearnable.errors import UserInputError
from unlearnable.io import atomic_write_bytes, contains

TOOL = "unlearnable protect"
KEY_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
OS_FILES = {"thumbs.db", "desktop.ini"}
RECORDS = ".unlearnable-protect.jsonl"
VERIFY_MIN_EXPLAINED = 0.8
VERIFY_MARGIN = 0.02


FORMATS = ("same", "png", "jpg")
METADATA = ("strip", "keep")


# ------------------------------------------------------------------------------------------ the listing


@dataclass
class Listing:
    """What `scan` found in PHOTOS."""

    classes: list[str]
    files: list[tuple[str, int]]  # (relative POSIX path, class index), sorted
    skipped: dict[str, int] = field(default_factory=dict)
    empty_classes: list[str] = field(default_factory=list)


def is_hidden(name: str) -> bool:
    """Hidden or OS bookkeeping file/folder names that are never published."""
    return name.startswith(".") or name.lower() in OS_FILES or name == "__MACOSX"


def scan(src: Path) -> Listing:
    """List the class folders and image files of `src` (see the module docstring for the rules)."""
    skipped = {"hidden": 0, "not_image": 0, "outside_classes": 0, "duplicates": 0}
    classes = []
    for entry in sorted(src.iterdir(), key=lambda e: e.name):
        if is_hidden(entry.name):
            skipped["hidden"] += 1
        elif entry.is_dir():
            classes.append(entry.name)
        else:
            skipped["outside_classes"] += 1
    by_target: dict[str, list[tuple[bool, str, int]]] = {}
    counts = [0] * len(classes)
    for index, name in enumerate(classes):
        walked: set[str] = set()
        for root, dirs, names in os.walk(src / name, followlinks=True):
            real = os.path.realpath(root)
            if real in walked:  # a folder linked into itself, or reached twice
                dirs[:] = []
                continue
            walked.add(real)
            skipped["hidden"] += sum(is_hidden(d) for d in dirs)
            dirs[:] = sorted(d for d in dirs if not is_hidden(d))
            for file in sorted(names):
                path = Path(root) / file
                rel = path.relative_to(src).as_posix()
                if is_hidden(file):
                    skipped["hidden"] += 1
                elif path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                    skipped["not_image"] += 1
                else:
                    linked = any(p.is_symlink() for p in [path, *path.parents] if src in p.parents or p == path)
                    by_target.setdefault(os.path.realpath(path), []).append((linked, rel, index))
    files = []
    for paths in by_target.values():
        linked, rel, index = min(paths)  # a non-link path first, then sorted order
        files.append((rel, index))
        counts[index] += 1
        skipped["duplicates"] += len(paths) - 1
    files.sort()
    empty = [c for c, n in zip(classes, counts) if n == 0]
    return Listing(classes, files, skipped, empty)


# ---------------------------------------------------------------------------------------------- helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_key_path(dst: str | os.PathLike) -> Path:
    """``<PUBLISHED>.key.json`` beside PUBLISHED."""
    dst = Path(dst)
    return dst.parent / f"{dst.name}.key.json"


def read_key(path: str | os.PathLike) -> dict[str, Any]:
    """The key at `path`; UserInputError when it is missing or not a key of this tool."""
    path = Path(path)
    try:
        key = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserInputError(
            f"key file {path} does not exist; pass the --key written by `unlearnable protect`"
        ) from None
    except (OSError, ValueError) as e:
        raise UserInputError(
            f"key file {path} is unreadable ({e}); pass the --key written by `unlearnable protect`"
        ) from None
    if not isinstance(key, dict) or key.get("tool") != TOOL or key.get("version") != KEY_VERSION:
        raise UserInputError(f"{path} is not a key written by `unlearnable protect`; pass the right --key")
    return key


def published_files(folder: Path) -> set[str]:
    """Relative POSIX paths of the non-hidden files under `folder` (links not followed)."""
    found: set[str] = set()
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not is_hidden(d)]
        found.update((Path(root) / n).relative_to(folder).as_posix() for n in names if not is_hidden(n))
    return found


def written_with_key(folder: Path, key_path: Path) -> bool:
    """True when `folder` is a PUBLISHED folder of the key at `key_path`: every file in it is listed there."""
    try:
        key = read_key(key_path)
    except UserInputError:
        return False
    listed = {f["published"] for f in key.get("files", [])}
    return folder.is_dir() and not folder.is_symlink() and published_files(folder) <= listed


def check_paths(src: Path, dst: Path, key: Path, overwrite: bool) -> None:
    """Refuse (UserInputError) the folder and key paths that could lose or leak data."""
    if not src.is_dir():
        raise UserInputError(f"PHOTOS {src} is not a folder; pass a folder of class folders (PHOTOS/<class>/...)")
    rs, rd, rk = src.resolve(), dst.resolve(), key.resolve()
    if contains(rs, rd) or contains(rd, rs):
        raise UserInputError(f"--out {dst} is, contains or lies inside PHOTOS {src}; publish to a folder elsewhere")
    if contains(rd, rk):
        raise UserInputError(f"--key {key} lies inside the published folder {dst}; keep the private key outside it")
    if contains(rs, rk):
        raise UserInputError(f"--key {key} lies inside PHOTOS {src}; keep the key outside the collection")
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        raise UserInputError(f"--out {dst} exists and is not a folder; choose a new path")
    if key.exists() and not key.is_file():
        raise UserInputError(f"--key {key} exists and is not a file; choose a new path")
    if dst.exists():
        if not overwrite:
            raise UserInputError(f"--out {dst} already exists; choose another path or pass --overwrite")
        if not written_with_key(dst, key):
            raise UserInputError(
                f"--out {dst} is not a folder published with the key {key} (it holds other "
                f"files, or the key is missing), so --overwrite will not replace it; choose a new path"
            )
    elif key.exists():
        if not overwrite:
            raise UserInputError(
                f"--key {key} already exists; keep it (it is the only way to verify what it "
                f"published), choose another --key, or pass --overwrite"
            )
        read_key(key)  # --overwrite replaces only a key of this tool


@contextlib.contextmanager
def _locked(directory: Path):
    """Hold an exclusive flock on `directory` (the partial folder) or refuse: another run writes it."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserInputError(
                f"another `unlearnable protect` is writing {directory} right now; wait for it "
                f"to finish or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- protect


@dataclass
class ProtectResult:
    """What `protect_folder` did: the counts the CLI prints."""

    out: Path
    key: Path
    published: int = 0
    resumed: int = 0
    classes: int = 0
    empty_classes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def _protect_one(
    src: Path, rel: str, kernel: np.ndarray, strength: Strength, fmt: str, keep_exif: bool, quality: int
) -> tuple[dict[str, Any], bytes] | tuple[dict[str, Any], None]:
    path = src / rel
    stat = path.stat()
    data = path.read_bytes()
    record: dict[str, Any] = {
        "source": rel,
        "source_sha256": sha256(data),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
    }
    try:
        photo = decode_photo(data)
    except (UnidentifiedImageError, UnsupportedPhoto, OSError, ValueError) as e:
        record["unreadable"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        return record, None
    del data
    suffix = output_suffix(photo.format, fmt, Path(rel).suffix)
    if photo.alpha is not None and suffix in (".jpg", ".jpeg", ".bmp"):
        suffix = ".png"  # JPEG and BMP cannot hold the alpha plane; keeping it wins over the format
    protected = protect_pixels(photo.pixels, kernel, strength.scales)
    encoded = encode_photo(photo, protected, suffix, keep_exif, quality)
    thumb = thumbnail(photo.pixels)
    record.update(
        {
            "published": str(Path(rel).with_suffix(suffix).as_posix()),
            "published_sha256": sha256(encoded),
            "width": photo.size[0],
            "height": photo.size[1],
            "mode": photo.mode,
            "depth": photo.depth,
            "alpha": photo.alpha is not None,
            "protected": True,
            "thumb": base64.b64encode(thumb.tobytes()).decode(),
            "thumb_shape": list(thumb.shape),
        }
    )
    return record, encoded


def _settings(
    src: Path, listing: Listing, strength_name: str, fmt: str, metadata: str, seed: int, quality: int
) -> dict[str, Any]:
    settings = {
        "source": str(src.resolve()),
        "classes": listing.classes,
        "strength": strength_name,
        "strength_params": asdict(STRENGTHS[strength_name]),
        "format": fmt,
        "metadata": metadata,
        "seed": seed,
        "jpeg_quality": quality,
        "key_version": KEY_VERSION,
    }
    return json.loads(json.dumps(settings))  # as it reads back from the records file (tuples → lists)


def _load_records(partial: Path, settings: dict[str, Any], src: Path) -> dict[str, dict[str, Any]]:
    """Finished files recorded in `partial` by an earlier identical run, each re-checked; {} if none."""
    try:
        lines = (partial / RECORDS).read_text().splitlines()
        if json.loads(lines[0]) != {"settings": settings}:
            return {}
    except (OSError, ValueError, IndexError):
        return {}
    done = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the last line of a killed run may be cut short
        try:
            stat = (src / record["source"]).stat()
            same_source = (stat.st_size, stat.st_mtime_ns) == (record["source_size"], record["source_mtime_ns"])
            if "unreadable" in record:
                ok = same_source
            else:
                ok = same_source and file_sha256(partial / record["published"]) == record["published_sha256"]
        except (OSError, KeyError, TypeError):
            ok = False
        if ok:
            done[record["source"]] = record
    return done


def protect_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    strength: str = "mid",
    fmt: str = "same",
    key: str | os.PathLike | None = None,
    metadata: str = "strip",
    seed: int = 0,
    overwrite: bool = False,
    quality: int = 95,
    workers: int = 2,
    progress: bool = True,
    on_file: Callable[[dict[str, Any]], None] | None = None,
) -> ProtectResult:
    """Publish a protected copy of the ImageFolder collection `src` as `dst`, and its key.

    Args:
        src: PHOTOS, a folder of class folders.
        dst: PUBLISHED, the folder to create (see the module docstring for the refusal rules).
        strength: "low", "mid" or "high" (`STRENGTHS`).
        fmt: "same" (each file in its own format; GIF/PPM/PGM become PNG), "png" or "jpg". Photos with
            alpha stay PNG under "jpg" (JPEG has no alpha).
        key: the private key's path (default ``<dst>.key.json`` beside `dst`).
        metadata: "strip" (drop EXIF, keep the ICC profile) or "keep" (EXIF too, orientation 1).
        seed: the kernels' seed (CUDA's published stream).
        overwrite: replace an existing `dst` that this tool published with the key at `key`.
        quality: JPEG/WebP quality of lossy outputs.
        workers: threads that decode, protect and encode photos concurrently (at most 2·workers
            photos are in memory at once).
        on_file: called in the main thread with each finished file's record (after it is saved).

    Returns:
        ProtectResult with the counts.
    """
    if strength not in STRENGTHS:
        raise UserInputError(f"--strength {strength!r} is unknown; use one of {', '.join(STRENGTHS)}")
    if fmt not in FORMATS:
        raise UserInputError(f"--format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    if metadata not in METADATA:
        raise UserInputError(f"--metadata {metadata!r} is unknown; use one of {', '.join(METADATA)}")
    if not 0 <= seed < 2**32:
        raise UserInputError(f"--seed {seed} is out of range; use an integer in [0, 2**32)")
    if workers < 1:
        raise UserInputError(f"--workers {workers} is invalid; use an integer >= 1")
    if not 1 <= quality <= 100:
        raise UserInputError(f"JPEG quality {quality} is out of range; use 1..100")
    src, dst = Path(src), Path(dst)
    key_path = Path(key) if key is not None else default_key_path(dst)
    check_paths(src, dst, key_path, overwrite)
    listing = scan(src)
    if not listing.classes:
        raise UserInputError(f"PHOTOS {src} holds no class folders; arrange the photos as PHOTOS/<class>/<photo>")
    params = STRENGTHS[strength]
    kernels = class_kernels(len(listing.classes), params, seed)
    settings = _settings(src, listing, strength, fmt, metadata, seed, quality)
    partial = dst.parent / f".{dst.name}.partial"
    if (
        partial.is_symlink()
        or (partial.exists() and not partial.is_dir())
        or (partial.is_dir() and any(partial.iterdir()) and not (partial / RECORDS).is_file())
    ):
        raise UserInputError(
            f"{partial} exists and was not made by `unlearnable protect`; move it away (this "
            f"command builds PUBLISHED there)"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir(exist_ok=True)
    result = ProtectResult(
        dst, key_path, classes=len(listing.classes), empty_classes=listing.empty_classes, skipped=dict(listing.skipped)
    )
    with _locked(partial):
        done = _load_records(partial, settings, src)
        if not done:  # a stale partial of other settings (or none): start over
            for entry in list(partial.iterdir()):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        records = dict(done)
        with open(partial / RECORDS, "w") as log:
            log.write(json.dumps({"settings": settings}) + "\n")
            for record in done.values():
                log.write(json.dumps(record) + "\n")
            log.flush()
            result.resumed = len(done)
            todo = [(rel, c) for rel, c in listing.files if rel not in done]
            bar = tqdm(
                total=len(listing.files), initial=len(done), desc="protecting", unit="photo", disable=not progress
            )
            keep_exif = metadata == "keep"

            def finish(future: Future) -> None:
                record, encoded = future.result()
                if encoded is not None:
                    atomic_write_bytes(partial / record["published"], encoded)
                record["class"] = listing.classes[classes_of[record["source"]]]
                records[record["source"]] = record
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.update(1)
                if on_file is not None:
                    on_file(record)

            classes_of = dict(listing.files)
            with ThreadPoolExecutor(max(1, workers)) as pool:
                pending: set[Future] = set()
                try:
                    for rel, c in todo:
                        if len(pending) >= 2 * max(1, workers):
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            for future in finished:
                                finish(future)
                        pending.add(pool.submit(_protect_one, src, rel, kernels[c], params, fmt, keep_exif, quality))
                    for future in list(pending):
                        future.result()
                        pending.discard(future)
                        finish(future)
                except BaseException:
                    for future in pending:
                        future.cancel()
                    raise
            bar.close()
        for name in listing.classes:
            (partial / name).mkdir(exist_ok=True)
        files = [records[rel] for rel, _ in listing.files]
        _remove_strays(partial, {r["published"] for r in files if "published" in r} | {RECORDS})
        result.unreadable = [r["source"] for r in files if "unreadable" in r]
        result.published = len(files) - len(result.unreadable)
        _check_collisions(files)
        key_doc = {
            "tool": TOOL,
            "version": KEY_VERSION,
            "scheme": "multi-scale carried difference: x + sum_R upsample_bilinear(blur_c(area_R(x)) - area_R(x)), "
            "clipped; grid short side R, aspect kept; kernels normalised to sum 1; reflect border",
            "strength": strength,
            "kernel_size": params.kernel_size,
            "blur_parameter": params.blur_parameter,
            "scales": list(params.scales),
            "seed": seed,
            "format": fmt,
            "metadata": metadata,
            "jpeg_quality": quality,
            "thumb_resolution": THUMB_R,
            "classes": listing.classes,
            "kernels": kernels.tolist(),
            "empty_classes": listing.empty_classes,
            "skipped": listing.skipped,
            "files": [r for r in files if "unreadable" not in r],
            "unreadable": [{"source": r["source"], "reason": r["unreadable"]} for r in files if "unreadable" in r],
        }
        (partial / RECORDS).unlink()
        atomic_write_bytes(key_path, json.dumps(key_doc, indent=0).encode(), mode=0o600)  # the owner's alone
        if dst.exists():
            if not written_with_key(dst, key_path) and not _replaceable(dst, key_doc):
                raise UserInputError(f"--out {dst} changed while this run worked; choose a new path")
            trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, trash / dst.name)
            os.replace(partial, dst)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(partial, dst)
    return result


def _remove_strays(partial: Path, expected: set[str]) -> None:
    """Delete files in `partial` no record lists (sources removed since, half-written temporaries)."""
    for root, _, names in os.walk(partial):
        for n in names:
            path = Path(root) / n
            if path.relative_to(partial).as_posix() not in expected:
                path.unlink()


def _replaceable(folder: Path, key_doc: dict[str, Any]) -> bool:
    listed = {f["published"] for f in key_doc["files"]}
    return published_files(folder) <= listed


def _check_collisions(files: list[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for record in files:
        out = record.get("published")
        if out is None:
            continue
        if out in seen:
            raise UserInputError(
                f"{seen[out]} and {record['source']} would both be published as {out}; rename one or use --format same"
            )
        seen[out] = record["source"]


# ----------------------------------------------------------------------------------------------- verify


@dataclass
class FileCheck:
    """One file's verdict: status ok / modified / unprotected / missing / extra."""

    path: str
    status: str
    detail: str = ""


@dataclass
class VerifyResult:
    """`verify_folder`'s answer: per-file checks and the counts."""

    checks: list[FileCheck]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    @property
    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in ("ok", "modified", "unprotected", "missing", "extra")}

    @property
    def all_ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)


def check_blur(
    pixels: np.ndarray, record: dict[str, Any], kernels: np.ndarray, class_index: int, scales: Iterable[int]
) -> tuple[bool, str]:
    """Does this image carry its class's blur?

    Yes when its class's protection explains at least VERIFY_MIN_EXPLAINED of the change from the
    source thumbnail, and no other class's explains it clearly better (by VERIFY_MARGIN). Classes
    whose kernels are alike explain each other's change almost equally well at 32 pixels, hence a
    margin and not a strict "best".
    """
    thumb = np.frombuffer(base64.b64decode(record["thumb"]), np.uint8).reshape(record["thumb_shape"])
    scores = blur_scores(pixels, thumb, kernels, (record["height"], record["width"]), scales)
    own = scores[class_index]
    best_other = max((s for j, s in enumerate(scores) if j != class_index), default=0.0)
    holds = own >= VERIFY_MIN_EXPLAINED and own >= best_other - VERIFY_MARGIN
    return bool(holds), f"class blur explains {own:.0%} of the change (best other class {best_other:.0%})"


def verify_folder(dst: str | os.PathLike, key: str | os.PathLike, progress: bool = True) -> VerifyResult:
    """Check a published folder against its key, file by file.

    Statuses: ok (the published bytes, digest equal); modified (bytes changed, but the image still
    carries its class's blur, e.g. recompressed or resized); unprotected (bytes changed and the blur is
    gone: an original put back, or an edit that removed it; a file equal to its source is always this);
    missing; extra (a non-hidden file the key does not list). The blur test compares the image, on
    the key's 32-pixel grid, with the source thumbnail stored in the key (`check_blur`).
    """
    dst = Path(dst)
    if not dst.is_dir():
        raise UserInputError(f"PUBLISHED {dst} is not a folder; pass the folder written by `unlearnable protect`")
    doc = read_key(key)
    classes = doc["classes"]
    kernels = np.asarray(doc["kernels"], dtype=np.float32)
    checks = []
    listed = set()
    for record in tqdm(doc["files"], desc="verifying", unit="photo", disable=not progress):
        name = record["published"]
        listed.add(name)
        path = dst / name
        if not path.is_file():
            checks.append(FileCheck(name, "missing"))
            continue
        data = path.read_bytes()
        digest = sha256(data)
        if digest == record["published_sha256"]:
            checks.append(FileCheck(name, "ok"))
            continue
        if digest == record["source_sha256"]:
            checks.append(FileCheck(name, "unprotected", "identical to its unprotected source"))
            continue
        try:
            photo: Photo = decode_photo(data)
        except (UnidentifiedImageError, UnsupportedPhoto, OSError, ValueError):
            checks.append(FileCheck(name, "unprotected", "no longer decodes as an image"))
            continue
        holds, detail = check_blur(photo.pixels, record, kernels, classes.index(record["class"]), doc["scales"])
        checks.append(FileCheck(name, "modified" if holds else "unprotected", detail))
    for extra in sorted(published_files(dst) - listed):
        checks.append(FileCheck(extra, "extra"))
    return VerifyResult(checks)
