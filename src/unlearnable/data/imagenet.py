"""ImageNet-100: a memory-mapped uint8 store built once from an ImageNet folder.

    build_store("/data/imagenet", "out/in100")                     # first100, 224×224, stretch
    build_store("/data/imagenet", "out/in100-cmc", subset="cmc100", resize="crop")
    load_dataset("imagenet100", "train", data_root="/data/imagenet")  # builds (once) into the cache
    torchrun --nproc-per-node 4 -m unlearnable prepare imagenet100 --data-root DIR --out STORE

ImageNet root DIR (no download: ImageNet needs a licence):

    DIR/train/<wnid>/*.JPEG      any of IMG_EXTENSIONS, any case, found recursively
    DIR/val/<wnid>/*.JPEG        either wnid folders,
    DIR/val/*.JPEG               or flat, labelled by DIR/LOC_val_solution.csv (Kaggle: header
                                 ImageId,PredictionString; the wnid is PredictionString's first token)
                                 or by `val_labels` (lines '<file name> <wnid>')
    DIR/LOC_synset_mapping.txt   optional, 'n01440764 tench, Tinca tinca' lines: class names

The Kaggle layout DIR/ILSVRC/Data/CLS-LOC/{train,val} (label files in DIR) is found too.

Class subsets (labels follow the sorted wnids): "firstN" the first N sorted wnids of train/
("first100" is the CUDA paper's ImageNet-100), "cmc100" the 100 classes of Contrastive Multiview
Coding (Tian, Krishnan, Isola 2019), the list usually called ImageNet-100 (imagenet100_cmc.txt,
copied from github.com/HobbitLong/CMC, file imagenet100.txt), "all", or a file with one wnid a
line (blank lines and '#' comments ignored). A listed wnid without a train/ folder is an error.

Store layout (a saved dataset, see unlearnable.data.saved; load_saved maps it from disk):

    STORE/images.npy        uint8 N×S×S×3, the train images of the chosen classes
    STORE/labels.npy        int64 (N,), index into meta["classes"] (the sorted wnids)
    STORE/meta.json         classes, source, and meta["imagenet"]: subset, wnids, class_names,
                            image_size, resize, decoder
    STORE/test/images.npy   the val images of the chosen classes, ordered by (label, file name)
    STORE/test/labels.npy
    STORE/plan.json         what the store was built from (settings and a digest of each chunk's files)

Every image is decoded fully by PIL (decoder "pil"), converted to RGB (grayscale, CMYK, palette
and RGBA alike; EXIF orientation is ignored, as torchvision does), then resized with PIL's bilinear
filter, which antialiases when reducing: resize "stretch" to S×S ignoring the aspect ratio (what
the CUDA paper's ImageNet code does), or "crop", the shorter side to S then the central S×S
(torchvision's Resize(S) + CenterCrop(S)). The output is byte-deterministic and equals that
PIL/torchvision pipeline. `Image.draft("RGB", (S, S))` is not used: the JPEG decoder can only
scale by 1/2, 1/4, 1/8 with both sides staying ≥ S, so at S=224 it saves nothing on the commonest
ImageNet sizes (500×375, 500×333, 375×500, 400×300: 0.98-1.00× in bench/bench_store.py, one
thread), 1.7× on 500×500 and 1024×768, 1.12× over the bench's mix of sizes, and it changes pixels.

Building writes into the visible sibling `<out>.partial/` chunk by chunk (each chunk's rows are
mapped, decoded in a thread pool, flushed, unmapped, then marked done in done/<split>-<chunk>), so
memory stays at a few chunks and an interrupted build resumes where it stopped. Each chunk's files
(paths, sizes, modification times) are digested in the plan: replacing files, e.g. a corrupt one
the build stopped at, redoes only their chunks; adding or removing files starts over. Under torchrun the
chunks are dealt round-robin to the processes, which must all see `<out>.partial` (one machine, or
a shared file system).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import math
import os
import re
import shutil
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from unlearnable import distributed
from unlearnable.data.cache import cache_root
from unlearnable.data.dataset import ImageDataset
from unlearnable.data.imagefolder import IMG_EXTENSIONS, _class_files
from unlearnable.data.saved import is_saved_dataset, load_saved
from unlearnable.errors import UserInputError
from unlearnable.io import atomic_write_bytes, contains, free_space_check, write_json
from unlearnable.params import IMAGE_SIZE, Interval

SUBSET_FILES = {"cmc100": Path(__file__).with_name("imagenet100_cmc.txt")}
RESIZE_MODES = ("stretch", "crop")
DECODER = "pil"  # full PIL decode, convert("RGB"), bilinear resize; part of every plan
PLAN_FORMAT = 2
FIX_CORRUPT = "replace it with a good copy and run again (the build resumes), or delete it (the build starts over)"
CHUNK_SIZE = 1024  # images per chunk: 154 MB at 224×224
CHUNK_SIZE_RANGE = Interval(int, 1, 65536)
WORKERS = Interval(int, 1, 256)
MAX_CHUNK_BYTES = 4 << 30
"""A chunk is decoded in memory (each process holds about two), so one may not exceed 4 GiB."""
IN_FLIGHT = 2  # chunks mapped at once per process (one decoding, one finishing)
NEEDS_ROOT = (
    "imagenet100 needs --data-root DIR pointing at an ImageNet folder with train/ and val/ "
    "(or a store from `unlearnable prepare`)"
)
_FIRST_N = re.compile(r"first([0-9]+)")

T = TypeVar("T")


@dataclass(frozen=True)
class Layout:
    """Where the parts of an ImageNet root are.

    Attributes:
        root: the ImageNet root given (absolute).
        train: the folder of train wnid folders.
        val: the val folder (wnid folders, or flat images when `val_labels` is set).
        val_labels: the label file of a flat val folder, else None.
        class_names: wnid -> human-readable name from LOC_synset_mapping.txt, else None.
    """

    root: Path
    train: Path
    val: Path
    val_labels: Path | None
    class_names: dict[str, str] | None


@dataclass(frozen=True)
class Split:
    """The files of one split of the chosen classes, in store order, with int64 labels (N,)."""

    name: str
    files: list[Path]
    labels: np.ndarray


def find_layout(root: str | os.PathLike, val_labels: str | os.PathLike | None = None) -> Layout:
    """Find train/, val/ and the label files of the ImageNet root `root` (or its Kaggle layout)."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserInputError(f"{root}: no such directory; {NEEDS_ROOT}")
    bases = [root, root / "ILSVRC" / "Data" / "CLS-LOC"]
    base = next((b for b in bases if (b / "train").is_dir()), None)
    if base is None:
        raise UserInputError(f"{root} has no train/ folder (nor ILSVRC/Data/CLS-LOC/train); {NEEDS_ROOT}")
    val = base / "val"
    if not val.is_dir():
        raise UserInputError(
            f"{base} has train/ but no val/; add val/ (wnid folders, or flat images with "
            "LOC_val_solution.csv or --val-labels FILE)"
        )
    labels: Path | None = None
    if not _has_images(val):
        if val_labels is not None:
            raise UserInputError(
                f"--val-labels was given but {val} holds no images directly (it is sorted into wnid "
                "folders, which label themselves); drop --val-labels"
            )
    else:
        if val_labels is not None:
            labels = Path(val_labels).expanduser().resolve()
            if not labels.is_file():
                raise UserInputError(f"val label file {labels}: no such file; check --val-labels")
        else:
            labels = next(
                (d / "LOC_val_solution.csv" for d in (root, base) if (d / "LOC_val_solution.csv").is_file()), None
            )
            if labels is None:
                raise UserInputError(
                    f"{val} holds images directly but there is no LOC_val_solution.csv in {root}; "
                    "give --val-labels FILE (lines '<file name> <wnid>') or sort val/ into wnid folders"
                )
    mapping = next(
        (d / "LOC_synset_mapping.txt" for d in (root, base) if (d / "LOC_synset_mapping.txt").is_file()), None
    )
    return Layout(root, base / "train", val, labels, _read_synset_mapping(mapping) if mapping else None)


