"""Does a dataset look convolution-poisoned? Two statistics, both against a clean reference (SPEC §8).

1. Spectral (the verdict). A class-wise blur multiplies every image of class c by the same transfer
   function K̂_c(ω), so the class's mean log-power spectrum moves by log|K̂_c(ω)|² — a smooth,
   kernel-shaped surface — while the within-class spread of the log-spectra stays what it was (a
   convolution adds a constant to every image's log-spectrum). Per class c, the mean log-spectrum of
   DATA minus that of the clean reference's class c, with the shift common to all classes removed
   (a global blur or a different JPEG quality cancels), is least-squares fitted by the cosines
   cos(a·ω_y + b·ω_x) with |a|, |b| ≤ KERNEL_LAG: the log-spectrum shapes a small kernel makes. The
   score is the fitted part's energy in units of its sampling noise (a χ²/dof; clean data score
   0.2-0.6, the share of the correlated noise of neighbouring frequencies that the fit absorbs). DATA looks convolution-poisoned
   when the score reaches SPECTRAL_THRESHOLD and the within-class spread did not shrink with the shift.
   Additive class-wise perturbations (OPS, random noise) shift class spectra too, but adding power n to
   an image of power P raises its log-power by log(1 + n/P) and shrinks the spread of log-power by the
   factor 1/(1 + n/P): the log variance falls by about twice the rise. A convolution moves only the
   mean (uint8 truncation adds a little noise). Measured nats of spread lost per nat of shift
   (bench/eval_detect.py): convolutions ≤ 0.23 (the most: k 5 on Fashion-MNIST, where requantising
   the blurred dark images adds noise), class-wise noise 0.30-0.55, OPS 0.39-1.15, but AR noise —
   additive noise that is itself class-wise filtered — only ≤ 0.19, so AR passes as a convolution.
2. Edge pixels (evidence; COIN's EPD idea). Zero padding plus max-normalisation darken and shift each
   poisoned image's outermost rows and columns relative to the lines one pixel inside. Per image and
   channel, 4 features: log((edge mean + 1) / (inside mean + 1)) for the top, bottom, left and right
   edge (12 for RGB). A logistic-regression detector is trained at detect time on the reference's
   clean images against copies poisoned with fresh random keys (REFERENCE_VARIANTS) — never with
   DATA's key, which a data owner or trainer does not have — and its false- and true-positive rates
   are measured on a held-out half of the reference.

Why a reference. Without clean images of the same classes, a class whose images are all blurred is
indistinguishable from a class that is naturally smooth (clean Fashion-MNIST classes differ more from
one another in spectrum than a CUDA kernel changes them), and DATA cannot be its own reference: a
detector trained on DATA-versus-DATA-poisoned-again learns to call DATA clean. The default reference
is DATA's own test split, which CUDA and `unlearnable poison` leave clean; a source without a test
split needs ``reference=`` (same classes, same image size, same source and processing). If the
reference were poisoned with DATA's kernels, both statistics would miss it.

Small sets. The spectral statistic loses power with few images per class (its noise is the class means'
sampling noise): measured on CUDA-protected CIFAR-10 subsets against the 10,000-image test split, the
score is 0.7-1.0 at 3-5 images per class and 1.3-3.4 at 10-20, so below MIN_SPECTRAL_PER_CLASS a
"no" from it says little. The within-class spread is corrected for the bias of a log sample variance,
E[log s²] ≈ log σ² − 1/(n−1) − κ/(2n) (κ: the excess kurtosis of the log-spectra, pooled per
frequency); without it a class of 5 images reads about 0.37 nats "narrower" than the reference and a
small convolved set failed the spread test. The edge statistic works per image, so it decides small
sets: DATA also looks convolution-poisoned when the edge detector separates the held-out reference
halves (true- minus false-positive rate ≥ EDGE_SEPARATION), flags DATA's images far above its
false-positive rate (one-sided binomial z ≥ EDGE_Z) and puts the poisoned share at EDGE_MIN_SHARE or
more. Additive poisons do not darken zero-padded borders, so this vote adds no false "convolution" for
them. When neither statistic can speak (too few images per class, an edge detector that does not
separate), the verdict says it cannot tell instead of "no sign".

The thresholds were calibrated on clean data: bench/eval_detect.py --calibrate draws class-balanced
subsets of the CIFAR-10 (JPEG copy) and Fashion-MNIST test splits and compares each with the rest of
its split; it prints the null distribution of the score. COMPRESSION_LIMIT sits between the
convolutions and the class-wise noise / OPS poisons of bench/eval_detect.py, nearer the noise: calling
an additive poison a convolution is the cheaper mistake (the data is poisoned either way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unlearnable.analysis.spectra import log_power_spectrum
from unlearnable.attacks.apply import poison_dataset
from unlearnable.data import ImageDataset, check_labels, stratified_subset
from unlearnable.errors import UserInputError

EDGES = ("top", "bottom", "left", "right")
KERNEL_LAG = 3
"""Cosine lags of the kernel fit: 3 fits the log-spectrum of a 3×3 kernel to ~95% (5×5 to ~80%)."""
SPECTRAL_THRESHOLD = 1.0
"""Score at which DATA looks convolution-poisoned; clean data: mean ~0.3, max 0.6 (bench/eval_detect.py --calibrate)."""
COMPRESSION_LIMIT = 0.3
"""A class-wise shift that lowers the mean log within-class variance by more than this many nats per nat
(rms) of kernel-shaped shift looks additive, not like a convolution."""
MIN_SPECTRAL_PER_CLASS = 10
"""Images per class below which the spectral test has too little power to clear a convolution (see above)."""
EDGE_SEPARATION = 0.5
"""The edge detector votes only when its held-out true-positive rate exceeds its false-positive rate by this."""
EDGE_Z = 4.0
"""One-sided binomial z of DATA's flagged count over the detector's (Laplace-smoothed) false-positive rate;
4 keeps a clean set's chance of a false vote below 1e-4 at any size."""
EDGE_MIN_SHARE = 0.5
"""Estimated poisoned share at which the edge statistic calls DATA poisoned (most images, as a protection is)."""
MAX_IMAGES = 10_000
"""DATA and the reference are cut to a class-balanced subset of at most this many images."""
LOG_EPS = 1.0
"""Added to the power (uint8 units²) before the log; below the quantisation noise of any real image."""
REFERENCE_VARIANTS: dict[str, Any] = {
    "attacks": ("cuda", "vuda", "huda"),
    "kernel_sizes": (3, 3, 5),
    "blur_parameter": (0.05, 0.5),
    "grayscale_probability": 0.25,
    "groups": 8,
}
"""Fresh random keys for the edge detector's training set: each of `groups` parts of a reference half gets
an attack and a kernel size drawn from these lists, p_b ~ U(blur_parameter), grayscale CUDA with the given
probability (RGB only) and a random seed."""


