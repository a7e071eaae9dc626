"""`unlearnable prepare`: build the memory-mapped ImageNet-100 store from an ImageNet folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from unlearnable import params as P


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prepare",
        help="build the memory-mapped ImageNet-100 store from an ImageNet folder "
        "(once; resumable; torchrun splits the work)",
    )
    p.add_argument("dataset", choices=("imagenet100",), help="the dataset to prepare")
    p.add_argument(
        "--data-root",
        required=True,
        metavar="DIR",
        help="ImageNet folder with train/<wnid>/ and val/ (wnid folders, or flat with LOC_val_solution.csv)",
    )
    p.add_argument("--out", required=True, metavar="STORE", help="the store directory (built in STORE.partial)")
    p.add_argument(
        "--classes",
        default="first100",
        metavar="SUBSET",
        help="first100 (CUDA paper, default), cmc100 (CMC's ImageNet-100), all, firstN, or a file of wnids",
    )
    p.add_argument("--image-size", type=P.IMAGE_SIZE, default=224, help="side S of the S×S images (default 224)")
    p.add_argument(
        "--resize",
        default="stretch",
        choices=("stretch", "crop"),
        help="stretch: resize to S×S (CUDA paper, default); crop: shorter side to S, then center crop",
    )
    p.add_argument("--val-labels", metavar="FILE", help="labels of a flat val/: lines '<file name> <wnid>'")
    p.add_argument("--workers", type=int, help="decode threads per process (default: the CPUs per process)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        metavar="N",
        help="images per chunk, the unit of resuming and of splitting across processes; each process "
        "holds about 2 chunks in memory (default 1024: 300 MB at 224×224)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> None:
    from unlearnable import distributed
    from unlearnable.data import is_saved_dataset, load_saved
    from unlearnable.data.imagenet import build_store

    world = distributed.init()
    built = is_saved_dataset(args.out)  # then only checked against the settings and returned
    resumed = Path(f"{args.out}.partial").is_dir()
    t = time.perf_counter()
    store = build_store(
        args.data_root,
        args.out,
        args.classes,
        args.image_size,
        args.resize,
        args.val_labels,
        args.workers,
        args.chunk_size,
        world=world,
    )
    seconds = time.perf_counter() - t
    if world.main:
        train, n_val = load_saved(store), len(load_saved(store, "test"))
        n_train = len(train)
        print(
            f"{args.dataset}: {n_train} train and {n_val} val images of {train.num_classes} classes "
            f"at {args.image_size}×{args.image_size} ({args.resize}) -> {store}: "
            + (
                "already built"
                if built
                else f"{seconds:.1f} s, {(n_train + n_val) / seconds:.0f} img/s"
                + (" (resumed)" if resumed else "")
                + f", {world.size} process(es)"
            )
        )


def interrupted_note(args: argparse.Namespace, command_line: str) -> str:
    return f"the partial store {args.out}.partial is kept: run the same command to resume"
