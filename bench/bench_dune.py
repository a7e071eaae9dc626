"""DUNE's two optimisation branches, batched (this project) against per-image loops (naive).

    python bench/bench_dune.py [--images 64] [--colour-images 500] [--models 5] [--device cpu|cuda]

The surrogate ensemble is `--models` freshly initialised copies of the small CPU CNN in eval mode
(the time per step does not depend on the weights, so no training is needed here):
  * spatial branch: `ensemble_pgd` (30 steps of 0.5/255 in 8/255) on a batch of `--images` random
    3×32×32 images, against one call per image; agreement is the share of equal float32 values;
  * colour branch: one evaluation of the PSO objective `colour_objective` on `--colour-images` images
    in chunks of 512, against chunks of one image; agreement is the relative difference.
Both are extrapolated to 50,000 images: the spatial branch runs once per image, the colour branch
10 particles × 10 iterations per class on at most 1,000 images of the class (the published
defaults), i.e. 100 evaluations on 10,000 images for CIFAR-10. The surrogate's training (10 epochs
of the quick recipe) comes on top and is not timed here. Prints the ratio naive / project per branch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unlearnable.attacks.dune import colour_objective, ensemble_pgd
from unlearnable.models import create_model

PSO_EVALUATIONS = 10 * 10
"""Objective evaluations per class: particles × iterations."""
COLOUR_IMAGES_PER_50K = 10 * 1000
"""Images the colour objective sees per evaluation round over CIFAR-10's 10 classes (1,000 each)."""


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images for the spatial branch (default 64)")
    parser.add_argument("--colour-images", type=int, default=500, help="images for the colour objective (default 500)")
    parser.add_argument("--models", type=int, default=5, help="surrogate snapshots (default 5, as published)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    models = [create_model("small", 10).to(device).eval() for _ in range(args.models)]
    for model in models:
        model.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(args.images, 3, 32, 32, generator=g).to(device)
    targets = torch.randint(0, 10, (args.images,), generator=g).to(device)

    t_ours, batched = timed(ensemble_pgd, x, targets, models)
    start = time.perf_counter()
    looped = torch.cat([ensemble_pgd(x[i : i + 1], targets[i : i + 1], models) for i in range(len(x))])
    t_naive = time.perf_counter() - start
    same = float((batched == looped).float().mean())
    scale = 50_000 / args.images
    print(
        f"spatial (PGD, {args.models} models, {args.images} images): project {t_ours * scale:8.0f} s per 50,000   "
        f"naive {t_naive * scale:8.0f} s   ratio {t_naive / t_ours:5.1f}x   ({100 * same:.2f}% of values equal)"
    )

    xc = torch.rand(args.colour_images, 3, 32, 32, generator=g).to(device)
    shift = np.array([0.05, -0.03, 0.02])
    t_ours, value = timed(colour_objective, shift, xc, 3, models)
    t_naive, reference = timed(colour_objective, shift, xc, 3, models, chunk=1)
    scale = PSO_EVALUATIONS * COLOUR_IMAGES_PER_50K / args.colour_images
    print(
        f"colour (PSO objective, {args.colour_images} images): project {t_ours * scale:8.0f} s per 50,000   "
        f"naive {t_naive * scale:8.0f} s   ratio {t_naive / t_ours:5.1f}x   "
        f"(objective {value:.6f} vs {reference:.6f})"
    )


if __name__ == "__main__":
    main()
