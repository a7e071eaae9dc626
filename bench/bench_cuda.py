"""CUDA poison generation: this project vs the published per-image loop, and the memory floor.

    python bench/bench_cuda.py [--n 50000] [--device cpu|cuda] [--sweep]

Prints, for N random 32×32×3 uint8 images (contents do not change the cost):
  * per-image loop: one depthwise conv2d call per image, as the published code does;
  * this project: `unlearnable.attacks.cuda_poison` (key drawing included);
  * floor: one chunked uint8 → float → uint8 pass over the same data, the least any batched
    implementation must spend;
and the ratios loop / project (target ≥ 30× on the 2-core CPU) and project / floor (target ≤ 3×).
`--sweep` also times chunk sizes and the per-class conv2d alternative the design was chosen over.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import unlearnable.attacks.cuda as cuda_mod
from unlearnable.attacks import cuda_poison


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def per_image_loop(
    images: torch.Tensor, labels: torch.Tensor, kernels: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """The published generator's shape: one conv2d call per image on x/255, max-normalise, truncate."""
    out = torch.empty_like(images)
    weights = [k.expand(3, 1, *k.shape).contiguous().to(device) for k in kernels]
    pad = kernels.shape[-1] // 2
    for i in range(len(images)):
        x = images[i : i + 1].to(device).float() / 255
        y = F.conv2d(x, weights[int(labels[i])], padding=pad, groups=3)
        y = y / y.max()
        out[i] = (y * 255).to(torch.uint8)[0].cpu()
    return out


def floor_pass(images: torch.Tensor, device: torch.device, chunk: int, via_int32: bool) -> torch.Tensor:
    """uint8 → float → uint8 in chunks: reads and writes every byte once, nothing else.

    via_int32 casts float → int32 → uint8, as the project does, which is ~4× faster on CPU than
    the plain float → uint8 cast.
    """
    out = torch.empty_like(images)
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk].to(device).float()
        out[s : s + chunk] = (x.to(torch.int32) if via_int32 else x).to(torch.uint8).cpu()
    return out


def per_class_conv2d(images: torch.Tensor, labels: torch.Tensor, kernels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Alternative design: gather each class, depthwise conv2d per chunk, scatter back."""
    out = torch.empty_like(images)
    for c, k in enumerate(kernels):
        idx = torch.nonzero(labels == c).flatten()
        w = k.expand(3, 1, *k.shape).contiguous()
        for s in range(0, len(idx), chunk):
            part = idx[s : s + chunk]
            y = F.conv2d(images[part].float() / 255, w, padding=k.shape[-1] // 2, groups=3)
            out[part] = y.div_(y.amax(dim=(1, 2, 3), keepdim=True)).mul_(255).to(torch.uint8)
    return out


def timed(fn, device: torch.device, repeat: int = 1) -> tuple[float, object]:
    """Best wall time of `repeat` runs of fn() (seconds) and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="number of images (default 50000, CIFAR-10's train split)")
    ap.add_argument(
        "--loop-n",
        type=int,
        default=None,
        help="time the per-image loop on this many images and scale up (default: all)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs for the batched paths")
    ap.add_argument("--sweep", action="store_true", help="also time chunk sizes and the per-class conv2d alternative")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (args.n,), generator=g)
    print(
        f"CUDA generation, {args.n} images 3×32×32, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    t_ours, poison = timed(lambda: cuda_poison(images, labels, 10, device=device, progress=False), device, args.repeat)
    kernels = torch.tensor(poison.key["kernels"])
    chunk = 8192 if device.type == "cuda" else 128
    t_floor, _ = timed(lambda: floor_pass(images, device, chunk, via_int32=True), device, args.repeat)
    t_plain, _ = timed(lambda: floor_pass(images, device, chunk, via_int32=False), device, args.repeat)
    loop_n = min(args.loop_n or args.n, args.n)
    t_loop, ref = timed(lambda: per_image_loop(images[:loop_n], labels[:loop_n], kernels, device), device)
    t_loop *= args.n / loop_n
    same = (ref == poison.images[:loop_n]).float().mean().item()
    off = (ref.int() - poison.images[:loop_n].int()).abs().max().item()

    scaled = f" (timed on {loop_n}, scaled)" if loop_n < args.n else ""
    print(f"per-image loop : {t_loop:8.3f} s{scaled}")
    print(f"this project   : {t_ours:8.3f} s   ({args.n / t_ours:,.0f} images/s)")
    print(f"floor          : {t_floor:8.3f} s   (chunked uint8→float→int32→uint8, the casts the project uses)")
    print(f"plain floor    : {t_plain:8.3f} s   (chunked uint8→float→uint8 with torch's direct casts)")
    print(f"agreement with the loop: {100 * same:.4f}% identical bytes, max difference {off} level(s)")
    if args.sweep and device.type == "cpu":
        for c in (64, 128, 256, 512, 2048):
            cuda_mod.CPU_CHUNK_PIXELS = c * 3 * 32 * 32
            t, _ = timed(lambda: cuda_poison(images, labels, 10, device=device, progress=False), device, args.repeat)
            print(f"  chunk {c:5d} images: {t:.3f} s")
        t, _ = timed(lambda: per_class_conv2d(images, labels, kernels, 512), device, args.repeat)
        print(f"  per-class depthwise conv2d (chunk 512): {t:.3f} s")
    print(
        f"RESULT cuda-generation: {t_loop / t_ours:.1f}x faster than the per-image loop, "
        f"{t_ours / t_floor:.2f}x the floor, {t_ours / t_plain:.2f}x the plain floor (targets: >= 30x, <= 3x)"
    )


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
