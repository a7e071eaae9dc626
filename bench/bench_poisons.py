"""OPS, LSP, AR, class-wise noise and grating generation: this project vs naive per-image loops.

    python bench/bench_poisons.py [--n 50000] [--device cpu|cuda] [--data PATH] [--scale 1.0]

For N 3×32×32 uint8 images (random by default; --data loads e.g. the CIFAR-10 JPEG copy), per poison:
  * this project: the registered attack, key drawing included, on all N images;
  * naive: a straightforward loop over images (and, for the OPS search, over pixels and colours, as the
    published code), timed on the first images (OPS: the first class's search) and extrapolated
    linearly to N (the subset sizes are printed; --scale multiplies them);
  * agreement: the naive loop's bytes vs the project's on that subset (same keys and random draws).
Prints the speed ratio naive / project per poison. Runs in well under 2 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from unlearnable.attacks import ATTACKS
from unlearnable.attacks.additive import classwise_noise, draw_streams
from unlearnable.attacks.ar import CROP, ar_coefficients
from unlearnable.attacks.grating import EPS, class_frequencies
from unlearnable.attacks.lsp import lsp_clusters
from unlearnable.attacks.ops import corner_colours


def naive_ops_search_class(x: np.ndarray, taken: set) -> tuple[int, int]:
    """The published search for one class: a mean/std over the class's images per (position, colour).

    Args:
        x: float (n, H, W, C) in [0, 1], the class's images.
    Returns:
        (position r·W + q, colour index) with the best score among the pairs not in `taken`.
    """
    _, h, w, c = x.shape
    best, best_score = (0, 0), -np.inf
    for point in range(h * w):
        pixel = x[:, point // w, point % w, :]
        for colour, v in enumerate(corner_colours(c)):
            if (point, colour) in taken:
                continue
            d = np.abs(v - pixel)
            score = d.mean() / d.std()
            if score > best_score:
                best, best_score = (point, colour), score
    return best


def naive_ops(images: np.ndarray, labels: np.ndarray, key: dict, classes: int) -> tuple[float, np.ndarray, bool]:
    """Seconds for the whole naive OPS (search timed on `classes` classes, scaled to all), its bytes, and
    whether its picks equal the key's."""
    num_classes = len(key["pixels"])
    x = images.transpose(0, 2, 3, 1) / 255
    w = images.shape[3]
    start = time.perf_counter()
    taken: set = set()
    same = True
    for k in range(classes):
        point, colour = naive_ops_search_class(x[labels == k], taken)
        taken.add((point, colour))
        same &= [point // w, point % w] == key["pixels"][k] and corner_colours(images.shape[1])[colour].tolist() == key[
            "colours"
        ][k]
    search = (time.perf_counter() - start) * num_classes / classes
    start = time.perf_counter()
    out = images.copy()
    pixels, colours = np.array(key["pixels"]), np.array(key["colours"]) * 255
    for i in range(len(images)):
        r, q = pixels[labels[i]]
        out[i, :, r, q] = colours[labels[i]]
    return search + time.perf_counter() - start, out, same


def naive_additive(
    images: np.ndarray, labels: np.ndarray, noise_of: Callable[[int, int], np.ndarray], rounding: str
) -> np.ndarray:
    """Per image: δ = noise_of(i, label), x + 255·δ, round or truncate, clip."""
    out = np.empty_like(images)
    for i in range(len(images)):
        y = images[i] + 255 * noise_of(i, int(labels[i]))
        out[i] = np.clip(np.floor(y + (0.5 if rounding == "round" else 0.0)), 0, 255)
    return out