def _has_images(directory: Path) -> bool:
    """True when `directory` holds image files directly."""
    try:
        return any(entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS) for entry in os.scandir(directory))
    except OSError as e:
        raise UserInputError(f"cannot list {directory} ({e.strerror}); check the path and its permissions") from None


def _subfolders(directory: Path) -> list[str]:
    """Sorted names of the subdirectories of `directory` (symlinks followed)."""
    try:
        return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    except OSError as e:
        raise UserInputError(f"cannot list {directory} ({e.strerror}); check the path and its permissions") from None


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"cannot read {what} {path} ({e}); check the file") from None


def _read_synset_mapping(path: Path) -> dict[str, str]:
    """wnid -> name from 'n01440764 tench, Tinca tinca' lines."""
    names = {}
    for line in _read_text(path, "synset mapping").splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            names[wnid] = name.strip() or wnid
    return names


def read_val_labels(path: Path) -> dict[str, str]:
    """Image name without extension -> wnid, from a Kaggle LOC_val_solution.csv or '<file name> <wnid>' lines."""
    text = _read_text(path, "val label file")
    labels: dict[str, str] = {}

    def add(name: str, wnid: str, line: int) -> None:
        key = _stem(name)
        if labels.setdefault(key, wnid) != wnid:
            raise UserInputError(
                f"line {line} of {path} labels {name} {wnid} but an earlier line says {labels[key]}; "
                "keep one label per image"
            )

    if text.startswith("ImageId,"):
        rows = csv.reader(text.splitlines())
        header = next(rows)
        if [cell.strip() for cell in header[:2]] != ["ImageId", "PredictionString"]:
            raise UserInputError(
                f"{path} starts with {','.join(header)!r}; expected the Kaggle header ImageId,PredictionString"
            )
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            tokens = row[1].split() if len(row) > 1 else []
            if not tokens:
                raise UserInputError(
                    f"line {line} of {path} has no PredictionString; expected '<ImageId>,<wnid> <box> ...'"
                )
            add(row[0].strip(), tokens[0], line)
        return labels
    for line, content in enumerate(text.splitlines(), start=1):
        tokens = content.split("#", 1)[0].split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise UserInputError(f"line {line} of {path} is {content.strip()!r}; expected '<file name> <wnid>'")
        add(tokens[0], tokens[1], line)
    return labels


