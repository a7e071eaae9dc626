"""ImageFolder datasets: a tree <root>/<class>/<image>, as a directory or a .tar/.tar.gz/.tgz archive.

Class and file order are torchvision.datasets.ImageFolder's: classes are the sorted subfolder
names, each class's files are found recursively and sorted by (folder, file name), and only
names ending in one of IMG_EXTENSIONS (any case) count.

Splits: when the root holds train/ and test/ (or val/, taken as the test split when there is no
test/) subfolders, `split` picks one; when it holds class folders directly it is a train split
only. A root whose only subfolder holds folders itself (an archive of `cifar10/train/...`) is
looked into once.

Names starting with "." (macOS `._x.jpg` resource forks, `.DS_Store`, hidden folders) and
`__MACOSX` folders are skipped. A file reached twice through symbolic links (a link to a file of
the set, a linked folder) is read once, where it is first met in that order, the non-link path
preferred; a folder linked into itself is walked once.

Images decode with PIL in a thread pool into one preallocated uint8 N×H×W×C array: C=1 when
every image is grayscale (mode "L"), else C=3 (RGB); every other mode (palette, RGBA, CMYK,
16-bit) becomes RGB (16-bit values scaled to 8 bits). The EXIF orientation is applied
(ImageOps.exif_transpose), so a photo stands as a viewer shows it. All images must have one size,
unless `image_size` S is given: then each is stretched to S×S with PIL's bilinear filter (as the
ImageNet store's "stretch"; JPEGs much larger than S are first DCT-reduced by PIL's draft mode to
the smallest scale still at least S×S, which is faster and antialiases the same way). Archive
members are read in memory, never extracted. Decoded arrays are cached (unlearnable.data.cache,
keyed on the listing and the size), so only the first load decodes.
"""

from __future__ import annotations

import io
import itertools
import os
import posixpath
import tarfile
import zlib
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from unlearnable.data.cache import (
    Decoded,
    cache_key,
    listing_digest,
    load_entry,
    store_entry,
)
from unlearnable.data.dataset import ImageDataset
from unlearnable.errors import MissingSplitError, UserInputError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
DECODER_VERSION = 2  # part of every cache key: bump when decoding changes its output (2: EXIF orientation)
SKIPPED_FOLDERS = ("__MACOSX",)
"""Folder names never read (besides hidden ones): macOS zip/tar metadata."""
BATCH_SIZE = 64  # images per thread-pool task
_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}

# One image to decode: (index in the dataset, name for messages, encoded bytes or a file to read).
Job = tuple[int, str, bytes | Path]


def is_archive(path: Path) -> bool:
    """True when the name of `path` ends in one of ARCHIVE_SUFFIXES (any case)."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def load_imagefolder(path: Path, split: str, spec: str, image_size: int | None = None) -> ImageDataset:
    """Load split "train" or "test" of the ImageFolder directory or archive at `path`.

    Args:
        image_size: None: every image must have the same size (a clear error names this option
            otherwise); S: every image is stretched to S×S (bilinear).

    Images are uint8 N×C×H×W (a view of an N×H×W×C array, memory-mapped on a cache hit).
    """
    check_image_size(image_size)
    path = path.resolve()
    decoded = _load_directory(path, split, image_size) if path.is_dir() else _load_archive(path, split, image_size)
    source: dict[str, Any] = {"spec": spec, "kind": "imagefolder", "split": split, "path": str(path)}
    if image_size is not None:
        source["image_size"] = image_size
    return ImageDataset.from_numpy_nhwc(decoded.images, decoded.labels, decoded.classes, {"source": source})


def check_image_size(image_size: int | None) -> None:
    """Refuse an `image_size` that is not None or an integer of at least 3."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 3):
        raise UserInputError(f"--image-size {image_size!r} is invalid; give an integer of at least 3 (e.g. 32)")


def is_hidden(name: str) -> bool:
    """True for a file or folder name the loaders skip: hidden ('.x', macOS '._x'), or __MACOSX."""
    return name.startswith(".") or name in SKIPPED_FOLDERS


