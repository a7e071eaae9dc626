"""Model registry: exact parameter counts, output shapes on CIFAR and Fashion-MNIST inputs, errors, seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnable.errors import UserInputError
from unlearnable.models import MODELS, create_model

PARAMETERS_K10_RGB = {
    "small": 458_456,
    "resnet18": 11_173_962,
    "resnet50": 23_520_842,
    "vgg16-bn": 14_728_266,
    "wrn-28-10": 36_479_194,
    "wrn-34-10": 46_160_474,
    "resnet18-imagenet": 11_181_642,
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_model_has_a_pinned_count() -> None:
    assert set(PARAMETERS_K10_RGB) == set(MODELS.names())


@pytest.mark.parametrize("name", MODELS.names())
def test_parameter_count(name: str) -> None:
    with torch.device("meta"):  # shapes only: skips allocating and initialising tens of millions of weights
        model = create_model(name, num_classes=10)
    assert count_parameters(model) == PARAMETERS_K10_RGB[name]


@pytest.mark.parametrize("name", MODELS.names())
def test_output_shapes_cifar_and_fashion_mnist(name: str) -> None:
    """Batch 2: 32×32×3 with K = 10 and 28×28×1 with K = 7 (64×64×3 for the ImageNet stem instead of 224)."""
    size = 64 if name == "resnet18-imagenet" else 32
    shapes = [((2, 3, size, size), 3, 10), ((2, 1, 28, 28), 1, 7)]
    for shape, in_channels, num_classes in shapes:
        model = create_model(name, num_classes=num_classes, in_channels=in_channels).eval()
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == in_channels
        with torch.no_grad():
            logits = model(torch.randn(shape))
        assert logits.shape == (2, num_classes)
        assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError) as info:
        create_model("resnet19", num_classes=10)
    message = str(info.value)
    assert "\n" not in message and "resnet19" in message
    assert all(name in message for name in MODELS.names())


@pytest.mark.parametrize("name", ["small", "resnet18"])
def test_same_seed_same_weights(name: str) -> None:
    torch.manual_seed(123)
    first = create_model(name, num_classes=10).state_dict()
    torch.manual_seed(123)
    second = create_model(name, num_classes=10).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    torch.manual_seed(124)
    assert not torch.equal(create_model(name, num_classes=10).state_dict()["fc.weight"], first["fc.weight"])