def _stem(name: str) -> str:
    """A file name without its image extension (as Kaggle's ImageId gives it)."""
    return name[: name.rfind(".")] if name.lower().endswith(IMG_EXTENSIONS) else name


def resolve_subset(subset: str, available: list[str], where: Path) -> list[str]:
    """The sorted wnids `subset` names ("firstN", "cmc100", "all" or a file), all present in `available`."""
    if subset == "all":
        return list(available)
    match = _FIRST_N.fullmatch(subset)
    if match:
        count = int(match.group(1))
        if not 1 <= count <= len(available):
            raise UserInputError(
                f"class subset {subset} needs {count} classes but {where} has {len(available)}; "
                f"use first{len(available)} or all"
            )
        return list(available[:count])
    path = SUBSET_FILES.get(subset) or Path(subset).expanduser()
    if not path.is_file():
        if os.sep in subset or "/" in subset or "." in subset:
            raise UserInputError(f"class list {subset}: no such file; check --classes")
        raise UserInputError(
            f"unknown class subset {subset!r}; use first100, cmc100, all, firstN or a file with one wnid a line"
        )
    wnids = []
    for line in _read_text(path, "class list").splitlines():
        wnid = line.split("#", 1)[0].strip()
        if wnid:
            wnids.append(wnid)
    if not wnids:
        raise UserInputError(f"class list {path} names no wnids; put one wnid (e.g. n01440764) on each line")
    if len(set(wnids)) != len(wnids):
        twice = next(w for w in wnids if wnids.count(w) > 1)
        raise UserInputError(f"class list {path} names {twice} twice; list each wnid once")
    present = set(available)
    missing = [w for w in wnids if w not in present]
    if missing:
        raise UserInputError(
            f"class {missing[0]} of {path} has no folder in {where} ({len(missing)} of "
            f"{len(wnids)} missing); fix the list or add the class"
        )
    return sorted(wnids)