def decode_image(data: bytes, size: int | None = None) -> np.ndarray:
    """Decode one encoded image, upright by its EXIF orientation: uint8 H×W for grayscale (mode "L"), else RGB H×W×3.

    With `size` S the image is stretched to S×S (bilinear).
    """
    with Image.open(io.BytesIO(data)) as image:
        if size is not None and image.format == "JPEG":
            image.draft(image.mode, (size, size))  # DCT-scaled decode, still at least S×S
        ImageOps.exif_transpose(image, in_place=True)  # no copy when the orientation is already upright
        pixels = _to_8bit(image)
        if size is not None and pixels.size != (size, size):
            pixels = pixels.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(pixels)


def stretch_dataset(ds: ImageDataset, size: int) -> ImageDataset:
    """`ds` with every image stretched to size×size by PIL's bilinear filter (`ds` itself when already that size).

    For datasets that arrive as arrays (saved, named); meta["image_size"] records the working size.
    """
    check_image_size(size)
    if ds.shape[1:] == (size, size):
        return ds
    nhwc = ds.numpy_nhwc()
    out = np.empty((len(ds), size, size, nhwc.shape[3]), np.uint8)
    for i, image in enumerate(nhwc):
        pil = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
        resized = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR))
        out[i] = resized[..., None] if resized.ndim == 2 else resized
    return ImageDataset.from_numpy_nhwc(out, ds.labels.numpy(), ds.classes, {**ds.meta, "image_size": size})


def _to_8bit(image: Image.Image) -> Image.Image:
    """Mode "L" kept; 16/32-bit integer grayscale scaled to "L" by its range (0..255 or 0..65535; float: 0..1 or
    0..255); anything else converted to "RGB"."""
    if image.mode == "L":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image.convert("I") if image.mode.startswith("I;16") else image, dtype=np.float64)
        peak = values.max(initial=0)
        top = 1.0 if image.mode == "F" and peak <= 1 else 255.0 if peak <= 255 else 65535.0
        return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def _split_folder(subfolders: Callable[[str], list[str]], split: str, where: str) -> str:
    """The '/'-separated folder ('' for the root) whose subfolders are the classes of `split`.

    `subfolders(folder)` lists the sorted subfolder names of a folder given the same way.
    """
    base = ""
    top = subfolders(base)
    if len(top) == 1 and top[0] not in ("train", "test", "val") and subfolders(top[0]):
        base = top[0]
        top = subfolders(base)
    present = [name for name in ("train", "test", "val") if name in top]
    if not present:
        if split == "test":
            raise MissingSplitError(
                f"{where} holds class folders directly, so it has no test split; load split 'train', "
                "or arrange it as train/<class>/... and test/<class>/..."
            )
        return base
    for name in _SPLIT_FOLDERS[split]:
        if name in present:
            return posixpath.join(base, name)
    raise MissingSplitError(
        f"{where} has no {split} split (it has {', '.join(present)}); add a {split}/ folder of "
        "class folders or load another split"
    )


def _subfolders(directory: Path) -> list[str]:
    """Sorted names of the subdirectories of `directory` (symlinks followed)."""
    try:
        return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not is_hidden(entry.name))
    except OSError as e:
        raise UserInputError(f"cannot list {directory} ({e}); check the path and its permissions") from None


def _class_files(class_dir: Path, walked: set[str] | None = None) -> list[Path]:
    """The image files under `class_dir`, recursively, in torchvision's order; hidden names skipped.

    `walked` collects the real paths of the folders walked (pass one set for all classes to share it):
    a folder reached again through a link is not walked twice, so a link loop ends.
    """
    walked = set() if walked is None else walked
    found = []
    for folder, subfolders, names in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            subfolders[:] = []
            continue
        walked.add(real)
        subfolders[:] = sorted(name for name in subfolders if not is_hidden(name))
        found.append(
            (folder, [name for name in names if not is_hidden(name) and name.lower().endswith(IMG_EXTENSIONS)])
        )
    return [Path(folder, name) for folder, names in sorted(found) for name in sorted(names)]


def _unique_files(per_class: list[list[Path]]) -> list[list[Path]]:
    """`per_class` with every file whose real path was met before dropped (a non-link path wins)."""
    first: dict[str, tuple[int, int, bool]] = {}  # real path -> (class, position, reached by a link)
    for c, files in enumerate(per_class):
        for i, file in enumerate(files):
            real = os.path.realpath(file)
            linked = real != os.path.abspath(file)
            if real not in first or (first[real][2] and not linked):
                first[real] = (c, i, linked)
    keep = {(c, i) for c, i, _ in first.values()}
    return [[file for i, file in enumerate(files) if (c, i) in keep] for c, files in enumerate(per_class)]


