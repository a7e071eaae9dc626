"""Benchmark RSK+FF on N random CIFAR-sized images: batched vs a naive per-image loop vs a plain pass.

    python bench/bench_defenses.py [--n 50000] [--device cpu]

Three timings over the same uint8 N×3×32×32 data (fixed seed):
  batched  chunks of images: uint8 → float/255 → RSK → FF → uint8, written into one output array;
  naive    per image: torch conv2d with its own kernel + scipy dctn/idctn; timed on a subset and
           extrapolated linearly to N;
  floor    the same chunked uint8 → float/255 → uint8 pass with no defense in between.
Chunk sizes and thread counts are swept; each (threads, chunk) is timed --repeats times and the
fastest run counts, for batched and floor separately.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from unlearnable.defenses import Defense, build_defense, kept_frequencies, sample_sharpen_kernels


def to_unit_float(chunk: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 B×C×H×W → float32 in [0, 1] on `device`."""
    return chunk.to(device).to(torch.float32).mul_(1 / 255)


def store_uint8(x: torch.Tensor, out: torch.Tensor) -> None:
    """Round float `x` in [0, 1] to 0..255 into the uint8 `out` (via int16: faster than float→uint8 on CPU)."""
    out.copy_(x.mul_(255).round_().to(torch.int16))


def batched_pass(
    images: torch.Tensor, defense: Defense, chunk_size: int, device: torch.device, seed: int = 0
) -> torch.Tensor:
    """Apply `defense` to uint8 N×C×H×W `images` chunk by chunk; uint8 output on `device`."""
    generator = torch.Generator(device).manual_seed(seed)
    out: torch.Tensor | None = None
    for start in range(0, len(images), chunk_size):
        y = defense(to_unit_float(images[start : start + chunk_size], device), generator)
        if out is None:
            out = torch.empty((len(images), *y.shape[1:]), dtype=torch.uint8, device=device)
        store_uint8(y, out[start : start + len(y)])
    assert out is not None
    return out


def floor_pass(images: torch.Tensor, chunk_size: int, device: torch.device) -> torch.Tensor:
    """The same chunked uint8 → float → uint8 round trip with no defense: the cost floor."""
    out = torch.empty(images.shape, dtype=torch.uint8, device=device)
    for start in range(0, len(images), chunk_size):
        store_uint8(to_unit_float(images[start : start + chunk_size], device), out[start : start + chunk_size])
    return out


def naive_pass(images: np.ndarray, keep_percent: float = 30.0, seed: int = 0) -> np.ndarray:
    """RSK+FF one image at a time: torch conv2d with the image's kernel, then scipy dctn/idctn.

    Kernels are drawn with the same call as RSK (one draw for all images), so on a batch that
    fits one chunk the result matches `batched_pass` up to float rounding.
    """
    kernels = sample_sharpen_kernels(len(images), generator=torch.Generator().manual_seed(seed))
    size = images.shape[-1] - 2
    mask = np.zeros((size, size), dtype=np.float32)
    keep = kept_frequencies(size, keep_percent)
    mask[:keep, :keep] = 1
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i, (image, kernel) in enumerate(zip(images, kernels)):
        x = torch.from_numpy(image).float().div(255).unsqueeze(0)
        y = F.conv2d(x, kernel.expand(x.shape[1], 1, 3, 3), groups=x.shape[1]).clamp(0, 1)[0].numpy()
        coeffs = scipy.fft.dctn(y, axes=(1, 2), norm="ortho") * mask
        z = np.clip(scipy.fft.idctn(coeffs, axes=(1, 2), norm="ortho"), 0, 1)
        out[i] = np.round(z * 255)
    return out


def fastest(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of `repeats` runs of `run` (after one warm-up)."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50000, help="number of 32×32×3 images (default 50000)")
    parser.add_argument("--device", default="cpu", help="torch device for the batched pass and the floor")
    parser.add_argument("--naive-n", type=int, default=2000, help="images the naive loop is timed on")
    parser.add_argument("--chunks", default="128,256,512,1024,2048", help="chunk sizes to sweep, comma-separated")
    parser.add_argument("--threads", default=None, help="torch thread counts to sweep (default 1..cpu count, max 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (fastest counts)")
    args = parser.parse_args()

    device = torch.device(args.device)
    chunks = [int(c) for c in args.chunks.split(",")]
    threads = (
        [int(t) for t in args.threads.split(",")] if args.threads else list(range(1, min(2, os.cpu_count() or 1) + 1))
    )
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    defense = build_defense("rsk+ff")
    print(f"RSK+FF benchmark: N={args.n} uint8 3×32×32 images on {device}; defense {defense!r}")

    check = images[:256]
    gap = np.abs(
        batched_pass(check, defense, 256, device).cpu().numpy().astype(int) - naive_pass(check.numpy()).astype(int)
    ).max()
    print(f"check: batched vs naive on 256 images with the same kernels, max |Δ| = {gap} (uint8 levels)")

    best_batched = best_floor = (float("inf"), 0, 0)
    print(f"{'threads':>7} {'chunk':>6} {'batched s':>10} {'floor s':>8}")
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for chunk in chunks:
            t_batched = fastest(lambda chunk=chunk: batched_pass(images, defense, chunk, device), args.repeats, device)
            t_floor = fastest(lambda chunk=chunk: floor_pass(images, chunk, device), args.repeats, device)
            print(f"{n_threads:>7} {chunk:>6} {t_batched:>10.3f} {t_floor:>8.3f}", flush=True)
            best_batched = min(best_batched, (t_batched, n_threads, chunk))
            best_floor = min(best_floor, (t_floor, n_threads, chunk))

    torch.set_num_threads(1)  # fastest for one tiny image at a time
    naive_n = min(args.naive_n, args.n)
    subset = images[:naive_n].numpy()
    start = time.perf_counter()
    naive_pass(subset)
    t_naive = (time.perf_counter() - start) * args.n / naive_n

    t_batched, t_floor = best_batched[0], best_floor[0]
    print(
        f"batched : {t_batched:8.3f} s  ({best_batched[1]} threads, chunk {best_batched[2]}; "
        f"{t_batched / args.n * 1e6:.2f} µs/image)"
    )
    print(f"naive   : {t_naive:8.3f} s  (EXTRAPOLATED from {naive_n} images, 1 thread)")
    print(f"floor   : {t_floor:8.3f} s  ({best_floor[1]} threads, chunk {best_floor[2]})")
    print(f"naive/batched = {t_naive / t_batched:.1f}×  (target ≥ 30×)")
    print(f"batched/floor = {t_batched / t_floor:.2f}×  (target ≤ 3×)")
    print(
        f"SUMMARY: RSK+FF on {args.n} CIFAR-sized images ({device}): batched {t_batched:.2f} s, "
        f"{t_naive / t_batched:.0f}× faster than a per-image torch+scipy loop (extrapolated {t_naive:.1f} s) "
        f"and {t_batched / t_floor:.1f}× a bare uint8→float→uint8 pass ({t_floor:.2f} s)."
    )


if __name__ == "__main__":
    main()
