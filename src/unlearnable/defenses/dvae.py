"""D-VAE purification (Yu et al., ICML 2024, "Purify Unlearnable Examples via Rate-Constrained
Variational Autoencoders"; public code yuyi-sd/D-VAE, ``main_vae_disentangle.py`` and
``configs/models/resnet.py:ResNetDVAE``).

A variational autoencoder trained on the poisoned training set itself with a rate constraint (a
floor on its KL term) has too little capacity to spend on the small perturbations and reconstructs
mostly the image content. The D-VAE adds a second decoder that predicts the perturbation from a
learned class embedding and the decoded latent, trained so that reconstruction plus prediction
gives back the poisoned image; subtracting the prediction takes out what the reconstruction alone
would keep. The defense replaces every training image once, before training:

    stage 1: train a D-VAE on x (KL target 1.0);            x₁ = clamp(x − p₁(x, y))
    stage 2: train a fresh D-VAE on x₁ (KL target kl_target); x₂ = rec₂(clamp(x₁ − p₂(x₁, y)))

The architecture, as the published CIFAR-10 configuration (``resnet18DVAE.yaml``: stem_end_block 7,
latent_dim 256), for C×H×W images in [0, 1]:

- encoder: the ResNet-18 stem up to the first block of layer2: conv3×3(C→64)+BN+ReLU, two BasicBlocks
  at 64, one BasicBlock 64→128 with stride 2: 128×H/2×W/2;
- latent: 1×1 convolutions to μ and log σ² (latent_dim×H/2×W/2, a spatial latent), a sample
  z = μ + σ·ε, and a 1×1 convolution back to 128 channels;
- image decoder: ConvT(128→64, 4, stride 2) → ConvT(64→64, 3) → InstanceNorm → ReLU → ConvT(64→32, 3)
  → InstanceNorm → ReLU → ConvT(32→C, 3) → sigmoid: C×H×W;
- perturbation decoder: the same layers without the sigmoid, reading a per-class spatial embedding
  (K × 128·H/2·W/2, nn.Embedding's N(0, 1) start) plus the decoded latent (the published script passes
  ``--use_y``, a store_false flag, so the decoder reads the latent, not the stem features, and
  ``--spatial_emb``, so the embedding is spatial).

Loss per batch (x the stage's input, y its labels; the KL term is summed over latent channels and
averaged over the batch and the H/2×W/2 positions):

    ‖rec − x‖² + ‖clamp(rec + p, 0, 1) − x‖² + kl_weight · max(KL, target) [+ max(‖p‖², 0.002)]

(mean squared errors), the last term only after the first 11 of 60 epochs (``epoch > 10``). Training:
Adam (lr 0.005, no weight decay), cosine annealing to 0 over the epochs, batch 128 of shuffled
images with the last incomplete batch dropped, gradient norm clipped at 5, 60 epochs a stage. The
published kl_weight is 0.01 for both stages (the code takes 0.5 only for targets ≤ 0.99), and the
CIFAR-10 scripts pass ``--kd 3.0`` as the second stage's target. Purification runs the trained model
in eval mode (BatchNorm with its running statistics) and, as the published code, still samples z.

With ``disentangle=False`` the defense is the paper's plain rate-constrained VAE: one stage, no
perturbation decoder, loss ‖rec − x‖² + kl_weight · max(KL, kl_target), output rec(x).

Deviations from the published code:

- Epochs. The defaults are the published 60 epochs a stage; `epochs` changes both stages, and the
  perturbation penalty then starts after the same share of them (⌊11·epochs/60⌋ epochs).
- Storage. The published code stores x₁ and the result with ``astype(uint8)`` of 255·x, which
  truncates; this one rounds to the nearest level (truncation darkens every pixel by half a level
  on average). Like the published code it stores x₁ as uint8 between the stages.
- Sizes. The published model is for 3-channel 32×32 images (its embedding size is written for
  16×16 stem outputs). Here the first convolution and the decoders' last take C channels, the
  embedding has the stem's H/2×W/2, and an odd side is padded by one replicated row or column
  before the model and cropped after it. The per-class embedding grows with K·H·W, so a set whose
  embedding would exceed ``MAX_EMBEDDING`` parameters (e.g. 100 classes at 224×224) is refused
  with the fix (smaller images, or ``disentangle=False``).
- The published model also carries a classification head and loads a classifier trained on the
  poisoned data; neither enters the loss (they only log accuracies), so both are left out.
- Randomness. The weights start from torch's default initialisation under a CPU generator seeded
  with `seed` (the global generator's state is restored afterwards), the batch order and the
  latent samples come from generators seeded with `seed`: the same data and seed give the same
  bytes on the CPU. On CUDA, cuDNN's convolution gradients are not bit-reproducible.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.data.dataset import ImageDataset, to_unit_float
from unlearnable.defenses.base import Configurable
from unlearnable.errors import UserInputError
from unlearnable.models.resnet import BasicBlock
from unlearnable.params import BOOLEAN, NONNEGATIVE, POSITIVE, POSITIVE_INT, SEED

__all__ = ["DVAE", "MAX_EMBEDDING", "purify"]

logger = logging.getLogger(__name__)

STEM_CHANNELS = 128
"""Channels of the encoder's output (ResNet-18 through the first block of layer2, ``stem_end_block=7``)."""
FIRST_KL_TARGET = 1.0
"""The KL floor of the first D-VAE stage (the published code's ``iters == 0`` value)."""
PERTURBATION_FLOOR = 0.002
"""The perturbation penalty is max(‖p‖², this): predictions this small are not pushed further down."""
PENALTY_START = (11, 60)
"""The perturbation penalty starts after 11 of every 60 epochs (published: ``epoch > 10`` of 60)."""
GRAD_CLIP = 5.0
"""Gradient norm clip of the published trainer (``grad_clip`` of the CIFAR-10 configuration)."""
MAX_EMBEDDING = 1 << 26
"""Most parameters the per-class perturbation embedding may hold (K·128·⌈H/2⌉·⌈W/2⌉; 256 MiB of float32)."""


