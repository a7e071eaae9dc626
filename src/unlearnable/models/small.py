"""The small fast CNN for CPU runs, in the style of airbench (Keller Jordan's fast CIFAR-10 nets).

    stem    conv3×3 in_channels→24 → max-pool 2 → BN → GELU                        32 → 16
    block1  conv3×3 24→40 → max-pool 2 → BN → GELU → conv3×3 40→40 → BN → GELU    16 → 8
    block2  conv3×3 40→80 → max-pool 2 → BN → GELU → conv3×3 80→80 → BN → GELU     8 → 4
    block3  conv3×3 80→160 → max-pool 2 → BN → GELU → conv3×3 160→160 → BN → GELU  4 → 2
    head    global max-pool → Linear(160, K, no bias) → × 1/9

458,456 parameters for K = 10 on RGB. Pools use ``ceil_mode=True`` so 28×28 inputs give
28 → 14 → 7 → 4 → 2; the global pool accepts any size. Convolutions carry no bias because BN follows.
The final linear's output is scaled by 1/9 (airbench's temperature, kept, not re-tuned here), so the
logits start near zero; the init is otherwise PyTorch's default.

This module is the network only: how it is trained is the trainer's and the recipe's. With
``unlearnable train --model small --recipe quick`` (as the CPU demo and the quick audit use it) that
is: a random 32×32 crop of the image zero-padded by 4 pixels, a horizontal flip (p = 0.5), per-channel
standardisation; SGD with Nesterov momentum 0.9 and weight decay 5e-4 on every parameter (BatchNorm
and the linear layer included), batch 256, the learning rate rising linearly to 0.2 over the first
10 % of the steps and falling linearly to 0 after, label smoothing 0.2, gradient norm clipped to 5
(`unlearnable.training.recipes`).

Chosen by measurement on a shared 2-core CPU (AMD EPYC, torch 2.14.1, fp32). Other developers' jobs
held one core or more throughout, so every throughput is the best of 3 timed windows after warm-up
and varies by ±50 % between runs; with a core busy, 2-thread OpenMP loses most of its speed and
1 thread is faster.

    training (forward + backward + SGD step, random 32×32×3, bench/bench_models.py)
        1 thread, batch 512, channels_last   924 img/s (897 in another run); NCHW 443 img/s
        2 threads, batch 256, channels_last  318–470 img/s while another job ran

The architecture was chosen with a training setup that differs from the trainer's in three ways: a
reflect-padded crop, weight decay on the conv and linear weights only, and a 25 % warm-up. Its
accuracies compare the candidates; they are not what the quick recipe reproduces. 8 epochs on 10,000
CIFAR-10 training images (stratified_subset 1,000 per class, seed 0, of cifar10-jpeg), tested on 2,000
(200 per class): this net 67.9 % at 849 img/s (one interleaved 1-thread batch-256 run); widths
48/96/192 68.2 % / 639 img/s; with 6 epochs instead of 8, a 2×2 stride-2 patch stem with 48/96/192
63.3 % (768 img/s) and a full-resolution 2×2 stem with 24/48/96 64.9 % (485 img/s). The quick recipe
itself measured 62.8 % on 500 + 100 images per class (see its note in `unlearnable.training.recipes`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

LOGIT_SCALE = 1 / 9
"""Multiplies the logits; airbench's value."""


def conv_bn_gelu(in_channels: int, out_channels: int, pool: bool = False) -> list[nn.Module]:
    """conv3×3 (no bias) → [max-pool 2, ceil mode] → BN → GELU; pooling before BN quarters its cost."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return layers + [nn.BatchNorm2d(out_channels), nn.GELU()]


class SmallNet(nn.Module):
    """Stem then one block per width (conv → pool → BN → GELU → conv → BN → GELU), global max-pool, linear.

    Args:
        num_classes: K, the number of logits.
        in_channels: image channels (3 for RGB, 1 for Fashion-MNIST).
        stem_width: channels of the stem convolution.
        widths: channels of each block; each block halves H and W.
    """

    def __init__(
        self, num_classes: int, in_channels: int = 3, stem_width: int = 24, widths: Sequence[int] = (40, 80, 160)
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn_gelu(in_channels, stem_width, pool=True))
        blocks = []
        channels = stem_width
        for width in widths:
            blocks.append(nn.Sequential(*conv_bn_gelu(channels, width, pool=True), *conv_bn_gelu(width, width)))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(channels, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float B×in_channels×H×W images (normalised as the caller chooses) → B×K logits."""
        features = self.pool(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(features, 1)) * LOGIT_SCALE


def small_net(num_classes: int, in_channels: int = 3) -> SmallNet:
    """The registry's "small": stem 24, blocks 40/80/160."""
    return SmallNet(num_classes, in_channels)
