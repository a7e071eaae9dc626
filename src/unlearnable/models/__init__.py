"""Classifiers by name, in the style of timm's ``create_model``.

    model = create_model("resnet18", num_classes=10)                  # CIFAR ResNet-18
    model = create_model("small", num_classes=10, in_channels=1)      # Fashion-MNIST on a CPU

Every model maps float B×in_channels×H×W images (any H, W ≥ 28) to B×K logits and starts from
PyTorch's default initialisation, so the same ``torch.manual_seed`` gives the same weights.
Adding one is a module plus one ``MODELS.add`` line here (see CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearnable.registry import Registry

if TYPE_CHECKING:
    from torch import nn

MODELS = Registry("model")
MODELS.add(
    "small", "unlearnable.models.small:small_net", "airbench-style 4-stage CNN, 0.46 M parameters: the CPU model"
)
MODELS.add("resnet18", "unlearnable.models.resnet:resnet18", "CIFAR ResNet-18, 11.2 M parameters: the paper's model")
MODELS.add("resnet50", "unlearnable.models.resnet:resnet50", "CIFAR ResNet-50, 23.5 M parameters")
MODELS.add("vgg16-bn", "unlearnable.models.vgg:vgg16_bn", "CIFAR VGG-16 with batch norm, 14.7 M parameters")
MODELS.add("wrn-28-10", "unlearnable.models.wide_resnet:wrn_28_10", "Wide ResNet-28-10, 36.5 M parameters")
MODELS.add(
    "wrn-34-10",
    "unlearnable.models.wide_resnet:wrn_34_10",
    "Wide ResNet-34-10, 46.2 M parameters (adversarial training)",
)
MODELS.add(
    "resnet18-imagenet",
    "unlearnable.models.resnet:resnet18_imagenet",
    "torchvision's ImageNet ResNet-18 (224×224 inputs)",
)


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the model registered as `name` with `num_classes` logits for `in_channels`-channel images.

    Raises:
        UserInputError: `name` is not registered in ``MODELS``.
    """
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)


__all__ = ["MODELS", "create_model"]
