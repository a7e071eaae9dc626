"""`unlearnable detect`: does DATA look convolution-poisoned (CUDA-like)? Verdict plus evidence."""

from __future__ import annotations

import argparse
from pathlib import Path

from unlearnable import params as P


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "detect", help="does DATA look convolution-poisoned (CUDA-like)? verdict plus evidence; exit 0 either way"
    )
    p.add_argument(
        "data",
        metavar="DATA",
        help="dataset name, ImageFolder directory or archive, or saved dataset; its train split is checked",
    )
    p.add_argument(
        "--reference",
        metavar="SPEC",
        help="clean images of the same classes and size (its test split when it has one); default: DATA's test split",
    )
    p.add_argument("--data-root", metavar="DIR")
    p.add_argument("--out", metavar="DIR", help="also write DIR/detect.json and DIR/detect_spectra.png")
    p.add_argument(
        "--max-images",
        type=P.POSITIVE_INT,
        default=10_000,
        help="class-balanced cap on DATA and on the reference (default 10000)",
    )
    p.add_argument("--seed", type=P.SEED, default=0, help="seeds the subsets and the edge detector's random keys")
    p.add_argument("--device", type=P.device, default=None, help="cpu or cuda (default cpu)")
    p.add_argument(
        "--image-size",
        type=P.IMAGE_SIZE,
        metavar="S",
        help="read DATA and the reference at S×S (bilinear stretch): needed for a collection of mixed "
        "image sizes; check protected data at the size it was protected at",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable.app.detect import detect_command
    from unlearnable.io import check_file_output, is_own_json

    if args.out:  # both files may replace only an earlier detect's
        inputs = [args.data, args.reference or args.data]
        check_file_output(Path(args.out) / "detect.json", inputs, ".json", is_own=lambda p: is_own_json(p, "verdict"))
        check_file_output(Path(args.out) / "detect_spectra.png", inputs)
    detection = detect_command(
        args.data,
        args.reference,
        args.data_root,
        args.out,
        args.seed,
        args.max_images,
        args.device,
        image_size=args.image_size,
    )
    print("\n".join(detection.lines()))
    if args.out:
        print(f"wrote {Path(args.out) / 'detect.json'} and {Path(args.out) / 'detect_spectra.png'}")
