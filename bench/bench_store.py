"""Benchmark building the ImageNet-100 store against a naive one-thread decode loop.

    python bench/bench_store.py [--n 2000] [--classes 100] [--size 224] [--chunk-size 1024] [--workers N]
                                [--tree DIR] [--repeats 3]

Data: a synthetic ImageNet tree in a temporary directory: N train JPEGs (quality 90) spread over
--classes wnid folders, plus N/20 val JPEGs in wnid folders; sizes follow the commonest ImageNet
ones (500×375, 375×500, 500×333, 500×500, 400×300, and 5% at 1024×768), content is smooth
random colour with some noise (about 60 KB a file; ImageNet's average is about 110 KB). --tree DIR
keeps the tree in DIR (reused when it is there) instead of a temporary directory. The files are
freshly written, so they are read from the page cache: this measures decoding, not the disk.

  store   `build_store` (thread pool, chunked memory-mapped output, stretch to --size²);
  naive   one thread, per image: open → RGB → resize → append to a list, then np.stack.
Each runs once, in its own child process, which reports its own peak resident memory
(getrusage RUSAGE_SELF ru_maxrss) and its resident memory after imports; both outputs are
compared (they must be equal). Then one thread decodes every file both ways, full decode (the
store's "pil" decoder) and with `Image.draft("RGB", (size, size))`, alternating per file, each
--repeats times, the fastest per file counting (robust to a busy machine), per image size: what
the JPEG draft mode would save. The load average is printed, since other work skews everything.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [
    ((500, 375), 0.40),
    ((375, 500), 0.15),
    ((500, 333), 0.20),
    ((500, 500), 0.10),
    ((400, 300), 0.10),
    ((1024, 768), 0.05),
]


def write_tree(root: Path, n: int, classes: int, seed: int = 0) -> list[Path]:
    """N train and N/20 val JPEGs under root/{train,val}/<wnid>/; returns every file, train then val."""
    rng = np.random.default_rng(seed)
    shapes, weights = zip(*SIZES)
    files = []
    for split, count in (("train", n), ("val", max(classes, n // 20))):
        for i in range(count):
            folder = root / split / f"n{i % classes + 1:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            w, h = shapes[rng.choice(len(shapes), p=weights)]
            small = rng.integers(0, 256, (h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)
            image = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
            image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
            files.append(folder / f"{split}_{i:06d}.JPEG")
            Image.fromarray(image).save(files[-1], quality=90)
    return files


def rss_mib() -> float:
    """This process's resident memory now, MiB (from /proc, Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> None:
    """Run one side in this (child) process; print seconds, peak and post-import RSS as JSON."""
    root, out = Path(args.root), Path(args.out)
    if args.child == "store":
        from unlearnable.data.imagenet import build_store

        base = rss_mib()
        start = time.perf_counter()
        build_store(
            root,
            out,
            subset="all",
            image_size=args.size,
            chunk_size=args.chunk_size,
            workers=args.workers,
            progress=False,
        )
        seconds = time.perf_counter() - start
    else:
        base = rss_mib()
        start = time.perf_counter()
        files = sorted((root / "train").rglob("*.JPEG")) + sorted((root / "val").rglob("*.JPEG"))
        images = []
        for path in files:
            with Image.open(path) as image:
                images.append(
                    np.asarray(image.convert("RGB").resize((args.size, args.size), Image.Resampling.BILINEAR))
                )
        stacked = np.stack(images)
        seconds = time.perf_counter() - start
        np.save(out, stacked)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "base_mib": base}))


def run_child(side: str, root: Path, out: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--root",
        str(root),
        "--out",
        str(out),
        "--size",
        str(args.size),
        "--chunk-size",
        str(args.chunk_size),
    ]
    if args.workers:
        command += ["--workers", str(args.workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_seconds(path: Path, size: int, draft: bool) -> float:
    """Seconds to open `path`, (draft,) convert to RGB and resize to size×size bilinearly."""
    start = time.perf_counter()
    with Image.open(path) as image:
        if draft:
            image.draft("RGB", (size, size))
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    return time.perf_counter() - start


def compare_draft(files: list[Path], size: int, repeats: int) -> None:
    """Per image size: ms per image of a full decode and of a draft decode (one thread, best of `repeats`)."""
    by_size: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for path in files:
        with Image.open(path) as image:
            shape = image.size
        full = min(decode_seconds(path, size, False) for _ in range(repeats))
        draft = min(decode_seconds(path, size, True) for _ in range(repeats))
        by_size.setdefault(shape, []).append((full, draft))
    print(f"decode + resize, one thread, best of {repeats} per file, ms/image:")
    print(f"  {'size':>9} {'share':>6} {'full':>6} {'draft':>6} {'ratio':>6}")
    total_full = total_draft = 0.0
    for shape, times in sorted(by_size.items(), key=lambda item: -len(item[1])):
        full, draft = (sum(t) for t in zip(*times))
        total_full, total_draft = total_full + full, total_draft + draft
        print(
            f"  {shape[0]:>4}×{shape[1]:<4} {len(times) / len(files):6.0%} {full / len(times) * 1e3:6.2f} "
            f"{draft / len(times) * 1e3:6.2f} {full / draft:5.2f}×"
        )
    print(
        f"  {'all':>9} {1:6.0%} {total_full / len(files) * 1e3:6.2f} {total_draft / len(files) * 1e3:6.2f} "
        f"{total_full / total_draft:5.2f}×"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--tree", help="keep the synthetic tree in this directory (reused when there)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("store", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_store.") as tmp:
        root = Path(args.tree or Path(tmp) / "imagenet")
        start = time.perf_counter()
        if args.tree and (root / "train").is_dir():
            files = sorted((root / "train").rglob("*.JPEG")) + sorted((root / "val").rglob("*.JPEG"))
            print(f"tree: reusing {root}")
        else:
            files = write_tree(root, args.n, min(args.classes, args.n))
        megabytes = sum(f.stat().st_size for f in files) / 2**20
        print(
            f"tree: {len(files)} JPEGs ({len(list((root / 'train').rglob('*.JPEG')))} train), {megabytes:.0f} MB, "
            f"written in {time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        naive = run_child("naive", root, Path(tmp) / "naive.npy", args)
        store = run_child("store", root, Path(tmp) / "store", args)
        built = np.concatenate(
            [
                np.load(Path(tmp) / "store" / "images.npy", mmap_mode="r"),
                np.load(Path(tmp) / "store" / "test" / "images.npy", mmap_mode="r"),
            ]
        )
        stacked = np.load(Path(tmp) / "naive.npy", mmap_mode="r")
        same = np.array_equal(built, stacked)  # both in sorted path order: train by wnid then name, then val
        size_mib = built.nbytes / 2**20
        chunk_mib = args.chunk_size * args.size * args.size * 3 / 2**20
        print(f"{'side':<7} {'s':>7} {'img/s':>8} {'peak RSS MiB':>13} {'after imports':>14}")
        for name, side in (("naive", naive), ("store", store)):
            print(
                f"{name:<7} {side['seconds']:7.2f} {len(files) / side['seconds']:8.0f} {side['peak_mib']:13.0f} "
                f"{side['base_mib']:14.0f}"
            )
        print(
            f"store/naive speed: {naive['seconds'] / store['seconds']:.2f}×; outputs equal: {same}; "
            f"decoded arrays {size_mib:.0f} MiB; 2 chunks of {args.chunk_size} = {2 * chunk_mib:.0f} MiB; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        compare_draft(files, args.size, args.repeats)


if __name__ == "__main__":
    main()
