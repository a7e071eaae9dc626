"""Training-time defenses that need labels or the model (MixUp, CutMix, AT presets, DAT, UEraser)
and the trainer's routing of every defense kind."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

import unlearnable.defenses as defenses
from conftest import crash_after_first_checkpoint
import unlearnable.training.trainer as train_module
from unlearnable.app.cli import build_parser, defense_options, main
from unlearnable.data import ImageDataset
from unlearnable.defenses import (DEFENSES, Compose, CutMix, DeconvolutionAT, Identity, MixUp,
                                  UEraserMax, build_defense, defense_kinds, training_defense)
from unlearnable.defenses.adversarial import AdversarialTraining
from unlearnable.defenses.dat import (FILTER_BOUND, ascend_filters, class_subset_losses, deconvolve, init_filters,
                                      rescale_per_image)
from unlearnable.defenses.mixing import sample_beta
from unlearnable.defenses.ueraser import apply_op, draw_losses, equalize, posterize, ueraser_augment
from unlearnable.errors import UserInputError
from unlearnable.training.trainer import TrainConfig, Trainer, resolve_config, resolve_recipe, train

pytestmark = pytest.mark.usefixtures("one_thread")

NEW_NAMES = ("mixup", "cutmix", "at-linf", "at-l2", "dat", "ueraser")


def blobs(n: int, seed: int, classes: int = 4, size: int = 32) -> ImageDataset:
    """Dark noisy images with one bright square whose colour channel mix is the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    colours = torch.tensor([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]])[:classes]
    images = torch.rand(n, 3, size, size, generator=g) * 80
    top = torch.randint(0, size // 2, (n,), generator=g)
    for i in range(n):  # test data only
        images[i, :, top[i]:top[i] + size // 3, top[i]:top[i] + size // 3] = colours[labels[i]].view(3, 1, 1).float()
    return ImageDataset(images.round().to(torch.uint8), labels, ["red", "green", "blue", "yellow"][:classes],
                        {"source": {"spec": f"blobs-{seed}", "kind": "synthetic"}})


def tiny_net(num_classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, num_classes))


@pytest.fixture(scope="module")
def data() -> tuple[ImageDataset, ImageDataset]:
    return blobs(96, seed=0), blobs(32, seed=1)


@pytest.fixture(scope="module")
def model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A tiny CNN trained a few steps on blobs (so its losses differ between inputs), and a batch."""
    model = tiny_net()
    images = blobs(64, seed=3)
    x, y = images.images.float() / 255, images.labels
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(15):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, x[:24], y[:24]


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.3) / 0.3


# --- the chain: kinds, options, errors --------------------------------------------------------

class AfterCropDummy:
    """A do-nothing after-crop transform, standing in for COIN / Cutout."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return "AfterCropDummy()"


def test_training_defense_routes_each_kind(register) -> None:
    register(DEFENSES, "dummy", AfterCropDummy, stage="after-crop")
    chain = training_defense("dummy+rsk+cutmix+ff+at-linf", keep_percent=50, mix_alpha=0.5, eps=8 / 255)
    assert isinstance(chain.before_crop, Compose) and [type(d).__name__ for d in chain.before_crop.defenses] == [
        "RandomSharpen", "FrequencyFilter"]
    assert chain.before_crop.defenses[1].keep_percent == 50
    assert isinstance(chain.after_crop, AfterCropDummy)
    assert isinstance(chain.mix, CutMix) and chain.mix.mix_alpha == 0.5
    assert chain.hook == AdversarialTraining("linf", 8 / 255, 10)
    assert "mix=CutMix(mix_alpha=0.5)" in repr(chain) and "after_crop=AfterCropDummy()" in repr(chain)
    assert defense_kinds()["after crop/flip"][-1] == "dummy" and "dummy" not in defense_kinds()["before crop/flip"]
    none = training_defense("none")
    assert isinstance(none.before_crop, Identity) and isinstance(none.after_crop, Identity)
    assert none.mix is None and none.hook is None
    assert isinstance(training_defense("MixUp").mix, MixUp)
    dat = training_defense("dat", filter_size=3, steps=4).hook
    assert isinstance(dat, DeconvolutionAT) and (dat.filter_size, dat.steps, dat.step_size) == (3, 4, 0.1)
    assert isinstance(training_defense("ueraser").hook, UEraserMax) and training_defense("ueraser").hook.draws == 5


def test_at_presets_resolve_to_the_spec() -> None:
    linf, l2 = training_defense("at-linf").hook, training_defense("at-l2").hook
    assert (linf.norm, linf.eps, linf.steps, linf.random_start) == ("linf", 4 / 255, 10, True)
    assert linf.alpha == pytest.approx(1.5 * (4 / 255) / 10)
    assert (l2.norm, l2.eps, l2.steps) == ("l2", 0.5, 10) and l2.alpha == pytest.approx(2.5 * 0.5 / 10)
    for eps in (8 / 255, 16 / 255):
        assert training_defense("at-linf", eps=eps).hook.eps == eps


@pytest.mark.parametrize("spec, options, mentions", [
    ("mixup+cutmix", {}, "keep at most one"),
    ("dat+at-l2", {}, "keep at most one"),
    ("rsk+blur", {}, "ueraser"),
    ("rsk", {"eps": 0.1}, "eps=0.1"),
    ("mixup", {"mix_alpha": 0}, "MixUp: mix_alpha must be a number > 0 (got 0)"),
    ("dat", {"filter_size": 4}, "DeconvolutionAT: filter_size must be an odd integer ≥ 1 (got 4)"),
    ("dat", {"steps": -1}, "DeconvolutionAT: steps must be an integer ≥ 0 (got -1)"),
    ("ueraser", {"draws": 0}, "UEraserMax: draws must be an integer ≥ 1 (got 0)"),
    ("at-linf", {"eps": -1.0}, "AdversarialTraining: eps must be a number > 0 (got -1.0)"),
])
def test_training_defense_rejects_bad_input(spec: str, options: dict, mentions: str) -> None:
    with pytest.raises(UserInputError, match="^[^\n]*$") as info:
        training_defense(spec, **options)
    assert mentions in str(info.value)


def test_unknown_names_list_every_kind_and_build_defense_refuses_training_only_names() -> None:
    with pytest.raises(UserInputError) as info:
        build_defense("blur")
    message = str(info.value)
    assert "\n" not in message
    for names in defense_kinds().values():
        assert all(name in message for name in names)
    for name in (*DEFENSES.names(stage="mixing"), *DEFENSES.names(stage="hook")):
        with pytest.raises(UserInputError, match="only in training"):
            build_defense(f"rsk+{name}")


def test_adversarial_training_is_a_hook_in_the_chain(tmp_path: Path) -> None:
    chain = training_defense("rsk+cutmix+at-linf", eps=8 / 255)  # mixing + PGD is fine
    assert isinstance(chain.mix, CutMix) and isinstance(chain.hook, AdversarialTraining) and chain.hook.eps == 8 / 255
    with pytest.raises(UserInputError, match="keep at most one"):
        training_defense("rsk+dat+at-linf")


# --- the trainer's order ----------------------------------------------------------------------

def test_trainer_applies_the_kinds_in_pipeline_order(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch,
                                                      register) -> None:
    events: list[tuple] = []

    class Before:
        def __call__(self, x, generator=None):
            events.append(("before", x.shape))
            return x[:, :, 1:-1, 1:-1]

    class After(AfterCropDummy):
        def __call__(self, x, generator=None):
            events.append(("after", x.shape))
            return x * 0.5

    class Mix:
        def __call__(self, x, targets, generator):
            events.append(("mix", targets.clone()))
            return x + 0.25, targets.flip(0)

    class Hook:
        def __call__(self, model, x, targets, generator, normalize):
            events.append(("hook", x.clone(), targets.clone(), model.training))
            return x.flip(0)

    def spy(name, function):
        def wrapped(x, *args):
            events.append((name, x.shape))
            return function(x, *args)
        return wrapped

    register(DEFENSES, "test-before", Before, stage="before-crop")
    register(DEFENSES, "test-after", After, stage="after-crop")
    register(DEFENSES, "test-mix", Mix, stage="mixing")
    register(DEFENSES, "test-hook", Hook, stage="hook")
    monkeypatch.setattr(train_module, "random_crop", spy("crop", train_module.random_crop))
    monkeypatch.setattr(train_module, "random_flip", spy("flip", train_module.random_flip))
    config = resolve_config(TrainConfig(out=str(tmp_path), device="cpu", recipe=resolve_recipe("quick", batch_size=16),
                                        defense="test-hook+test-mix+test-after+test-before"))
    trainer = Trainer(config, *data, tiny_net(), ([0.5] * 3, [0.25] * 3))
    updates = []
    monkeypatch.setattr(trainer, "update", lambda inputs, targets: updates.append((inputs, targets)) or (None, None))
    images, labels = next(trainer.train_loader.shuffled(trainer.generator))
    trainer.train_step(images, labels)
    assert [event[0] for event in events] == ["before", "crop", "flip", "after", "mix", "hook"]
    assert events[0][1] == (16, 3, 32, 32) and events[1][1] == (16, 3, 30, 30) and events[3][1] == (16, 3, 32, 32)
    torch.testing.assert_close(events[4][1], F.one_hot(labels, 4).float())  # the mix gets one-hot float targets
    _, hooked_x, hooked_targets, training = events[5]
    assert training and hooked_x.min() >= 0.25 and hooked_x.max() <= 0.75  # after (×0.5), then mix (+0.25)
    torch.testing.assert_close(hooked_targets, F.one_hot(labels, 4).float().flip(0))  # the mixed targets
    (inputs, targets), = updates
    torch.testing.assert_close(inputs, (hooked_x.flip(0) - 0.5) / 0.25)  # the hook's output, normalised
    torch.testing.assert_close(targets, hooked_targets)


def test_soft_targets_keep_label_smoothing_and_train_accuracy_uses_the_labels(tmp_path: Path, data) -> None:
    recipe = resolve_recipe("quick", epochs=1, batch_size=16, label_smoothing=0.2)
    trainer = Trainer(resolve_config(TrainConfig(out=str(tmp_path), device="cpu", recipe=recipe, defense="mixup")),
                      *data, tiny_net(), None)
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 1])
    smooth = F.one_hot(labels, 4).float() * 0.8 + 0.2 / 4
    expected = -(smooth * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(trainer.criterion(logits, F.one_hot(labels, 4).float()), expected)
    torch.testing.assert_close(trainer.criterion(logits, labels), expected)


# --- MixUp and CutMix -------------------------------------------------------------------------

def one_class_per_image(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n random images and one-hot targets with every image of its own class (so targets reveal the partner)."""
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)), torch.eye(n)


def partners(mixed_targets: torch.Tensor) -> torch.Tensor:
    """Each image's partner, read off targets where image i is the only one of class i."""
    own = mixed_targets.diagonal()
    others = mixed_targets - torch.diag(own)
    return torch.where(own < 1 - 1e-6, others.argmax(1), torch.arange(len(own)))


@pytest.mark.parametrize("seed", range(5))
def test_mixup_lambda_matches_the_pixels(seed: int) -> None:
    x, targets = one_class_per_image(16, seed)
    mixed, mixed_targets = MixUp()(x, targets, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(16))
    partner = partners(mixed_targets)
    assert sorted(partner.tolist()) == list(range(16))  # a permutation
    moved = partner != torch.arange(16)
    lam = mixed_targets.diagonal()[moved][0]  # one λ for the batch: every moved image keeps λ of itself
    torch.testing.assert_close(mixed_targets.diagonal()[moved], lam.expand(int(moved.sum())))
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partner])


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_box_area_matches_the_targets(seed: int) -> None:
    x, targets = one_class_per_image(16, seed)
    mixed, mixed_targets = CutMix()(x, targets, torch.Generator().manual_seed(seed))
    torch.testing.assert_close(mixed_targets.sum(1), torch.ones(16))
    partner = partners(mixed_targets)
    moved = partner != torch.arange(16)
    box = (mixed != x).any(1).any(0)  # H×W: pixels that came from a partner (random images never coincide)
    rows, cols = box.any(1).nonzero().flatten(), box.any(0).nonzero().flatten()
    if box.any():  # one rectangle
        assert box.sum() == len(rows) * len(cols) == box[rows.min():rows.max() + 1, cols.min():cols.max() + 1].sum()
    kept = 1 - box.float().mean()
    torch.testing.assert_close(mixed_targets.diagonal()[moved], kept.expand(int(moved.sum())))
    torch.testing.assert_close(mixed, torch.where(box, x[partner], x))  # the same box in every image


