"""Deconvolution defense against class-wise blur poisons (CUDA, grayscale CUDA, VUDA, HUDA).

The trainer knows the labels, so it can estimate each class's blur kernel s_c from the poisoned
training set alone and invert it once, before training (the preprocessing defenses "deconv" and
"deconv-spectrum"). `Deconvolver` is the estimator (scikit-learn style): ``fit`` estimates the
kernels, ``transform`` deconvolves a set with them, ``state_dict`` / ``from_state_dict`` keep and
replay the fitted state (the meta ``deconv`` record of results.json).

Two blind estimators, per class, with no clean data and no key:

- ``border`` (default): CUDA convolves with zero padding, so pixels within k//2 of the border lose
  the taps that fall outside the image: the top row lacks the kernel's first row, the top-left
  pixel everything but the bottom-right block, and so on. The class mean image m_c (channel mean,
  per-image max normalisation included: it is a per-image scale) is therefore
  m_c = s_c ⋆ μ_c with zero padding, for a smooth clean mean μ_c. Alternating least squares fits μ_c
  in a low-frequency DCT basis (n×n) and s_c as a nonnegative k×k kernel, on a band of width 2k
  along the border. n is chosen per class by what the kernel leaves behind: the class mean, inverted
  exactly with it, should keep no zero-padding trace (`border_trace`'s ring statistic; on CUDA k = 9
  the mean kernel error fell from 34% to 14% against the older rule, one n for all classes by
  stability); images too large for the exact inversion keep that rule, the n whose kernels agree
  best with those of the next n.
  An unknown k is found by fitting ``MAX_KERNEL_SIZE`` and peeling outer rings that carry less than
  ``RING_MASS`` of the kernel. The drop also identifies the blurred images one by one
  (`blurred_mask`), which handles partial poisoning.
- ``spectrum``: the mean windowed power spectrum of a class is P_c(ω) ≈ |K_c(ω)|²·S(ω), with S
  shared by the classes; alternating fits of S and of a nonnegative softmax kernel to the log
  spectra, the 180° ambiguity resolved by lower total variation. Needs no border, but the shared
  spectrum assumption is weak (about 20% kernel error on CIFAR-10 against about 2% for ``border``).

Inversion (``inversion``), per class with its estimated kernel:

- ``exact`` (images of up to ``MAX_EXACT_PIXELS`` pixels): the blur as the exact linear map A_c the
  poison applied, zero padding included (reflection padding for ``spectrum``, whose targets leave no
  border trace), inverted by regularised least squares with a smoothness prior,
  x = argmin ‖A_c x − y‖² + λ‖∇x‖² = (A_cᵀA_c + λ L)⁻¹ A_cᵀ y (L the Neumann Laplacian), one H·W × H·W
  solve per class applied to all of its images. Modelling the border exactly matters: the Fourier
  inversion below treats it approximately, and what it leaves there is class-specific, so a network
  trained on it still learns the kernels (CUDA k = 9 on the quick protocol, true kernels: test images
  blurred with their own class's kernel and deconvolved score 72.4%, with another class's 27.2%;
  after the exact inversion 51.9% and 48.9%).
- ``wiener`` (any size): the zero-padding border undone first (each image divided by its kernel's
  `border_attenuation`; left in place, the class-specific dark border is a shortcut of its own), then
  Tikhonov-regularised (Wiener with a flat signal-to-noise ratio) deconvolution in the Fourier
  domain, X = conj(G)·Y / (|G|² + λ), on images padded by replication so the circular FFT does not
  wrap around, then cropped.
- ``auto`` (default): ``exact`` where it fits, else ``wiener``.

Either way the result is clamped at 0 and rescaled per image to max 255 (the range CUDA normalised to).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from unlearnable.analysis.metrics import psnr_per_image
from unlearnable.data.dataset import ImageDataset
from unlearnable.defenses.base import Configurable
from unlearnable.errors import UserInputError
from unlearnable.params import POSITIVE, Interval, Options, StrOptions, validate_params

METHODS = ("border", "spectrum")
"""Kernel estimators, see the module docstring."""

KERNEL_SIZES = (3, 5, 7, 9)
"""Sizes the ``spectrum`` estimator searches when ``kernel_size`` is None."""

MAX_KERNEL_SIZE = 9
"""Largest kernel the ``border`` estimator fits when ``kernel_size`` is None (at most a third of the image)."""

RING_MASS = 0.1
"""An outer ring of the fitted kernel carrying less than this share of its mass is peeled off."""

SIZE_GAIN = 3.0
"""``spectrum`` size search: the smallest size whose misfit is less than this many times the next
size's is kept (a larger kernel always fits a little better; the true size fits far better than a
smaller one). On the quick CIFAR-10 set with reflect-padded 3×3 kernels the misfits for 3, 5, 7, 9
were 0.027, 0.015, 0.010, 0.006: the old rule (within 5% of the largest) chose 9."""

BASIS_SIZES = (4, 6, 8, 10, 12)
"""Candidate n for the n×n DCT basis of the clean class mean (``border``); at most half the image side."""

SEARCH_BASIS_SIZE = 8
"""Basis size n of the single fit at ``MAX_KERNEL_SIZE`` that finds the kernel size."""

MIN_TRACE_T = 5.0
"""A class is treated as blurred only when its `border_trace` t statistic reaches this (about 3·10⁻⁷
one-sided for a normal statistic): the kernel search alone finds spurious 9×9 kernels in small clean
sets (one of 8 random sets of 600 CIFAR-10 images, which then had 172 images deconvolved)."""

MIN_ATTENUATION = 0.02
"""A class whose kernel darkens its border ring by less than this share is treated as not blurred."""

INVERSIONS = ("auto", "exact", "wiener")
"""Inversions, see the module docstring."""

MAX_EXACT_PIXELS = 64 * 64
"""Largest H·W the ``exact`` inversion takes (one dense H·W × H·W solve per class: 134 MB at 64×64)."""

EXACT_REGULARIZATION = 1e-3
"""Default λ of the ``exact`` inversion (weight of the squared-gradient prior, images in 0..255 and
kernels summing to 1). Chosen on the quick protocol (small CNN, 8 epochs, 500 images per class,
clean 57.5%) with the true kernels: CUDA k = 9 scored 44.2, 45.2, 54.0, 57.0, 57.3% at λ = 0.1,
0.01, 0.001, 0.0003, 0.0001; with estimated kernels a smaller λ also amplifies their error."""

REGULARIZATION = 0.01
"""Default Tikhonov λ of the ``wiener`` inversion (kernels sum to 1, so |G(0)| = 1): frequencies with |G|² below λ are damped
rather than amplified. Chosen by training on CUDA CIFAR-10 with the quick protocol (small CNN, 8
epochs, 500 images per class, estimated kernels): λ = 0.001, 0.003, 0.01, 0.03, 0.1 gave 53.9,
56.6, 56.6, 54.0, 47.4% (clean training 57.8%)."""

CHUNK = 4096
"""Images per batched FFT."""


def _check_inputs(images: torch.Tensor, labels: torch.Tensor, num_classes: int, every_class: bool = True) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise UserInputError(
            f"deconv expects uint8 images N×C×H×W, got {images.dtype} {tuple(images.shape)}; pass the dataset's .images"
        )
    if labels.shape != (len(images),):
        raise UserInputError(f"deconv got {len(labels)} labels for {len(images)} images; pass one label per image")
    counts = torch.bincount(labels.long(), minlength=num_classes)
    if len(counts) > num_classes or (every_class and bool((counts == 0).any())):
        raise UserInputError(
            f"deconv needs every class 0..{num_classes - 1} to have images and no larger label; "
            "estimate kernels on the whole training set"
        )


def class_mean_images(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per class, the mean over its images (those where `mask` is True) of the channel-mean image.

    Returns:
        (means float64 (K, H, W) in 0..255, counts int64 (K,)), on the images' device.
    """
    device = images.device
    labels = labels.to(device)
    keep = torch.ones(len(images), dtype=torch.bool, device=device) if mask is None else mask.to(device)
    total = torch.zeros(num_classes, *images.shape[-2:], dtype=torch.float64, device=device)
    for start in range(0, len(images), CHUNK):
        chosen = keep[start : start + CHUNK]
        gray = images[start : start + CHUNK][chosen].double().mean(dim=1)
        total.index_add_(0, labels[start : start + CHUNK][chosen], gray)
    counts = torch.bincount(labels[keep], minlength=num_classes)
    return total / counts.clamp_min(1)[:, None, None], counts