# --- features ---------------------------------------------------------------------------------


def edge_features(images: torch.Tensor) -> torch.Tensor:
    """Per image and channel, log((edge line mean + 1) / (line one pixel inside mean + 1)), 0..255 scale.

    Args:
        images: uint8 N×C×H×W, H, W ≥ 3 (any device; only the 8 lines are read).

    Returns:
        float32 N×(4·C), ordered channel-major: [c0 top, c0 bottom, c0 left, c0 right, c1 top, ...].
        A clean image's values scatter around 0; a zero-padded blur makes them negative.
    """
    h, w = images.shape[-2:]

    def lines(d: int) -> torch.Tensor:  # N×C×4 means of the lines d pixels in from each edge
        return torch.stack(
            [
                images[:, :, d, :].float().mean(-1),
                images[:, :, h - 1 - d, :].float().mean(-1),
                images[:, :, :, d].float().mean(-1),
                images[:, :, :, w - 1 - d].float().mean(-1),
            ],
            -1,
        )

    return torch.log((lines(0) + 1) / (lines(1) + 1)).flatten(1)


def log_spectra(images: torch.Tensor) -> torch.Tensor:
    """Per image: log power spectrum of the Hann-windowed channel mean, DC dropped, mean over frequencies removed.

    The channel mean of a depthwise blur is the blur of the channel mean, so the kernel survives;
    removing each image's mean log-power cancels CUDA's per-image max-normalisation and contrast.

    Args:
        images: uint8 or float N×C×H×W (0..255 scale), any device.

    Returns:
        float32 N×M on the same device, M = H·(W//2 + 1) − 1 (``torch.fft.rfft2`` order, DC removed).
    """
    x = images.float().mean(1)
    x = x - x.mean((1, 2), keepdim=True)
    h, w = x.shape[1:]
    window = torch.outer(
        torch.hann_window(h, periodic=False, device=x.device), torch.hann_window(w, periodic=False, device=x.device)
    )
    log_power = log_power_spectrum(x * window, LOG_EPS, onesided=True).flatten(1)[:, 1:]
    return log_power - log_power.mean(1, keepdim=True)