def _check_classes(classes: list[str], counts: list[int], where: str) -> None:
    """Refuse a split with no class folders or a class folder without images (as torchvision does)."""
    if not classes:
        raise UserInputError(
            f"{where} holds no class folders; expected <class>/<image> or train/<class>/<image> inside it"
        )
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty:
        raise UserInputError(
            f"class folder {empty[0]!r} in {where} holds no images ending in "
            f"{', '.join(IMG_EXTENSIONS)}; add images or remove the folder"
        )


def _load_directory(root: Path, split: str, image_size: int | None = None) -> Decoded:
    """Decode (or fetch from the cache) `split` of the ImageFolder directory `root`."""
    split_dir = root / _split_folder(lambda folder: _subfolders(root / folder), split, str(root))
    classes = _subfolders(split_dir)
    walked: set[str] = set()
    per_class = _unique_files([_class_files(split_dir / name, walked) for name in classes])
    _check_classes(classes, [len(files) for files in per_class], str(split_dir))
    files = [file for class_files in per_class for file in class_files]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(class_files) for class_files in per_class])
    try:
        stats = [file.stat() for file in files]
    except OSError as e:
        raise UserInputError(f"cannot read {e.filename} ({e.strerror}); check the file and its permissions") from None
    listing = listing_digest(
        (str(file.relative_to(split_dir)), st.st_size, st.st_mtime_ns) for file, st in zip(files, stats)
    )
    key = cache_key(
        kind="directory",
        path=str(split_dir),
        split=split,
        decoder=DECODER_VERSION,
        classes=classes,
        listing=listing,
        **_size_part(image_size),
    )
    cached = load_entry(key)
    if cached is not None:
        return cached
    images = _decode_all(
        ((i, str(file), file) for i, file in enumerate(files)), len(files), f"decoding {split_dir}", image_size
    )
    decoded = Decoded(images, labels, classes)
    store_entry(key, decoded, {"source": str(split_dir), "split": split})
    return decoded


def _size_part(image_size: int | None) -> dict[str, int]:
    """The cache-key part of the working size: none at the native size, so those keys stay as they were."""
    return {} if image_size is None else {"image_size": image_size}


def _member_name(name: str) -> str | None:
    """A member name without '.' and empty parts, or None for the root or a name with '..'."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts) if parts and ".." not in parts else None


def _load_archive(path: Path, split: str, image_size: int | None = None) -> Decoded:
    """Decode (or fetch from the cache) `split` of the ImageFolder archive `path`."""
    try:
        st = path.stat()
    except OSError as e:
        raise UserInputError(f"cannot read {path} ({e.strerror}); check the path") from None
    key = cache_key(
        kind="archive",
        path=str(path),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        split=split,
        decoder=DECODER_VERSION,
        **_size_part(image_size),
    )
    cached = load_entry(key)
    if cached is not None:
        return cached
    try:
        with tarfile.open(path, "r:*") as tar:
            decoded = _decode_archive(tar, path, split, image_size)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise UserInputError(
            f"cannot read archive {path} ({e}); check that it is a complete .tar, .tar.gz or .tgz file"
        ) from None
    store_entry(key, decoded, {"source": str(path), "split": split})
    return decoded


def _decode_archive(tar: tarfile.TarFile, path: Path, split: str, image_size: int | None = None) -> Decoded:
    """List the members of `tar` (one pass), pick `split`, then read and decode its images (a second pass)."""
    files: dict[str, tarfile.TarInfo] = {}
    children: dict[str, set[str]] = defaultdict(set)
    for member in tar.getmembers():
        name = _member_name(member.name)
        if name is None or not (member.isfile() or member.isdir()) or any(map(is_hidden, name.split("/"))):
            continue
        if member.isfile():
            files[name] = member
        folder = name if member.isdir() else posixpath.dirname(name)
        while folder:
            parent, _, child = folder.rpartition("/")
            children[parent].add(child)
            folder = parent
    where = f"archive {path}"
    split_dir = _split_folder(lambda folder: sorted(children.get(folder, ())), split, where)
    classes = sorted(children.get(split_dir, ()))
    index = {name: i for i, name in enumerate(classes)}
    prefix = f"{split_dir}/" if split_dir else ""
    order = []  # (label, folder, file name, member name) sorts into torchvision's order
    for name in files:
        relative = name[len(prefix) :]
        if name.startswith(prefix) and "/" in relative and relative.lower().endswith(IMG_EXTENSIONS):
            folder, file_name = posixpath.split(relative)
            order.append((index[relative.split("/", 1)[0]], folder, file_name, name))
    order.sort()
    labels = np.array([label for label, *_ in order], dtype=np.int64)
    _check_classes(classes, np.bincount(labels, minlength=len(classes)).tolist(), f"{where}:{split_dir or '/'}")
    members = sorted(((files[name], i) for i, (*_, name) in enumerate(order)), key=lambda item: item[0].offset_data)
    jobs = ((i, f"{member.name} in {where}", _read_member(tar, member)) for member, i in members)
    images = _decode_all(jobs, len(order), f"decoding {path.name}:{split_dir}", image_size)
    return Decoded(images, labels, classes)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The bytes of one regular-file member."""
    stream = tar.extractfile(member)
    assert stream is not None, "regular-file members always have a stream"
    with stream:
        return stream.read()