def _shifted_dct(size: int, n: int, k: int, device: torch.device) -> torch.Tensor:
    """(k, size, n): for each tap offset s, the first n DCT-II basis vectors read at h + s − k//2, 0 outside."""
    position = (torch.arange(size, device=device)[None, :] + torch.arange(k, device=device)[:, None] - k // 2).double()
    basis = torch.cos(math.pi * (position[..., None] + 0.5) * torch.arange(n, device=device) / size)
    return basis * ((position >= 0) & (position < size))[..., None]


def _nnls(
    gram: torch.Tensor, rhs: torch.Tensor, start: torch.Tensor | None = None, steps: int = 500, tolerance: float = 1e-6
) -> torch.Tensor:
    """Batched min ½xᵀGx − bᵀx subject to x ≥ 0: (B, m, m), (B, m) -> (B, m).

    Accelerated projected gradient from `start` (B, m) rescaled to fit, or else from the clamped
    unconstrained solution (the Gram matrices of shifted smooth images are ill-conditioned, so a
    cold start would crawl); stops when an iterate moves less than `tolerance`.
    """
    step = 1 / torch.linalg.eigvalsh(gram)[:, -1:].clamp_min(1e-12)
    if start is None:
        x = torch.linalg.lstsq(gram, rhs[..., None]).solution[..., 0].clamp_min(0)
    else:
        curvature = torch.einsum("bi,bij,bj->b", start, gram, start).clamp_min(1e-12)
        x = start * ((start * rhs).sum(dim=1) / curvature).clamp_min(0)[:, None]
    z, t = x, 1.0
    for iteration in range(steps):
        previous = x
        x = (z - step * (torch.bmm(gram, z[..., None])[..., 0] - rhs)).clamp_min(0)
        t, t_previous = (1 + math.sqrt(1 + 4 * t * t)) / 2, t
        z = x + (t_previous - 1) / t * (x - previous)
        if iteration % 25 == 24 and float((x - previous).abs().max()) < tolerance * float(x.abs().max()):
            break
    return x


def _fit_border(means: torch.Tensor, kernel_size: int, n: int, iterations: int = 50) -> torch.Tensor:
    """Alternating least squares of m_c ≈ s_c ⋆ μ_c (zero padding) on the border band; (K, H, W) -> (K, k, k).

    μ_c lives in the n×n DCT basis; s_c is nonnegative and sums to 1; starts from the identity kernel.
    """
    num_classes, h, w = means.shape
    k, device = kernel_size, means.device
    rows, cols = _shifted_dct(h, n, k, device), _shifted_dct(w, n, k, device)
    band = torch.zeros(h, w, dtype=torch.bool, device=device)
    width = min(2 * k, h // 2, w // 2)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    target = means[:, band]
    kernels = torch.zeros(num_classes, k, k, dtype=torch.float64, device=device)
    kernels[:, k // 2, k // 2] = 1
    first = True
    for _ in range(iterations):
        design = torch.einsum("sha,cst,twb->cabhw", rows, kernels, cols)[..., band].flatten(1, 2)  # (K, n², P)
        coefficients = torch.linalg.lstsq(design.transpose(1, 2), target[..., None]).solution[..., 0].view(-1, n, n)
        shifted = torch.einsum("sha,cab,twb->csthw", rows, coefficients, cols)[..., band].flatten(1, 2)  # (K, k², P)
        fitted = _nnls(
            shifted @ shifted.transpose(1, 2),
            torch.einsum("cmp,cp->cm", shifted, target),
            None if first else kernels.flatten(1),
        ).view(-1, k, k)
        first = False
        total = fitted.sum(dim=(1, 2), keepdim=True)
        fitted = torch.where(total > 0, fitted / total.clamp_min(1e-12), kernels)
        change = float((fitted - kernels).abs().max())
        kernels = fitted
        if change < 1e-5:
            break
    return kernels


def _border_kernels(means: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """`_fit_border` at every basis size; per class, the fit chosen as the module docstring says."""
    sizes = [n for n in BASIS_SIZES if n <= min(means.shape[-2:]) // 2] or [BASIS_SIZES[0]]
    fits = [_fit_border(means, kernel_size, n) for n in sizes]
    if len(fits) == 1:
        return fits[0]
    h, w = means.shape[-2:]
    if h * w <= MAX_EXACT_PIXELS:
        residual = torch.stack([_residual_trace(means, kernels) for kernels in fits])  # (sizes, K)
        return torch.stack([fits[int(n)][c] for c, n in enumerate(residual.argmin(dim=0).tolist())])
    disagreement = [
        float(((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)).mean()) for a, b in zip(fits, fits[1:])
    ]
    return fits[disagreement.index(min(disagreement))]


def _residual_trace(means: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per class, the zero-padding trace left in the class mean after the exact inversion with its
    kernel: |ring drop − control ring drop| (as in `border_trace`) of (AᵀA + λL)⁻¹Aᵀm_c: (K,) float64."""
    h, w = means.shape[-2:]
    pad = kernels.shape[-1] // 2
    prior = EXACT_REGULARIZATION * neumann_laplacian((h, w), means.device)
    restored = []
    for mean, kernel in zip(means, kernels):
        blur = blur_matrix(kernel / kernel.sum().clamp_min(1e-12), (h, w))
        restored.append(torch.linalg.solve(blur.t() @ blur + prior, blur.t() @ mean.double().flatten()).view(h, w))
    x = torch.stack(restored)
    return (_ring_drop(x, 0, pad) - _ring_drop(x, pad, pad)).abs()


def _peel(kernels: torch.Tensor) -> int:
    """The smallest odd size whose outer rings each carry < ``RING_MASS`` of every class's kernel."""
    size = kernels.shape[-1]
    while size > 1:
        offset = (kernels.shape[-1] - size) // 2
        crop = kernels[:, offset : offset + size, offset : offset + size]
        ring = crop.sum(dim=(1, 2)) - crop[:, 1:-1, 1:-1].sum(dim=(1, 2))
        if float(ring.max()) >= RING_MASS:
            break
        size -= 2
    return size


def border_attenuation(kernels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(K, H, W): the share of each kernel's taps that fall inside an H×W image at every pixel (zero padding).

    1 in the interior; the expected darkening of a blurred image's border relative to its content.
    """
    k = kernels.shape[-1]
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    ones = torch.ones(1, 1, *shape, dtype=kernels.dtype, device=kernels.device)
    return torch.nn.functional.conv2d(ones, kernels[:, None], padding=k // 2)[0]


def _ring_drop(gray: torch.Tensor, depth: int, width: int) -> torch.Tensor:
    """Per image, 1 − (sum over the ring at distance depth..depth+width−1 from the border) / (the same
    pixels moved inward to distance depth+width): (N,) for float (N, H, W)."""
    _, h, w = gray.shape
    ring = torch.zeros(h, w, dtype=torch.bool, device=gray.device)
    outer, inner = depth, depth + width
    ring[outer : h - outer, outer : w - outer] = True
    ring[inner : h - inner, inner : w - inner] = False
    rows = torch.arange(h, device=gray.device).clamp(inner, h - 1 - inner)
    cols = torch.arange(w, device=gray.device).clamp(inner, w - 1 - inner)
    inward = gray[:, rows][:, :, cols][:, ring]
    return 1 - gray[:, ring].sum(dim=1) / inward.sum(dim=1).clamp_min(1e-6)


def border_trace(images: torch.Tensor, labels: torch.Tensor, num_classes: int, kernel_size: int) -> torch.Tensor:
    """Per class, the one-sample t statistic of a zero-padding trace of `kernel_size`: (K,) float64.

    Per image, the brightness drop of the outer ring of width p = k//2 towards the pixels at depth p,
    minus the same drop one ring further in (depth p..2p−1 towards 2p), which zero padding cannot
    reach: a natural brightness profile near the border moves both alike, a zero-padded blur only the
    first. The t statistic of these differences over a class is about N(0, 1) on clean images (it
    stayed below 3 on 600 clean CIFAR-10 images whose kernel search had found 9×9 kernels) and in
    the tens on blurred ones. Classes with fewer than 3 images get 0.

    Args:
        images: uint8 N×C×H×W with H, W > 4·(k//2); labels: int64 (N,).
    """
    pad = kernel_size // 2
    labels = labels.to(images.device)
    differences = torch.empty(len(images), dtype=torch.float64, device=images.device)
    for start in range(0, len(images), CHUNK):
        gray = images[start : start + CHUNK].double().mean(dim=1)
        differences[start : start + CHUNK] = _ring_drop(gray, 0, pad) - _ring_drop(gray, pad, pad)
    counts = torch.bincount(labels, minlength=num_classes).double()
    mean = torch.zeros(num_classes, dtype=torch.float64, device=images.device).index_add_(0, labels, differences)
    mean = mean / counts.clamp_min(1)
    square = torch.zeros_like(mean).index_add_(0, labels, (differences - mean[labels]).square())
    spread = (square / (counts - 1).clamp_min(1)).sqrt().clamp_min(1e-12)
    return torch.where(counts >= 3, mean / spread * counts.sqrt(), torch.zeros_like(mean))


def blurred_mask(images: torch.Tensor, labels: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Which images carry their class kernel's zero-padding border drop: bool (N,).

    Per image, ρ = (sum over the border ring of width k//2) / (the same pixels moved inward to
    depth k//2); a blurred image has ρ ≈ ρ₁, the ring's mean `border_attenuation` weighted by the
    inward pixels, a clean one ρ ≈ 1. An image is blurred when 1 − ρ exceeds half of 1 − ρ₁
    (measured 99.2% correct on CIFAR-10 CUDA with 50% of the images poisoned). Classes whose
    kernel darkens the ring by less than ``MIN_ATTENUATION`` count as not blurred.

    Args:
        images: uint8 N×C×H×W; labels: int64 (N,); kernels: (K, k, k).
    """
    _, _, h, w = images.shape
    pad = kernels.shape[-1] // 2
    device = images.device
    if pad == 0:
        return torch.zeros(len(images), dtype=torch.bool, device=device)
    ring = torch.zeros(h, w, dtype=torch.bool, device=device)
    ring[:pad], ring[-pad:], ring[:, :pad], ring[:, -pad:] = True, True, True, True
    inward_rows = torch.arange(h, device=device).clamp(pad, h - 1 - pad)
    inward_cols = torch.arange(w, device=device).clamp(pad, w - 1 - pad)
    attenuation = border_attenuation(kernels.to(device, torch.float64), (h, w))[:, ring]  # (K, P)
    labels = labels.to(device)
    out = torch.empty(len(images), dtype=torch.bool, device=device)
    for start in range(0, len(images), CHUNK):
        gray = images[start : start + CHUNK].double().mean(dim=1)
        inward = gray[:, inward_rows][:, :, inward_cols][:, ring]
        weight = inward.sum(dim=1).clamp_min(1e-6)
        drop = 1 - gray[:, ring].sum(dim=1) / weight
        expected = 1 - (attenuation[labels[start : start + CHUNK]] * inward).sum(dim=1) / weight
        out[start : start + CHUNK] = (expected >= MIN_ATTENUATION) & (drop > expected / 2)
    return out


def class_log_spectra(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per class, the log of the mean Hann-windowed power spectrum of the mean-normalised images.

    Args:
        images: uint8 N×C×H×W (any device); labels: int64 (N,) in 0..num_classes-1.

    Returns:
        float64 (num_classes, H, W//2+1) on the images' device (``rfft2`` layout, channels averaged).
    """
    _, _, h, w = images.shape
    device = images.device
    window = torch.outer(
        torch.hann_window(h, periodic=False, device=device), torch.hann_window(w, periodic=False, device=device)
    )
    total = torch.zeros(num_classes, h, w // 2 + 1, dtype=torch.float64, device=device)
    for start in range(0, len(images), CHUNK):
        y = images[start : start + CHUNK].float()
        y = y / y.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        y = (y - y.mean(dim=(2, 3), keepdim=True)) * window
        power = torch.fft.rfft2(y).abs().square().mean(dim=1).double()
        total.index_add_(0, labels[start : start + CHUNK].to(device), power)
    counts = torch.bincount(labels.to(device), minlength=num_classes).clamp_min(1)
    return (total / counts[:, None, None]).clamp_min(1e-12).log()


def _log_transfer(kernels: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """log |K(ω)|² of (..., k, k) kernels on the rfft2 grid of `shape`."""
    return torch.fft.rfft2(kernels, s=shape).abs().square().clamp_min(1e-6).log()


def _centred_misfit(residual: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean square of `residual` (..., H, W') after removing its weighted mean (a free constant)."""
    mean = (residual * weight).sum(dim=(-2, -1), keepdim=True) / weight.sum()
    return ((residual - mean).square() * weight).sum(dim=(-2, -1)) / weight.sum()


def _fit_kernels(
    target: torch.Tensor,
    shape: tuple[int, int],
    kernel_size: int,
    theta: torch.Tensor | None,
    generator: torch.Generator,
    restarts: int,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class, the k×k softmax kernel whose log|K|² best fits `target` (K, H, W') up to a constant.

    Returns (kernels (K, k, k), their logits (K, k·k) to warm-start the next round, misfit (K,)).
    """
    num_classes = target.shape[0]
    weight = torch.ones_like(target[0])
    weight[0, 0] = 0  # the DC term carries only the mean, which every image was normalised by
    logits = torch.randn(
        restarts, num_classes, kernel_size**2, generator=generator, device=generator.device, dtype=torch.float64
    ).to(target.device)
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


def _fit_size(
    log_spectra: torch.Tensor,
    shape: tuple[int, int],
    kernel_size: int,
    rounds: int,
    restarts: int,
    steps: int,
    seed: int,
) -> tuple[torch.Tensor, float]:
    """Alternate the shared clean spectrum and the class kernels; returns (kernels, mean misfit)."""
    generator = torch.Generator().manual_seed(seed)
    log_clean = log_spectra.mean(dim=0)
    theta = None
    for _ in range(rounds):
        kernels, theta, misfit = _fit_kernels(
            log_spectra - log_clean, shape, kernel_size, theta, generator, restarts, steps
        )
        log_clean = (log_spectra - _log_transfer(kernels, shape)).mean(dim=0)
    return kernels.float(), float(misfit.mean())


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of float B×C×H×W images divided by their mean absolute value: (B,)."""
    tv = (images[..., 1:, :] - images[..., :-1, :]).abs().mean(dim=(1, 2, 3)) + (
        images[..., :, 1:] - images[..., :, :-1]
    ).abs().mean(dim=(1, 2, 3))
    return tv / images.abs().mean(dim=(1, 2, 3)).clamp_min(1e-6)


def _resolve_flips(
    images: torch.Tensor, labels: torch.Tensor, kernels: torch.Tensor, regularization: float, per_class: int = 256
) -> torch.Tensor:
    """Per class, keep the kernel or its 180° rotation: the one whose deconvolution has the lower total variation."""
    chosen = []
    for c, kernel in enumerate(kernels):
        sample = images[torch.nonzero(labels == c).flatten()[:per_class]].float()
        candidates = torch.stack([kernel, kernel.flip(-2, -1)])
        scores = [
            total_variation(_tikhonov(sample, candidate.expand(len(sample), -1, -1), regularization)).mean()
            for candidate in candidates
        ]
        chosen.append(candidates[int(scores[1] < scores[0])])
    return torch.stack(chosen)


def _identity(size: int, like: torch.Tensor) -> torch.Tensor:
    """The (size, size) identity kernel, with the dtype and device of `like`."""
    identity = torch.zeros(size, size, dtype=like.dtype, device=like.device)
    identity[size // 2, size // 2] = 1
    return identity


def estimate_kernels(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    kernel_size: int | None = None,
    *,
    method: str = "border",
    mask: torch.Tensor | None = None,
    rounds: int = 6,
    restarts: int = 32,
    steps: int = 300,
    seed: int = 0,
) -> torch.Tensor:
    """Estimate every class's blur kernel from the poisoned images and their labels only.

    Args:
        images: uint8 N×C×H×W, values 0..255 (any device; the work runs there).
        labels: int64 (N,), every class 0..num_classes-1 present.
        num_classes: K.
        kernel_size: odd k; None searches: ``border`` fits ``MAX_KERNEL_SIZE`` (at most a third of
            the image) and peels light outer rings; ``spectrum`` tries ``KERNEL_SIZES`` and keeps
            the smallest whose misfit is less than ``SIZE_GAIN`` times the next size's. A ``border`` search that peels
            everything returns 1×1 identity kernels: no blur found.
        method: "border" or "spectrum" (see the module docstring).
        mask: ``border`` only: bool (N,), estimate from these images; a class with none of them
            gets the identity kernel.
        rounds, restarts, steps, seed: ``spectrum`` only: alternations of spectrum and kernels,
            random starts per class, Adam steps per round, and the seed of the starts.

    Returns:
        float32 (K, k, k) nonnegative kernels summing to 1, in ``conv2d`` (cross-correlation)
        orientation like the CUDA key, on the images' device. Deterministic.
    """
    if method not in METHODS:
        raise UserInputError(f"unknown deconv method {method!r}; choose one of {', '.join(METHODS)}")
    _check_inputs(images, labels, num_classes)
    h, w = images.shape[-2:]
    checked = (kernel_size,) if kernel_size else KERNEL_SIZES if method == "spectrum" else ()
    for size in checked:
        if size < 1 or size % 2 == 0 or size > min(h, w) // 2:
            raise UserInputError(f"--kernel-size {size} is invalid; use an odd size from 1 to {min(h, w) // 2}")
    if method == "spectrum":
        return _spectrum_kernels(images, labels, num_classes, kernel_size, rounds, restarts, steps, seed)
    means, counts = class_mean_images(images, labels, num_classes, mask)
    size = kernel_size or max(1, min(MAX_KERNEL_SIZE, (min(h, w) // 3 - 1) | 1))
    if kernel_size is None and size > 1:  # one fit at the largest size, at a middle basis size, finds k
        size = _peel(_fit_border(means, size, min(SEARCH_BASIS_SIZE, min(h, w) // 2)))
    kernels = _border_kernels(means, size) if size > 1 else torch.ones(num_classes, 1, 1, dtype=torch.float64)
    kernels = kernels.to(images.device)
    kernels[counts.to(images.device) == 0] = _identity(size, kernels)
    return kernels.float()


def _spectrum_kernels(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    kernel_size: int | None,
    rounds: int,
    restarts: int,
    steps: int,
    seed: int,
) -> torch.Tensor:
    """The ``spectrum`` estimator (see `estimate_kernels`)."""
    h, w = images.shape[-2:]
    log_spectra = class_log_spectra(images, labels, num_classes)
    fits = [
        _fit_size(log_spectra, (h, w), size, rounds, restarts, steps, seed)
        for size in (KERNEL_SIZES if kernel_size is None else (kernel_size,))
    ]
    kernels = next(
        (kernels for (kernels, misfit), (_, larger) in zip(fits, fits[1:]) if misfit < SIZE_GAIN * larger), fits[-1][0]
    )
    return _resolve_flips(images, labels.to(images.device), kernels, REGULARIZATION)


def _tikhonov(images: torch.Tensor, kernels: torch.Tensor, regularization: float) -> torch.Tensor:
    """Deconvolve float B×C×H×W `images` by per-image (B, k, k) correlation kernels; float, unclamped."""
    _, _, h, w = images.shape
    k = kernels.shape[-1]
    pad = k
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    shape = padded.shape[-2:]
    # conv2d correlates: y = x ⋆ s = x * flip(s); place flip(s) with its centre at the origin.
    transfer = torch.fft.rfft2(
        torch.roll(
            torch.nn.functional.pad(kernels.flip(-2, -1), (0, shape[1] - k, 0, shape[0] - k)),
            (-(k // 2), -(k // 2)),
            dims=(-2, -1),
        )
    )[:, None]
    spectrum = torch.fft.rfft2(padded) * transfer.conj() / (transfer.abs().square() + regularization)
    return torch.fft.irfft2(spectrum, s=shape)[..., pad : pad + h, pad : pad + w]


def wiener_deconvolve(
    images: torch.Tensor,
    labels: torch.Tensor,
    kernels: torch.Tensor,
    regularization: float = REGULARIZATION,
    zero_padded: bool = True,
) -> torch.Tensor:
    """Undo each image's class kernel: X = conj(G)·Y / (|G|² + λ), in batches on the images' device.

    With `zero_padded` (CUDA's blur), each image is first divided by its kernel's
    `border_attenuation`, which turns the darkened border into a normalised convolution. Without
    that step the class-specific dark border survives the deconvolution and is itself a shortcut:
    on the quick CIFAR-10 protocol, 29.4% vs 56.6% with it (clean training 57.8%).

    Args:
        images: uint8 N×C×H×W, values 0..255.
        labels: int64 (N,), indexes `kernels`.
        kernels: float (K, k, k), odd k, conv2d orientation (as ``estimate_kernels`` returns and the
            CUDA key stores), each normalised here to sum 1.
        regularization: λ > 0; larger is smoother and safer, smaller sharper and noisier.
        zero_padded: undo the zero-padding border first (see above).

    Returns:
        uint8 N×C×H×W on the images' device: the deconvolution clamped at 0 and rescaled per image
        so its max is 255 (an all-zero result stays 0).
    """
    validate_params("wiener_deconvolve", {"regularization": regularization}, {"regularization": POSITIVE})
    if kernels.dim() != 3 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise UserInputError(f"kernels must be (K, k, k) with odd k, got {tuple(kernels.shape)}")
    _check_inputs(images, labels, len(kernels), every_class=False)
    kernels = kernels.to(images.device, torch.float32)
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    attenuation = border_attenuation(kernels, (images.shape[-2], images.shape[-1])) if zero_padded else None
    out = torch.empty_like(images)
    for start in range(0, len(images), CHUNK):
        stop = start + CHUNK
        index = labels[start:stop].to(images.device)
        y = images[start:stop].float()
        if attenuation is not None:
            y = y / attenuation[index][:, None].clamp_min(1e-3)
        x = _tikhonov(y, kernels[index], regularization)
        x = x.clamp_min_(0)
        peak = x.amax(dim=(1, 2, 3), keepdim=True)
        peak.masked_fill_(peak == 0, 1.0)
        out[start:stop] = (x * (255.0 / peak)).round_().to(torch.uint8)
    return out


def blur_matrix(kernel: torch.Tensor, shape: tuple[int, int], padding: str = "zeros") -> torch.Tensor:
    """The blur of an H×W image by the (k, k) correlation `kernel` (conv2d semantics, the poison's),
    with "zeros" or "reflect" padding of k//2, as a float64 (H·W, H·W) matrix acting on row-major
    flattened images, on the kernel's device."""
    h, w = shape
    pad = kernel.shape[-1] // 2
    basis = torch.eye(h * w, dtype=torch.float64, device=kernel.device).view(h * w, 1, h, w)
    padded = torch.nn.functional.pad(
        basis, (pad, pad, pad, pad), mode="reflect" if padding == "reflect" else "constant"
    )
    columns = torch.nn.functional.conv2d(padded, kernel.double()[None, None])  # column j: the blur of pixel j
    return columns.view(h * w, h * w).t()


def neumann_laplacian(shape: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """‖∇x‖² as a quadratic form: the float64 (H·W, H·W) matrix DᵀD of the horizontal and vertical first
    differences of a row-major flattened H×W image (no difference across the border)."""

    def line(n: int) -> torch.Tensor:
        difference = torch.diff(torch.eye(n, dtype=torch.float64, device=device), dim=0)  # (n − 1, n)
        return difference.t() @ difference

    h, w = shape
    eye_h = torch.eye(h, dtype=torch.float64, device=device)
    eye_w = torch.eye(w, dtype=torch.float64, device=device)
    return torch.kron(eye_h, line(w)) + torch.kron(line(h), eye_w)


def exact_deconvolve(
    images: torch.Tensor,
    labels: torch.Tensor,
    kernels: torch.Tensor,
    regularization: float = EXACT_REGULARIZATION,
    padding: str = "zeros",
) -> torch.Tensor:
    """Undo each image's class blur as the exact linear map it was: x = (AᵀA + λL)⁻¹Aᵀy per class.

    A is `blur_matrix` of the class kernel with `padding` and L the `neumann_laplacian`; one Cholesky
    solve per class present, applied to all of its images in float64 on the images' device.

    Args:
        images: uint8 N×C×H×W, values 0..255, H·W ≤ ``MAX_EXACT_PIXELS``.
        labels: int64 (N,), indexes `kernels`.
        kernels: float (K, k, k), odd k, conv2d orientation, each normalised here to sum 1.
        regularization: λ > 0, the weight of the squared-gradient prior.
        padding: "zeros" (CUDA's) or "reflect" (the border-free variant).

    Returns:
        uint8 N×C×H×W on the images' device: the solution clamped at 0 and rescaled per image so its
        max is 255 (an all-zero result stays 0).
    """
    validate_params("exact_deconvolve", {"regularization": regularization}, {"regularization": POSITIVE})
    if kernels.dim() != 3 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0:
        raise UserInputError(f"kernels must be (K, k, k) with odd k, got {tuple(kernels.shape)}")
    _check_inputs(images, labels, len(kernels), every_class=False)
    n, channels, h, w = images.shape
    if h * w > MAX_EXACT_PIXELS:
        raise UserInputError(
            f"the exact inversion takes images of at most {MAX_EXACT_PIXELS} pixels, got {h}×{w}; "
            'use inversion="wiener" (or "auto")'
        )
    device = images.device
    kernels = kernels.to(device, torch.float64)
    kernels = kernels / kernels.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    prior = regularization * neumann_laplacian((h, w), device)
    labels = labels.to(device)
    out = torch.empty_like(images)
    for c in labels.unique().tolist():
        blur = blur_matrix(kernels[c], (h, w), padding)
        factor = torch.linalg.cholesky(blur.t() @ blur + prior)
        inverse = torch.cholesky_solve(blur.t(), factor).t()  # (M⁻¹Aᵀ)ᵀ: x = y @ inverse for row-vector images
        index = torch.nonzero(labels == c).flatten()
        for start in range(0, len(index), CHUNK):
            rows = index[start : start + CHUNK]
            x = (images[rows].double().reshape(-1, h * w) @ inverse).view(-1, channels, h, w).clamp_min_(0)
            peak = x.amax(dim=(1, 2, 3), keepdim=True)
            peak.masked_fill_(peak == 0, 1.0)
            out[rows] = (x * (255.0 / peak)).round_().to(torch.uint8)
    return out


class Deconvolver(Configurable):
    """Blind deconvolution as a fitted estimator (scikit-learn style): `fit` estimates each class's
    blur kernel from a poisoned training set, `transform` deconvolves a set with those kernels.

    ``method="border"``: `fit` estimates from all images, finds the blurred ones (`blurred_mask`),
    and estimates again from those alone (so partial poisoning does not dilute the kernels);
    `transform` deconvolves only the images `blurred_mask` finds blurred under the fitted kernels,
    as zero-padded blurs. ``method="spectrum"``: every image, as reflection-padded blurs.
    Deterministic.

    Args:
        kernel_size: odd k, or None to search (see `estimate_kernels`).
        regularization: λ > 0 of the inversion; None takes ``EXACT_REGULARIZATION`` for the exact
            inversion and ``REGULARIZATION`` for Wiener's.
        method: kernel estimator, "border" or "spectrum".
        inversion: "auto", "exact" or "wiener" (see the module docstring); "auto" resolves at `fit`.

    Attributes (set by `fit`, or `from_state_dict`):
        kernels_: float32 (K, k, k) estimated kernels (conv2d orientation, each summing to 1).
        kernel_size_: the fitted k (the searched size when `kernel_size` is None).
        blurred_: bool (N,) the fitted images the kernels were estimated from (``border``: those
            the first estimate found blurred; ``spectrum``: all), or None after `from_state_dict`.
    """

    PARAMETER_CONSTRAINTS = {
        "kernel_size": Options(None, Interval(int, 1, odd=True)),
        "regularization": Options(None, POSITIVE),
        "method": StrOptions(METHODS),
        "inversion": StrOptions(INVERSIONS),
    }
    kernels_: torch.Tensor
    kernel_size_: int
    blurred_: torch.Tensor | None
    inversion_: str
    regularization_: float

    def __init__(
        self,
        kernel_size: int | None = None,
        regularization: float | None = None,
        method: str = "border",
        inversion: str = "auto",
    ) -> None:
        self._validate(kernel_size=kernel_size, regularization=regularization, method=method, inversion=inversion)
        self.kernel_size = kernel_size
        self.regularization = None if regularization is None else float(regularization)
        self.method = method
        self.inversion = inversion

    def fit(self, dataset: ImageDataset) -> Deconvolver:
        """Estimate the class kernels of the poisoned `dataset` (every class present); returns self."""
        images, labels, num_classes = dataset.images, dataset.labels, dataset.num_classes
        kernels = estimate_kernels(images, labels, num_classes, self.kernel_size, method=self.method)
        blurred = torch.ones(len(images), dtype=torch.bool, device=images.device)
        size = kernels.shape[-1]
        if self.method == "border" and size > 1:
            traced = border_trace(images, labels, num_classes, size) >= MIN_TRACE_T
            kernels[~traced] = _identity(size, kernels)
            blurred = blurred_mask(images, labels, kernels)
            kernels = estimate_kernels(images, labels, num_classes, size, mask=blurred)
            if not bool(traced.any()):
                kernels = torch.ones(num_classes, 1, 1, device=kernels.device)
        self.kernels_, self.kernel_size_, self.blurred_ = kernels, int(kernels.shape[-1]), blurred
        h, w = images.shape[-2:]
        self.inversion_ = (
            ("exact" if h * w <= MAX_EXACT_PIXELS else "wiener") if self.inversion == "auto" else self.inversion
        )
        default = EXACT_REGULARIZATION if self.inversion_ == "exact" else REGULARIZATION
        self.regularization_ = default if self.regularization is None else self.regularization
        return self

    def transform(self, dataset: ImageDataset) -> ImageDataset:
        """A new ImageDataset (same labels and classes) with the blurred images deconvolved.

        ``meta`` keeps the input's and adds ``deconv`` = `state_dict` plus "deconvolved" (how many
        images were deconvolved). Raises UserInputError before `fit`.
        """
        if not hasattr(self, "kernels_"):
            raise UserInputError(
                f"this {type(self).__name__} is not fitted yet: call fit(training_set) first "
                "(or build it with Deconvolver.from_state_dict)"
            )
        out, mask = deconvolve_blurred(
            dataset.images, dataset.labels, self.kernels_, self.regularization_, self.method, self.inversion_
        )
        record = {**self.state_dict(), "deconvolved": int(mask.sum())}
        return ImageDataset(out, dataset.labels.clone(), list(dataset.classes), {**dataset.meta, "deconv": record})

    def fit_transform(self, dataset: ImageDataset) -> ImageDataset:
        """`fit` on `dataset`, then `transform` it: the deconv defense."""
        return self.fit(dataset).transform(dataset)

    def state_dict(self) -> dict[str, Any]:
        """The fitted state, JSON-ready: {"kernels": (K, k, k) nested list, "kernel_size", "regularization",
        "method", "inversion"} (λ and inversion as resolved).

        The keys of the meta ``deconv`` record (which adds "deconvolved"); `from_state_dict` replays it exactly.
        """
        if not hasattr(self, "kernels_"):
            raise UserInputError(f"this {type(self).__name__} is not fitted yet: call fit(training_set) first")
        return {
            "kernels": self.kernels_.cpu().tolist(),
            "kernel_size": self.kernel_size_,
            "regularization": self.regularization_,
            "method": self.method,
            "inversion": self.inversion_,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Deconvolver:
        """A fitted Deconvolver from `state_dict`'s output or a meta ``deconv`` record (method "border" and
        inversion "wiener" if absent: records written before the exact inversion replay as they were made)."""
        kernels = torch.tensor(state["kernels"], dtype=torch.float32)
        inversion = state.get("inversion", "wiener")
        fitted = cls(int(kernels.shape[-1]), float(state["regularization"]), state.get("method", "border"), inversion)
        fitted.kernels_, fitted.kernel_size_, fitted.blurred_ = kernels, int(kernels.shape[-1]), None
        fitted.inversion_, fitted.regularization_ = inversion, float(state["regularization"])
        return fitted


def recover(
    dataset: ImageDataset,
    kernel_size: int | None = None,
    regularization: float | None = None,
    method: str = "border",
    inversion: str = "auto",
) -> ImageDataset:
    """Estimate the class kernels of `dataset` and deconvolve its blurred images: `Deconvolver.fit_transform`.

    Returns:
        A new ImageDataset (same labels and classes); ``meta`` keeps the input's and adds
        ``deconv`` = {"kernels": estimated (K, k, k) list, "kernel_size", "regularization",
        "method", "inversion", "deconvolved": how many images were deconvolved}.
    """
    return Deconvolver(kernel_size, regularization, method, inversion).fit_transform(dataset)


def deconvolve_blurred(
    images: torch.Tensor,
    labels: torch.Tensor,
    kernels: torch.Tensor,
    regularization: float = EXACT_REGULARIZATION,
    method: str = "border",
    inversion: str = "exact",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deconvolve the images `method` counts as blurred: ``border`` those `blurred_mask` finds, as
    zero-padded blurs (their trace), ``spectrum`` every one, as reflection-padded blurs; by the
    ``exact`` or the ``wiener`` `inversion` (resolved, not "auto").

    Returns:
        (a uint8 N×C×H×W copy of `images` with those deconvolved, the bool (N,) mask of them).
    """
    mask = (
        blurred_mask(images, labels, kernels)
        if method == "border"
        else torch.ones(len(images), dtype=torch.bool, device=images.device)
    )
    out = images.clone()
    if bool(mask.any()):
        chosen, chosen_labels = images[mask], labels.to(mask.device)[mask]
        out[mask] = (
            exact_deconvolve(
                chosen, chosen_labels, kernels, regularization, "zeros" if method == "border" else "reflect"
            )
            if inversion == "exact"
            else wiener_deconvolve(chosen, chosen_labels, kernels, regularization, zero_padded=method == "border")
        )
    return out, mask


def replay(dataset: ImageDataset, record: dict[str, Any]) -> ImageDataset:
    """`recover`'s output again from its meta ``deconv`` `record` (kernels known: no estimation, fast).

    The output's meta ``deconv`` is `record` itself.
    """
    out = Deconvolver.from_state_dict(record).transform(dataset)
    return ImageDataset(out.images, out.labels, out.classes, {**dataset.meta, "deconv": record})


def diagnostics(poisoned: ImageDataset, recovered: ImageDataset, clean: ImageDataset | None) -> dict[str, Any]:
    """How well `recovered` (``recover``'s output) undid `poisoned`, judged with its key and clean source.

    Returns a dict: deconvolved / poisoned / hits (poisoned images deconvolved) / false_alarms
    (clean images deconvolved) counts, and per class lists (None where unknown): kernel_error
    (relative L2, when the key's kernels have the estimated size), psnr_poisoned and
    psnr_recovered (dB vs clean, mean over the poisoned images), plus their means.
    """
    estimated = torch.tensor(recovered.meta["deconv"]["kernels"], dtype=torch.float32)
    true = torch.tensor(poisoned.meta["kernels"], dtype=torch.float32) if "kernels" in poisoned.meta else None
    changed = (recovered.images != poisoned.images).flatten(1).any(dim=1).cpu()
    blurred = torch.zeros(len(poisoned), dtype=torch.bool)
    if true is not None:
        blurred[torch.tensor(poisoned.meta.get("poisoned_indices", range(len(poisoned))), dtype=torch.long)] = True
    errors = kernel_errors(estimated, true) if true is not None and true.shape == estimated.shape else None
    result: dict[str, Any] = {
        "deconvolved": int(changed.sum()),
        "poisoned": int(blurred.sum()) if true is not None else None,
        "hits": int((changed & blurred).sum()),
        "false_alarms": int((changed & ~blurred).sum()),
        "kernel_error": None if errors is None else errors.tolist(),
        "mean_kernel_error": None if errors is None else float(errors.mean()),
    }
    if clean is not None and true is not None and bool(blurred.any()):
        labels = poisoned.labels.cpu()
        scores = {
            "psnr_poisoned": psnr_per_image(poisoned.images, clean.images).cpu(),
            "psnr_recovered": psnr_per_image(recovered.images, clean.images).cpu(),
        }
        for name, values in scores.items():
            result[name] = [
                float(values[(labels == c) & blurred].mean()) if bool(((labels == c) & blurred).any()) else None
                for c in range(poisoned.num_classes)
            ]
            result[f"mean_{name}"] = float(values[blurred].mean())
    return result


class Deconvolve(Deconvolver):
    """The ``deconv`` preprocessing defense: a fresh `Deconvolver` with these settings, fitted on the
    whole training set and applied to it (calling it twice fits twice; it keeps no state).

    Args:
        kernel_size: odd k, or None to search.
        regularization: λ > 0 of the inversion, or None for its default.
        method: kernel estimator, "border" or "spectrum".
        inversion: "auto", "exact" or "wiener".
    """

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        return Deconvolver(self.kernel_size, self.regularization, self.method, self.inversion).fit_transform(dataset)


DeconvolveSpectrum = functools.partial(Deconvolve, method="spectrum")
"""The "deconv-spectrum" defense: `Deconvolve` with kernels estimated from the class power spectra."""


def kernel_errors(estimated: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per class ‖ŝ − s‖ / ‖s‖ with both (K, k, k) kernel stacks normalised to sum 1: (K,)."""
    estimated = estimated / estimated.sum(dim=(1, 2), keepdim=True)
    true = true / true.sum(dim=(1, 2), keepdim=True)
    return (estimated - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)
