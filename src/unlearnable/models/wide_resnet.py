"""Wide ResNets for 32×32 images (Zagoruyko & Komodakis, 2016), as adversarial-training papers use them.

WRN-d-k: a 3×3 stem to 16 channels, three stages of n = (d - 4) / 6 pre-activation wide basic
blocks of widths 16k, 32k, 64k with strides 1, 2, 2, then BN → ReLU → global average pool →
Linear(64k, K). Dropout is 0, so there is no dropout layer. Convolutions have no bias.

    WRN-28-10  36,479,194 parameters (K = 10, 3 input channels)
    WRN-34-10  46,160,474 parameters (K = 10, 3 input channels)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WideBasic(nn.Module):
    """Pre-activation block: BN → ReLU → conv3×3(stride) → BN → ReLU → conv3×3, plus the shortcut.

    When the shape changes the shortcut is a 1×1 convolution of the pre-activated input (the
    original WRN code shares the first BN → ReLU between both paths); otherwise it is the raw input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False) if stride != 1 or in_planes != planes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in_planes×H×W → B×planes×⌈H/stride⌉×⌈W/stride⌉."""
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-`depth`-`widen_factor` for small images.

    Args:
        depth: total depth d with (d - 4) divisible by 6 (28, 34, ...).
        widen_factor: k, the width multiplier.
        num_classes: K, the number of logits.
        in_channels: image channels (3 for RGB, 1 for Fashion-MNIST).
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages = []
        in_planes = 16
        for planes, stride in zip((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), (1, 2, 2)):
            stages.append(
                nn.Sequential(
                    *(
                        WideBasic(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                        for i in range(blocks)
                    )
                )
            )
            in_planes = planes
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float B×in_channels×H×W images → B×K logits."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(F.relu(self.bn(out))), 1))


def wrn_28_10(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-28-10: 4 blocks per stage, widths 160/320/640."""
    return WideResNet(28, 10, num_classes, in_channels)


def wrn_34_10(num_classes: int, in_channels: int = 3) -> WideResNet:
    """WRN-34-10: 5 blocks per stage, widths 160/320/640."""
    return WideResNet(34, 10, num_classes, in_channels)
