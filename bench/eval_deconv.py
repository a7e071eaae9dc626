"""Kernel error, detection and PSNR of the deconv defense on CIFAR-10 (JPEG copy) train split, per poison setting.

    python bench/eval_deconv.py [--limit N] [--data SPEC] [--settings NAME,...]
    python bench/eval_deconv.py --clean-sizes 600,5000,50000 [--clean-seeds 8]

Per setting: the mean relative L2 kernel error (both normalised to sum 1), how many of the
poisoned images were deconvolved (and clean ones by mistake), and the mean PSNR vs clean over the
poisoned images, raw and after a per-image least-squares gain (CUDA rescales every image by its
max, which caps the raw PSNR). The key is used only to score. One CPU thread.

With --clean-sizes: false positives instead. For each size N and seed, `recover` on N clean
training images drawn at random (numpy default_rng(seed), without replacement): the kernel size
it settles on and how many images it changed (the README promises none).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unlearnable.analysis.metrics import psnr_per_image
from unlearnable.attacks.apply import poison_dataset
from unlearnable.data import ImageDataset, load_dataset
from unlearnable.defenses.deconv import diagnostics, recover

SHARED_CIFAR = "../shared/data/cifar10-jpeg.tar.gz"

SETTINGS = {
    "cuda k3 pb0.3": ("cuda", {}),
    "cuda gray": ("cuda", {"grayscale": True}),
    "vuda": ("vuda", {}),
    "huda": ("huda", {}),
    "cuda k5": ("cuda", {"kernel_size": 5}),
    "cuda k9": ("cuda", {"kernel_size": 9}),
    "cuda pb0.5": ("cuda", {"blur_parameter": 0.5}),
    "cuda mix0.5": ("cuda", {"mix": 0.5}),
    "cuda-reflect": ("cuda-reflect", {}),
}


def gain_matched(images: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """`images` scaled per image by the least-squares gain onto `clean`, as uint8."""
    a, b = images.double(), clean.double()
    gain = (a * b).sum(dim=(1, 2, 3), keepdim=True) / a.square().sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-9)
    return (a * gain).clamp(0, 255).round().to(torch.uint8)


def false_positives(clean: ImageDataset, sizes: list[int], seeds: int) -> None:
    """Print, per size and seed, the kernel size `recover` settles on and the images it changed."""
    print(f"{'images':>7} {'seed':>4} {'k':>2} {'changed':>8} {'seconds':>7}")
    for size in sizes:
        for seed in range(seeds if size < len(clean) else 1):
            chosen = np.random.default_rng(seed).choice(len(clean), size, replace=False)
            subset = clean.subset(torch.from_numpy(np.sort(chosen)))
            start = time.perf_counter()
            recovered = recover(subset)
            changed = int((recovered.images != subset.images).flatten(1).any(dim=1).sum())
            seconds = time.perf_counter() - start
            print(
                f"{size:7d} {seed:4d} {recovered.meta['deconv']['kernel_size']:2d} {changed:8d} {seconds:7.0f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=50_000, help="N training images, the first N/K of each class")
    parser.add_argument("--data", default=SHARED_CIFAR)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    parser.add_argument("--clean-sizes", help="comma-separated N: count false positives on N random clean images")
    parser.add_argument("--clean-seeds", type=int, default=8, help="random subsets per size below the full set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    clean = load_dataset(args.data, "train")
    if args.clean_sizes:
        false_positives(clean, [int(n) for n in args.clean_sizes.split(",")], args.clean_seeds)
        return
    per_class = args.limit // clean.num_classes
    clean = clean.subset(
        torch.cat([torch.nonzero(clean.labels == c).flatten()[:per_class] for c in range(clean.num_classes)])
    )
    print(
        f"{'setting':14} {'k':>2} {'kernel err':>10} {'deconvolved/poisoned':>21} {'false':>5} "
        f"{'PSNR pois/rec':>14} {'gain-matched':>14} {'seconds':>7}"
    )
    for name in args.settings.split(","):
        attack, params = SETTINGS[name]
        poisoned = poison_dataset(clean, attack, device="cpu", **params)
        start = time.perf_counter()
        recovered = recover(poisoned)
        seconds = time.perf_counter() - start
        found = diagnostics(poisoned, recovered, clean)
        blurred = torch.zeros(len(clean), dtype=torch.bool)
        blurred[poisoned.meta["poisoned_indices"]] = True
        matched = [
            float(psnr_per_image(gain_matched(images[blurred], clean.images[blurred]), clean.images[blurred]).mean())
            for images in (poisoned.images, recovered.images)
        ]
        error = "–" if found["mean_kernel_error"] is None else f"{100 * found['mean_kernel_error']:.1f}%"
        print(
            f"{name:14} {recovered.meta['deconv']['kernel_size']:2d} {error:>10} "
            f"{found['hits']:>10}/{found['poisoned']:<10} {found['false_alarms']:5d} "
            f"{found['mean_psnr_poisoned']:6.2f}/{found['mean_psnr_recovered']:<7.2f} "
            f"{matched[0]:6.2f}/{matched[1]:<7.2f} {seconds:7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
