"""Training throughput with 1 and with 2 torch.distributed processes (gloo on the CPU, NCCL on GPUs).

    python bench/bench_distributed.py [--images 4096] [--epochs 2] [--model small] [--batch 256] [--device cpu]

Trains the same run (synthetic 32×32 data saved as a dataset, the "quick" recipe,
global batch --batch) once with `unlearnable train` in this process's interpreter and once under
`torchrun --nproc-per-node 2`, each process with one thread on the CPU, and prints the images/s of
the last epoch (results.json) of each and their ratio. On a 2-core CPU two processes cannot be
faster than one process on two threads: the point there is that the distributed path is correct
(tests/test_distributed.py); the ratio says what it costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from unlearnable.data import ImageDataset, save_dataset


def synthetic(n: int, seed: int) -> ImageDataset:
    """n noisy 3×32×32 images whose class (of 10) is the colour of a square: learnable, cheap to make."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 120, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    colours = torch.randint(0, 256, (10, 3, 1, 1), generator=torch.Generator().manual_seed(99), dtype=torch.uint8)
    images[:, :, 8:24, 8:24] = colours[labels]
    return ImageDataset(images, labels, [str(c) for c in range(10)])


def run(processes: int, threads: int, data: Path, out: Path, args: argparse.Namespace) -> float:
    """Images/s of the last epoch of one run."""
    train = [
        "train",
        "--train",
        str(data),
        "--out",
        str(out),
        "--model",
        args.model,
        "--recipe",
        "quick",
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch),
        "--device",
        args.device,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = (launcher if processes > 1 else [sys.executable]) + ["-m", "unlearnable", *train]
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "results.json").read_text())["epochs"][-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        save_dataset(data, synthetic(args.images, 0), synthetic(1024, 1))
        cores = os.cpu_count() or 1
        rows = [
            ("1 process, 1 thread", run(1, 1, data, Path(tmp) / "a", args)),
            (f"1 process, {cores} threads", run(1, cores, data, Path(tmp) / "b", args)),
            ("2 processes, 1 thread each", run(2, 1, data, Path(tmp) / "c", args)),
        ]
    print(f"{args.model}, global batch {args.batch}, {args.images} images, last of {args.epochs} epochs, {args.device}")
    for name, speed in rows:
        print(f"  {name:<28}{speed:>9.0f} img/s")
    print(
        f"  2 processes / 1 process (1 thread each): {rows[2][1] / rows[0][1]:.2f}×; "
        f"2 processes / 1 process on {cores} threads: {rows[2][1] / rows[1][1]:.2f}×"
    )


if __name__ == "__main__":
    main()
