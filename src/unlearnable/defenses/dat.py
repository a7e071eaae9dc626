"""DAT: deconvolution-based adversarial training (the CUDA paper's defense, SPEC §5).

Per training batch and per class present in it, a fresh one-channel transposed-convolution filter
(size k×k, padding k//2, with bias) is initialised as PyTorch's ConvTranspose2d default,
U(−1/k, 1/k) for weights and bias, drawn from the run's generator. It is applied to each RGB
channel of the class's images (the same filter on every channel, no channel mixing), and raised
by `steps` steps of raw-gradient ascent (step `step_size`) on the class-subset mean
cross-entropy, weights and bias clamped to [−5, 5] before each step. The batch is then filtered
with the final filters, each image min-max rescaled to [0, 1], and the model trains on that.
Filtering and rescaling run in float32 with autocast off; with AMP only the model's forward is
bf16, so the batch returned is not rounded to bf16.

Batched over classes: each image gathers its class's filter, and one grouped ``conv_transpose2d``
with B·C groups filters the whole batch; the sum over images of CE / (images of its class) has,
per class filter, exactly the gradient of that class's mean loss, so one backward pass serves
every class.

Differences from the published code (``final_muladv.py``), said here once: the model is in eval
mode during the filter ascent (BatchNorm running statistics are used and left untouched, as
for PGD; the published code ascends in train mode on per-class sub-batches), and the filters
are clamped once more after the last step, so the filters used always lie in [−5, 5] (the
published code applies the last step's filters unclamped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.defenses.adversarial import Normalize, eval_mode, full_precision
from unlearnable.defenses.base import Configurable, resolve_generator
from unlearnable.params import NONNEGATIVE_INT, POSITIVE, Interval

FILTER_BOUND = 5.0
"""Filter weights and bias are clamped to [−FILTER_BOUND, FILTER_BOUND] before each ascent step."""


def init_filters(
    count: int, size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` fresh filters as ConvTranspose2d(1, 1, size)'s default init: weights and bias U(−1/size, 1/size).

    Returns:
        (weights (count, size, size), bias (count,)) on the generator's device.
    """
    bound = 1 / size  # kaiming_uniform(a=√5) and the bias rule, both with fan_in = size²
    device = generator.device
    weights = torch.rand(count, size, size, generator=generator, device=device, dtype=dtype).mul_(2 * bound).sub_(bound)
    bias = torch.rand(count, generator=generator, device=device, dtype=dtype).mul_(2 * bound).sub_(bound)
    return weights, bias


def deconvolve(x: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Transposed-convolve each image with its own one-channel filter, on every channel alike.

    Args:
        x: float B×C×H×W.
        weights: (B, k, k) one filter per image, k odd; bias: (B,).

    Returns:
        B×C×H×W (padding k//2), not clamped or rescaled; differentiable in `weights` and `bias`.
    """
    batch, channels, height, width = x.shape
    size = weights.shape[-1]
    kernel = weights.repeat_interleave(channels, dim=0).unsqueeze(1)  # (B·C, 1, k, k): one group per channel
    out = F.conv_transpose2d(
        x.reshape(1, batch * channels, height, width),
        kernel.to(x.dtype),
        bias.repeat_interleave(channels).to(x.dtype),
        padding=size // 2,
        groups=batch * channels,
    )
    return out.view(batch, channels, height, width)


def rescale_per_image(x: torch.Tensor) -> torch.Tensor:
    """Min-max rescale each image of B×... `x` over all its values to [0, 1] (a constant image → 0)."""
    flat = x.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp(min=1e-12)).view_as(x)


def class_subset_losses(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    group: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor,
    normalize: Normalize | None,
) -> torch.Tensor:
    """Each class's mean cross-entropy on its images filtered by its filter.

    Args:
        group: int64 (B,) index of each image's class filter in `weights` (G, k, k) / `bias` (G,).
        targets: int64 labels (B,) or float B×K probabilities, for the cross-entropy.

    Returns:
        float32 (G,): entry g is the mean loss over the images with group g (0 where there are none).
    """
    with full_precision(x):  # the filtered images in float32; only the model's forward follows the caller's autocast
        filtered = deconvolve(x, weights[group], bias[group])
    logits = model(normalize(filtered) if normalize is not None else filtered)
    losses = F.cross_entropy(logits.float(), targets, reduction="none")
    counts = torch.zeros(len(weights), device=x.device).index_add_(0, group, torch.ones_like(losses))
    return torch.zeros(len(weights), device=x.device).index_add_(0, group, losses) / counts.clamp(min=1)


def ascend_filters(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    group: torch.Tensor,
    weights: torch.Tensor,
    bias: torch.Tensor,
    steps: int,
    step_size: float,
    normalize: Normalize | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` steps of w ← clamp(w) + step_size·∂L_g/∂w on every class filter g at once (bias alike).

    L_g is class g's mean loss (`class_subset_losses`). The model is put in eval mode and no
    parameter gradient is touched. Returns the final (weights, bias), detached, clamped to ±FILTER_BOUND.
    """
    with eval_mode(model), torch.enable_grad():
        for _ in range(steps):
            weights = weights.detach().clamp(-FILTER_BOUND, FILTER_BOUND).requires_grad_(True)
            bias = bias.detach().clamp(-FILTER_BOUND, FILTER_BOUND).requires_grad_(True)
            loss = class_subset_losses(model, x, targets, group, weights, bias, normalize).sum()
            grad_w, grad_b = torch.autograd.grad(loss, (weights, bias))
            weights, bias = weights + step_size * grad_w, bias + step_size * grad_b
    return weights.detach().clamp(-FILTER_BOUND, FILTER_BOUND), bias.detach().clamp(-FILTER_BOUND, FILTER_BOUND)


class DeconvolutionAT(Configurable):
    """The "dat" step hook (see the module docstring).

    Args:
        filter_size: odd k ≥ 1; default 5, the best of the CUDA paper's 3/5/7 (46.21% on CUDA
            CIFAR-10 vs 39.05% and 38.48%; SPEC §5 describes the 7×7 run).
        steps: ascent steps (≥ 0; default 10).
        step_size: raw-gradient step (> 0; default 0.1).
    """

    PARAMETER_CONSTRAINTS = {"filter_size": Interval(int, 1, odd=True), "steps": NONNEGATIVE_INT, "step_size": POSITIVE}

    def __init__(self, filter_size: int = 5, steps: int = 10, step_size: float = 0.1) -> None:
        self._validate(filter_size=filter_size, steps=steps, step_size=step_size)
        self.filter_size, self.steps, self.step_size = filter_size, steps, float(step_size)

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        targets: torch.Tensor,
        generator: torch.Generator | None,
        normalize: Normalize | None = None,
    ) -> torch.Tensor:
        """The DAT batch for float B×C×H×W `x` in [0, 1]: filtered per class, rescaled per image, detached.

        Classes are the labels, or the arg-max of float B×K `targets` after a mixing defense.
        """
        generator = resolve_generator(generator, x.device, type(self).__name__)
        x = x.detach()
        labels = targets if targets.dim() == 1 else targets.argmax(1)
        classes, group = torch.unique(labels, return_inverse=True)
        weights, bias = init_filters(len(classes), self.filter_size, generator)
        weights, bias = ascend_filters(model, x, targets, group, weights, bias, self.steps, self.step_size, normalize)
        with torch.no_grad(), full_precision(x):  # float32 even inside a caller's bf16 autocast
            return rescale_per_image(deconvolve(x, weights[group], bias[group])).to(x.dtype)
