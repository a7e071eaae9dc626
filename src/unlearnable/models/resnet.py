"""CIFAR ResNets (He et al., 2016) as the unlearnable-examples literature trains them.

The ImageNet design with a CIFAR stem: one 3×3 stride-1 convolution and no max-pool, so a
32×32 input keeps full resolution in the first stage (32 → 32 → 16 → 8 → 4). Global average
pooling before the classifier makes any input size work (28×28 Fashion-MNIST gives 28 → 14 → 7 → 4).

    ResNet-18  BasicBlock [2, 2, 2, 2]   11,173,962 parameters (K = 10, 3 input channels)
    ResNet-50  Bottleneck [3, 4, 6, 3]   23,520,842 parameters (K = 10, 3 input channels)

`resnet18_imagenet` is torchvision's ImageNet ResNet-18 instead (11,181,642 parameters for K = 10).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def projection_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """1×1 convolution (no bias) + BN when the residual changes shape; identity otherwise."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """conv3×3(stride) → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = projection_shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in_planes×H×W → B×planes×⌈H/stride⌉×⌈W/stride⌉."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """conv1×1 → BN → ReLU → conv3×3(stride) → BN → ReLU → conv1×1 (4× width) → BN, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = projection_shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×in_planes×H×W → B×(4·planes)×⌈H/stride⌉×⌈W/stride⌉."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: 3×3 stem, four stages of `block` (widths 64/128/256/512, strides 1/2/2/2), GAP, linear.

    Args:
        block: BasicBlock or Bottleneck.
        num_blocks: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        num_classes: K, the number of logits.
        in_channels: image channels (3 for RGB, 1 for Fashion-MNIST).
    """

    def __init__(
        self, block: type[BasicBlock | Bottleneck], num_blocks: Sequence[int], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        in_planes = 64
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            layers = []
            for s in (stride,) + (1,) * (blocks - 1):
                layers.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float B×in_channels×H×W images (any H, W; normalised as the caller chooses) → B×K logits."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.pool(out), 1))


def resnet18(num_classes: int, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-18: BasicBlock [2, 2, 2, 2]; 11,173,962 parameters for K = 10 on RGB."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


def resnet50(num_classes: int, in_channels: int = 3) -> ResNet:
    """CIFAR ResNet-50: Bottleneck [3, 4, 6, 3], expansion 4; 23,520,842 parameters for K = 10 on RGB."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)


def resnet18_imagenet(num_classes: int, in_channels: int = 3) -> torchvision.models.ResNet:
    """torchvision's ImageNet ResNet-18 (7×7 stride-2 stem + max-pool), untrained, for 224×224 data.

    With `in_channels` ≠ 3 the stem convolution is replaced by one of the same shape on that many channels.
    """
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
