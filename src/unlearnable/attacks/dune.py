"""DUNE: Dual-branch UNlearnable Ensemble perturbations (Wang et al., "Dual-branch Robust Unlearnable
Examples", ICML 2026, arXiv 2605.01718; public code github.com/wxldragon/DUNE, generate_unlearnable.py).

DUNE is model-based. An ensemble of M surrogate snapshots (checkpoints of one training run on the clean
data) drives two branches, both towards the *shifted* label t = (y + offset) mod K:

- Colour branch (one secret per class): a per-channel shift s_c ∈ R^C added to every pixel of every
  image of class c, found by particle swarm optimisation (PSO) of

      J(s) = mean_m mean_i CE(f_m(clip(x_i + s, 0, 1)), t_c)
             + mean_i [max(0, λ_psnr − PSNR_i) + max(0, λ_ssim − SSIM_i)]

  over the first `color_batch` images x_i of the class (dataset order). PSO: `particles` particles,
  positions U[−0.1, 0.1)^C, velocities U[−0.01, 0.01)^C, then `pso_iterations` rounds of: evaluate
  every particle in order (personal and global bests on a strict "<"), then
  v ← 0.5·v + 0.3·(p_best − x) + 0.3·(g_best − x), x ← x + v (no random factors). The result is the
  global best.
- Spatial branch (per image): targeted ensemble PGD from the clean image x⁰ with no random start,
  `steps` steps of x ← clip(Π_{‖x − x⁰‖∞ ≤ eps}(x − step_size · sign(Σ_m ∇_x CE(f_m(x), t))), 0, 1).

A poisoned image is then ``truncate(255 · clip(x_adv + s_label, 0, 1))`` (the published code stores
floats and its training loader casts ``x·255`` to uint8, a truncation).

Published CIFAR-10 defaults, kept here: offset 3, eps 8/255, step 0.5/255, 30 steps, 5 snapshots,
PSO 10 particles × 10 iterations on the first 1,000 images of a class, λ_psnr 20 dB, λ_ssim 0.8.
PSNR and SSIM are skimage's conventions with data range 1 (SSIM: 7×7 uniform window, sample
covariance, averaged over the valid window positions and the channels).

Random streams: one legacy ``numpy.random.RandomState(seed)`` draws, class by class in order, the
C·P initial positions and then the C·P initial velocities (``rand(P, C)`` each) — the published
``np.random.seed(seed)`` stream for RGB (a class without images still consumes its draws and gets a
zero shift). The surrogate's training is seeded with `seed` (the project's trainer: initialisation,
batch order, augmentation). The per-image poison mask is the project's mask stream
(`unlearnable.attacks.additive.draw_poisoned`): the published code has no partial poisoning.

Deviations from the published code, all documented and deliberate:

- Surrogates: the published ensemble is 5 ResNet-18 checkpoints of a clean CIFAR-10 training run
  (its training script is not released; the generator picks evenly spaced epochs ending at the last).
  Here the surrogate is trained inside the call on the images being protected with the project's
  trainer (`surrogate` model, default the small CPU CNN; recipe "quick" with `surrogate_epochs`
  epochs, default 10, batch min(256, N), data-derived normalisation), snapshotted after epochs
  ⌊E·m/M⌋ for m = 1..M (for E = 10, M = 5 these are 2, 4, 6, 8, 10, the published rule's choice).
- The LPIPS term max(0, LPIPS − 0.03) of the colour objective is left out: LPIPS needs pretrained
  AlexNet weights that the project does not ship.
- The published code keeps the global best as a numpy *view* of the particle that set it, so it
  moves with that particle and the returned shift is that particle's position after the last update
  (never evaluated). ``pso_best="view"`` (default) reproduces this; ``pso_best="copy"`` is textbook
  PSO (a copy; the returned shift is the best one evaluated).
- The ensemble gradient is that of the summed (not mean) cross-entropy over the batch and models:
  the same sign, independent of the chunk size.
- Colour shifts have C components (C = 1 for grayscale images; the published code is RGB-only).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from unlearnable.attacks.additive import check_poison_args, draw_poisoned, make_key, quantise
from unlearnable.attacks.cuda import Poison
from unlearnable.devices import default_device
from unlearnable.errors import UserInputError
from unlearnable.params import (
    NONNEGATIVE,
    POSITIVE_INT,
    Constraint,
    Interval,
    StrOptions,
    validate_params,
)

PsoBest = Literal["view", "copy"]

DUNE_CONSTRAINTS: dict[str, Constraint] = {
    "eps": Interval(float, 0, 1, closed="right"),
    "step_size": Interval(float, 0, 1, closed="right"),
    "steps": Interval(int, 0),
    "num_models": POSITIVE_INT,
    "surrogate_epochs": POSITIVE_INT,
    "particles": POSITIVE_INT,
    "pso_iterations": POSITIVE_INT,
    "color_batch": POSITIVE_INT,
    "min_psnr": NONNEGATIVE,
    "min_ssim": Interval(float, -1, 1),
    "pso_best": StrOptions(("view", "copy")),
}
"""DUNE's own parameters (seed and mix are checked by `check_poison_args`)."""

