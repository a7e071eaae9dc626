"""ImageFolder datasets: a tree <root>/<class>/<image>, as a directory or a .tar/.tar.gz/.tgz archive.

Class and file order are torchvision.datasets.ImageFolder's: classes are the sorted subfolder
names, each class's files are found recursively and sorted by (folder, file name), and only
names ending in one of IMG_EXTENSIONS (any case) count.

Splits: when the root holds train/ and test/ (or val/, taken as the test split when there is no
test/) subfolders, `split` picks one; when it holds class folders directly it is a train split
only. A root whose only subfolder holds folders itself (an archive of `cifar10/train/...`) is
looked into once.

Images decode with PIL in a thread pool into one preallocated uint8 N×H×W×C array: C=1 when
every image is grayscale (mode "L"), else C=3 (RGB). Archive members are read in memory, never
extracted. Decoded arrays are cached (unlearnable.data.cache), so only the first load decodes.
"""

from __future__ import annotations

import io
import itertools
import os
import posixpath
import tarfile
import zlib
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from unlearnable.data.cache import Decoded, cache_key, listing_digest, load_entry, store_entry
from unlearnable.data.dataset import ImageDataset
from unlearnable.errors import MissingSplitError, UserInputError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
DECODER_VERSION = 1  # part of every cache key: bump when decoding changes its output
BATCH_SIZE = 64  # images per thread-pool task
_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}

# One image to decode: (index in the dataset, name for messages, encoded bytes or a file to read).
Job = tuple[int, str, bytes | Path]


def is_archive(path: Path) -> bool:
    """True when the name of `path` ends in one of ARCHIVE_SUFFIXES (any case)."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def load_imagefolder(path: Path, split: str, spec: str) -> ImageDataset:
    """Load split "train" or "test" of the ImageFolder directory or archive at `path`.

    Images are uint8 N×C×H×W (a view of an N×H×W×C array, memory-mapped on a cache hit).
    """
    path = path.resolve()
    decoded = _load_directory(path, split) if path.is_dir() else _load_archive(path, split)
    source = {"spec": spec, "kind": "imagefolder", "split": split, "path": str(path)}
    return ImageDataset.from_numpy_nhwc(decoded.images, decoded.labels, decoded.classes, {"source": source})


def decode_image(data: bytes) -> np.ndarray:
    """Decode one encoded image: uint8 H×W for a grayscale (mode "L") image, else RGB H×W×3."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image if image.mode == "L" else image.convert("RGB"))


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
            raise MissingSplitError(f"{where} holds class folders directly, so it has no test split; load split 'train', "
                                 "or arrange it as train/<class>/... and test/<class>/...")
        return base
    for name in _SPLIT_FOLDERS[split]:
        if name in present:
            return posixpath.join(base, name)
    raise MissingSplitError(f"{where} has no {split} split (it has {', '.join(present)}); add a {split}/ folder of "
                         "class folders or load another split")


def _subfolders(directory: Path) -> list[str]:
    """Sorted names of the subdirectories of `directory` (symlinks followed)."""
    try:
        return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    except OSError as e:
        raise UserInputError(f"cannot list {directory} ({e}); check the path and its permissions") from None


def _class_files(class_dir: Path) -> list[Path]:
    """The image files under `class_dir`, recursively, in torchvision's order."""
    files = []
    for folder, _, names in sorted(os.walk(class_dir, followlinks=True)):
        files.extend(Path(folder, name) for name in sorted(names) if name.lower().endswith(IMG_EXTENSIONS))
    return files


def _check_classes(classes: list[str], counts: list[int], where: str) -> None:
    """Refuse a split with no class folders or a class folder without images (as torchvision does)."""
    if not classes:
        raise UserInputError(f"{where} holds no class folders; expected <class>/<image> or "
                             "train/<class>/<image> inside it")
    empty = [name for name, count in zip(classes, counts) if count == 0]
    if empty:
        raise UserInputError(f"class folder {empty[0]!r} in {where} holds no images ending in "
                             f"{', '.join(IMG_EXTENSIONS)}; add images or remove the folder")


