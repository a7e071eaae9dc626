"""Benchmark the deconv defense's two inversions against per-image loops.

    python bench/bench_deconv.py [--n 10000] [--exact-n 500] [--repeats 3]

Data: N random uint8 3×32×32 images, N labels of 10 classes, the published CUDA kernels (seed 0),
1 torch thread. Batched: `wiener_deconvolve` (chunks of 4,096 images, one rfft2 each). Per image:
the same steps written the direct way with numpy.fft for one image at a time (undo the border,
replicate padding, X = conj(G)·Y / (|G|² + λ), crop, clamp, rescale to max 255). The outputs are
compared (max difference in uint8 levels). Exact: `exact_deconvolve` (one Cholesky factorisation per
class, then one matrix product for all of its images) against the direct way, one dense NumPy solve
of (AᵀA + λL)x = Aᵀy per image, on the first --exact-n images. Each side runs once to warm up, then
--repeats times; the fastest run counts.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bench_defenses import fastest
from unlearnable.attacks import cuda_key
from unlearnable.defenses.deconv import (
    EXACT_REGULARIZATION,
    REGULARIZATION,
    blur_matrix,
    border_attenuation,
    exact_deconvolve,
    neumann_laplacian,
    wiener_deconvolve,
)


def per_image(images: np.ndarray, labels: np.ndarray, kernels: np.ndarray, regularization: float) -> np.ndarray:
    """The per-image baseline: uint8 N×C×H×W in, uint8 out."""
    _, _, h, w = images.shape
    k = kernels.shape[-1]
    kernels = kernels / kernels.sum(axis=(1, 2), keepdims=True)
    attenuation = border_attenuation(torch.from_numpy(kernels), (h, w)).numpy()
    out = np.empty_like(images)
    for i, (image, label) in enumerate(zip(images, labels)):
        y = image.astype(np.float64) / np.maximum(attenuation[label], 1e-3)
        padded = np.pad(y, ((0, 0), (k, k), (k, k)), mode="edge")
        shape = padded.shape[-2:]
        psf = np.zeros(shape)
        psf[:k, :k] = kernels[label][::-1, ::-1]
        transfer = np.fft.rfft2(np.roll(psf, (-(k // 2), -(k // 2)), axis=(0, 1)))
        x = np.fft.irfft2(np.fft.rfft2(padded) * transfer.conj() / (np.abs(transfer) ** 2 + regularization), s=shape)
        x = np.maximum(x[:, k : k + h, k : k + w], 0)
        peak = x.max() or 1.0
        out[i] = np.round(x * (255.0 / peak)).astype(np.uint8)
    return out


def per_image_exact(images: np.ndarray, labels: np.ndarray, kernels: torch.Tensor, regularization: float) -> np.ndarray:
    """The per-image baseline of the exact inversion: one dense solve per image, uint8 in and out."""
    _, c, h, w = images.shape
    kernels = kernels.double() / kernels.double().sum(dim=(1, 2), keepdim=True)
    blurs = [blur_matrix(kernel, (h, w)).numpy() for kernel in kernels]
    prior = regularization * neumann_laplacian((h, w)).numpy()
    out = np.empty_like(images)
    for i, (image, label) in enumerate(zip(images, labels)):
        blur = blurs[label]
        x = np.linalg.solve(blur.T @ blur + prior, blur.T @ image.reshape(c, h * w).T.astype(np.float64))
        x = np.maximum(x.T.reshape(c, h, w), 0)
        peak = x.max() or 1.0
        out[i] = np.round(x * (255.0 / peak)).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--exact-n", type=int, default=500, help="images for the exact inversion's comparison")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (args.n,), generator=generator)
    kernels = torch.from_numpy(cuda_key(10, args.n)[0]).float()
    batched = wiener_deconvolve(images, labels, kernels)
    naive = per_image(images.numpy(), labels.numpy(), kernels.double().numpy(), REGULARIZATION)
    gap = int((batched.int() - torch.from_numpy(naive).int()).abs().max())
    fast = fastest(lambda: wiener_deconvolve(images, labels, kernels), args.repeats, torch.device("cpu"))
    slow = fastest(
        lambda: per_image(images.numpy(), labels.numpy(), kernels.double().numpy(), REGULARIZATION),
        args.repeats,
        torch.device("cpu"),
    )
    print(f"{'step':<8} {'batched s':>10} {'per-image s':>12} {'ratio':>7} {'max gap':>8}")
    print(f"{'wiener':<8} {fast:10.3f} {slow:12.3f} {slow / fast:6.1f}× {gap:8d}")
    few, few_labels = images[: args.exact_n], labels[: args.exact_n]
    batched = exact_deconvolve(few, few_labels, kernels)
    naive = per_image_exact(few.numpy(), few_labels.numpy(), kernels, EXACT_REGULARIZATION)
    gap = int((batched.int() - torch.from_numpy(naive).int()).abs().max())
    fast = fastest(lambda: exact_deconvolve(few, few_labels, kernels), args.repeats, torch.device("cpu"))
    slow = fastest(
        lambda: per_image_exact(few.numpy(), few_labels.numpy(), kernels, EXACT_REGULARIZATION),
        args.repeats,
        torch.device("cpu"),
    )
    print(f"{'exact':<8} {fast:10.3f} {slow:12.3f} {slow / fast:6.1f}× {gap:8d}   ({args.exact_n} images)")


if __name__ == "__main__":
    main()
