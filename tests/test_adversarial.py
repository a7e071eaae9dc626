"""PGD (L∞ and L2) and the adversarial-training step hook (SPEC §5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.defenses.adversarial import PGD, AdversarialTraining
from unlearnable.errors import UserInputError
from unlearnable.training.trainer import TrainConfig, Trainer, resolve_config, resolve_recipe

EPS = {"linf": 8 / 255, "l2": 0.5}

pytestmark = pytest.mark.usefixtures("one_thread")


def blob_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images in [0, 1]: dark noise with a class-coloured square (3 classes), and labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    x[:, :, 4:12, 4:12] += F.one_hot(y, 3).float().view(n, 3, 1, 1) * 0.2
    return x, y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small BN CNN trained for a few steps on the blob task (in train mode), and a held-out batch."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 3),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(30):
        x, y = blob_batch(64, seed=step)
        optimizer.zero_grad()
        F.cross_entropy(model(normalize(x)), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    x, y = blob_batch(48, seed=1000)
    return model, x, y


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.25) / 0.3


def attack(norm: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 0, **options) -> torch.Tensor:
    steps = options.pop("steps", 5)
    eps = options.pop("eps", EPS[norm])
    alpha = options.pop("alpha", 2.5 * eps / steps)
    return PGD[norm](model, x, y, eps, steps, alpha, torch.Generator().manual_seed(seed), normalize, **options)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_ball_and_box(norm: str, trained) -> None:
    model, x, y = trained
    for random_start in (True, False):
        x_adv = attack(norm, model, x, y, random_start=random_start)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert bool((size <= EPS[norm] * (1 + 1e-5)).all())
        assert bool((size > EPS[norm] / 2).all())  # it does move: most samples go to the boundary
        assert x_adv.min() >= 0 and x_adv.max() <= 1 and x_adv.shape == x.shape and not x_adv.requires_grad


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_raises_the_loss(norm: str, trained) -> None:
    model, x, y = trained
    model.eval()
    with torch.no_grad():
        clean = F.cross_entropy(model(normalize(x)), y)
        adversarial = F.cross_entropy(model(normalize(attack(norm, model, x, y))), y)
    model.train()
    assert adversarial > clean * 1.5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_attack_leaves_batchnorm_and_grads_alone(norm: str, trained) -> None:
    model, x, y = trained
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    marker = torch.full_like(model[0].weight, 7.0)
    model[0].weight.grad = marker.clone()
    for mode in (True, False):
        model.train(mode)
        attack(norm, model, x, y)
        assert model.training is mode and all(m.training is mode for m in model.modules())
    assert all(torch.equal(b, buffers[name]) for name, b in model.named_buffers())
    assert torch.equal(model[0].weight.grad, marker)
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")
    model[0].weight.grad = None
    model.train()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_comes_from_the_generator(norm: str, trained) -> None:
    model, x, y = trained
    assert torch.equal(attack(norm, model, x, y, seed=3), attack(norm, model, x, y, seed=3))
    assert not torch.equal(attack(norm, model, x, y, seed=3), attack(norm, model, x, y, seed=4))


def test_step_hook_options() -> None:
    assert AdversarialTraining().to_dict() == {
        "norm": "linf",
        "eps": 4 / 255,
        "steps": 10,
        "alpha": 1.5 * (4 / 255) / 10,
        "random_start": True,
    }
    assert AdversarialTraining.from_options({"norm": "l2", "eps": 0.5, "steps": 10}).alpha == pytest.approx(0.125)
    for options, message in [
        ({"norm": "l3"}, "AdversarialTraining: norm must be one of 'linf', 'l2' (got 'l3')"),
        ({"eps": 0}, "AdversarialTraining: eps must be a number > 0 (got 0)"),
        ({"steps": 0}, "AdversarialTraining: steps must be an integer ≥ 1 (got 0)"),
        ({"alpha": -1.0}, "AdversarialTraining: alpha must be None or a number > 0 (got -1.0)"),
        ({"epsilon": 0.1}, "unknown adversarial option"),
    ]:
        with pytest.raises(UserInputError, match=re.escape(message)):
            AdversarialTraining.from_options(options)
    assert repr(AdversarialTraining("l2", 0.5, 5)) == (
        "AdversarialTraining(norm='l2', eps=0.5, steps=5, alpha=0.25, random_start=True)"
    )


def test_trainer_trains_on_the_attacked_augmented_batch(tmp_path: Path, trained) -> None:
    """The hook gets the augmented batch in [0, 1] and the update gets only its (normalised) output."""
    from unlearnable.data import ImageDataset

    _, x, y = trained
    images = ImageDataset((x * 255).round().to(torch.uint8), y, ["a", "b", "c"])
    config = resolve_config(
        TrainConfig(
            out=str(tmp_path),
            recipe=resolve_recipe("quick", epochs=1, batch_size=16),
            device="cpu",
            defense="at-linf",
            defense_options={"eps": 4 / 255, "steps": 2},
        )
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    trainer = Trainer(config, images, images, model, ([0.5] * 3, [0.25] * 3))
    attacked, updated = [], []
    real_attack, real_update = trainer.hook, trainer.update

    def spy_attack(model, x, y, generator, model_input):
        attacked.append(x)
        out = real_attack(model, x, y, generator, model_input)
        attacked.append(out)
        return out

    def spy_update(inputs, labels):
        updated.append(inputs)
        return real_update(inputs, labels)

    trainer.hook, trainer.update = spy_attack, spy_update
    batch, labels = next(trainer.train_loader.shuffled(trainer.generator))
    trainer.train_step(batch, labels)
    clean, adversarial = attacked
    assert clean.shape == (16, 3, 16, 16) and clean.min() >= 0 and clean.max() <= 1
    assert (adversarial - clean).abs().max() <= 4 / 255 + 1e-6 and not torch.equal(adversarial, clean)
    torch.testing.assert_close(updated[0], (adversarial - 0.5) / 0.25)