def test_mixing_ratio_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    uniform = sample_beta(1.0, 4000, g)
    assert scipy.stats.kstest(uniform.numpy(), "uniform").pvalue > 1e-3
    for alpha in (0.4, 2.0):
        draws = sample_beta(alpha, 4000, g)
        assert scipy.stats.kstest(draws.numpy(), scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    # One λ per batch: the same seed gives the same mix, whatever α = 1 means elsewhere.
    x, targets = one_class_per_image(8, 0)
    first = MixUp()(x, targets, torch.Generator().manual_seed(3))
    second = MixUp()(x, targets, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# --- DAT --------------------------------------------------------------------------------------

def test_deconvolve_matches_conv_transpose_modules() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 12, 12, generator=g)
    weights, bias = init_filters(5, 5, g)
    assert weights.abs().max() <= 1 / 5 and bias.abs().max() <= 1 / 5
    out = deconvolve(x, weights, bias)
    for image, w, b, got in zip(x, weights, bias, out):
        layer = nn.ConvTranspose2d(1, 1, 5, padding=2)
        with torch.no_grad():
            layer.weight.copy_(w.view(1, 1, 5, 5))
            layer.bias.copy_(b.view(1))
            expected = layer(image.unsqueeze(1)).squeeze(1)  # each channel alone, the same filter
        torch.testing.assert_close(got, expected)
    rescaled = rescale_per_image(out)
    assert torch.allclose(rescaled.flatten(1).amin(1), torch.zeros(5)) and torch.allclose(rescaled.flatten(1).amax(1),
                                                                                          torch.ones(5))


def test_dat_raises_each_class_loss_and_keeps_filters_bounded(model_and_batch) -> None:
    model, x, y = model_and_batch
    classes, group = torch.unique(y, return_inverse=True)
    weights, bias = init_filters(len(classes), 5, torch.Generator().manual_seed(0))
    before = class_subset_losses(model, x, y, group, weights, bias, normalize).detach()
    params = [p.clone() for p in model.parameters()]
    new_weights, new_bias = ascend_filters(model, x, y, group, weights, bias, 10, 0.1, normalize)
    after = class_subset_losses(model, x, y, group, new_weights, new_bias, normalize).detach()
    assert (after > before).all()
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(model.parameters(), params)) and model.training
    # A huge step must hit the clamp: everything stays in [−5, 5] and some values sit on the bound.
    big_weights, big_bias = ascend_filters(model, x, y, group, weights, bias, 3, 1e4, normalize)
    assert big_weights.abs().max() <= FILTER_BOUND and big_bias.abs().max() <= FILTER_BOUND
    assert (big_weights.abs() == FILTER_BOUND).any()