class _DVAENet(nn.Module):
    """The published ResNetDVAE (``stem_end_block=7``) for C-channel images with even sides.

    Args:
        channels: C, 1 or more.
        latent_dim: channels of the spatial latent.
        embedding: (K, h, w) for the per-class embedding of the perturbation decoder at the stem's
            h×w, or None for a plain VAE (no perturbation decoder).
    """

    def __init__(self, channels: int, latent_dim: int, embedding: tuple[int, int, int] | None) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            BasicBlock(64, 64),
            BasicBlock(64, 64),
            BasicBlock(64, STEM_CHANNELS, stride=2),
        )
        self.fc_mu = nn.Conv2d(STEM_CHANNELS, latent_dim, 1)
        self.fc_var = nn.Conv2d(STEM_CHANNELS, latent_dim, 1)
        self.post_conv = nn.Conv2d(latent_dim, STEM_CHANNELS, 1)
        self.decoder = nn.Sequential(*_decoder_layers(channels), nn.Sigmoid())
        self.embedding_shape = embedding
        if embedding is not None:
            classes, h, w = embedding
            self.embedding = nn.Embedding(classes, STEM_CHANNELS * h * w)
            self.perturbation_decoder = nn.Sequential(*_decoder_layers(channels))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Float B×C×H×W `x` in [0, 1] and labels (B,) → (reconstruction B×C×H×W in [0, 1], μ and log σ²
        B×latent_dim×H/2×W/2, the predicted perturbation B×C×H×W or None for a plain VAE); the latent
        sample's noise is drawn from `generator`."""
        stem = self.stem(x)
        mu, log_var = self.fc_mu(stem), self.fc_var(stem)
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = self.post_conv(mu + torch.exp(0.5 * log_var) * noise)
        rec = self.decoder(z)
        if self.embedding_shape is None:
            return rec, mu, log_var, None
        perturbation = self.perturbation_decoder(self.embedding(y).reshape(stem.shape) + z)
        return rec, mu, log_var, perturbation


def _decoder_layers(channels: int) -> list[nn.Module]:
    """The published decoder (stem_end_block 7): 128×h×w → C×2h×2w, without the final activation."""
    return [
        nn.ConvTranspose2d(STEM_CHANNELS, 64, 4, stride=2, padding=1),
        nn.ConvTranspose2d(64, 64, 3, padding=1),
        nn.InstanceNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 3, padding=1),
        nn.InstanceNorm2d(32),
        nn.ReLU(),
        nn.ConvTranspose2d(32, channels, 3, padding=1),
    ]