def naive_lsp(
    images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, eps: float = 6 / 255, patch: int = 8
) -> np.ndarray:
    """LSP one image at a time: draw z, map it, paint the patches (np.kron), scale, add, truncate."""
    c, h, w = images.shape[1:]
    centres, maps = lsp_clusters(num_classes, c * (h // patch) * (w // patch), seed)
    rng = draw_streams(seed)[2]
    target = np.sqrt(c * h * w) * eps

    def noise(_: int, y: int) -> np.ndarray:
        feature = rng.standard_normal(centres.shape[1]) @ maps[y] + centres[y]
        delta = np.kron(feature.reshape(c, h // patch, w // patch), np.ones((1, patch, patch)))
        return delta * target / np.linalg.norm(delta)

    return naive_additive(images, labels, noise, "truncate")


def naive_ar(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, norm: float = 1.0) -> np.ndarray:
    """AR one image at a time as the published generator: one depthwise conv2d per position."""
    c, h, w = images.shape[1:]
    coefficients = torch.from_numpy(ar_coefficients(num_classes, c, seed).astype(np.float32))
    fields = draw_streams(seed)[2].standard_normal((len(images), c, h + CROP, w + CROP), dtype=np.float32)

    def noise(i: int, y: int) -> np.ndarray:
        x = torch.from_numpy(fields[i])
        weight = coefficients[y].unsqueeze(1)
        for r in range(h + CROP - 2):
            for q in range(w + CROP - 2):
                x[:, r + 2, q + 2] = F.conv2d(x[:, r : r + 3, q : q + 3], weight, groups=c).flatten()
        delta = x[:, CROP:, CROP:].double().numpy()
        return delta * norm / np.linalg.norm(delta)

    return naive_additive(images, labels, noise, "round")


def naive_noise(
    images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, eps: float = 8 / 255
) -> np.ndarray:
    patterns = classwise_noise(num_classes, images.shape[1:], eps, seed)
    return naive_additive(images, labels, lambda _, y: patterns[y], "round")


def naive_grating(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, eps: float = EPS) -> np.ndarray:
    """Per image: its class's grating at its phase, written out pixel grid by pixel grid with numpy."""
    freqs = class_frequencies(num_classes, seed)
    phases = draw_streams(seed)[2].uniform(0, 2 * np.pi, len(images))
    _, _, h, w = images.shape
    yy, xx = np.mgrid[0:h, 0:w]

    def noise(i: int, y: int) -> np.ndarray:
        fx, fy = freqs[y]
        return np.broadcast_to(eps * np.cos(2 * np.pi * (fx * xx / w + fy * yy / h) + phases[i]), images.shape[1:])

    return naive_additive(images, labels, noise, "round")


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    diff = np.abs(a.astype(int) - b.astype(int))
    return f"{100 * (diff == 0).mean():.4f}% identical bytes, max |Δ| {diff.max()} level(s)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="number of images (default 50000, CIFAR-10's train split)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--data",
        help="time on this dataset's train split (e.g. ../shared/data/cifar10-jpeg.tar.gz) instead of random images",
    )
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the naive subsets (default: ops 1 class, lsp/noise/grating 5000, ar 25 images)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    if args.data:
        from unlearnable.data import load_dataset

        train = load_dataset(args.data, "train")
        images, labels, source = train.images[: args.n], train.labels[: args.n], args.data
    else:
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (args.n,), generator=g)
        source = "random"
    n, classes = len(images), int(labels.max()) + 1
    print(
        f"poison generation, {n} images {tuple(images.shape[1:])} ({source}), {classes} classes, device {device}, "
        f"torch {torch.__version__}, 1 thread"
    )
    x, y = images.numpy(), labels.numpy()
    sizes = (("lsp", 5000), ("ar", 25), ("noise", 5000), ("grating", 5000))
    subset = {name: max(1, int(size * args.scale)) for name, size in sizes}
    for name in ("ops", "lsp", "ar", "noise", "grating"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        p = ATTACKS[name](images, labels, classes, device=device, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - start
        ours = p.images.numpy()
        if name == "ops":
            t_naive, ref, same = naive_ops(x, y, p.key, max(1, int(args.scale)))
            note = f"search timed on {max(1, int(args.scale))} class(es), scaled; picks {'equal' if same else 'DIFFER'}; {agreement(ref, ours)}"
        else:
            m = min(n, subset[name])
            start = time.perf_counter()
            naive = {"lsp": naive_lsp, "ar": naive_ar, "noise": naive_noise, "grating": naive_grating}[name]
            ref = naive(x[:m], y[:m], classes, 0)
            t_naive = (time.perf_counter() - start) * n / m
            note = f"timed on {m} images, scaled; {agreement(ref, ours[:m])}"
        print(
            f"{name:7s}: project {t_ours:7.2f} s ({n / t_ours:9,.0f} images/s)   naive {t_naive:8.1f} s   "
            f"ratio {t_naive / t_ours:6.1f}x   ({note})",
            flush=True,
        )


if __name__ == "__main__":
    main()
