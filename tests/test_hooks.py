"""Step hooks, the defenses with the model in the loop (defenses/hooks.py): the adversarial-training
presets, drawing only from the given generator, and float32 batches under bf16 autocast, where only
the model's forward is cast. Tests named *_on_cuda need a CUDA device (bench/gpu_check.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearnable.defenses import CutMix, DeconvolutionAT, MixUp, UEraserMax, training_defense
from unlearnable.defenses.adversarial import AdversarialTraining, eval_mode
from unlearnable.defenses.hooks import AutocastModel
from unlearnable.training.config import resolve_config
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.3) / 0.3


def batch(n: int = 8, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images in [0, 1] whose values are mostly not representable in bf16, and labels of 4 classes."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 4


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def bf16_rounded_share(x: torch.Tensor) -> float:
    """The share of values of `x` that bf16 holds exactly (about 1/256 for float32 arithmetic on random data)."""
    return (x.to(torch.bfloat16).float() == x).float().mean().item()


# --- presets and generators ----------------------------------------------------------------------


def test_at_presets_resolve_to_the_spec() -> None:
    linf, l2 = training_defense("at-linf").hook, training_defense("at-l2").hook
    assert (linf.norm, linf.eps, linf.steps, linf.random_start) == ("linf", 4 / 255, 10, True)
    assert linf.alpha == pytest.approx(1.5 * (4 / 255) / 10)
    assert (l2.norm, l2.eps, l2.steps) == ("l2", 0.5, 10) and l2.alpha == pytest.approx(2.5 * 0.5 / 10)
    for eps in (8 / 255, 16 / 255):
        assert training_defense("at-linf", eps=eps).hook.eps == eps


def test_mixing_and_hooks_draw_only_from_the_given_generator(model_and_batch) -> None:
    model, x, y = model_and_batch
    state = torch.get_rng_state()
    for mix in (MixUp(), CutMix(), MixUp(mix_alpha=0.4)):
        mix(x, F.one_hot(y, 4).float(), torch.Generator().manual_seed(0))
    for hook in (DeconvolutionAT(steps=1), UEraserMax(draws=2), training_defense("at-l2", steps=1).hook):
        hook(model, x, y, torch.Generator().manual_seed(0), normalize)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.cuda
def test_mixing_and_hooks_run_on_cuda(model_and_batch) -> None:
    model, x, y = model_and_batch
    gpu = torch.device("cuda")
    model, x, y = model.to(gpu), x.to(gpu), y.to(gpu)
    for mix in (MixUp(), CutMix(), MixUp(mix_alpha=0.4)):
        mixed, targets = mix(x, F.one_hot(y, 4).float(), torch.Generator(gpu).manual_seed(0))
        assert mixed.device.type == "cuda" and torch.allclose(targets.sum(1), torch.ones(len(y), device=gpu))
    for hook in (DeconvolutionAT(steps=2), UEraserMax(), training_defense("at-linf", steps=2).hook):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = hook(model, x, y, torch.Generator(gpu).manual_seed(0), normalize)
        assert out.device.type == "cuda" and out.dtype == x.dtype and out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1


# --- step hooks under bf16 autocast: only the model's forward is cast --------------------------


def test_dat_batch_is_float32_and_not_bf16_rounded_under_autocast() -> None:
    x, labels = batch()
    model = small_model()
    without_ascent = DeconvolutionAT(steps=0)  # filters straight from the generator: same arithmetic either way
    plain = without_ascent(model, x, labels, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = without_ascent(model, x, labels, torch.Generator().manual_seed(1))
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)
    assert bf16_rounded_share(plain) < 0.05
    hook = DeconvolutionAT(steps=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ascended = hook(model, x, labels, torch.Generator().manual_seed(1))
    assert ascended.dtype == torch.float32 and bf16_rounded_share(ascended) < 0.05
    assert ascended.min() == 0 and ascended.max() == 1  # rescaled per image


def test_dat_with_an_autocast_model_matches_in_float32_where_the_model_is_not_involved() -> None:
    x, labels = batch(seed=2)
    model = small_model()
    hook = DeconvolutionAT(steps=0)
    plain = hook(model, x, labels, torch.Generator().manual_seed(3))
    cast = hook(AutocastModel(model, "cpu"), x, labels, torch.Generator().manual_seed(3))
    assert torch.equal(plain, cast)


def test_ueraser_draws_are_float32_under_autocast() -> None:
    x, labels = batch(seed=4)
    model = small_model()
    one_draw = UEraserMax(draws=1)  # the model only scores: one draw is the same batch either way
    plain = one_draw(model, x, labels, torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = one_draw(model, x, labels, torch.Generator().manual_seed(5))
    assert cast.dtype == torch.float32 and torch.equal(cast, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        worst = UEraserMax(draws=3)(model, x, labels, torch.Generator().manual_seed(5))
    assert worst.dtype == torch.float32 and bf16_rounded_share(worst) < 0.5  # (some ops give exact k/255 levels)


def test_pgd_batch_is_float32_under_autocast() -> None:
    x, labels = batch(seed=6)
    hook = AdversarialTraining("linf", 4 / 255, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        adversarial = hook(AutocastModel(small_model(), "cpu"), x, labels, torch.Generator().manual_seed(7))
    assert adversarial.dtype == torch.float32 and bf16_rounded_share(adversarial) < 0.05
    assert (adversarial - x).abs().max() <= 4 / 255 + 1e-7


def test_autocast_model_casts_the_forward_and_follows_train_eval() -> None:
    model = small_model()
    wrapped = AutocastModel(model, "cpu")
    x, _ = batch(2)
    assert wrapped(x).dtype == torch.bfloat16 and AutocastModel(model, "cpu", enabled=False)(x).dtype == torch.float32
    with eval_mode(wrapped):
        assert not model.training and not wrapped.training
    assert model.training and wrapped.training
    model.eval()
    with eval_mode(wrapped):
        pass
    assert not model.training  # restored to what it was
    assert list(wrapped.parameters()) == list(model.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize("hook", [DeconvolutionAT(steps=2), UEraserMax(draws=2)])
def test_hook_batches_stay_float32_on_cuda(hook) -> None:
    x, labels = batch(16, 32)
    model = small_model().cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = hook(model, x.cuda(), labels.cuda(), torch.Generator("cuda").manual_seed(0))
    assert out.dtype == torch.float32 and bf16_rounded_share(out.cpu()) < 0.5


@pytest.mark.parametrize("defense", ["dat", "ueraser", "at-linf"])
def test_trainer_with_amp_updates_on_float32_hook_batches(
    tiny_net, quick_config, tmp_path: Path, small_blob_data, defense: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU bf16 AMP through the trainer: the batch the hook returns reaches the update unrounded."""
    options = {"steps": 1} if defense in ("dat", "at-linf") else {"draws": 2}
    config = resolve_config(
        quick_config(
            tmp_path,
            amp=True,
            defense=defense,
            defense_options=options,
            recipe=resolve_recipe("quick", epochs=1, batch_size=32),
            normalization="data",
        )
    )
    trainer = Trainer(config, *small_blob_data, tiny_net(), None)
    seen = []
    real_update = trainer.update

    def recording_update(inputs: torch.Tensor, targets: torch.Tensor):
        seen.append(inputs.detach().clone())
        return real_update(inputs, targets)

    monkeypatch.setattr(trainer, "update", recording_update)
    images, labels = next(trainer.train_loader.shuffled(trainer.generator))
    trainer.model.train()
    trainer.train_step(images, labels)
    assert seen[0].dtype == torch.float32 and bf16_rounded_share(seen[0]) < 0.5
