"""CIFAR VGG-16 with batch normalisation (Simonyan & Zisserman, 2015; the CIFAR variant).

Thirteen conv3×3 → BN → ReLU layers in five groups separated by 2×2 max-pools, then a
single Linear(512, K): the classifier of the CIFAR literature, not ImageNet's three FC layers.
The pools use ``ceil_mode=True`` so that 28×28 inputs survive five halvings (28 → 14 → 7 → 4 → 2
→ 1); on even sizes such as 32×32 this is the same as floor mode. An adaptive average pool before
the classifier accepts any larger input. The convolutions keep their bias (redundant before BN) as in
the pytorch-cifar VGG that unlearnable-examples code trains, so the parameter count is the usual
one: 14,728,266 for K = 10 on RGB.
"""

from __future__ import annotations

import torch
from torch import nn

VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
"""Output widths of the conv layers in order; "M" is a 2×2 max-pool."""


class VGG(nn.Module):
    """VGG with BN over a layer configuration such as ``VGG16_CFG``.

    Args:
        cfg: conv widths and "M" (max-pool) markers.
        num_classes: K, the number of logits.
        in_channels: image channels (3 for RGB, 1 for Fashion-MNIST).
    """

    def __init__(self, cfg: tuple[int | str, ...], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                layers += [
                    nn.Conv2d(channels, int(item), 3, padding=1),
                    nn.BatchNorm2d(int(item)),
                    nn.ReLU(inplace=True),
                ]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float B×in_channels×H×W images → B×K logits."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg16_bn(num_classes: int, in_channels: int = 3) -> VGG:
    """CIFAR VGG-16-BN: ``VGG16_CFG`` then Linear(512, K)."""
    return VGG(VGG16_CFG, num_classes, in_channels)