def list_splits(layout: Layout, wnids: list[str]) -> tuple[Split, Split]:
    """The train and val files of the classes `wnids` (sorted), labelled by their index in `wnids`."""
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    train_files, train_labels = [], []
    for wnid in wnids:
        files = _class_files(layout.train / wnid)
        if not files:
            raise UserInputError(
                f"class folder {layout.train / wnid} holds no images ending in "
                f"{', '.join(IMG_EXTENSIONS)}; add images or choose other classes"
            )
        train_files += files
        train_labels += [label_of[wnid]] * len(files)
    known = set(_subfolders(layout.train))
    val: list[tuple[int, str, Path]] = []  # (label, file name, path) sorts into store order
    if layout.val_labels is None:
        for wnid in _subfolders(layout.val):
            if wnid not in known:
                raise UserInputError(
                    f"val folder {layout.val / wnid} has no matching {layout.train / wnid}; "
                    "remove it or add the class to train/"
                )
            if wnid in label_of:
                val += [
                    (label_of[wnid], str(path.relative_to(layout.val)), path)
                    for path in _class_files(layout.val / wnid)
                ]
    else:
        labels = read_val_labels(layout.val_labels)
        for name in sorted(os.listdir(layout.val)):
            path = layout.val / name
            if not name.lower().endswith(IMG_EXTENSIONS) or not path.is_file():
                continue
            labelled = labels.get(_stem(name))
            if labelled is None:
                raise UserInputError(
                    f"val image {path} has no label in {layout.val_labels}; add a line for it or remove the image"
                )
            if labelled not in known:
                raise UserInputError(
                    f"{layout.val_labels} labels {name} with {labelled}, which has no folder in "
                    f"{layout.train}; fix the label or add the class"
                )
            if labelled in label_of:
                val.append((label_of[labelled], name, path))
    if not val:
        raise UserInputError(
            f"{layout.val} holds no images of the {len(wnids)} chosen classes; check val/ and its labels"
        )
    val.sort()
    return (
        Split("train", train_files, np.array(train_labels, dtype=np.int64)),
        Split("test", [path for *_, path in val], np.array([label for label, *_ in val], dtype=np.int64)),
    )


