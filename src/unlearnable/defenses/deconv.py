"""Deconvolution defense against class-wise blur poisons (CUDA, grayscale CUDA, VUDA, HUDA).

The trainer knows the labels, so it can estimate each class's blur kernel s_c from the poisoned
training set alone and invert it once, before training (a preprocessing defense, ``PREPROCESSING``
in ``unlearnable.defenses``).

Estimation (blind, per class, no clean data and no key): the mean windowed power spectrum of a
class is P_c(ω) ≈ |K_c(ω)|²·S(ω), with S the clean spectrum shared by the classes. Alternating
least squares on log spectra: S ← geometric mean over classes of P_c/|K_c|², then each K_c ← the
nonnegative k×k kernel summing to 1 (softmax parametrisation, batched multi-start Adam) whose
|K_c|² best fits P_c/S up to a constant. The spectrum fixes a kernel only up to its 180° rotation;
the rotation giving the deconvolved images the lower total variation is kept. The per-image max
normalisation of CUDA is a per-image scale (every image is normalised by its mean first) and the
uint8 truncation is small noise.

Inversion: Tikhonov-regularised (Wiener with a flat signal-to-noise ratio) deconvolution in the
Fourier domain, X = conj(G)·Y / (|G|² + λ), on images padded by replication so the circular FFT
does not wrap around, then cropped, clamped at 0 and rescaled per image to max 255 (the range CUDA
normalised to).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from unlearnable.data.dataset import ImageDataset
from unlearnable.errors import UserInputError

KERNEL_SIZES = (3, 5, 7, 9)
"""Sizes searched when ``kernel_size`` is None."""

REGULARIZATION = 0.01
"""Default Tikhonov λ (kernels sum to 1, so |G(0)| = 1): frequencies with |G|² below λ are damped
rather than amplified. Chosen on CIFAR-10 CUDA with the true kernels (bench/eval_deconv.py)."""

CHUNK = 4096
"""Images per batched FFT."""


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, num_classes: int, every_class: bool = True) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise UserInputError(f"deconv expects uint8 images N×C×H×W, got {images.dtype} {tuple(images.shape)}; "
                             "pass the dataset's .images")
    if labels.shape != (len(images),):
        raise UserInputError(f"deconv got {len(labels)} labels for {len(images)} images; pass one label per image")
    counts = torch.bincount(labels.long(), minlength=num_classes)
    if len(counts) > num_classes or (every_class and bool((counts == 0).any())):
        raise UserInputError(f"deconv needs every class 0..{num_classes - 1} to have images and no larger label; "
                             "estimate kernels on the whole training set")


def class_log_spectra(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the log of the mean Hann-windowed power spectrum of the mean-normalised images.

    Args:
        images: uint8 N×C×H×W (any device); labels: int64 (N,) in 0..num_classes-1.

    Returns:
        float64 (num_classes, H, W//2+1) on the images' device (``rfft2`` layout, channels averaged).
    """
    _, _, h, w = images.shape
    device = images.device
    window = torch.outer(torch.hann_window(h, periodic=False, device=device),
                         torch.hann_window(w, periodic=False, device=device))
    total = torch.zeros(num_classes, h, w // 2 + 1, dtype=torch.float64, device=device)
    for start in range(0, len(images), CHUNK):
        y = images[start:start + CHUNK].float()
        y = y / y.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        y = (y - y.mean(dim=(2, 3), keepdim=True)) * window
        power = torch.fft.rfft2(y).abs().square().mean(dim=1).double()
        total.index_add_(0, labels[start:start + CHUNK].to(device), power)
    counts = torch.bincount(labels.to(device), minlength=num_classes).clamp_min(1)
    return (total / counts[:, None, None]).clamp_min(1e-12).log()


def _log_transfer(kernels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """log |K(ω)|² of (..., k, k) kernels on the rfft2 grid of `shape`."""
    return torch.fft.rfft2(kernels, s=shape).abs().square().clamp_min(1e-6).log()


def _centred_misfit(residual: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean square of `residual` (..., H, W') after removing its weighted mean (a free constant)."""
    mean = (residual * weight).sum(dim=(-2, -1), keepdim=True) / weight.sum()
    return ((residual - mean).square() * weight).sum(dim=(-2, -1)) / weight.sum()


def _fit_kernels(target: torch.Tensor, shape: tuple[int, int], kernel_size: int, theta: torch.Tensor | None, generator: torch.Generator,
                 restarts: int, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class, the k×k softmax kernel whose log|K|² best fits `target` (K, H, W') up to a constant.

    Returns (kernels (K, k, k), their logits (K, k·k) to warm-start the next round, misfit (K,)).
    """
    num_classes = target.shape[0]
    weight = torch.ones_like(target[0])
    weight[0, 0] = 0  # the DC term carries only the mean, which every image was normalised by
    logits = torch.randn(restarts, num_classes, kernel_size ** 2, generator=generator,
                         device=generator.device, dtype=torch.float64).to(target.device)
    if theta is not None:
        logits[0] = theta
    logits.requires_grad_()
    optimizer = torch.optim.Adam([logits], lr=0.1)
    with torch.enable_grad():
        for _ in range(steps):
            kernels = torch.softmax(logits, dim=-1).view(restarts, num_classes, kernel_size, kernel_size)
            misfit = _centred_misfit(target - _log_transfer(kernels, shape), weight)
            optimizer.zero_grad()
            misfit.sum().backward()
            optimizer.step()
    best = misfit.detach().argmin(dim=0)
    theta = logits.detach()[best, torch.arange(num_classes, device=target.device)]
    kernels = torch.softmax(theta, dim=-1).view(num_classes, kernel_size, kernel_size)
    return kernels, theta, misfit.detach().min(dim=0).values


def _fit_size(log_spectra: torch.Tensor, shape: tuple[int, int], kernel_size: int, rounds: int, restarts: int, steps: int,
              seed: int) -> tuple[torch.Tensor, float]:
    """Alternate the shared clean spectrum and the class kernels; returns (kernels, mean misfit)."""
    generator = torch.Generator().manual_seed(seed)
    log_clean = log_spectra.mean(dim=0)
    theta = None
    for _ in range(rounds):
        kernels, theta, misfit = _fit_kernels(log_spectra - log_clean, shape, kernel_size, theta, generator, restarts, steps)
        log_clean = (log_spectra - _log_transfer(kernels, shape)).mean(dim=0)
    return kernels.float(), float(misfit.mean())


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of float B×C×H×W images divided by their mean absolute value: (B,)."""
    tv = ((images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3))
          + (images[..., :, 1:] - images[..., :, :-1]).abs().mean(dim=(1, 2, 3)))
    return tv / images.abs().mean(dim=(1, 2, 3)).clamp_min(1e-6)


def _resolve_flips(images: torch.Tensor, labels: torch.Tensor, kernels: torch.Tensor, regularization: float,
                   per_class: int = 256) -> torch.Tensor:
    """Per class, keep the kernel or its 180° rotation: the one whose deconvolution has the lower total variation."""
    chosen = []
    for c, kernel in enumerate(kernels):
        sample = images[torch.nonzero(labels == c).flatten()[:per_class]].float()
        candidates = torch.stack([kernel, kernel.flip(-2, -1)])
        scores = [total_variation(_tikhonov(sample, candidate.expand(len(sample), -1, -1), regularization)).mean()
                  for candidate in candidates]
        chosen.append(candidates[int(scores[1] < scores[0])])
    return torch.stack(chosen)


def estimate_kernels(images: torch.Tensor, labels: torch.Tensor, num_classes: int, kernel_size: int | None = None,
                     *, rounds: int = 6, restarts: int = 32, steps: int = 300, seed: int = 0) -> torch.Tensor:
    """Estimate every class's blur kernel from the poisoned images and their labels only.

    Args:
        images: uint8 N×C×H×W, values 0..255 (any device; the work runs there).
        labels: int64 (N,), every class 0..num_classes-1 present.
        num_classes: K.
        kernel_size: odd k; None searches ``KERNEL_SIZES`` and keeps the smallest whose misfit is
            within 5% of the largest's (a larger support always fits at least as well).
        rounds, restarts, steps: alternations of spectrum and kernels, random starts per class,
            and Adam steps per round. seed: seeds the starts, so the result is deterministic.

    Returns:
        float32 (K, k, k) nonnegative kernels summing to 1, in ``conv2d`` (cross-correlation)
        orientation like the CUDA key, on the images' device.
    """
    _check_inputs(images, labels, num_classes)
    h, w = images.shape[-2:]
    sizes = KERNEL_SIZES if kernel_size is None else (kernel_size,)
    for size in sizes:
        if size < 1 or size % 2 == 0 or size > min(h, w) // 2:
            raise UserInputError(f"--kernel-size {size} is invalid; use an odd size from 1 to {min(h, w) // 2}")
    log_spectra = class_log_spectra(images, labels, num_classes)
    fits = [_fit_size(log_spectra, (h, w), size, rounds, restarts, steps, seed) for size in sizes]
    largest = fits[-1][1]
    kernels = next(k for k, misfit in fits if misfit <= 1.05 * largest)
    return _resolve_flips(images, labels.to(images.device), kernels, REGULARIZATION)


def _tikhonov(images: torch.Tensor, kernels: torch.Tensor, regularization: float) -> torch.Tensor:
    """Deconvolve float B×C×H×W `images` by per-image (B, k, k) correlation kernels; float, unclamped."""
    _, _, h, w = images.shape
    k = kernels.shape[-1]
    pad = k
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    shape = padded.shape[-2:]
    # conv2d correlates: y = x ⋆ s = x * flip(s); place flip(s) with its centre at the origin.
    transfer = torch.fft.rfft2(torch.roll(torch.nn.functional.pad(kernels.flip(-2, -1), (0, shape[1] - k, 0, shape[0] - k)),
                                          (-(k // 2), -(k // 2)), dims=(-2, -1)))[:, None]
    spectrum = torch.fft.rfft2(padded) * transfer.conj() / (transfer.abs().square() + regularization)
    return torch.fft.irfft2(spectrum, s=shape)[..., pad:pad + h, pad:pad + w]


def wiener_deconvolve(images: torch.Tensor, labels: torch.Tensor, kernels: torch.Tensor,
                      regularization: float = REGULARIZATION) -> torch.Tensor:
    """Undo each image's class kernel: X = conj(G)·Y / (|G|² + λ), in batches on the images' device.

    Args:
        images: uint8 N×C×H×W, values 0..255.
        labels: int64 (N,), indexes `kernels`.
        kernels: float (K, k, k), odd k, conv2d orientation (as ``estimate_kernels`` returns and the
            CUDA key stores), each normalised here to sum 1.
        regularization: λ > 0; larger is smoother and safer, smaller sharper and noisier.

    Returns:
        uint8 N×C×H×W on the images' device: the deconvolution clamped at 0 and rescaled per image
        so its max is 255 (an all-zero result stays 0).
    """
    if not regularization > 0 or not math.isfinite(regularization):
        raise UserInputError(f"regularization={regularization!r} is invalid: expected a finite number > 0 "
                             f"(default {REGULARIZATION})")
    if kernels.dim() != 3 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise UserInputError(f"kernels must be (K, k, k) with odd k, got {tuple(kernels.shape)}")
    _check_inputs(images, labels, len(kernels), every_class=False)
    kernels = kernels.to(images.device, torch.float32)
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    out = torch.empty_like(images)
    for start in range(0, len(images), CHUNK):
        stop = start + CHUNK
        x = _tikhonov(images[start:stop].float(), kernels[labels[start:stop].to(images.device)], regularization)
        x = x.clamp_min_(0)
        peak = x.amax(dim=(1, 2, 3), keepdim=True)
        peak.masked_fill_(peak == 0, 1.0)
        out[start:stop] = (x * (255.0 / peak)).round_().to(torch.uint8)
    return out


def recover(dataset: ImageDataset, kernel_size: int | None = None,
            regularization: float = REGULARIZATION) -> ImageDataset:
    """Estimate the class kernels of `dataset` and deconvolve every image (deterministic).

    Returns:
        A new ImageDataset (same labels and classes); ``meta`` keeps the input's and adds
        ``deconv`` = {"kernels": estimated (K, k, k) list, "kernel_size", "regularization"}.
    """
    kernels = estimate_kernels(dataset.images, dataset.labels, dataset.num_classes, kernel_size)
    images = wiener_deconvolve(dataset.images, dataset.labels, kernels, regularization)
    meta: dict[str, Any] = {**dataset.meta, "deconv": {"kernels": kernels.cpu().tolist(),
                                                       "kernel_size": kernels.shape[-1],
                                                       "regularization": regularization}}
    return ImageDataset(images, dataset.labels.clone(), list(dataset.classes), meta)


class Deconvolve:
    """The ``deconv`` preprocessing defense: `recover` applied once to the whole training set.

    Args:
        kernel_size: odd k, or None to search ``KERNEL_SIZES``.
        regularization: Tikhonov λ > 0.
    """

    def __init__(self, kernel_size: int | None = None, regularization: float = REGULARIZATION) -> None:
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise UserInputError(f"kernel_size={kernel_size!r} is invalid: expected an odd size such as 3, 5, 7, 9")
        if not regularization > 0 or not math.isfinite(regularization):
            raise UserInputError(f"regularization={regularization!r} is invalid: expected a finite number > 0")
        self.kernel_size = kernel_size
        self.regularization = float(regularization)

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        return recover(dataset, self.kernel_size, self.regularization)

    def __repr__(self) -> str:
        return f"Deconvolve(kernel_size={self.kernel_size}, regularization={self.regularization})"


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8 N×C×H×W `images` against `reference` (peak 255): float64 (N,)."""
    error = (images.double() - reference.double()).square().mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(255.0 ** 2 / error)


def kernel_errors(estimated: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per class ‖ŝ − s‖ / ‖s‖ with both (K, k, k) kernel stacks normalised to sum 1: (K,)."""
    estimated = estimated / estimated.sum(dim=(1, 2), keepdim=True)
    true = true / true.sum(dim=(1, 2), keepdim=True)
    return (estimated - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)


def _plot_kernels(path: Any, estimated: torch.Tensor, true: torch.Tensor | None) -> None:
    """PNG of the estimated kernels (top row) and, when known, the true ones (bottom row), one column per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [("estimated", estimated)] + ([("true", true / true.sum(dim=(1, 2), keepdim=True))] if true is not None else [])
    fig, axes = plt.subplots(len(rows), len(estimated), figsize=(1.2 * len(estimated), 1.3 * len(rows)), squeeze=False)
    vmax = float(max(kernels.max() for _, kernels in rows))
    for r, (name, kernels) in enumerate(rows):
        for c, kernel in enumerate(kernels):
            axes[r, c].imshow(kernel.cpu().numpy(), cmap="viridis", vmin=0, vmax=vmax)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            axes[r, c].set_title(f"{name} {c}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recover_command(data: str, out: str, kernel_size: int | None = None, regularization: float = REGULARIZATION,
                    data_root: str | None = None, overwrite: bool = False) -> list[str]:
    """`unlearnable recover`: deconvolve DATA's training split into the saved dataset `out`.

    Writes `out` atomically (with the estimated kernels in meta.json under "deconv") and
    ``out/kernels.png``. The true kernels (DATA's meta "kernels") and the clean source are used
    only to evaluate. Returns the lines to print: per class the kernel error and PSNR vs clean
    (recovered and, for comparison, poisoned), when those are available.
    """
    from unlearnable.data import load_dataset, save_dataset
    from unlearnable.io import atomic_directory
    from unlearnable.show import load_source

    poisoned = load_dataset(data, "train", data_root)
    recovered = recover(poisoned, kernel_size, regularization)
    estimated = torch.tensor(recovered.meta["deconv"]["kernels"])
    true = torch.tensor(poisoned.meta["kernels"], dtype=torch.float32) if "kernels" in poisoned.meta else None
    with atomic_directory(out, overwrite) as tmp:
        save_dataset(tmp, recovered)
        _plot_kernels(tmp / "kernels.png", estimated, true if true is not None and true.shape == estimated.shape else None)
    clean = load_source(poisoned, data_root) if true is not None else None
    lines = [f"recovered {len(recovered)} images with {estimated.shape[-1]}×{estimated.shape[-1]} kernels -> {out}"]
    errors = kernel_errors(estimated, true) if true is not None and true.shape == estimated.shape else None
    gains = None if clean is None else (psnr(recovered.images, clean.images), psnr(poisoned.images, clean.images))
    for c in range(poisoned.num_classes):
        parts = [f"class {c}:"]
        if errors is not None:
            parts.append(f"kernel error {100 * float(errors[c]):.1f}%")
        if gains is not None:
            mask = poisoned.labels == c
            parts.append(f"PSNR recovered {float(gains[0][mask].mean()):.2f} dB (poisoned {float(gains[1][mask].mean()):.2f} dB)")
        if len(parts) > 1:
            lines.append(" ".join(parts))
    if errors is not None:
        lines.append(f"mean kernel error {100 * float(errors.mean()):.1f}%")
    return lines
