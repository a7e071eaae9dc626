"""`unlearnable protect PHOTOS --out PUBLISHED`: publish a protected copy of a photo collection.

Exit codes: 0 when published, 2 on bad input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable import params as P
from unlearnable.params import Interval

STRENGTH_NAMES = ("low", "mid", "high")
"""= tuple(unlearnable.attacks.multiscale.STRENGTHS)."""
FORMATS = ("same", "png", "jpg")
"""= unlearnable.app.owner.FORMATS."""
METADATA = ("strip", "keep")
"""= unlearnable.app.owner.METADATA."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "protect",
        help="publish a protected copy of a photo collection (PHOTOS/<class>/...) "
        "at its own resolution, and its private key",
    )
    p.add_argument("photos", metavar="PHOTOS", help="folder of class folders of photos (any size, format, mode)")
    p.add_argument("--out", required=True, metavar="PUBLISHED", help="the folder to create: same layout and names")
    p.add_argument(
        "--strength",
        default="mid",
        choices=STRENGTH_NAMES,
        help="low: 3×3 kernels at 32 and 64 px; mid (default): 5×5 at 32 and 64; high: 7×7 at 32, 64, 128",
    )
    p.add_argument(
        "--format",
        default="same",
        choices=FORMATS,
        help="same (default): each file in its own format (JPEG at quality 95); png; jpg (photos with alpha stay PNG)",
    )
    p.add_argument(
        "--key",
        metavar="KEYFILE",
        help="private key file (default PUBLISHED.key.json beside PUBLISHED; never inside it)",
    )
    p.add_argument(
        "--metadata",
        default="strip",
        choices=METADATA,
        help="strip (default): drop EXIF (GPS, camera, time), keep the colour profile; keep: keep EXIF too",
    )
    p.add_argument("--seed", type=P.SEED, default=0, help="seed of the class kernels (default 0)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace PUBLISHED and the key when this tool wrote them with that key"
    )
    p.add_argument("--workers", type=Interval(int, 1, 64), default=2, help="photos processed at once (default 2)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from unlearnable.app.owner import protect_folder

    t = time.perf_counter()
    result = protect_folder(
        args.photos,
        args.out,
        strength=args.strength,
        fmt=args.format,
        key=args.key,
        metadata=args.metadata,
        seed=args.seed,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    skipped = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in result.skipped.items() if n)
    print(
        f"published {result.published} photos of {result.classes} classes to {result.out} in "
        f"{time.perf_counter() - t:.1f} s"
        + (f" ({result.resumed} finished by an earlier run)" if result.resumed else "")
    )
    print(f"private key: {result.key} (keep it secret and safe: it is the only way to verify the collection)")
    if skipped:
        print(f"skipped: {skipped}")
    if result.empty_classes:
        print(f"empty classes (published empty): {', '.join(result.empty_classes)}")
    if result.unreadable:
        print(
            f"not published, unreadable as images: {len(result.unreadable)} ("
            + ", ".join(result.unreadable[:5])
            + (", ..." if len(result.unreadable) > 5 else "")
            + ")"
        )
    return 0


def interrupted_note(args: argparse.Namespace, command_line: str) -> str:
    return (
        f"the finished files are kept in {Path(args.out).parent / ('.' + Path(args.out).name + '.partial')}: "
        f"run the same command to resume"
    )
