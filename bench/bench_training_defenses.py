"""Benchmark the batched training defenses against naive per-image loops, measured in the same run.

    python bench/bench_training_defenses.py [--n 2048] [--repeats 3]

Data: N random float 3×32×32 images in [0, 1] and N labels of 10 classes (fixed seed), 1 torch thread.
  mixup / cutmix  `MixUp` / `CutMix` on the batch vs a Python loop mixing one image pair at a time
                  (same λ, permutation and box, so the outputs are compared too);
  ueraser         `ueraser_augment` vs per image: the module's `plasma` for brightness and contrast,
                  torchvision v2 `RandomChannelPermutation` and `TrivialAugmentWide` on uint8
                  (the same policy's kind of work, not the same random draws);
  dat             `deconvolve` with each image's class filter vs one `nn.ConvTranspose2d(1, 1, k)`
                  per class (as the published code builds them) applied image by image (same filters).
Each side runs once to warm up, then --repeats times; the fastest run counts.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from unlearnable.defenses.dat import deconvolve, init_filters
from unlearnable.defenses.mixing import CutMix, MixUp, sample_beta
from unlearnable.defenses.ueraser import (
    APPLY_PROBABILITY,
    BRIGHTNESS_INTENSITY,
    PLASMA_ROUGHNESS,
    plasma,
    ueraser_augment,
)

CLASSES = 10
FILTER_SIZE = 5


def naive_mixup(
    x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp one pair at a time, with MixUp's draws (λ, then the permutation)."""
    lam = float(sample_beta(1.0, 1, generator))
    partner = torch.randperm(len(x), generator=generator).tolist()
    mixed, mixed_targets = torch.empty_like(x), torch.empty_like(targets)
    for i, j in enumerate(partner):
        mixed[i] = lam * x[i] + (1 - lam) * x[j]
        mixed_targets[i] = lam * targets[i] + (1 - lam) * targets[j]
    return mixed, mixed_targets


