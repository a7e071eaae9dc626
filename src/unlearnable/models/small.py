"""The small fast CNN for CPU runs, in the style of airbench (Keller Jordan's fast CIFAR-10 nets).

    stem    conv3×3 in_channels→24 → max-pool 2 → BN → GELU                        32 → 16
    block1  conv3×3 24→40 → max-pool 2 → BN → GELU → conv3×3 40→40 → BN → GELU    16 → 8
    block2  conv3×3 40→80 → max-pool 2 → BN → GELU → conv3×3 80→80 → BN → GELU     8 → 4
    block3  conv3×3 80→160 → max-pool 2 → BN → GELU → conv3×3 160→160 → BN → GELU  4 → 2
    head    global max-pool → Linear(160, K, no bias) → × 1/9

458,456 parameters for K = 10 on RGB. Pools use ``ceil_mode=True`` so 28×28 inputs give
28 → 14 → 7 → 4 → 2; the global pool accepts any size. Convolutions carry no bias because BN follows.
The final linear's output is scaled by 1/9 (airbench's temperature): with default init the logits
start near zero, which made training with label smoothing faster to converge.

Measured on a shared 2-core CPU (AMD EPYC, torch 2.x, 2 threads; other jobs were running, so
these are best-of-N figures and vary by ±50 % from run to run):
    MEASUREMENTS
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

    def __init__(self, num_classes: int, in_channels: int = 3, stem_width: int = 24,
                 widths: Sequence[int] = (40, 80, 160)) -> None:
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