def frequencies(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular frequencies (ω_y, ω_x) in radians/pixel of the M entries `log_spectra` returns."""
    wy = 2 * math.pi * torch.fft.fftfreq(h, dtype=torch.float64)[:, None].expand(h, w // 2 + 1)
    wx = 2 * math.pi * torch.fft.rfftfreq(w, dtype=torch.float64)[None, :].expand(h, w // 2 + 1)
    return wy.flatten()[1:], wx.flatten()[1:]


def kernel_basis(h: int, w: int, lag: int = KERNEL_LAG) -> torch.Tensor:
    """A constant plus cos(a·ω_y + b·ω_x) for every lag (a, b) ≠ 0 with |a|, |b| ≤ lag, up to sign.

    Returns:
        float64 M×(1 + 2·lag² + 2·lag) on the CPU.
    """
    wy, wx = frequencies(h, w)
    lags = [(a, b) for a in range(lag + 1) for b in range(-lag, lag + 1) if a > 0 or b > 0]
    return torch.stack([torch.ones_like(wy)] + [torch.cos(a * wy + b * wx) for a, b in lags], 1)


# --- spectral statistic -----------------------------------------------------------------------


@dataclass
class ClassSpectra:
    """Per-class moments of `log_spectra`, float64 on the CPU.

    Attributes:
        count: (K,) images per class.
        mean: K×M class-mean log-spectra (zero for an empty class).
        m2: K×M sums of squared deviations from the class mean.
        m4: K×M sums of fourth powers of those deviations (None when not accumulated).
    """

    count: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor
    m4: torch.Tensor | None = None

    def variance(self) -> torch.Tensor:
        """K×M within-class sample variance (classes with fewer than 2 images: NaN)."""
        return self.m2 / (self.count - 1).clamp(min=0)[:, None]


def class_spectra(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, device: str | torch.device = "cpu", chunk: int = 2048
) -> ClassSpectra:
    """Accumulate per-class sums of `log_spectra` over chunks of `images` (uint8 N×C×H×W, labels int64 (N,))."""
    powers: list[torch.Tensor] = []  # per class, sums of x, x², x³, x⁴
    for start in range(0, len(images), chunk):
        spectra = log_spectra(images[start : start + chunk].to(device)).double()
        y = labels[start : start + chunk].to(spectra.device)
        if not powers:
            powers = [spectra.new_zeros(num_classes, spectra.shape[1]) for _ in range(4)]
        for k, total in enumerate(powers, 1):
            total.index_add_(0, y, spectra.pow(k))
    if not powers:
        raise UserInputError("the dataset has no images; give a non-empty dataset")
    s1, s2, s3, s4 = (total.cpu() for total in powers)
    count = torch.bincount(labels, minlength=num_classes).double()
    n = count.clamp(min=1)[:, None]
    mean = s1 / n
    m4 = s4 - 4 * mean * s3 + 6 * mean.square() * s2 - 3 * n * mean.pow(4)
    return ClassSpectra(count, mean, (s2 - s1 * mean).clamp(min=0), m4.clamp(min=0))


@dataclass
class SpectralEvidence:
    """What the per-class spectra say. Arrays cover the classes used (``classes``).

    Attributes:
        score: mean over classes and frequencies of (kernel-shaped class-wise shift)² / its variance
            under the null (clean data: 0.2-0.6); the verdict's statistic.
        chi2: the same for the whole class-wise shift (clean data ≈ 1).
        kernel_fit: fraction of the class-wise shift's variance the kernel basis explains.
        shift: rms of the kernel-shaped fit, in nats (log power ratio).
        spread: mean log(within-class variance of DATA / of the reference), corrected for the small-sample
            bias of a log variance (`log_variance_bias`): ~0 under a convolution, about −2 × the rise in
            log-power under an additive perturbation.
        classes: indices of the classes with at least 2 images in both DATA and the reference.
        per_class: name → list over ``classes`` of score, chi2, kernel_fit, shift, spread.
        ratio: K'×M class-wise log-spectrum shift (float64); fitted: its kernel-basis fit.
    """

    score: float
    chi2: float
    kernel_fit: float
    shift: float
    spread: float
    classes: list[int]
    per_class: dict[str, list[float]]
    ratio: torch.Tensor
    fitted: torch.Tensor


def spectral_evidence(
    data: ClassSpectra, reference: ClassSpectra, h: int, w: int, lag: int = KERNEL_LAG
) -> SpectralEvidence:
    """Compare DATA's per-class spectra with the clean reference's (same classes, same H×W)."""
    used = torch.nonzero((data.count >= 2) & (reference.count >= 2)).flatten()
    k = len(used)
    if k < 2:
        raise UserInputError(
            "fewer than 2 classes have 2 or more images in both the data and the reference; "
            "the spectral test compares classes, give more images per class"
        )
    nd, nr = data.count[used][:, None], reference.count[used][:, None]
    pooled = (data.m2[used] + reference.m2[used]) / (nd + nr - 2)
    noise = pooled * (1 / nd + 1 / nr) * (k - 1) / k  # variance of a class-wise shift under the null
    shift = data.mean[used] - reference.mean[used]
    ratio = shift - shift.mean(0)  # the class-wise part: a shift shared by all classes cancels
    basis = kernel_basis(h, w, lag)
    fitted = (basis @ torch.linalg.lstsq(basis, ratio.T).solution).T
    fitted = fitted - fitted.mean(1, keepdim=True)  # a per-class constant is not kernel-shaped
    centred = ratio - ratio.mean(1, keepdim=True)
    score_c = (fitted.square() / noise).mean(1)
    chi2_c = (ratio.square() / noise).mean(1)
    fit_c = fitted.square().sum(1) / centred.square().sum(1).clamp(min=1e-12)
    bias = log_variance_bias(nd, pooled_kurtosis(data, reference, used)) - log_variance_bias(
        nr, pooled_kurtosis(data, reference, used)
    )
    spread_c = (torch.log(data.variance()[used] / reference.variance()[used]) - bias).mean(1)
    per_class = {
        "score": score_c.tolist(),
        "chi2": chi2_c.tolist(),
        "kernel_fit": fit_c.tolist(),
        "shift": fitted.square().mean(1).sqrt().tolist(),
        "spread": spread_c.tolist(),
    }
    return SpectralEvidence(
        float(score_c.mean()),
        float(chi2_c.mean()),
        float(fitted.square().sum() / centred.square().sum().clamp(min=1e-12)),
        float(fitted.square().mean().sqrt()),
        float(spread_c.mean()),
        used.tolist(),
        per_class,
        ratio,
        fitted,
    )


def pooled_kurtosis(data: ClassSpectra, reference: ClassSpectra, used: torch.Tensor) -> torch.Tensor:
    """(M,) excess kurtosis of the log-spectra within classes, pooled over the used classes of both sets.

    Zero (the Gaussian value) when fourth moments were not accumulated.
    """
    if data.m4 is None or reference.m4 is None:
        return torch.zeros(data.mean.shape[1], dtype=torch.float64)
    n = data.count[used].sum() + reference.count[used].sum()
    m2 = (data.m2[used].sum(0) + reference.m2[used].sum(0)) / n
    m4 = (data.m4[used].sum(0) + reference.m4[used].sum(0)) / n
    return m4 / m2.square().clamp(min=1e-12) - 3


def log_variance_bias(n: torch.Tensor, kurtosis: torch.Tensor) -> torch.Tensor:
    """E[log s²] − log σ² of the unbiased sample variance of n values (delta method): −1/(n−1) − κ/(2n)."""
    return -1 / (n - 1) - kurtosis / (2 * n)


def looks_convolved(spectral: SpectralEvidence) -> bool:
    """The verdict: a kernel-shaped class-wise shift (score ≥ SPECTRAL_THRESHOLD) that kept the spread."""
    return spectral.score >= SPECTRAL_THRESHOLD and spectral.spread >= -COMPRESSION_LIMIT * spectral.shift


# --- edge statistic ---------------------------------------------------------------------------


@dataclass
class EdgeDetector:
    """Logistic regression on standardised `edge_features`: logit = ((f − mean) / std) · weight + bias."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """float N×F features → float64 (N,) logits (> 0: looks poisoned)."""
        z = (features.double().cpu() - self.mean) / self.std
        return z @ self.weight + self.bias

    def flag(self, images: torch.Tensor) -> torch.Tensor:
        """bool (N,): which of the uint8 N×C×H×W images look convolution-poisoned at their edges."""
        return self.logits(edge_features(images)) > 0


def fit_logistic(features: torch.Tensor, targets: torch.Tensor, l2: float = 1e-3) -> EdgeDetector:
    """Full-batch L-BFGS logistic regression with an L2 penalty on the weights (float64, CPU).

    Args:
        features: float N×F; targets: (N,) in {0, 1}.
    """
    x = features.double().cpu()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    z, y = (x - mean) / std, targets.double().cpu()
    params = torch.zeros(z.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ params[:-1] + params[-1], y) + l2 * params[:-1].square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = params.detach()
    return EdgeDetector(mean, std, weights[:-1], float(weights[-1]))


def poison_with_random_keys(
    ds: ImageDataset, rng: np.random.Generator, groups: int, device: str | torch.device | None = None
) -> torch.Tensor:
    """Split `ds` into `groups` random parts and poison each with a fresh key drawn as REFERENCE_VARIANTS says.

    Returns:
        uint8 N×C×H×W: every image poisoned, in `ds` order.
    """
    out = torch.empty_like(ds.images, memory_format=torch.contiguous_format)
    v = REFERENCE_VARIANTS
    for part in np.array_split(rng.permutation(len(ds)), groups):
        if len(part) == 0:
            continue
        part = np.sort(part)
        sizes = [s for s in v["kernel_sizes"] if s <= min(ds.shape[1:])] or [1]
        params = {
            "kernel_size": int(rng.choice(sizes)),
            "blur_parameter": float(rng.uniform(*v["blur_parameter"])),
            "seed": int(rng.integers(2**31)),
            "grayscale": bool(ds.shape[0] == 3 and rng.random() < v["grayscale_probability"]),
        }
        attack = str(rng.choice(v["attacks"]))
        out[torch.from_numpy(part)] = poison_dataset(
            ds.subset(part), attack, device=device, progress=False, **params
        ).images
    return out


@dataclass
class EdgeEvidence:
    """What the edge pixels say.

    Attributes:
        flagged: fraction of DATA's images the detector flags.
        reference_fpr / reference_tpr: flagged fractions of the held-out reference half, clean and
            poisoned with fresh keys.
        poisoned_share: (flagged − fpr) / (tpr − fpr) clipped to [0, 1]; None when the detector does not
            separate the held-out halves (tpr − fpr < 0.2: e.g. black image borders).
        per_class: flagged fraction per class (all K classes; NaN for an empty class).
        data_edges / reference_edges: mean feature per edge (averaged over channels), DATA vs clean reference.
        images: DATA's image count; held_out: the held-out reference half's (the rates' denominators).
    """

    flagged: float
    reference_fpr: float
    reference_tpr: float
    poisoned_share: float | None
    per_class: list[float]
    data_edges: list[float]
    reference_edges: list[float]
    images: int = 0
    held_out: int = 0

    def z(self) -> float:
        """One-sided binomial z of the flagged count over the false-positive rate (Laplace-smoothed: never 0)."""
        p0 = (self.reference_fpr * self.held_out + 1) / (self.held_out + 2)
        return (self.flagged - p0) * math.sqrt(self.images) / math.sqrt(p0 * (1 - p0))

    def separates(self) -> bool:
        """Whether the detector tells the held-out clean and fresh-key poisoned reference images apart."""
        return self.reference_tpr - self.reference_fpr >= EDGE_SEPARATION

    def says_convolved(self) -> bool:
        """The edge vote: a separating detector, flags far above its false-positive rate, most images poisoned."""
        return (
            self.separates()
            and self.z() >= EDGE_Z
            and self.poisoned_share is not None
            and self.poisoned_share >= EDGE_MIN_SHARE
        )


def train_edge_detector(
    reference: ImageDataset, seed: int = 0, device: str | torch.device | None = None
) -> tuple[EdgeDetector, float, float]:
    """Train on one half of `reference` (clean vs fresh-key poisoned), measure on the other half.

    Returns:
        (detector, false-positive rate, true-positive rate), the rates on the held-out half (len(reference) // 2 images).
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(reference))
    halves = [reference.subset(np.sort(h)) for h in np.array_split(order, 2)]
    groups = REFERENCE_VARIANTS["groups"]
    poisoned = [poison_with_random_keys(h, rng, groups, device) for h in halves]
    clean_fit, poison_fit = edge_features(halves[0].images), edge_features(poisoned[0])
    detector = fit_logistic(
        torch.cat([clean_fit, poison_fit]), torch.cat([torch.zeros(len(clean_fit)), torch.ones(len(poison_fit))])
    )
    fpr = float(detector.flag(halves[1].images).double().mean())
    tpr = float(detector.flag(poisoned[1]).double().mean())
    return detector, fpr, tpr


def edge_evidence(
    data: ImageDataset, reference: ImageDataset, seed: int = 0, device: str | torch.device | None = None
) -> EdgeEvidence:
    """Train the edge detector on `reference` and apply it to every image of `data`."""
    detector, fpr, tpr = train_edge_detector(reference, seed, device)
    features = edge_features(data.images)
    flags = (detector.logits(features) > 0).double()
    counts = torch.bincount(data.labels, minlength=data.num_classes).double()
    per_class = torch.zeros(data.num_classes, dtype=torch.float64).index_add_(0, data.labels, flags) / counts
    flagged = float(flags.mean())
    share = min(1.0, max(0.0, (flagged - fpr) / (tpr - fpr))) if tpr - fpr >= 0.2 else None
    return EdgeEvidence(
        flagged,
        fpr,
        tpr,
        share,
        per_class.tolist(),
        mean_per_edge(features),
        mean_per_edge(edge_features(reference.images)),
        len(data),
        len(reference) // 2,
    )


def mean_per_edge(features: torch.Tensor) -> list[float]:
    """N×(4·C) `edge_features` → their mean per edge (top, bottom, left, right) over images and channels."""
    return features.view(len(features), -1, 4).mean((0, 1)).tolist()


# --- the detection ----------------------------------------------------------------------------


def match_reference(reference: ImageDataset, data: ImageDataset) -> ImageDataset:
    """`reference` with DATA's channel count (RGB → channel mean, gray → replicated); checks size and classes."""
    (c, h, w), (rc, rh, rw) = data.shape, reference.shape
    if (rh, rw) != (h, w):
        raise UserInputError(
            f"the reference's images are {rh}×{rw} but the data's are {h}×{w}; give a reference "
            "of the same image size (e.g. the same dataset's test split)"
        )
    if reference.num_classes != data.num_classes:
        raise UserInputError(
            f"the reference has {reference.num_classes} classes but the data has {data.num_classes}; "
            "give clean images of the same classes (e.g. the same dataset's test split)"
        )
    if rc == c:
        return reference
    images = reference.images
    if c == 1:
        images = images.float().mean(1, keepdim=True).round().to(torch.uint8)
    else:
        images = images.expand(-1, c, -1, -1).contiguous()
    return ImageDataset(images, reference.labels, reference.classes, reference.meta)


def cap(ds: ImageDataset, max_images: int, seed: int) -> ImageDataset:
    """`ds`, or a class-balanced subset of about `max_images` images when it is larger."""
    return ds if len(ds) <= max_images else stratified_subset(ds, max(2, max_images // ds.num_classes), seed)


@dataclass
class Detection:
    """The verdict and its evidence.

    Attributes:
        poisoned: the verdict (`decide`): the spectral test or the edge vote says convolution.
        spectral, edge: the two statistics' evidence.
        classes: DATA's class names.
        counts: DATA's images per class (after the cap).
        info: where DATA and the reference came from, sizes, parameters.
        decided_by: the statistics that call DATA poisoned ("spectral", "edge"); empty when clean.
        undecided: when not poisoned and neither statistic can speak, the reason (the verdict is then
            "cannot tell"); None otherwise.
    """

    poisoned: bool
    spectral: SpectralEvidence
    edge: EdgeEvidence
    classes: list[str]
    counts: list[int]
    info: dict[str, Any]
    decided_by: tuple[str, ...] = ()
    undecided: str | None = None

    def verdict(self) -> str:
        """The one-line answer."""
        s, e = self.spectral, self.edge
        score = f"score {s.score:.2f}, threshold {SPECTRAL_THRESHOLD:.1f}"
        edges = f"{e.flagged:.0%} of images flagged at the edges, clean reference {e.reference_fpr:.0%}"
        if "spectral" in self.decided_by:
            agree = f"; edge pixels agree: {edges}" if "edge" in self.decided_by else ""
            return f"looks convolution-poisoned ({score}{agree})"
        if self.poisoned:
            return (
                f"looks convolution-poisoned ({edges}; the spectral score {s.score:.2f} stays under its threshold "
                f"{SPECTRAL_THRESHOLD:.1f}{_few(self.per_class_median())})"
            )
        if self.undecided is not None:
            return f"cannot tell: {self.undecided}"
        return f"no sign of a class-wise convolution ({score}; {edges})"

    def per_class_median(self) -> float:
        """The median number of DATA's images per class the spectral test used."""
        return float(np.median([self.counts[c] for c in self.spectral.classes]))

    def lines(self) -> list[str]:
        """The verdict, then the evidence: sources, both statistics, a per-class table."""
        s, e, i = self.spectral, self.edge, self.info
        out = [
            self.verdict(),
            f"data: {i['data']} ({i['data_images']} images, {len(self.classes)} classes, {i['shape']}); "
            f"reference: {i['reference']} ({i['reference_images']} images)",
            f"spectral: class-wise log-spectrum shift against the reference χ²/dof {s.chi2:.2f} (clean ≈ 1); "
            f"kernel-shaped part (score) {s.score:.2f} = {s.shift:.3f} nats rms; kernel fit {s.kernel_fit:.0%}; "
            f"within-class spread {s.spread:+.3f} nats, small-sample bias removed (a convolution keeps it ≈ 0, additive noise lowers it; "
            f"limit {-COMPRESSION_LIMIT * s.shift:+.3f})",
        ]
        if "spectral" not in self.decided_by and s.score >= SPECTRAL_THRESHOLD:
            out.append(
                "note: the class spectra do shift, but the within-class spread shrank: that is what an "
                "additive class-wise perturbation does, not a convolution"
            )
        edges = " ".join(f"{n} {d:+.3f} ({r:+.3f})" for n, d, r in zip(EDGES, e.data_edges, e.reference_edges))
        share = (
            "n/a: on this data the edge detector does not separate clean from poisoned reference images "
            "(black borders?)"
            if e.poisoned_share is None
            else f"{e.poisoned_share:.0%}"
        )
        out += [
            f"edge: {e.flagged:.1%} of images flagged (held-out reference: clean {e.reference_fpr:.1%}, "
            f"fresh-key poisoned {e.reference_tpr:.1%}); estimated poisoned share {share}; z {e.z():.1f} over the "
            f"false-positive rate; edge vote: {'poisoned' if e.says_convolved() else 'no'} (needs separation ≥ "
            f"{EDGE_SEPARATION:.0%}, z ≥ {EDGE_Z:.0f}, share ≥ {EDGE_MIN_SHARE:.0%})",
            f"edge: mean log((edge+1)/(inside+1)) data (reference): {edges}",
        ]
        width = max(5, *(len(c) for c in self.classes))
        out.append(
            f"{'class':{width}s} {'n':>6s} {'score':>7s} {'χ²/dof':>7s} {'fit':>5s} {'shift':>6s} "
            f"{'spread':>7s} {'edge':>6s}"
        )
        rows = {c: j for j, c in enumerate(s.classes)}
        for c, name in enumerate(self.classes):
            if c in rows:
                j = rows[c]
                p = {k: v[j] for k, v in s.per_class.items()}
                spec = (
                    f"{p['score']:7.2f} {p['chi2']:7.2f} {p['kernel_fit']:5.0%} {p['shift']:6.3f} {p['spread']:+7.3f}"
                )
            else:
                spec = f"{'(too few images)':>36s}"
            out.append(f"{name:{width}s} {self.counts[c]:6d} {spec} {_pct(e.per_class[c]):>6s}")
        return out

    def to_json(self) -> dict[str, Any]:
        """Everything printed, as JSON-serialisable values (the spectra themselves go into the figure)."""
        s, e = self.spectral, self.edge
        return {
            "verdict": self.verdict(),
            "poisoned": self.poisoned,
            "decided_by": list(self.decided_by),
            "undecided": self.undecided,
            "threshold": SPECTRAL_THRESHOLD,
            "compression_limit": COMPRESSION_LIMIT,
            **self.info,
            "spectral": {
                "score": s.score,
                "chi2": s.chi2,
                "kernel_fit": s.kernel_fit,
                "shift": s.shift,
                "spread": s.spread,
                "kernel_lag": KERNEL_LAG,
                "per_class": {
                    self.classes[c]: {k: v[j] for k, v in s.per_class.items()} for j, c in enumerate(s.classes)
                },
            },
            "edge": {
                "flagged": e.flagged,
                "reference_fpr": e.reference_fpr,
                "reference_tpr": e.reference_tpr,
                "poisoned_share": e.poisoned_share,
                "z": e.z(),
                "vote": e.says_convolved(),
                "per_class": {n: (None if math.isnan(f) else f) for n, f in zip(self.classes, e.per_class)},
                "mean_features": {"edges": list(EDGES), "data": e.data_edges, "reference": e.reference_edges},
            },
            "counts": dict(zip(self.classes, self.counts)),
        }


def _few(per_class: float) -> str:
    return (
        f", which it cannot clear with {per_class:.0f} images per class" if per_class < MIN_SPECTRAL_PER_CLASS else ""
    )


def decide(
    spectral: SpectralEvidence, edge: EdgeEvidence, per_class: float
) -> tuple[bool, tuple[str, ...], str | None]:
    """(poisoned, the statistics that say so, why neither can speak or None) from both statistics' evidence.

    `per_class`: DATA's median images per class. Poisoned when the spectral test (`looks_convolved`)
    or the edge vote (`EdgeEvidence.says_convolved`) says so. Not poisoned is "cannot tell" when the
    spectral test has too few images per class (< MIN_SPECTRAL_PER_CLASS) and the edge detector does
    not separate clean from poisoned reference images.
    """
    votes = tuple(
        name for name, says in (("spectral", looks_convolved(spectral)), ("edge", edge.says_convolved())) if says
    )
    if votes or per_class >= MIN_SPECTRAL_PER_CLASS or edge.separates():
        return bool(votes), votes, None
    return (
        False,
        (),
        (
            f"{per_class:.0f} images per class are too few for the spectral test (score {spectral.score:.2f}, "
            f"threshold {SPECTRAL_THRESHOLD:.1f}; it needs about {MIN_SPECTRAL_PER_CLASS}) and the edge "
            f"detector does not separate clean from poisoned images of the reference "
            f"({edge.reference_fpr:.0%} vs {edge.reference_tpr:.0%} flagged); give more images per class"
        ),
    )


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.0%}"


def detect(
    data: ImageDataset,
    reference: ImageDataset,
    seed: int = 0,
    max_images: int = MAX_IMAGES,
    device: str | torch.device | None = None,
    names: tuple[str, str] = ("data", "reference"),
) -> Detection:
    """Run both statistics on `data` (uint8 N×C×H×W, labels) against the clean `reference` of the same classes.

    Args:
        data: the dataset to check (e.g. a training split that may be protected).
        reference: clean images of the same classes and size (converted to DATA's channel count).
        seed: seeds the subsets and the edge detector's fresh keys; same seed → same result.
        max_images: cap for DATA and for the reference (class-balanced subsets beyond it).
        device: where spectra and the reference's poisoning run (default CPU).
        names: how DATA and the reference are described in the output.
    """
    check_max_images(max_images)
    check_labels(data, names[0])
    check_labels(reference, names[1])
    if data.num_classes < 2:
        raise UserInputError("the data has fewer than 2 classes; a class-wise convolution needs several classes")
    if min(data.shape[1:]) < 3:
        raise UserInputError(
            f"images of {data.shape[1]}×{data.shape[2]} pixels are too small; give images of at least 3×3"
        )
    reference = cap(match_reference(reference, data), max_images, seed)
    data = cap(data, max_images, seed)
    device = torch.device(device or "cpu")
    h, w = data.shape[1:]
    spectral = spectral_evidence(
        class_spectra(data.images, data.labels, data.num_classes, device),
        class_spectra(reference.images, reference.labels, data.num_classes, device),
        h,
        w,
    )
    edge = edge_evidence(data, reference, seed, device)
    counts = torch.bincount(data.labels, minlength=data.num_classes).tolist()
    poisoned, decided_by, undecided = decide(spectral, edge, float(np.median([counts[c] for c in spectral.classes])))
    info = {
        "data": names[0],
        "reference": names[1],
        "data_images": len(data),
        "reference_images": len(reference),
        "shape": "×".join(map(str, data.shape)),
        "seed": seed,
        "max_images": max_images,
    }
    return Detection(poisoned, spectral, edge, list(data.classes), counts, info, decided_by, undecided)


def check_max_images(max_images: int) -> None:
    """Refuse a cap that leaves fewer than 4 images (2 classes × 2) or is not an integer."""
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 4:
        raise UserInputError(
            f"--max-images {max_images!r} is too small; use an integer of at least 4 (default {MAX_IMAGES})"
        )


def full_plane(half: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """K×M values on the `log_spectra` frequencies → K×H×W centred maps (DC in the middle, set to NaN)."""
    k = half.shape[0]
    plane = torch.cat([torch.full((k, 1), float("nan"), dtype=half.dtype), half], 1).view(k, h, w // 2 + 1)
    ky, kx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mirrored = kx > w // 2  # conjugate symmetry: P(ky, kx) = P(-ky, -kx)
    rows = torch.where(mirrored, (-ky) % h, ky)
    cols = torch.where(mirrored, (w - kx) % w, kx)
    return torch.fft.fftshift(plane[:, rows, cols], dim=(-2, -1))