def _load_directory(root: Path, split: str) -> Decoded:
    """Decode (or fetch from the cache) `split` of the ImageFolder directory `root`."""
    split_dir = root / _split_folder(lambda folder: _subfolders(root / folder), split, str(root))
    classes = _subfolders(split_dir)
    per_class = [_class_files(split_dir / name) for name in classes]
    _check_classes(classes, [len(files) for files in per_class], str(split_dir))
    files = [file for class_files in per_class for file in class_files]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(class_files) for class_files in per_class])
    try:
        stats = [file.stat() for file in files]
    except OSError as e:
        raise UserInputError(f"cannot read {e.filename} ({e.strerror}); check the file and its permissions") from None
    listing = listing_digest((str(file.relative_to(split_dir)), st.st_size, st.st_mtime_ns)
                             for file, st in zip(files, stats))
    key = cache_key(kind="directory", path=str(split_dir), split=split, decoder=DECODER_VERSION,
                    classes=classes, listing=listing)
    cached = load_entry(key)
    if cached is not None:
        return cached
    images = _decode_all(((i, str(file), file) for i, file in enumerate(files)), len(files), f"decoding {split_dir}")
    decoded = Decoded(images, labels, classes)
    store_entry(key, decoded, {"source": str(split_dir), "split": split})
    return decoded


def _member_name(name: str) -> str | None:
    """A member name without '.' and empty parts, or None for the root or a name with '..'."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts) if parts and ".." not in parts else None


def _load_archive(path: Path, split: str) -> Decoded:
    """Decode (or fetch from the cache) `split` of the ImageFolder archive `path`."""
    try:
        st = path.stat()
    except OSError as e:
        raise UserInputError(f"cannot read {path} ({e.strerror}); check the path") from None
    key = cache_key(kind="archive", path=str(path), size=st.st_size, mtime_ns=st.st_mtime_ns, split=split,
                    decoder=DECODER_VERSION)
    cached = load_entry(key)
    if cached is not None:
        return cached
    try:
        with tarfile.open(path, "r:*") as tar:
            decoded = _decode_archive(tar, path, split)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise UserInputError(f"cannot read archive {path} ({e}); check that it is a complete .tar, .tar.gz or "
                             ".tgz file") from None
    store_entry(key, decoded, {"source": str(path), "split": split})
    return decoded


def _decode_archive(tar: tarfile.TarFile, path: Path, split: str) -> Decoded:
    """List the members of `tar` (one pass), pick `split`, then read and decode its images (a second pass)."""
    files: dict[str, tarfile.TarInfo] = {}
    children: dict[str, set[str]] = defaultdict(set)
    for member in tar.getmembers():
        name = _member_name(member.name)
        if name is None or not (member.isfile() or member.isdir()):
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
        relative = name[len(prefix):]
        if name.startswith(prefix) and "/" in relative and relative.lower().endswith(IMG_EXTENSIONS):
            folder, file_name = posixpath.split(relative)
            order.append((index[relative.split("/", 1)[0]], folder, file_name, name))
    order.sort()
    labels = np.array([label for label, *_ in order], dtype=np.int64)
    _check_classes(classes, np.bincount(labels, minlength=len(classes)).tolist(), f"{where}:{split_dir or '/'}")
    members = sorted(((files[name], i) for i, (*_, name) in enumerate(order)), key=lambda item: item[0].offset_data)
    jobs = ((i, f"{member.name} in {where}", _read_member(tar, member)) for member, i in members)
    images = _decode_all(jobs, len(order), f"decoding {path.name}:{split_dir}")
    return Decoded(images, labels, classes)


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The bytes of one regular-file member."""
    stream = tar.extractfile(member)
    assert stream is not None, "regular-file members always have a stream"
    with stream:
        return stream.read()


def _decode_all(jobs: Iterable[Job], count: int, desc: str) -> np.ndarray:
    """Decode `count` jobs in a thread pool into one uint8 count×H×W×C array (C is 1 or 3)."""
    canvas = _Canvas(count)
    workers = min(8, os.cpu_count() or 1)
    pending: deque[Future[list[tuple[int, str, np.ndarray]]]] = deque()
    with ThreadPoolExecutor(workers) as pool, tqdm(total=count, desc=desc, unit="img", disable=None,
                                                  leave=False) as bar:
        try:
            for batch in _batches(jobs, BATCH_SIZE):
                pending.append(pool.submit(_decode_batch, batch))
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


def _decode_batch(batch: list[Job]) -> list[tuple[int, str, np.ndarray]]:
    """(index, name, decoded H×W or H×W×3 image) for each job; any failure names its file."""
    decoded = []
    for index, name, payload in batch:
        try:
            data = payload.read_bytes() if isinstance(payload, Path) else payload
            decoded.append((index, name, decode_image(data)))
        except UnidentifiedImageError:
            raise UserInputError(f"cannot decode {name}: not an image file PIL recognises; replace or delete it") from None
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
                raise UserInputError(f"image {name} is {w}x{h} pixels but {self.reference} is {ew}x{eh}; all images "
                                     "of an ImageFolder must have one size, resize them first")
            if image.ndim == 3 and self.array.shape[3] == 1:
                self.array = np.repeat(self.array, 3, axis=3)
            self.array[index] = image[..., None] if image.ndim == 2 else image
        return len(decoded)