def _chunk_digests(root: Path, split: Split, chunk_size: int) -> list[str]:
    """Per chunk of `split`, a digest of its files' paths relative to `root`, sizes, mtimes and labels."""
    digests = []
    for start in range(0, len(split.files), chunk_size):
        digest = hashlib.sha256()
        for path, label in zip(
            split.files[start : start + chunk_size], split.labels[start : start + chunk_size].tolist()
        ):
            try:
                st = path.stat()
            except OSError as e:
                raise UserInputError(f"cannot read {path} ({e.strerror}); check the file and its permissions") from None
            relative = os.path.relpath(path, root)
            digest.update(f"{relative}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode(errors="surrogateescape"))
        digests.append(digest.hexdigest()[:16])
    return digests


def decode_resized(path: Path, size: int, resize: str) -> np.ndarray:
    """Decode one image file to uint8 size×size×3 RGB (see the module docstring for the steps)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    if resize == "stretch":
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
    w, h = rgb.size
    short, long = (w, h) if w <= h else (h, w)
    long = int(size * long / short)  # torchvision's Resize(size) rounding
    rgb = rgb.resize((size, long) if w <= h else (long, size), Image.Resampling.BILINEAR)
    top, left = int(round((rgb.height - size) / 2.0)), int(round((rgb.width - size) / 2.0))
    return np.asarray(rgb.crop((left, top, left + size, top + size)))


def _decode_row(rows: np.ndarray, index: int, path: Path, size: int, resize: str) -> None:
    """Decode `path` into rows[index]; any failure is a UserInputError naming the file."""
    try:
        rows[index] = decode_resized(path, size, resize)
    except UnidentifiedImageError:
        raise UserInputError(f"cannot decode {path} (not an image file PIL recognises); {FIX_CORRUPT}") from None
    except Exception as e:  # PIL raises many types for damaged files; all mean the same here
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UserInputError(f"cannot decode {path} ({reason}); {FIX_CORRUPT}") from None


def default_workers() -> int:
    """Decode threads per process: the usable CPUs shared among this machine's processes of the run."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def build_store(
    root: str | os.PathLike,
    out: str | os.PathLike,
    subset: str = "first100",
    image_size: int = 224,
    resize: str = "stretch",
    val_labels: str | os.PathLike | None = None,
    workers: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
    world: distributed.World | None = None,
    overwrite: bool = False,
) -> Path:
    """Build the store `out` from the ImageNet root `root` (see the module docstring); returns `out`.

    An `out` already built with the same plan (settings and files) is returned as is; one
    built otherwise is an error unless `overwrite`. An interrupted build resumes from
    `<out>.partial`. `world` None joins torchrun's process group when there is one
    (`distributed.init`); every process of `world` must call this with the same arguments.
    """
    if resize not in RESIZE_MODES:
        raise UserInputError(f"unknown resize mode {resize!r}; use stretch or crop")
    IMAGE_SIZE.check("--image-size", image_size)
    CHUNK_SIZE_RANGE.check("--chunk-size", chunk_size)
    if workers is not None:
        WORKERS.check("--workers", workers)
    chunk_bytes = chunk_size * image_size * image_size * 3
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise UserInputError(
            f"a chunk of {chunk_size} images of {image_size}×{image_size} is {chunk_bytes / 2**30:.1f} GiB "
            f"and each process holds about two; choose --chunk-size ≤ "
            f"{max(1, MAX_CHUNK_BYTES // (image_size * image_size * 3))}"
        )
    world = world or distributed.init()
    out = Path(out).expanduser().absolute()
    if contains(Path(root).expanduser().resolve(), out.resolve()):
        raise UserInputError(f"--out {out} lies inside the ImageNet folder {root}; write the store elsewhere")
    partial = out.with_name(out.name + ".partial")

    def prepare() -> tuple[dict[str, Any], tuple[Split, Split], Layout, bool]:
        layout = find_layout(root, val_labels)
        wnids = resolve_subset(subset, _subfolders(layout.train), layout.train)
        splits = list_splits(layout, wnids)
        plan = {
            "format": PLAN_FORMAT,
            "root": str(layout.root),
            "subset": _subset_name(subset),
            "wnids": wnids,
            "image_size": image_size,
            "resize": resize,
            "decoder": DECODER,
            "chunk_size": chunk_size,
            "counts": {split.name: len(split.files) for split in splits},
            "chunks": {split.name: _chunk_digests(layout.root, split, chunk_size) for split in splits},
        }
        finished = _finished(out, plan, overwrite)
        if not finished and world.main:
            _start_partial(partial, plan, splits, overwrite)
        return plan, splits, layout, finished

    plan, splits, layout, finished = _agreed(world, prepare)
    if finished:
        return out

    def decode() -> None:
        if not world.main and _read_plan(partial) != plan:
            raise UserInputError(
                f"{partial / 'plan.json'} differs from this process's plan; run every process "
                "with the same arguments on the same files"
            )
        with ThreadPoolExecutor(workers or default_workers()) as pool:
            for split in splits:
                _fill(partial, split, plan, pool, world, progress)

    _agreed(world, decode)
    _agreed(world, lambda: _finish(partial, out, plan, splits, layout) if world.main else None)
    return out