SSIM_WINDOW = 7
"""skimage's default SSIM window (uniform, 7×7): images must be at least this large."""
CHUNK_PIXELS = 512 * 3 * 32 * 32
"""Values per chunk of the ensemble forward/backward passes (512 CIFAR images)."""

Model = Callable[[torch.Tensor], torch.Tensor]
"""A surrogate: float B×C×H×W in [0, 1] → B×K logits."""


def snapshot_epochs(epochs: int, num_models: int) -> list[int]:
    """The epochs after which the surrogate is snapshotted: ⌊epochs·m/num_models⌋ for m = 1..num_models.

    Evenly spaced, the last one the final epoch; for epochs divisible by num_models the published choice.
    """
    return [epochs * m // num_models for m in range(1, num_models + 1)]


def train_surrogates(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    model: str = "small",
    epochs: int = 10,
    num_models: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[Model]:
    """Train `model` on the clean images with the "quick" recipe and return its snapshots.

    The caller's global torch random state is left as it was (the trainer seeds it).

    Args:
        images: uint8 N×C×H×W, labels: int64 (N,) in 0..num_classes-1.
        model: a name in ``unlearnable.models.MODELS``.
        epochs: training epochs E; num_models: snapshots M ≤ E, taken after `snapshot_epochs`.

    Returns:
        M frozen eval-mode surrogates, each float B×C×H×W in [0, 1] → B×K logits (normalisation inside).
    """
    from unlearnable.data import ImageDataset
    from unlearnable.training.augment import normalization_stats
    from unlearnable.training.config import TrainConfig, resolve_config
    from unlearnable.training.recipes import resolve_recipe
    from unlearnable.training.trainer import Trainer, build_model

    dataset = ImageDataset(images, labels, [str(k) for k in range(num_classes)])
    recipe = resolve_recipe("quick", epochs=epochs, batch_size=min(256, len(images)))
    # `out` names no directory: the Trainer writes nothing (only `training.train` records a run).
    config = resolve_config(
        TrainConfig(out="dune-surrogate", model=model, recipe=recipe, seed=seed, device=str(device))
    )
    wanted = set(snapshot_epochs(epochs, num_models))
    snapshots: list[Model] = []
    where = torch.device(device)
    with torch.random.fork_rng(devices=[where.index or 0] if where.type == "cuda" else []):
        net = build_model(config, dataset)
        _, mean, std = normalization_stats("data", dataset)
        trainer = Trainer(config, dataset, dataset, net, (mean, std))
        for epoch in range(1, epochs + 1):
            with tqdm(
                total=len(trainer.train_loader), desc=f"DUNE surrogate {epoch}/{epochs}", disable=not progress
            ) as bar:
                trainer.train_epoch(bar)
            if epoch in wanted:
                frozen = copy.deepcopy(net).eval().requires_grad_(False)
                snapshots.append(_with_input(frozen, trainer.model_input))
    return snapshots


def _with_input(net: nn.Module, model_input: Callable[[torch.Tensor], torch.Tensor]) -> Model:
    """`net` behind the trainer's input preparation (normalisation, memory format)."""
    return lambda x: net(model_input(x))


def ensemble_pgd(
    x: torch.Tensor,
    targets: torch.Tensor,
    models: Sequence[Model],
    eps: float = 8 / 255,
    step_size: float = 0.5 / 255,
    steps: int = 30,
) -> torch.Tensor:
    """DUNE's spatial branch: targeted L∞ PGD towards `targets` on the ensemble, no random start.

    Args:
        x: float32 B×C×H×W in [0, 1], the clean images (the projection centre).
        targets: int64 (B,), the shifted labels.

    Returns:
        float32 B×C×H×W in [0, 1] with ‖result − x‖∞ ≤ eps.
    """
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = torch.stack([F.cross_entropy(model(adv), targets, reduction="sum") for model in models]).sum()
            (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() - step_size * grad.sign()
        adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp_(0, 1)
    return adv


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM per image of float B×C×H×W in [0, 1] (H, W ≥ 7): float64 (B,).

    skimage's ``structural_similarity(data_range=1, channel_axis=...)`` defaults: 7×7 uniform window,
    sample covariance (×49/48), K1 0.01, K2 0.03, mean over the valid window positions and the channels.
    """
    x, y = a.double(), b.double()
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)

    def mean(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(z, SSIM_WINDOW, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of float B×C×H×W in [0, 1] (data range 1; inf when equal): float64 (B,)."""
    mse = (a.double() - b.double()).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


@torch.no_grad()
def colour_objective(
    shift: np.ndarray,
    x: torch.Tensor,
    target: int,
    models: Sequence[Model],
    min_psnr: float = 20.0,
    min_ssim: float = 0.8,
    chunk: int = 512,
) -> float:
    """DUNE's colour-branch objective J(s) for one class (module docstring).

    Args:
        shift: float (C,), the per-channel shift s (cast to float32 as the published code does).
        x: float32 B×C×H×W in [0, 1], the class's images (B ≥ 1).
        target: the shifted label t_c.

    Returns:
        mean over models of the mean cross-entropy plus the mean visual penalty.
    """
    s = torch.tensor(shift, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    ce_sum, penalty_sum = 0.0, 0.0
    for start in range(0, len(x), chunk):
        clean = x[start : start + chunk]
        shifted = (clean + s).clamp_(0, 1)
        t = torch.full((len(clean),), target, dtype=torch.int64, device=x.device)
        ce_sum += sum(float(F.cross_entropy(model(shifted), t, reduction="sum")) for model in models)
        penalty = (min_psnr - psnr_per_image(shifted, clean)).clamp_(min=0) + (
            min_ssim - ssim_per_image(shifted, clean)
        ).clamp_(min=0)
        penalty_sum += float(penalty.sum())
    return (ce_sum / len(models) + penalty_sum) / len(x)


def pso_shift(
    objective: Callable[[np.ndarray], float],
    rng: np.random.RandomState,
    channels: int = 3,
    particles: int = 10,
    iterations: int = 10,
    best: PsoBest = "view",
) -> np.ndarray:
    """DUNE's particle swarm over per-channel shifts (module docstring), minimising `objective`.

    Draws ``rand(particles, channels)`` twice from `rng` (positions, then velocities).

    Args:
        best: "view" keeps the global best as a view of the particle that set it (published);
            "copy" keeps a copy (textbook PSO).

    Returns:
        float64 (channels,), the global best.
    """
    position = rng.rand(particles, channels) * 0.2 - 0.1
    velocity = rng.rand(particles, channels) * 0.02 - 0.01
    personal_best = position.copy()
    personal_value = np.full(particles, np.inf)
    global_value = np.inf
    global_best = np.zeros(channels)
    for _ in range(iterations):
        for j in range(particles):
            value = objective(position[j])
            if value < personal_value[j]:
                personal_value[j] = value
                personal_best[j] = position[j]
            if value < global_value:
                global_value = value
                global_best = position[j] if best == "view" else position[j].copy()
        velocity = 0.5 * velocity + 0.3 * (personal_best - position) + 0.3 * (global_best - position)
        position += velocity  # in place: a "view" global best moves with its particle
    return np.array(global_best, dtype=np.float64)


def dune_poison(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    seed: int = 0,
    mix: float = 1.0,
    device: str | torch.device | None = None,
    progress: bool = True,
    offset: int = 3,
    eps: float = 8 / 255,
    step_size: float = 0.5 / 255,
    steps: int = 30,
    num_models: int = 5,
    surrogate: str = "small",
    surrogate_epochs: int = 10,
    particles: int = 10,
    pso_iterations: int = 10,
    color_batch: int = 1000,
    min_psnr: float = 20.0,
    min_ssim: float = 0.8,
    pso_best: PsoBest = "view",
) -> Poison:
    """Protect a training set with DUNE: ensemble targeted PGD plus a class-wise colour shift.

    Args:
        images: uint8 N×C×H×W (C = 1 or 3, H and W ≥ 7).
        labels: int64 (N,), values in 0..num_classes-1 (num_classes ≥ 2).
        num_classes: K.
        seed: seeds the surrogate's training, the PSO stream and the mask.
        mix: fraction of images poisoned (each independently); the others are copied unchanged.
        device: where the surrogate trains and the ensemble runs (default: CUDA when available).
        offset: the shifted label is (y + offset) mod K, offset in 1..K-1 (published 3).
        eps, step_size, steps: the spatial branch's L∞ radius, step and step count ([0, 1] units).
        num_models, surrogate, surrogate_epochs: the ensemble (see `train_surrogates`).
        particles, pso_iterations, color_batch: the colour branch's swarm and the number of a class's
            first images it is fitted on.
        min_psnr, min_ssim: λ_psnr (dB) and λ_ssim of the visual penalty.
        pso_best: "view" (published) or "copy" (see `pso_shift`).

    Returns:
        Poison: the protected images; key with ``shifts`` (K×C floats, [0, 1] units), the surrogate's
        description and snapshot epochs, every parameter, the seed and ``poisoned_indices``. The
        per-image spatial perturbations are not stored: they follow from the surrogates.
    """
    check_poison_args(images, labels, num_classes, seed, mix, (SSIM_WINDOW, SSIM_WINDOW), attack="dune")
    if num_classes < 2:
        raise UserInputError(
            f"dune shifts every label to another class: it needs at least 2 classes (got {num_classes})"
        )
    params = {
        "offset": offset,
        "eps": eps,
        "step_size": step_size,
        "steps": steps,
        "num_models": num_models,
        "surrogate": surrogate,
        "surrogate_epochs": surrogate_epochs,
        "particles": particles,
        "pso_iterations": pso_iterations,
        "color_batch": color_batch,
        "min_psnr": min_psnr,
        "min_ssim": min_ssim,
        "pso_best": pso_best,
    }
    validate_params("dune", params, {**DUNE_CONSTRAINTS, "offset": Interval(int, 1, num_classes - 1)})
    validate_params("dune", {"num_models": num_models}, {"num_models": Interval(int, 1, surrogate_epochs)})
    device = default_device(device)
    models = train_surrogates(
        images, labels, num_classes, surrogate, surrogate_epochs, num_models, seed, device, progress
    )

    channels = images.shape[1]
    rng = np.random.RandomState(seed)
    shifts = np.zeros((num_classes, channels), dtype=np.float64)
    label_array = labels.numpy()
    for c in tqdm(range(num_classes), desc="DUNE colour shifts", disable=not progress):
        members = torch.from_numpy(np.flatnonzero(label_array == c)[:color_batch])
        x = images[members].to(device).float().div_(255)
        target = (c + offset) % num_classes

        def objective(shift: np.ndarray, x: torch.Tensor = x, target: int = target) -> float:
            return colour_objective(shift, x, target, models, min_psnr, min_ssim)

        if len(members):
            shifts[c] = pso_shift(objective, rng, channels, particles, pso_iterations, pso_best)
        else:  # nothing to shift: consume the class's draws so later classes keep theirs
            rng.rand(2 * particles * channels)

    poisoned = draw_poisoned(seed, len(images), mix)
    protected = images.clone(memory_format=torch.contiguous_format)
    index = np.flatnonzero(poisoned)
    table = torch.from_numpy(shifts.astype(np.float32)).to(device).view(num_classes, channels, 1, 1)
    chunk = max(1, CHUNK_PIXELS // images[0].numel())
    for start in tqdm(range(0, len(index), chunk), desc="DUNE PGD", unit="chunk", disable=not progress):
        rows = torch.from_numpy(index[start : start + chunk])
        x = images[rows].to(device).float().div_(255)
        y = labels[rows].to(device)
        adv = ensemble_pgd(x, (y + offset) % num_classes, models, eps, step_size, steps)
        shifted = (adv + table[y]).clamp_(0, 1)
        protected[rows] = quantise(shifted.mul_(255), "truncate").to(torch.uint8).cpu()

    key = make_key(
        "dune",
        {**params, "mix": mix, "rounding": "truncate", "surrogate_recipe": "quick"},
        seed,
        poisoned,
        {"shifts": shifts, "snapshot_epochs": np.array(snapshot_epochs(surrogate_epochs, num_models))},
        "unlearnable.attacks.dune.dune_poison(images, labels, num_classes, seed=seed, ...)",
    )
    return Poison(protected, key)


__all__ = [
    "DUNE_CONSTRAINTS",
    "colour_objective",
    "dune_poison",
    "ensemble_pgd",
    "psnr_per_image",
    "pso_shift",
    "snapshot_epochs",
    "ssim_per_image",
    "train_surrogates",
]