def _decode_all(jobs: Iterable[Job], count: int, desc: str, image_size: int | None = None) -> np.ndarray:
    """Decode `count` jobs in a thread pool into one uint8 count×H×W×C array (C is 1 or 3), stretched to S×S if given."""
    canvas = _Canvas(count)
    workers = min(8, os.cpu_count() or 1)
    pending: deque[Future[list[tuple[int, str, np.ndarray]]]] = deque()
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=count, desc=desc, unit="img", disable=None, leave=False) as bar,
    ):
        try:
            for batch in _batches(jobs, BATCH_SIZE):
                pending.append(pool.submit(_decode_batch, batch, image_size))
                if len(pending) >= 4 * workers:
                    bar.update(canvas.put_all(pending.popleft().result()))
            while pending:
                bar.update(canvas.put_all(pending.popleft().result()))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return canvas.array


def _batches(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    """Consecutive lists of `size` jobs (the last may be shorter)."""
    iterator = iter(jobs)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _decode_batch(batch: list[Job], image_size: int | None = None) -> list[tuple[int, str, np.ndarray]]:
    """(index, name, decoded H×W or H×W×3 image) for each job; any failure names its file."""
    decoded = []
    for index, name, payload in batch:
        try:
            data = payload.read_bytes() if isinstance(payload, Path) else payload
            decoded.append((index, name, decode_image(data, image_size)))
        except UnidentifiedImageError:
            raise UserInputError(
                f"cannot decode {name}: not an image file PIL recognises; replace or delete it"
            ) from None
        except Exception as e:  # PIL raises many types for damaged files; all mean the same here
            reason = " ".join(str(e).split()) or type(e).__name__
            raise UserInputError(f"cannot decode {name} ({reason}); replace or delete it") from None
    return decoded


class _Canvas:
    """The preallocated uint8 N×H×W×C array decoded images are placed into.

    The first image fixes H×W and C (1 for grayscale, 3 for colour); at the first colour image
    after grayscale ones the array is widened once to C=3 (grayscale pixels become R=G=B).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.array = np.empty((0, 0, 0, 1), np.uint8)
        self.reference = ""

    def put_all(self, decoded: list[tuple[int, str, np.ndarray]]) -> int:
        """Place each (index, name, image); returns how many were placed."""
        for index, name, image in decoded:
            if not self.reference:
                self.array = np.empty((self.count, *image.shape[:2], 1 if image.ndim == 2 else 3), np.uint8)
                self.reference = name
            elif image.shape[:2] != self.array.shape[1:3]:
                (h, w), (eh, ew) = image.shape[:2], self.array.shape[1:3]
                raise UserInputError(
                    f"image {name} is {w}x{h} pixels but {self.reference} is {ew}x{eh}; images of "
                    "several sizes need a working size: pass --image-size S (image_size=S) to "
                    "stretch every image to S×S, or resize them first"
                )
            if image.ndim == 3 and self.array.shape[3] == 1:
                self.array = np.repeat(self.array, 3, axis=3)
            self.array[index] = image[..., None] if image.ndim == 2 else image
        return len(decoded)
