"""Diffusion purification of unlearnable training images ("diffpure"), after AVATAR and ECLIPSE.

AVATAR (Dolatabadi, Erfani, Leckie, "The Devil's Advocate: Shattering the Illusion of Unexploitable
Data using Diffusion Models", IEEE SaTML 2024, arXiv 2303.08500; public code hmdolatabadi/AVATAR,
built on NVlabs/DiffPure) and ECLIPSE (Wang, Hu, Zhang, Zhou, Zhang, Xu, Wan, Jin, "ECLIPSE:
Expunging Clean-label Indiscriminate Poisons via Sparse Diffusion Purification", ESORICS 2024,
arXiv 2406.15093; public code CGCL-codes/ECLIPSE, built on openai/improved-diffusion) purify each
poisoned training image x0 with a denoising diffusion model trained on CLEAN images only: diffuse
it forward to a moderate time t*, x_t* = √ᾱ_t*·x0 + √(1 − ᾱ_t*)·ε (images scaled to [−1, 1]), then
run the reverse process from t* back to 0, and train the classifier on the result. The Gaussian
noise drowns the small poison; the reverse process restores natural-image detail, not the poison.

What the published code does (the settings this module's defaults follow):

- Schedule. DDPM's linear β from 1e-4 to 0.02 over T = 1000 steps (Ho et al. 2020); AVATAR's
  VP-SDE with β_min 0.1, β_max 20, N 1000 has exactly these discrete betas. ECLIPSE uses
  improved-diffusion's cosine schedule over T = 4000 instead.
- t*. AVATAR on CIFAR-10: t = 100 of 1000 steps, i.e. t* = 0.1 (its README names the sanitised
  sets "..._Sanitized_100_cifar10"); ECLIPSE: t = 100 of its 4000 cosine steps (``--t 100``).
  Here `t_star` is the fraction of T; the default 0.1 is AVATAR's.
- Reverse process. AVATAR integrates the reverse VP-SDE with torchsde's Euler–Maruyama from
  t = 0.1 to 1e-5 at the default dt 1e-3 (about 100 steps); ECLIPSE runs improved-diffusion's
  ancestral ``p_sample`` at every one of the t steps, clipping the predicted x0 to [−1, 1].
  Here ``sampler="ddpm"`` is ancestral sampling with the clipped x0 prediction over `sample_steps`
  evenly spaced timesteps of the t* chain (improved-diffusion's respacing: the betas of the
  subsequence are recomputed from ᾱ), so ``sample_steps = round(t_star·T)`` is the published full chain;
  ``sampler="ddim"`` is DDIM with η = 0 (deterministic after the forward noise).
- The model. AVATAR uses Score-SDE's DDPM++ (NCSN++ code, nf 128, 4 res blocks per level,
  attention at 16×16, ~950k iterations) trained on the full clean CIFAR-10 training set, and
  also shows that models of other data (ImageNet-32) work; ECLIPSE trains improved-diffusion's
  UNet (128 channels, 3 res blocks, attention at 16 and 8, learned Σ) on 2,000 random CIFAR-10
  TEST images enlarged M = 4 times ("test2000ps8000") for 250k iterations, EMA 0.9999.
  ECLIPSE then trains with its "corruption compensation" augmentations (RandomGrayscale p 0.4,
  Gaussian noise std 0.05); that part is a training-time transform, not part of this module.

This module: `UNet`, a small DDPM-style UNet (residual blocks with GroupNorm, SiLU and a
sinusoidal timestep embedding, self-attention at chosen resolutions and in the middle) whose
width (`DDPMConfig.width`), per-level channel multipliers and depth (`num_res_blocks`) are
parameters; `linear_betas`; `train_ddpm` (the ε-prediction MSE loss of Ho et al., Adam,
linear warm-up, gradient clipping 1.0, random horizontal flips, an EMA of the weights);
`purify` (forward diffusion to t*, reverse sampling); `save_checkpoint` / `load_checkpoint`;
and `DiffusionPurification`, the "diffpure" preprocessing defense. ``bench/train_diffusion.py``
trains a model on clean images and writes a checkpoint.

Checkpoint format (written by `save_checkpoint`, read by `load_checkpoint`):

- a directory holding ``config.json`` and ``model.pt`` (plus the tool's ``.unlearnable`` marker),
  or a single ``.pt`` file;
- the JSON config: {"format": "unlearnable-ddpm", "version": 1, "model": the `DDPMConfig`
  fields (image_size, channels, width, channel_mult, num_res_blocks, attention_resolutions,
  dropout, schedule "linear", num_timesteps, beta_start, beta_end), "training": the provenance
  (which clean images: data spec, split, the dataset's ``meta["source"]``, how many and how
  they were chosen; steps, batch size, learning rate, EMA decay, seed, final loss)};
- the weights: the EMA weights of the `UNet` as a state dict, ``torch.save``-d to ``model.pt``
  (the directory form) or saved as {"config": the JSON text, "state_dict": ...} (the file form);
  both are read with ``torch.load(..., weights_only=True)``.

Deviations from the published methods:

- The network is this module's small UNet, not DDPM++ or improved-diffusion's UNet (no learned
  Σ, no BigGAN blocks, one attention head); its size is a parameter, so a GPU can train a
  published-size one (width 128, channel_mult (1, 2, 2, 2), 2–4 res blocks).
- Reverse variance: the posterior variance β̃ (DDPM's "fixedsmall"), not ECLIPSE's learned Σ nor
  the β of AVATAR's Euler–Maruyama discretisation; with few respaced steps β̃ is the better choice.
- A `sample_steps` smaller than the t* chain respaces the timesteps (fewer network calls); the papers
  always run the full chain (100 steps at their t*).
- Storage: the purified image in [−1, 1] is stored as round(127.5·(x + 1)) clamped to 0..255; both
  published codes truncate (255·x cast to uint8), which darkens by half a level on average.
- ECLIPSE's enlargement of the sparse clean set (M = 4) is not reproduced; training draws random
  batches with replacement and random horizontal flips from whatever clean images it is given.
- Randomness: every draw (initialisation, dropout, batches, timesteps, noise) comes from the
  `seed`, so a model and a purified set are reproducible on the CPU; the published code seeds
  globally and shuffles with DataLoader workers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import math
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.data.dataset import ImageDataset
from unlearnable.defenses.base import Configurable
from unlearnable.errors import UserInputError
from unlearnable.io import atomic_directory, atomic_write_bytes
from unlearnable.params import (
    NONNEGATIVE_INT,
    POSITIVE_INT,
    SEED,
    Constraint,
    Interval,
    StrOptions,
    validate_params,
)

logger = logging.getLogger(__name__)

FORMAT = "unlearnable-ddpm"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
CHECKPOINT_KIND = "ddpm-checkpoint"
"""The kind in the ``.unlearnable`` marker of a checkpoint directory."""

TRAIN_COMMAND = "python bench/train_diffusion.py --data ../shared/data/cifar10-jpeg.tar.gz --split test --out DIR"
"""How to make a checkpoint, named in every message about a missing or unusable one."""

T_STAR = 0.1
"""AVATAR's CIFAR-10 setting: 100 of 1000 steps (DiffPure's t* = 0.1)."""

SAMPLERS = ("ddpm", "ddim")

SCHEDULES = ("linear",)


@dataclasses.dataclass(frozen=True)
class DDPMConfig:
    """The architecture and noise schedule of a DDPM (what a checkpoint's ``"model"`` holds).

    Attributes:
        image_size: side S of the square S×S images; divisible by 2^(levels − 1).
        channels: image channels C (3 for RGB, 1 for grayscale).
        width: channels of the first level (DDPM's CIFAR-10 model: 128).
        channel_mult: per-level multipliers of `width`; one level per entry, each but the last
            halving the resolution (DDPM CIFAR-10: (1, 2, 2, 2)).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: the resolutions (sides) with a self-attention block after each
            residual block; the middle of the UNet always has one.
        dropout: dropout probability inside residual blocks during training (DDPM CIFAR-10: 0.1).
        schedule: the β schedule; "linear" only.
        num_timesteps: T.
        beta_start, beta_end: β_1 and β_T of the linear schedule.
    """

    image_size: int = 32
    channels: int = 3
    width: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    schedule: str = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    CONSTRAINTS: ClassVar[dict[str, Constraint]] = {
        "image_size": Interval(int, 4, 1024),
        "channels": Interval(int, 1, 4),
        "width": POSITIVE_INT,
        "num_res_blocks": POSITIVE_INT,
        "dropout": Interval(float, 0, 1, closed="left"),
        "schedule": StrOptions(SCHEDULES),
        "num_timesteps": Interval(int, 2, 100_000),
        "beta_start": Interval(float, 0, 1, closed="neither"),
        "beta_end": Interval(float, 0, 1, closed="neither"),
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        validate_params("DDPMConfig", {k: getattr(self, k) for k in self.CONSTRAINTS}, self.CONSTRAINTS)
        if not self.channel_mult or not all(POSITIVE_INT.contains(m) for m in self.channel_mult):
            raise UserInputError(
                f"DDPMConfig: channel_mult must be a non-empty list of integers ≥ 1 (got {list(self.channel_mult)})"
            )
        if not all(POSITIVE_INT.contains(r) for r in self.attention_resolutions):
            raise UserInputError(
                f"DDPMConfig: attention_resolutions must be integers ≥ 1 (got {list(self.attention_resolutions)})"
            )
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise UserInputError(
                f"DDPMConfig: image_size must be divisible by {factor} for {len(self.channel_mult)} levels "
                f"(got {self.image_size}); use fewer channel_mult entries"
            )
        if self.beta_end < self.beta_start:
            raise UserInputError(f"DDPMConfig: beta_end must be ≥ beta_start (got {self.beta_end} < {self.beta_start})")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (tuples as lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDPMConfig:
        """The config from `to_dict`'s output; unknown keys or bad values raise UserInputError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserInputError(f"DDPMConfig: unknown field {unknown[0]!r}; known: {', '.join(sorted(names))}")
        return cls(**data)


def linear_betas(config: DDPMConfig) -> torch.Tensor:
    """DDPM's linear schedule: float64 (T,) β_1..β_T evenly spaced from `beta_start` to `beta_end`."""
    return torch.linspace(config.beta_start, config.beta_end, config.num_timesteps, dtype=torch.float64)


def alphas_cumprod(config: DDPMConfig) -> torch.Tensor:
    """ᾱ_t = Π_{s≤t} (1 − β_s) for t = 1..T: float64 (T,), index i holds ᾱ_{i+1}."""
    return torch.cumprod(1 - linear_betas(config), dim=0)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (B,) → float32 (B, dim): [cos(t·f_k), sin(t·f_k)],
    f_k = 10000^(−k/(dim/2)), zero-padded when `dim` is odd (as improved-diffusion)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.to(torch.float32)[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(embedding, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups where the channels allow (DDPM), else their largest common divisor."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` with its weight and bias set to zero (the last layer of a residual branch starts as identity)."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3 → + timestep projection → GroupNorm → SiLU → dropout → conv3×3
    (zero-initialised), plus the input (through a 1×1 conv when the channels change)."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embed = nn.Linear(embedding_dim, out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(F.silu(embedding))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the H·W positions, residual, output projection zero-initialised."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = _zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """The ε-prediction network: (x_t, t) → ε̂, both float B×C×S×S, x_t in the [−1, 1] image scale.

    Levels i = 0..L−1 of `width`·channel_mult[i] channels at resolution S/2^i: `num_res_blocks`
    residual blocks down (each followed by attention at `attention_resolutions`), a stride-2 conv
    between levels; residual block, attention, residual block in the middle; on the way up
    `num_res_blocks` + 1 blocks per level over the concatenated skips, nearest ×2 upsampling and a
    conv between levels. The timestep embedding (sinusoidal, `width` wide) goes through a 2-layer
    MLP to 4·`width` and into every residual block.
    """

    def __init__(self, config: DDPMConfig) -> None:
        super().__init__()
        self.config = config
        width, embedding_dim = config.width, 4 * config.width
        self.embedding = nn.Sequential(
            nn.Linear(width, embedding_dim), nn.SiLU(), nn.Linear(embedding_dim, embedding_dim)
        )
        self.stem = nn.Conv2d(config.channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        skips, channels, size = [width], width, config.image_size
        levels = len(config.channel_mult)
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                block = nn.ModuleList([ResBlock(channels, width * mult, embedding_dim, config.dropout)])
                channels = width * mult
                if size in config.attention_resolutions:
                    block.append(Attention(channels))
                self.down.append(block)
                skips.append(channels)
            if level < levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(channels, channels, 3, stride=2, padding=1)]))
                skips.append(channels)
                size //= 2
        self.middle = nn.ModuleList(
            [
                ResBlock(channels, channels, embedding_dim, config.dropout),
                Attention(channels),
                ResBlock(channels, channels, embedding_dim, config.dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for index in range(config.num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(channels + skips.pop(), width * mult, embedding_dim, config.dropout)])
                channels = width * mult
                if size in config.attention_resolutions:
                    block.append(Attention(channels))
                if level > 0 and index == config.num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(channels, channels, 3, padding=1))
                    size *= 2
                self.up.append(block)
        self.head = nn.Sequential(
            _norm(channels), nn.SiLU(), _zero_init(nn.Conv2d(channels, config.channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε̂ for float B×C×S×S `x` at integer timesteps `t` (B,), 0-based (0 is the first noise level)."""
        embedding = self.embedding(timestep_embedding(t, self.config.width))
        h = self.stem(x)
        hs = [h]
        for block in self.down:
            h = self._run(block, h, embedding)
            hs.append(h)
        for layer in self.middle:
            h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), embedding)
        return self.head(h)

    @staticmethod
    def _run(block: nn.Module, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        for layer in block.children():
            h = layer(h, embedding) if isinstance(layer, ResBlock) else layer(h)
        return h


def to_model_scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 N×C×H×W (0..255) → float32 in [−1, 1] on the same device: x/127.5 − 1."""
    return images.to(torch.float32).div_(127.5).sub_(1)


def from_model_scale(x: torch.Tensor) -> torch.Tensor:
    """Float in [−1, 1] → uint8 0..255: round(127.5·(x + 1)), clamped."""
    return (x + 1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global generators of the CPU and `device` seeded with `seed` inside the block and
    restored after it (for what takes no generator: parameter initialisation, dropout)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def build_model(config: DDPMConfig, seed: int = 0) -> UNet:
    """A freshly initialised `UNet` for `config`, the same weights for the same `seed` (global RNG untouched)."""
    with _seeded(seed, torch.device("cpu")):
        return UNet(config)


TRAIN_CONSTRAINTS: dict[str, Constraint] = {
    "steps": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr": Interval(float, 0, closed="neither"),
    "warmup": NONNEGATIVE_INT,
    "ema_decay": Interval(float, 0, 1, closed="left"),
    "grad_clip": Interval(float, 0, closed="neither"),
    "seed": SEED,
}
"""The options of `train_ddpm` (DDPM's CIFAR-10 run: batch 128, lr 2e-4, warm-up 5000, EMA 0.9999, clip 1)."""


def train_ddpm(
    images: torch.Tensor,
    config: DDPMConfig,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-4,
    warmup: int = 5000,
    ema_decay: float = 0.9999,
    grad_clip: float = 1.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[UNet, list[float]]:
    """Train a DDPM on clean uint8 N×C×S×S `images` (they must match `config`'s size and channels).

    Each step draws `batch_size` images with replacement, flips each horizontally with
    probability 1/2, a timestep t uniform on 0..T−1 and noise ε per image, and minimises
    ‖ε − ε̂(√ᾱ_t·x0 + √(1 − ᾱ_t)·ε, t)‖² (mean over pixels) with Adam at `lr`, linearly warmed up
    over `warmup` steps, gradients clipped to norm `grad_clip`. The returned model holds the EMA
    of the weights with decay min(`ema_decay`, (1 + k)/(10 + k)) at step k (Score-SDE's EMA), in
    eval mode. Every draw comes from `seed` (initialisation from seed, batches, flips, timesteps
    and noise from a generator seeded with seed + 1, dropout from seed + 2): the same call gives
    the same weights on the CPU.

    Args:
        device: where to train (default: the images' device).
        progress: called after every step with (step number from 1, loss).

    Returns:
        (the EMA model on `device`, the loss of every step).
    """
    validate_params(
        "train_ddpm",
        {
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "warmup": warmup,
            "ema_decay": ema_decay,
            "grad_clip": grad_clip,
            "seed": seed,
        },
        TRAIN_CONSTRAINTS,
    )
    _check_images(images, config, "the training images")
    if len(images) == 0:
        raise UserInputError("there are no clean training images; give the DDPM some")
    where = torch.device(device) if device is not None else images.device
    data = images.to(where)
    abar = alphas_cumprod(config).to(device=where, dtype=torch.float32)
    model = build_model(config, seed).to(where)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator(where).manual_seed(seed + 1)
    losses: list[float] = []
    model.train()
    with _seeded(seed + 2, where):
        for step in range(1, steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, step / warmup) if warmup else lr
            index = torch.randint(len(data), (batch_size,), generator=generator, device=where)
            x0 = to_model_scale(data[index])
            flip = torch.rand(batch_size, generator=generator, device=where) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            t = torch.randint(config.num_timesteps, (batch_size,), generator=generator, device=where)
            noise = torch.randn(x0.shape, generator=generator, device=where)
            a = abar[t][:, None, None, None]
            loss = F.mse_loss(model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for average, current in zip(ema.parameters(), model.parameters()):
                    average.lerp_(current, 1 - decay)
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, losses[-1])
    return ema.eval(), losses


def reverse_timesteps(chain: int, steps: int) -> list[int]:
    """The 0-based timesteps the reverse process visits from t* = `chain` steps: `steps` (at most
    `chain`) evenly spaced values from chain − 1 down to 0, both included (one step: chain − 1 only)."""
    count = min(steps, chain)
    if count == 1:
        return [chain - 1]
    return [round(v) for v in torch.linspace(chain - 1, 0, count, dtype=torch.float64).tolist()]


PURIFY_CONSTRAINTS: dict[str, Constraint] = {
    "t_star": Interval(float, 0, 1),
    "sample_steps": POSITIVE_INT,
    "sampler": StrOptions(SAMPLERS),
    "seed": SEED,
    "batch_size": POSITIVE_INT,
}
"""The options of `purify` and `DiffusionPurification` (published: t* 0.1, the full chain of 100 steps)."""


@torch.no_grad()
def purify(
    model: UNet,
    images: torch.Tensor,
    t_star: float = T_STAR,
    sample_steps: int = 100,
    sampler: str = "ddpm",
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Diffuse uint8 N×C×S×S `images` to t* and sample back to 0 with `model` (on the images' device).

    The chain has n = round(t_star·T) steps: x_n = √ᾱ_n·x0 + √(1 − ᾱ_n)·ε, then the reverse
    process over `reverse_timesteps(n, sample_steps)` (all n when `sample_steps` ≥ n, the published setting).
    At each visited timestep t with the next one s (ᾱ_s = 1 after the last) the model's ε̂ gives
    x̂0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t clipped to [−1, 1]; "ddpm" draws x_s from the posterior
    q(x_s | x_t, x̂0) (mean with β' = 1 − ᾱ_t/ᾱ_s, variance β'(1 − ᾱ_s)/(1 − ᾱ_t)); "ddim" sets
    x_s = √ᾱ_s·x̂0 + √(1 − ᾱ_s)·ε̃ with ε̃ recomputed from x̂0 (η = 0). t_star = 0 returns a copy.

    The noise is drawn from a torch.Generator on the images' device seeded with `seed`, batch by
    batch in dataset order, so the result depends on (seed, batch_size) and is reproducible on the CPU.

    Returns:
        uint8 N×C×S×S on the images' device.
    """
    validate_params(
        "purify",
        {"t_star": t_star, "sample_steps": sample_steps, "sampler": sampler, "seed": seed, "batch_size": batch_size},
        PURIFY_CONSTRAINTS,
    )
    config: DDPMConfig = model.config
    _check_images(images, config, "the images to purify")
    chain = round(t_star * config.num_timesteps)
    if chain == 0 or len(images) == 0:
        return images.clone()
    device = images.device
    model = model.to(device).eval()
    abar = alphas_cumprod(config).tolist()
    visits = reverse_timesteps(chain, sample_steps)
    generator = torch.Generator(device).manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, len(images), batch_size):
        x0 = to_model_scale(images[start : start + batch_size])
        noise = torch.randn(x0.shape, generator=generator, device=device)
        x = math.sqrt(abar[chain - 1]) * x0 + math.sqrt(1 - abar[chain - 1]) * noise
        for k, t in enumerate(visits):
            a_t = abar[t]
            a_s = abar[visits[k + 1]] if k + 1 < len(visits) else 1.0
            eps = model(x, torch.full((len(x),), t, device=device, dtype=torch.long))
            x0_hat = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp_(-1, 1)
            if sampler == "ddim":
                eps = (x - math.sqrt(a_t) * x0_hat) / math.sqrt(1 - a_t)
                x = math.sqrt(a_s) * x0_hat + math.sqrt(1 - a_s) * eps
                continue
            beta = 1 - a_t / a_s
            x = (math.sqrt(a_s) * beta / (1 - a_t)) * x0_hat + (math.sqrt(1 - beta) * (1 - a_s) / (1 - a_t)) * x
            variance = beta * (1 - a_s) / (1 - a_t)
            if variance > 0:
                x = x + math.sqrt(variance) * torch.randn(x.shape, generator=generator, device=device)
        out[start : start + len(x)] = from_model_scale(x)
    return out


def _check_images(images: torch.Tensor, config: DDPMConfig, what: str) -> None:
    """One UserInputError line unless `images` are uint8 N×C×S×S with the config's C and S."""
    expected = (config.channels, config.image_size, config.image_size)
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise UserInputError(f"{what} must be uint8 N×C×H×W (got {images.dtype} {tuple(images.shape)})")
    if tuple(images.shape[1:]) != expected:
        raise UserInputError(
            f"{what} are {'×'.join(map(str, images.shape[1:]))} (C×H×W) but the DDPM was built for "
            f"{'×'.join(map(str, expected))}; train one on clean images of this size and channels ({TRAIN_COMMAND})"
        )


def checkpoint_config(config: DDPMConfig, training: dict[str, Any]) -> dict[str, Any]:
    """The JSON config of a checkpoint (see the module docstring)."""
    return {"format": FORMAT, "version": FORMAT_VERSION, "model": config.to_dict(), "training": training}


def format_config(meta: dict[str, Any]) -> str:
    """The JSON text of a checkpoint config: one line per key of the top level and of its sections
    (a list, such as the training image indices, stays on its line)."""

    def entry(key: str, value: Any, indent: str) -> str:
        if isinstance(value, dict) and value and indent == " ":
            inner = ",\n".join(entry(k, v, "  ") for k, v in value.items())
            return f"{indent}{json.dumps(key)}: {{\n{inner}\n{indent}}}"
        return f"{indent}{json.dumps(key)}: {json.dumps(value)}"

    return "{\n" + ",\n".join(entry(k, v, " ") for k, v in meta.items()) + "\n}"


def save_checkpoint(out: str | os.PathLike, model: UNet, training: dict[str, Any], overwrite: bool = False) -> Path:
    """Write `model` (its config and weights) with the `training` provenance as a checkpoint.

    `out` ending in ".pt" is written as one file, anything else as a directory (config.json,
    model.pt and the tool's marker), atomically; an existing output is replaced only with
    `overwrite` (a directory only when this tool wrote it). Returns `out` as a Path.
    """
    out = Path(out)
    text = format_config(checkpoint_config(model.config, training))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if out.suffix == ".pt":
        if out.exists() and (not overwrite or not out.is_file()):
            raise UserInputError(f"{out} already exists; choose another path or pass --overwrite")
        buffer = io.BytesIO()
        torch.save({"config": text, "state_dict": state}, buffer)
        atomic_write_bytes(out, buffer.getvalue())
        return out
    with atomic_directory(out, overwrite, kind=CHECKPOINT_KIND) as tmp:
        (tmp / CONFIG_FILE).write_text(text + "\n")
        torch.save(state, tmp / WEIGHTS_FILE)
    return out


def load_checkpoint(path: str | os.PathLike | None, device: str | torch.device | None = None) -> tuple[UNet, dict]:
    """The EMA `UNet` (eval mode, on `device`, default CPU) and the JSON config of the checkpoint at `path`.

    A missing path or file, a config of another format, or weights that do not fit the config
    raise one UserInputError line naming the training command.
    """
    if path is None:
        raise UserInputError(f"diffpure needs a DDPM trained on clean images: pass checkpoint=PATH ({TRAIN_COMMAND})")
    where = Path(path).expanduser()
    if where.is_dir():
        if not (where / CONFIG_FILE).is_file() or not (where / WEIGHTS_FILE).is_file():
            raise UserInputError(
                f"{where} is not a DDPM checkpoint (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); make one with {TRAIN_COMMAND}"
            )
        try:
            meta = json.loads((where / CONFIG_FILE).read_text())
            state = torch.load(where / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise UserInputError(
                f"{where}: unreadable DDPM checkpoint ({e}); make a new one with {TRAIN_COMMAND}"
            ) from None
    elif where.is_file():
        try:
            saved = torch.load(where, map_location="cpu", weights_only=True)
            meta, state = json.loads(saved["config"]), saved["state_dict"]
        except (OSError, ValueError, RuntimeError, EOFError, KeyError, TypeError, pickle.UnpicklingError) as e:
            raise UserInputError(
                f"{where}: unreadable DDPM checkpoint ({e}); make a new one with {TRAIN_COMMAND}"
            ) from None
    else:
        raise UserInputError(f"{where}: no such DDPM checkpoint; train one with {TRAIN_COMMAND}")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise UserInputError(
            f"{where} is not a {FORMAT} checkpoint of version {FORMAT_VERSION}; make one with {TRAIN_COMMAND}"
        )
    if not isinstance(meta.get("model"), dict):
        raise UserInputError(f'{where}: the config has no "model" section; make a new checkpoint with {TRAIN_COMMAND}')
    config = DDPMConfig.from_dict(meta["model"])
    model = UNet(config)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserInputError(
            f"{where}: the weights do not fit the config ({first}); make a new checkpoint with {TRAIN_COMMAND}"
        ) from None
    return model.to(torch.device(device) if device is not None else "cpu").eval().requires_grad_(False), meta


def _same_images(training: dict[str, Any], dataset: ImageDataset) -> bool:
    """Whether the checkpoint's provenance names the dataset's own source and split."""
    trained, source = training.get("source"), dataset.meta.get("source")
    if not isinstance(trained, dict) or not isinstance(source, dict):
        return False
    keys = ("path", "split")
    return all(trained.get(k) is not None and trained.get(k) == source.get(k) for k in keys)


class DiffusionPurification(Configurable):
    """The ``diffpure`` preprocessing defense: every training image diffused to t* and sampled back
    with a DDPM trained on clean images (`purify`), once before training.

    Args:
        checkpoint: path of a trained DDPM (see the module docstring; ``bench/train_diffusion.py``
            makes one). Required when the defense runs; None only builds it (e.g. to list it).
        t_star: the diffusion time as a fraction of T, in [0, 1] (AVATAR: 0.1).
        sample_steps: reverse-process steps (named apart from AT's `steps` in a chain), at most round(t_star·T) are used (published: all of them).
        sampler: "ddpm" (ancestral) or "ddim" (η = 0).
        seed: seeds the forward noise and the sampler.
        batch_size: images per network call.
    """

    PARAMETER_CONSTRAINTS = PURIFY_CONSTRAINTS

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        t_star: float = T_STAR,
        sample_steps: int = 100,
        sampler: str = "ddpm",
        seed: int = 0,
        batch_size: int = 256,
    ) -> None:
        if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
            raise UserInputError(f"DiffusionPurification: checkpoint must be a path or None (got {checkpoint!r})")
        if checkpoint is not None and not Path(checkpoint).exists():  # before any data is read
            raise UserInputError(f"{checkpoint}: no such DDPM checkpoint; train one with {TRAIN_COMMAND}")
        self._validate(t_star=t_star, sample_steps=sample_steps, sampler=sampler, seed=seed, batch_size=batch_size)
        self.checkpoint = None if checkpoint is None else os.fspath(checkpoint)
        self.t_star, self.sample_steps, self.sampler, self.seed, self.batch_size = (
            float(t_star),
            sample_steps,
            sampler,
            seed,
            batch_size,
        )

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        """The purified copy of `dataset` (same labels and classes, uint8, on its device); ``meta``
        keeps the input's and adds ``diffpure`` = {"checkpoint", "t_star", "chain_steps" (round(t*·T)),
        "sample_steps" (reverse steps run), "sampler", "seed", "batch_size", "model", "training"}."""
        model, meta = load_checkpoint(self.checkpoint, dataset.images.device)
        training = meta.get("training", {})
        if _same_images(training, dataset):
            warnings.warn(
                "diffpure: the DDPM was trained on the very images it purifies (same source and split); "
                "train it on clean images the poison never touched, e.g. --split test",
                stacklevel=2,
            )
        images = purify(model, dataset.images, self.t_star, self.sample_steps, self.sampler, self.seed, self.batch_size)
        chain = round(self.t_star * model.config.num_timesteps)
        record = {
            "checkpoint": self.checkpoint,
            "t_star": self.t_star,
            "chain_steps": chain,
            "sample_steps": len(reverse_timesteps(chain, self.sample_steps)) if chain else 0,
            "sampler": self.sampler,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "model": meta["model"],
            "training": training,
        }
        logger.info(
            "diffpure: purified %d images at t*=%g with %d steps", len(images), self.t_star, record["sample_steps"]
        )
        return ImageDataset(images, dataset.labels.clone(), list(dataset.classes), {**dataset.meta, "diffpure": record})
