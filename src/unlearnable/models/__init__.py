"""Classifiers by name, in the style of timm's ``create_model``.

    model = create_model("resnet18", num_classes=10)                  # CIFAR ResNet-18
    model = create_model("small", num_classes=10, in_channels=1)      # Fashion-MNIST on a CPU

Every model maps float B×in_channels×H×W images (any H, W ≥ 28) to B×K logits and starts from
PyTorch's default initialisation, so the same ``torch.manual_seed`` gives the same weights.
Adding one is a module plus one line in ``MODELS``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from unlearnable.errors import UserInputError
from unlearnable.models.resnet import resnet18, resnet18_imagenet, resnet50
from unlearnable.models.small import small_net
from unlearnable.models.vgg import vgg16_bn
from unlearnable.models.wide_resnet import wrn_28_10, wrn_34_10

MODELS: dict[str, Callable[..., nn.Module]] = {
    "small": small_net,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "vgg16-bn": vgg16_bn,
    "wrn-28-10": wrn_28_10,
    "wrn-34-10": wrn_34_10,
    "resnet18-imagenet": resnet18_imagenet,
}

MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build the model registered as `name` with `num_classes` logits for `in_channels`-channel images.

    Raises:
        UserInputError: `name` is not in ``MODELS``.
    """
    check_model_name(name)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)


def check_model_name(name: str) -> None:
    """A UserInputError listing the known models when `name` is not in ``MODELS`` (cheap: builds nothing)."""
    if name not in MODELS:
        raise UserInputError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