def naive_cutmix(
    x: torch.Tensor, targets: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix one pair at a time with the reference code's box slices, with CutMix's draws."""
    height, width = x.shape[-2:]
    lam = sample_beta(1.0, 1, generator)
    partner = torch.randperm(len(x), generator=generator).tolist()
    centre_y = int(torch.randint(height, (), generator=generator))
    centre_x = int(torch.randint(width, (), generator=generator))
    ratio = (1 - lam).sqrt()
    half_h, half_w = int((ratio * height).floor()) // 2, int((ratio * width).floor()) // 2
    y1, y2 = max(centre_y - half_h, 0), min(centre_y + half_h, height)
    x1, x2 = max(centre_x - half_w, 0), min(centre_x + half_w, width)
    kept = 1 - (y2 - y1) * (x2 - x1) / (height * width)
    mixed, mixed_targets = x.clone(), torch.empty_like(targets)
    for i, j in enumerate(partner):
        mixed[i, :, y1:y2, x1:x2] = x[j, :, y1:y2, x1:x2]
        mixed_targets[i] = kept * targets[i] + (1 - kept) * targets[j]
    return mixed, mixed_targets


def naive_ueraser(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The UEraser policy image by image: plasma brightness/contrast, then torchvision v2 on uint8."""
    shuffle = v2.RandomApply([v2.RandomChannelPermutation()], p=APPLY_PROBABILITY)
    trivial = v2.TrivialAugmentWide()
    out = torch.empty_like(x)
    for i in range(len(x)):
        image = x[i : i + 1]
        if float(torch.rand((), generator=generator)) < APPLY_PROBABILITY:
            intensity = float(torch.empty(()).uniform_(*BRIGHTNESS_INTENSITY, generator=generator))
            bright = plasma(image.shape, torch.empty(1).uniform_(*PLASMA_ROUGHNESS, generator=generator), generator)
            image = (image + intensity * (2 * bright - 1)).clamp(0, 1)
        if float(torch.rand((), generator=generator)) < APPLY_PROBABILITY:
            contrast = plasma(image.shape, torch.empty(1).uniform_(*PLASMA_ROUGHNESS, generator=generator), generator)
            image = ((image - 0.5) * 4 * contrast + 0.5).clamp(0, 1)
        levels = shuffle(image[0].mul(255).round().to(torch.uint8))
        out[i] = trivial(levels).float().div(255)
    return out


def class_filter_modules(weights: torch.Tensor, bias: torch.Tensor) -> list[nn.ConvTranspose2d]:
    """One ConvTranspose2d(1, 1, k, padding k//2) per class holding that class's filter."""
    modules = []
    for weight, b in zip(weights, bias):
        module = nn.ConvTranspose2d(1, 1, FILTER_SIZE, padding=FILTER_SIZE // 2)
        with torch.no_grad():
            module.weight.copy_(weight.view(1, 1, FILTER_SIZE, FILTER_SIZE))
            module.bias.copy_(b.view(1))
        modules.append(module)
    return modules


def naive_deconvolve(x: torch.Tensor, labels: list[int], modules: list[nn.ConvTranspose2d]) -> torch.Tensor:
    """Each image's channels (as a C×1×H×W batch) through its class's ConvTranspose2d, one image at a time."""
    out = torch.empty_like(x)
    for i, label in enumerate(labels):
        out[i] = modules[label](x[i].unsqueeze(1)).squeeze(1)
    return out


def max_gap(a: torch.Tensor | tuple[torch.Tensor, ...], b: torch.Tensor | tuple[torch.Tensor, ...]) -> float:
    """Largest absolute difference between two outputs (a tensor or a tuple of tensors each)."""
    pairs = zip(a, b) if isinstance(a, tuple) else [(a, b)]
    return max((u - v).abs().max().item() for u, v in pairs)


def fastest(run: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of `repeats` runs of `run` (after one warm-up)."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2048, help="number of 3×32×32 images (default 2048)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (fastest counts)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)  # TrivialAugmentWide and RandomChannelPermutation draw from the global generator
    data = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 3, 32, 32, generator=data)
    labels = torch.randint(CLASSES, (args.n,), generator=data)
    targets = F.one_hot(labels, CLASSES).float()
    weights, bias = init_filters(CLASSES, FILTER_SIZE, data)
    modules = class_filter_modules(weights, bias)

    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(1)

    mixup, cutmix = MixUp(), CutMix()
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("mixup", lambda: mixup(x, targets, seeded()), lambda: naive_mixup(x, targets, seeded())),
        ("cutmix", lambda: cutmix(x, targets, seeded()), lambda: naive_cutmix(x, targets, seeded())),
        ("ueraser", lambda: ueraser_augment(x, seeded()), lambda: naive_ueraser(x, seeded())),
        (
            "dat",
            lambda: deconvolve(x, weights[labels], bias[labels]),
            lambda: naive_deconvolve(x, labels.tolist(), modules),
        ),
    ]
    print(
        f"Training-defense benchmark: N={args.n} float 3×32×32 images, {CLASSES} classes, 1 torch thread, "
        f"best of {args.repeats}"
    )

    with torch.no_grad():
        for name, batched, naive in cases:
            if name != "ueraser":  # same draws / filters: the outputs must agree
                print(f"check {name}: batched vs per-image max |Δ| = {max_gap(batched(), naive()):.2e}")
        print(f"{'defense':<8} {'batched s':>10} {'per-image s':>12} {'ratio':>7}")
        for name, batched, naive in cases:
            t_batched, t_naive = fastest(batched, args.repeats), fastest(naive, args.repeats)
            print(f"{name:<8} {t_batched:>10.4f} {t_naive:>12.4f} {t_naive / t_batched:>6.1f}×", flush=True)


if __name__ == "__main__":
    main()