def test_dat_hook_output(model_and_batch) -> None:
    model, x, y = model_and_batch
    out = DeconvolutionAT(filter_size=3, steps=2)(model, x, y, torch.Generator().manual_seed(0), normalize)
    again = DeconvolutionAT(filter_size=3, steps=2)(model, x, y, torch.Generator().manual_seed(0), normalize)
    assert out.shape == x.shape and not out.requires_grad and torch.equal(out, again)
    assert torch.allclose(out.flatten(1).amin(1), torch.zeros(len(x)))
    assert torch.allclose(out.flatten(1).amax(1), torch.ones(len(x)))
    soft = DeconvolutionAT(filter_size=3, steps=2)(model, x, F.one_hot(y, 4).float(), torch.Generator().manual_seed(0),
                                                   normalize)
    torch.testing.assert_close(soft, out)  # one-hot targets act as the labels


# --- UEraser ----------------------------------------------------------------------------------

def test_ueraser_returns_each_images_max_loss_draw(model_and_batch) -> None:
    model, x, y = model_and_batch
    out = UEraserMax(draws=5)(model, x, y, torch.Generator().manual_seed(7), normalize)
    candidates = ueraser_augment(x.repeat(5, 1, 1, 1), torch.Generator().manual_seed(7)).view(5, *x.shape)
    losses = torch.stack([draw_losses(model, c, y, normalize) for c in candidates])  # K × B, one draw at a time
    assert (losses.max(0).values - losses.min(0).values > 1e-3).all()  # the choice matters
    torch.testing.assert_close(out, candidates[losses.argmax(0), torch.arange(len(x))])
    assert model.training


