"""Benchmark COIN, ISS (jpeg, gray, bdr) and Cutout on N random CIFAR-sized images: batched vs per image.

    python bench/bench_iss_coin.py [--n 10000] [--threads 1] [--chunk 512] [--device cpu]

For every defense, over the same uint8 N×3×32×32 data (fixed seed):
  batched  chunks of images: uint8 → float/255 → defense → uint8 (bench_defenses.batched_pass),
           fastest of --repeats runs after a warm-up;
  naive    one image at a time in the style of the published code, one run over all N images:
             coin    the published COIN_trans: scipy map_coordinates(order=1, mode="wrap") on H×W×3
             jpeg    PIL save(JPEG, quality 10) + open, one thread
             gray    PIL convert("L"), replicated to 3 channels
             bdr     PIL ImageOps.posterize(2)
             cutout  the DeVries & Taylor numpy mask on a float C×H×W tensor
For jpeg, PIL in a thread pool (--threads workers) is timed too: the candidate the batched
torchvision path was chosen over. jpeg, gray and bdr are deterministic, so each prints a check of
batched against naive.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.ndimage
import torch
from PIL import Image, ImageOps

from bench_defenses import batched_pass, fastest
from unlearnable.data.dataset import to_unit_float
from unlearnable.defenses import build_defense


def published_coin(image: np.ndarray, rng: np.random.RandomState, alpha: float = 2.0) -> np.ndarray:
    """The published COIN_trans on one H×W×3 uint8 image, followed by its np.uint8."""
    image = np.array(image, dtype=np.float32) / 255.0
    shape = image.shape
    dx = rng.uniform(-alpha, alpha, size=shape[:2]).astype(np.float32)[..., np.newaxis]
    dy = rng.uniform(-alpha, alpha, size=shape[:2]).astype(np.float32)[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    warped = scipy.ndimage.map_coordinates(image, indices, order=1, mode="wrap").reshape(shape)
    return np.uint8(np.clip(warped, 0, 1) * 255)


def pil_jpeg(image: np.ndarray, quality: int = 10) -> np.ndarray:
    """PIL encode + decode of one H×W×3 uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer))


def pil_gray(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(Image.fromarray(image).convert("L"))[..., np.newaxis], 3, axis=2)


def pil_bdr(image: np.ndarray, bits: int = 2) -> np.ndarray:
    return np.asarray(ImageOps.posterize(Image.fromarray(image), bits))


def devries_cutout(image: torch.Tensor, rng: np.random.RandomState, length: int = 16) -> torch.Tensor:
    """The reference Cutout on one float C×H×W tensor."""
    h, w = image.shape[1:]
    mask = np.ones((h, w), np.float32)
    y, x = rng.randint(h), rng.randint(w)
    mask[
        np.clip(y - length // 2, 0, h) : np.clip(y + length // 2, 0, h),
        np.clip(x - length // 2, 0, w) : np.clip(x + length // 2, 0, w),
    ] = 0
    return image * torch.from_numpy(mask).expand_as(image)


def per_image(hwc: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply `transform` to every H×W×C uint8 image, one at a time."""
    return np.stack([transform(image) for image in hwc])


def timed(run: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="number of 32×32×3 images (default 10000)")
    parser.add_argument("--device", default="cpu", help="torch device for the batched passes")
    parser.add_argument("--chunk", type=int, default=512, help="images per batched call (default 512)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and PIL pool workers (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batched runs (fastest counts)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    print(
        f"COIN / ISS / Cutout benchmark: N={args.n} uint8 3×32×32 images, batched on {device} in chunks of "
        f"{args.chunk}, {args.threads} torch thread(s); naive = one image at a time, 1 thread"
    )

    rng = np.random.RandomState(0)
    naive: dict[str, Callable[[], np.ndarray]] = {
        "coin": lambda: per_image(hwc, lambda image: published_coin(image, rng)),
        "jpeg": lambda: per_image(hwc, pil_jpeg),
        "gray": lambda: per_image(hwc, pil_gray),
        "bdr": lambda: per_image(hwc, pil_bdr),
        "cutout": lambda: np.stack([devries_cutout(image, rng).numpy() for image in to_unit_float(images)]),
    }
    print(f"{'defense':>8} {'batched s':>10} {'µs/image':>9} {'naive s':>8} {'naive/batched':>14}  check")
    summary = []
    for name, run_naive in naive.items():
        defense = build_defense(name)
        t_batched = fastest(
            lambda defense=defense: batched_pass(images, defense, args.chunk, device), args.repeats, device
        )
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one tiny image at a time gains nothing from more
        t_naive, reference = timed(run_naive)
        torch.set_num_threads(threads)
        check = ""
        if name in ("jpeg", "gray", "bdr"):
            ours = batched_pass(images, defense, args.chunk, device).cpu().permute(0, 2, 3, 1).numpy()
            check = f"max |batched - naive| = {np.abs(ours.astype(int) - reference.astype(int)).max()} levels"
        print(
            f"{name:>8} {t_batched:>10.3f} {t_batched / args.n * 1e6:>9.1f} {t_naive:>8.3f} "
            f"{t_naive / t_batched:>13.1f}×  {check}",
            flush=True,
        )
        summary.append(f"{name} {t_naive / t_batched:.0f}×")

    with ThreadPoolExecutor(args.threads) as pool:
        t_pool, _ = timed(lambda: list(pool.map(pil_jpeg, hwc, chunksize=256)))
    t_jpeg = fastest(lambda: batched_pass(images, build_defense("jpeg"), args.chunk, device), args.repeats, device)
    print(
        f"jpeg candidates on CPU: PIL in a {args.threads}-worker thread pool {t_pool:.3f} s, "
        f"torchvision encode_jpeg/decode_jpeg on lists {t_jpeg:.3f} s (chosen) → {t_pool / t_jpeg:.1f}×"
    )
    print(f"SUMMARY: N={args.n}, naive/batched: {', '.join(summary)}")


if __name__ == "__main__":
    main()