def _agreed(world: distributed.World, step: Callable[[], T]) -> T:
    """Run `step` on every process; when it fails on any, every process raises (the failing one its own error)."""
    error: Exception | None = None
    result = None
    try:
        result = step()
    except Exception as e:  # re-raised below, after the other processes know
        error = e
    if not distributed.all_agree(world, error is None):
        if error is not None:
            raise error
        raise UserInputError("another process of this run failed (its message says why); fix that and run again")
    return result  # type: ignore[return-value]


def _subset_name(subset: str) -> str:
    """`subset` as recorded: a built-in name as is, a class list file as its absolute path."""
    if subset == "all" or subset in SUBSET_FILES or _FIRST_N.fullmatch(subset):
        return subset
    return str(Path(subset).expanduser().resolve())


def _read_plan(directory: Path) -> dict[str, Any] | None:
    """The plan.json of `directory`, or None when it is missing or unreadable."""
    try:
        return json.loads((directory / "plan.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _finished(out: Path, plan: dict[str, Any], overwrite: bool) -> bool:
    """True when `out` is a store built with `plan`; raises when `out` is something else (unless `overwrite`)."""
    if not out.exists():
        return False
    if is_saved_dataset(out) and _read_plan(out) == plan:
        return True
    if not overwrite:
        raise UserInputError(
            f"{out} exists but was not built with these settings from these files; choose another --out or delete it"
        )
    return False


def _start_partial(partial: Path, plan: dict[str, Any], splits: tuple[Split, Split], overwrite: bool) -> None:
    """Create `partial` with empty arrays and plan.json, or check that the one there was started with `plan`."""
    if partial.exists():
        started = _read_plan(partial)
        if started == plan:
            for split in splits:
                _open_rows(partial, split, plan)  # raises when an array is damaged
            return
        done = partial / "done"
        if started is not None and not overwrite:
            changed = [key for key in plan if started.get(key) != plan[key]]
            if changed == ["chunks"]:  # the same number of files, some replaced: redo their chunks only
                _forget_changed_chunks(partial, started["chunks"], plan["chunks"])
                for split in splits:
                    _open_rows(partial, split, plan)
                write_json(partial / "plan.json", plan)
                return
            if set(changed) <= {"chunks", "counts"}:
                raise UserInputError(
                    f"the partial store {partial} was started from other files (images under "
                    f"{plan['root']} were added, removed or changed since); delete it to start again"
                )
            raise UserInputError(
                f"the partial store {partial} was started with other settings ({', '.join(changed)} "
                "differ); delete it, or run with the settings it was started with"
            )
        if started is None and done.is_dir() and any(done.iterdir()) and not overwrite:
            raise UserInputError(f"the partial store {partial} has no readable plan.json; delete it")
        shutil.rmtree(partial)
    size = plan["image_size"]
    free_space_check(
        partial.parent, sum(len(split.files) for split in splits) * size * size * 3, f"the store at {size}×{size}"
    )
    (partial / "test").mkdir(parents=True)
    (partial / "done").mkdir()
    for split in splits:
        array = np.lib.format.open_memmap(
            _images_path(partial, split), mode="w+", dtype=np.uint8, shape=(len(split.files), size, size, 3)
        )
        del array  # the header is written and the file has its full (sparse) length
        _reserve(_images_path(partial, split))
    write_json(partial / "plan.json", plan)


def _forget_changed_chunks(partial: Path, started: dict[str, list[str]], now: dict[str, list[str]]) -> None:
    """Remove the done markers of the chunks whose files changed since `partial` was started."""
    for name, digests in now.items():
        for chunk, (before, after) in enumerate(zip(started[name], digests)):
            if before != after:
                (partial / "done" / f"{name}-{chunk}").unlink(missing_ok=True)


def _reserve(path: Path) -> None:
    """Allocate the disk blocks of `path` now, so that a full disk fails here and not as SIGBUS mid-build."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        length = os.fstat(f.fileno()).st_size
        try:
            os.posix_fallocate(f.fileno(), 0, length)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UserInputError(
                    f"not enough disk space for {path} ({length / 2**30:.1f} GiB); free space or choose another --out"
                ) from None
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise


def _images_path(directory: Path, split: Split) -> Path:
    return directory / "images.npy" if split.name == "train" else directory / "test" / "images.npy"


def _open_rows(partial: Path, split: Split, plan: dict[str, Any]) -> int:
    """The byte offset of the first image in the split's images.npy, after checking its shape."""
    path = _images_path(partial, split)
    size = plan["image_size"]
    try:
        array = np.load(path, mmap_mode="r+", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserInputError(f"cannot open {path} ({e}); the partial store {partial} is damaged, delete it") from None
    if not isinstance(array, np.memmap) or array.dtype != np.uint8 or array.shape != (len(split.files), size, size, 3):
        raise UserInputError(
            f"{path} holds {array.dtype} {array.shape}, not uint8 {(len(split.files), size, size, 3)}; "
            f"the partial store {partial} is damaged, delete it"
        )
    offset = array.offset
    del array
    return offset


def _fill(
    partial: Path,
    split: Split,
    plan: dict[str, Any],
    pool: ThreadPoolExecutor,
    world: distributed.World,
    progress: bool,
) -> None:
    """Decode this process's not yet done chunks of `split` into the partial store."""
    size, resize, chunk_size = plan["image_size"], plan["resize"], plan["chunk_size"]
    offset = _open_rows(partial, split, plan)
    row_bytes = size * size * 3
    count = len(split.files)
    mine = range(world.rank, math.ceil(count / chunk_size), world.size)
    todo = [c for c in mine if not _marker(partial, split, c).exists()]
    total = sum(min(count, (c + 1) * chunk_size) - c * chunk_size for c in mine)
    left = sum(min(count, (c + 1) * chunk_size) - c * chunk_size for c in todo)
    in_flight: deque[tuple[int, np.memmap, list[Future[None]]]] = deque()
    with tqdm(
        total=total,
        initial=total - left,
        desc=f"imagenet {split.name}",
        unit="img",
        leave=False,
        disable=None if progress and world.main else True,
    ) as bar:
        try:
            for chunk in todo:
                start, stop = chunk * chunk_size, min(count, (chunk + 1) * chunk_size)
                rows = np.memmap(
                    _images_path(partial, split),
                    np.uint8,
                    "r+",
                    offset + start * row_bytes,
                    (stop - start, size, size, 3),
                )
                futures = [
                    pool.submit(_decode_row, rows, i, split.files[start + i], size, resize) for i in range(stop - start)
                ]
                in_flight.append((chunk, rows, futures))
                if len(in_flight) >= IN_FLIGHT:
                    _finish_chunk(partial, split, *in_flight[0], bar)
                    in_flight.popleft()
            while in_flight:
                _finish_chunk(partial, split, *in_flight[0], bar)
                in_flight.popleft()
        except BaseException:
            for _, _, futures in in_flight:
                for future in futures:
                    future.cancel()
            for _, _, futures in in_flight:  # let running decodes end before their rows are unmapped
                for future in futures:
                    if not future.cancelled():
                        future.exception()
            raise


def _finish_chunk(
    partial: Path, split: Split, chunk: int, rows: np.memmap, futures: list[Future[None]], bar: tqdm
) -> None:
    """Wait for a chunk's decodes, write its rows to disk, unmap them and mark the chunk done."""
    for future in futures:
        future.result()
        bar.update(1)
    rows.flush()
    del rows
    atomic_write_bytes(_marker(partial, split, chunk), b"")


def _marker(partial: Path, split: Split, chunk: int) -> Path:
    return partial / "done" / f"{split.name}-{chunk}"


def _finish(partial: Path, out: Path, plan: dict[str, Any], splits: tuple[Split, Split], layout: Layout) -> None:
    """Check every chunk is done, write labels and meta.json, and rename `partial` to `out`."""
    for split in splits:
        chunks = math.ceil(len(split.files) / plan["chunk_size"])
        missing = [c for c in range(chunks) if not _marker(partial, split, c).exists()]
        if missing:
            raise UserInputError(
                f"chunk {missing[0]} of the {split.name} split in {partial} was never finished; "
                "run the same command again to complete it"
            )
    train, test = splits
    np.save(partial / "labels.npy", train.labels)
    np.save(partial / "test" / "labels.npy", test.labels)
    size = plan["image_size"]
    names = [layout.class_names.get(w, w) for w in plan["wnids"]] if layout.class_names else None
    write_json(
        partial / "meta.json",
        {
            "source": {"spec": "imagenet100", "kind": "imagenet", "split": "train", "path": str(layout.root)},
            "imagenet": {
                "subset": plan["subset"],
                "wnids": plan["wnids"],
                "class_names": names,
                "image_size": size,
                "resize": plan["resize"],
                "decoder": plan["decoder"],
            },
            "classes": plan["wnids"],
            "num_images": len(train.files),
            "image_shape": [3, size, size],
            "has_test_split": True,
        },
    )
    shutil.rmtree(partial / "done")
    if out.exists():  # only with overwrite (_finished refused it otherwise): move it aside, then delete it
        trash = out.with_name(out.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(out, trash)
        os.replace(partial, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, out)


def default_store(
    root: str | os.PathLike, subset: str = "first100", image_size: int = 224, resize: str = "stretch"
) -> Path:
    """Where `load_dataset("imagenet100", ...)` keeps the store of the ImageNet root `root`."""
    absolute = str(Path(root).expanduser().resolve())
    tag = hashlib.sha256(absolute.encode(errors="surrogateescape")).hexdigest()[:12]
    return cache_root() / f"imagenet100-{subset}-{image_size}-{resize}-{tag}"


def store_path(data_root: str | os.PathLike | None) -> Path:
    """The store `load_imagenet100(data_root, ...)` reads: `data_root` itself when it is one, else
    its default store (which may not be built yet)."""
    if data_root is None:
        raise UserInputError(NEEDS_ROOT)
    root = Path(data_root).expanduser().resolve()
    return root if is_saved_dataset(root) else default_store(root)


def load_imagenet100(data_root: str | os.PathLike | None, split: str) -> ImageDataset:
    """`split` of ImageNet-100: `data_root` is a built store, or an ImageNet root whose default store
    (first100, 224×224, stretch) is built once under the cache root (rebuilt when the files change).

    The build runs in this process alone, with no collectives: under torchrun, load on rank 0 first
    (`distributed.main_first`, as `unlearnable train` does). Building the full ImageNet-100 takes
    long enough to outlast a process group's timeout, so run `unlearnable prepare` (which splits the
    work over torchrun's processes) beforehand and pass the store as `data_root`.
    """
    if data_root is None:
        raise UserInputError(NEEDS_ROOT)
    root = Path(data_root).expanduser().resolve()
    if is_saved_dataset(root):
        return load_saved(root, split)
    classes = len(_subfolders(find_layout(root).train))
    if classes < 100:
        raise UserInputError(
            f"{root} has {classes} train classes and ImageNet-100 takes the first 100; for other "
            "classes build a store with `unlearnable prepare imagenet100 --classes ...` and give it "
            "as --data-root"
        )
    store = build_store(root, default_store(root), overwrite=True, world=distributed.World())
    return load_saved(store, split)