def kl_divergence(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) summed over the latent channels (dim 1), averaged over the batch and positions: a scalar."""
    return (-0.5 * (1 + log_var - mu.square() - log_var.exp()).sum(dim=1)).mean()


def _pad_even(x: torch.Tensor) -> torch.Tensor:
    """Float B×C×H×W → B×C×(H+H%2)×(W+W%2), the last row and column repeated where a side is odd."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, w % 2, 0, h % 2), mode="replicate") if h % 2 or w % 2 else x


def _train_stage(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    kl_target: float,
    options: dict[str, Any],
    seed: int,
) -> tuple[_DVAENet, dict[str, float]]:
    """Train one (D-)VAE on uint8 N×C×H×W `images`; returns the model (eval mode) and the last epoch's mean losses."""
    n, channels, h, w = images.shape
    device = images.device
    embedding = (num_classes, (h + 1) // 2, (w + 1) // 2) if options["disentangle"] else None
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = _DVAENet(channels, options["latent_dim"], embedding)
    model.to(device).train()
    epochs, batch_size, kl_weight = options["epochs"], min(options["batch_size"], n), options["kl_weight"]
    optimizer = torch.optim.Adam(model.parameters(), lr=options["lr"], weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
    order = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device).manual_seed(seed)
    penalty_start = PENALTY_START[0] * epochs // PENALTY_START[1]
    steps = n // batch_size
    totals: dict[str, float] = {}
    for epoch in range(epochs):
        permutation = torch.randperm(n, generator=order)[: steps * batch_size].to(device)
        totals = dict.fromkeys(("loss", "reconstruction_mse", "kl", "perturbation_mse"), 0.0)
        for step in range(steps):
            index = permutation[step * batch_size : (step + 1) * batch_size]
            x = _pad_even(to_unit_float(images[index]))
            rec, mu, log_var, perturbation = model(x, labels[index], noise)
            rec_mse = F.mse_loss(rec, x)
            kl = kl_divergence(mu, log_var)
            loss = rec_mse + kl_weight * kl.clamp(min=kl_target)
            if perturbation is not None:
                p_mse = perturbation.square().mean()
                loss = loss + F.mse_loss((rec + perturbation).clamp(0, 1), x)
                if epoch >= penalty_start:
                    loss = loss + p_mse.clamp(min=PERTURBATION_FLOOR)
                totals["perturbation_mse"] += p_mse.item()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            totals["loss"] += loss.item()
            totals["reconstruction_mse"] += rec_mse.item()
            totals["kl"] += kl.item()
        scheduler.step()
        totals = {key: value / steps for key, value in totals.items()}
        logger.info(
            "dvae stage (KL target %g) epoch %d/%d: loss %.5f, reconstruction MSE %.5f, KL %.3f",
            kl_target,
            epoch + 1,
            epochs,
            totals["loss"],
            totals["reconstruction_mse"],
            totals["kl"],
        )
    if not options["disentangle"]:
        del totals["perturbation_mse"]
    return model.eval(), totals


@torch.no_grad()
def _apply(
    model: _DVAENet, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, final: bool
) -> torch.Tensor:
    """Purify uint8 N×C×H×W `images` with a trained model: uint8 of the same shape.

    A D-VAE subtracts its predicted perturbation and, when `final`, returns the reconstruction of
    the result (the published second stage); a plain VAE returns the reconstruction.
    """
    n, _, h, w = images.shape
    noise = torch.Generator(images.device).manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, n, batch_size):
        x = _pad_even(to_unit_float(images[start : start + batch_size]))
        y = labels[start : start + batch_size]
        rec, _, _, perturbation = model(x, y, noise)
        if perturbation is not None:
            x = (x - perturbation).clamp(0, 1)
            result = model(x, y, noise)[0] if final else x
        else:
            result = rec
        out[start : start + batch_size] = result[..., :h, :w].mul(255).round().clamp(0, 255).to(torch.uint8)
    return out