def test_ueraser_ops_match_torchvision() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    x = images.float() / 255
    torch.testing.assert_close(equalize(x), TF.equalize(images).float() / 255)
    bits = torch.tensor([1, 2, 3, 4, 2, 1])
    torch.testing.assert_close(posterize(x, bits), torch.stack([TF.posterize(i, int(b)) for i, b in zip(images, bits)]
                                                               ).float() / 255)
    factor = torch.linspace(0.1, 1.9, 6)
    for name, reference in [("contrast", TF.adjust_contrast), ("brightness", TF.adjust_brightness),
                            ("sharpness", TF.adjust_sharpness)]:
        expected = torch.cat([reference(image[None], float(f)) for image, f in zip(x, factor)])
        torch.testing.assert_close(apply_op(x, name, factor), expected, atol=1e-4, rtol=0)
    angle = torch.linspace(-30, 30, 6)
    expected = torch.cat([TF.rotate(image[None], float(a), TF.InterpolationMode.BILINEAR)
                          for image, a in zip(x, angle)])
    torch.testing.assert_close(apply_op(x, "rotate", angle), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(apply_op(x, "solarize", torch.full((6,), 0.5)), torch.where(x >= 0.5, 1 - x, x))
    translated = apply_op(x, "translate_x", torch.full((6,), 0.25))  # 4 of 16 pixels to the right
    torch.testing.assert_close(translated[..., 4:], x[..., :-4])
    assert (translated[..., :4] == 0).all()


def test_ueraser_augment_is_seeded_and_in_range() -> None:
    x = torch.rand(32, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = ueraser_augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(first, ueraser_augment(x, torch.Generator().manual_seed(1)))
    assert first.shape == x.shape and first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, ueraser_augment(x, torch.Generator().manual_seed(2)))
    assert (first - x).abs().flatten(1).amax(1).gt(0.05).float().mean() > 0.8  # strong augmentations


def test_new_defenses_draw_only_from_the_given_generator(model_and_batch) -> None:
    model, x, y = model_and_batch
    state = torch.get_rng_state()
    for mix in (MixUp(), CutMix(), MixUp(mix_alpha=0.4)):
        mix(x, F.one_hot(y, 4).float(), torch.Generator().manual_seed(0))
    for hook in (DeconvolutionAT(steps=1), UEraserMax(draws=2), training_defense("at-l2", steps=1).hook):
        hook(model, x, y, torch.Generator().manual_seed(0), normalize)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_new_defenses_run_on_cuda(model_and_batch) -> None:
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


# --- end to end and resume --------------------------------------------------------------------

@pytest.mark.parametrize("spec", NEW_NAMES)
def test_one_epoch_with_each_new_defense(tmp_path: Path, data, spec: str) -> None:
    config = TrainConfig(out=str(tmp_path / spec), model="small", device="cpu", defense=spec,
                         recipe=resolve_recipe("quick", epochs=1, batch_size=48, test_batch_size=32),
                         defense_options={"steps": 2} if spec in ("at-linf", "at-l2", "dat") else {})
    results = train(config, *data, progress=False)
    (epoch,) = results["epochs"]
    assert results["status"] == "complete" and results["config"]["defense"] == spec
    assert torch.isfinite(torch.tensor(epoch["train_loss"])) and 0 <= epoch["train_acc"] <= 100


def test_resume_with_mixing_and_a_hook_is_bit_identical(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    def config(out: Path) -> TrainConfig:
        return TrainConfig(out=str(out), model="tiny", device="cpu", defense="rsk+cutmix+dat",
                           defense_options={"steps": 2, "filter_size": 3},
                           recipe=resolve_recipe("quick", epochs=2, batch_size=32, test_batch_size=32))

    straight = train(config(tmp_path / "a"), *data, model=tiny_net(), progress=False)
    crash_after_first_checkpoint(monkeypatch, lambda: train(config(tmp_path / "b"), *data, model=tiny_net(),
                                                            progress=False))
    resumed = train(config(tmp_path / "b"), *data, model=tiny_net(), resume=True, progress=False)
    assert [r["train_loss"] for r in resumed["epochs"]] == [r["train_loss"] for r in straight["epochs"]]
    assert [r["test_loss"] for r in resumed["epochs"]] == [r["test_loss"] for r in straight["epochs"]]
    weights = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("a", "b")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


# --- command line -----------------------------------------------------------------------------

def test_cli_defense_options_and_list(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "--train", "x", "--out", "o", "--defense", "rsk+ff+at-linf", "--eps",
                              str(8 / 255), "--steps", "5"])
    assert defense_options(args) == {"eps": 8 / 255, "steps": 5}
    args = parser.parse_args(["train", "--train", "x", "--out", "o", "--adversarial", "linf", "--eps", "0.1",
                              "--filter-size", "3", "--mix-alpha", "0.4"])
    assert defense_options(args) == {"filter_size": 3, "mix_alpha": 0.4}  # --eps belongs to --adversarial
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind, names in defense_kinds().items():
        assert f"{kind}: {', '.join(names)}" in out
