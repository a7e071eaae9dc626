"""The data owner's commands: `unlearnable protect PHOTOS --out PUBLISHED` and `unlearnable verify`.

`register(subparsers)` adds both to the main parser. Exit codes: protect 0 when published, 2 on bad
input; verify 0 when every file is ok, 1 when verification failed (a file modified, unprotected,
missing or extra), 2 on bad input (no such folder, no or wrong key).
"""

from __future__ import annotations

import argparse
import time

from unlearnable import params as P
from unlearnable.params import Interval


def cmd_protect(args: argparse.Namespace) -> int:
    from unlearnable.app.owner import protect_folder
    t = time.perf_counter()
    result = protect_folder(args.photos, args.out, strength=args.strength, fmt=args.format, key=args.key,
                            metadata=args.metadata, seed=args.seed, overwrite=args.overwrite,
                            workers=args.workers)
    skipped = ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in result.skipped.items() if n)
    print(f"published {result.published} photos of {result.classes} classes to {result.out} in "
          f"{time.perf_counter() - t:.1f} s" + (f" ({result.resumed} finished by an earlier run)" if result.resumed else ""))
    print(f"private key: {result.key} (keep it secret and safe: it is the only way to verify the collection)")
    if skipped:
        print(f"skipped: {skipped}")
    if result.empty_classes:
        print(f"empty classes (published empty): {', '.join(result.empty_classes)}")
    if result.unreadable:
        print(f"not published, unreadable as images: {len(result.unreadable)} (" +
              ", ".join(result.unreadable[:5]) + (", ..." if len(result.unreadable) > 5 else "") + ")")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from unlearnable.app.owner import verify_folder
    result = verify_folder(args.published, args.key)
    counts = result.counts
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    problems = [c for c in result.checks if c.status != "ok"]
    for check in problems[:args.show]:
        print(f"  {check.status:<11} {check.path}" + (f"  ({check.detail})" if check.detail else ""))
    if len(problems) > args.show:
        print(f"  ... and {len(problems) - args.show} more")
    print("verification passed: every file is present, untouched and protected" if result.all_ok else
          "verification FAILED")
    return 0 if result.all_ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `protect` and `verify` subcommands to `sub` (the main parser's subparsers)."""
    from unlearnable.app.owner import STRENGTHS

    p = sub.add_parser("protect", help="publish a protected copy of a photo collection (PHOTOS/<class>/...) at "
                                       "its own resolution, and its private key")
    p.add_argument("photos", metavar="PHOTOS", help="folder of class folders of photos (any size, format, mode)")
    p.add_argument("--out", required=True, metavar="PUBLISHED", help="the folder to create: same layout and names")
    p.add_argument("--strength", default="mid", choices=tuple(STRENGTHS),
                   help="low: 3×3 kernels at 32 and 64 px; mid (default): 5×5 at 32 and 64; high: 7×7 at 32, 64, 128")
    p.add_argument("--format", default="same", choices=("same", "png", "jpg"),
                   help="same (default): each file in its own format (JPEG at quality 95); png; jpg "
                        "(photos with alpha stay PNG)")
    p.add_argument("--key", metavar="KEYFILE", help="private key file (default PUBLISHED.key.json beside PUBLISHED; "
                                                    "never inside it)")
    p.add_argument("--metadata", default="strip", choices=("strip", "keep"),
                   help="strip (default): drop EXIF (GPS, camera, time), keep the colour profile; keep: keep EXIF too")
    p.add_argument("--seed", type=P.SEED, default=0, help="seed of the class kernels (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace PUBLISHED and the key when this tool wrote "
                                                            "them with that key")
    p.add_argument("--workers", type=Interval(int, 1, 64), default=2, help="photos processed at once (default 2)")
    p.set_defaults(func=cmd_protect)

    p = sub.add_parser("verify", help="check a published collection against its key: present, untouched, "
                                      "still protected; exit 0 all ok, 1 failed")
    p.add_argument("published", metavar="PUBLISHED", help="the folder `protect` wrote")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="its private key")
    p.add_argument("--show", type=P.NONNEGATIVE_INT, default=20, help="list at most this many problem files (default 20)")
    p.set_defaults(func=cmd_verify)