def purify(
    dataset: ImageDataset,
    epochs: int = 60,
    batch_size: int = 128,
    lr: float = 0.005,
    latent_dim: int = 256,
    kl_target: float = 3.0,
    kl_weight: float = 0.01,
    disentangle: bool = True,
    seed: int = 0,
) -> ImageDataset:
    """Purify `dataset` (uint8 N×C×H×W, any C and H×W) with the D-VAE, or a rate-constrained VAE when
    `disentangle` is False; see the module docstring. Runs on ``dataset.images.device``.

    Returns:
        A new dataset: the purified uint8 images, the same labels and classes, and ``meta`` keeping
        the input's plus ``dvae`` = {the settings, "stages": [per stage {"kl_target", and the last
        epoch's mean "loss", "reconstruction_mse", "kl" (and "perturbation_mse" for a D-VAE)}]}.
    """
    DVAE(epochs, batch_size, lr, latent_dim, kl_target, kl_weight, disentangle, seed)  # checks the settings
    n, channels, h, w = dataset.images.shape
    if n == 0:
        raise UserInputError(
            "dvae: the training set is empty, so there is no autoencoder to train; give it some images"
        )
    size = dataset.num_classes * STEM_CHANNELS * ((h + 1) // 2) * ((w + 1) // 2)
    if disentangle and size > MAX_EMBEDDING:
        raise UserInputError(
            f"dvae: the per-class perturbation embedding for {dataset.num_classes} classes of {h}×{w} images "
            f"would hold {size:,} parameters (at most {MAX_EMBEDDING:,}); resize the images "
            "(e.g. to 64×64) or purify with disentangle=False"
        )
    options = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": float(lr),
        "latent_dim": latent_dim,
        "kl_weight": float(kl_weight),
        "disentangle": disentangle,
    }
    images, labels = dataset.images, dataset.labels.to(dataset.images.device)
    targets = (FIRST_KL_TARGET, float(kl_target)) if disentangle else (float(kl_target),)
    stages = []
    for stage, target in enumerate(targets):
        model, losses = _train_stage(images, labels, dataset.num_classes, target, options, seed + stage)
        images = _apply(model, images, labels, batch_size, seed + stage, final=stage == len(targets) - 1)
        stages.append({"kl_target": target, **losses})
    record = {**options, "kl_target": float(kl_target), "seed": seed, "stages": stages}
    return ImageDataset(images, dataset.labels.clone(), list(dataset.classes), {**dataset.meta, "dvae": record})


class DVAE(Configurable):
    """The ``dvae`` preprocessing defense: `purify` applied once to the whole training set.

    Args:
        epochs: training epochs of each stage's autoencoder (published: 60).
        batch_size: training batch (published: 128); also the purification batch.
        lr: Adam's learning rate, annealed to 0 by a cosine (published: 0.005).
        latent_dim: channels of the spatial latent (published: 256).
        kl_target: the KL floor of the last stage (published ``--kd``: 3.0 on CIFAR-10); the D-VAE's
            first stage always uses 1.0.
        kl_weight: weight of the KL term (published: 0.01).
        disentangle: True for the two-stage D-VAE, False for one rate-constrained VAE.
        seed: seeds the initialisation, the batch order and the latent samples.
    """

    PARAMETER_CONSTRAINTS = {
        "epochs": POSITIVE_INT,
        "batch_size": POSITIVE_INT,
        "lr": POSITIVE,
        "latent_dim": POSITIVE_INT,
        "kl_target": NONNEGATIVE,
        "kl_weight": NONNEGATIVE,
        "disentangle": BOOLEAN,
        "seed": SEED,
    }

    def __init__(
        self,
        epochs: int = 60,
        batch_size: int = 128,
        lr: float = 0.005,
        latent_dim: int = 256,
        kl_target: float = 3.0,
        kl_weight: float = 0.01,
        disentangle: bool = True,
        seed: int = 0,
    ) -> None:
        self._validate(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            latent_dim=latent_dim,
            kl_target=kl_target,
            kl_weight=kl_weight,
            disentangle=disentangle,
            seed=seed,
        )
        self.epochs, self.batch_size, self.lr, self.latent_dim = epochs, batch_size, float(lr), latent_dim
        self.kl_target, self.kl_weight, self.disentangle, self.seed = (
            float(kl_target),
            float(kl_weight),
            disentangle,
            seed,
        )

    def __call__(self, dataset: ImageDataset) -> ImageDataset:
        """The purified copy of `dataset` (see `purify`)."""
        return purify(
            dataset,
            self.epochs,
            self.batch_size,
            self.lr,
            self.latent_dim,
            self.kl_target,
            self.kl_weight,
            self.disentangle,
            self.seed,
        )
