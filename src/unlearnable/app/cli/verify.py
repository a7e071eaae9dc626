"""`unlearnable verify PUBLISHED --key KEYFILE`: check a published collection against its key.

Exit codes: 0 when every file is ok, 1 when verification failed (a file modified, unprotected,
missing or extra), 2 on bad input (no such folder, no or wrong key).
"""

from __future__ import annotations

import argparse

from unlearnable import params as P


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "verify",
        help="check a published collection against its key: present, untouched, "
        "still protected; exit 0 all ok, 1 failed",
    )
    p.add_argument("published", metavar="PUBLISHED", help="the folder `protect` wrote")
    p.add_argument("--key", required=True, metavar="KEYFILE", help="its private key")
    p.add_argument(
        "--show", type=P.NONNEGATIVE_INT, default=20, help="list at most this many problem files (default 20)"
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from unlearnable.app.owner import verify_folder

    result = verify_folder(args.published, args.key)
    counts = result.counts
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    problems = [c for c in result.checks if c.status != "ok"]
    for check in problems[: args.show]:
        print(f"  {check.status:<11} {check.path}" + (f"  ({check.detail})" if check.detail else ""))
    if len(problems) > args.show:
        print(f"  ... and {len(problems) - args.show} more")
    print(
        "verification passed: every file is present, untouched and protected"
        if result.all_ok
        else "verification FAILED"
    )
    return 0 if result.all_ok else 1
