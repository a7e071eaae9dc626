"""The ortho-proj defense: linear model, orthonormal basis, projection, uint8 storage, trainer wiring."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from unlearnable.data import ImageDataset
from unlearnable.data.dataset import to_unit_float
from unlearnable.defenses import DEFENSES, training_defense
from unlearnable.defenses.projection import (
    OrthogonalProjection,
    linear_accuracy,
    orthogonal_projection,
    orthonormal_basis,
    project_out,
    quantize,
)
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 4
SIZE = 8


def shortcut_dataset(n: int = 800, strength: float = 16.0, seed: int = 0) -> ImageDataset:
    """Random-texture images (no class signal) plus a fixed class-wise ±`strength` pattern: a linear shortcut."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    clean = torch.rand(n, 3, SIZE, SIZE, generator=g) * 160 + 48
    patterns = torch.randint(0, 2, (CLASSES, 3, SIZE, SIZE), generator=g).float() * 2 - 1
    images = (clean + strength * patterns[labels]).round().clamp(0, 255).to(torch.uint8)
    return ImageDataset(images, labels, [f"c{c}" for c in range(CLASSES)], {"attack": "synthetic"})


@pytest.fixture(scope="module")
def shortcut() -> ImageDataset:
    return shortcut_dataset()


# The published 20 epochs at batch 1024 are 100 steps on 50,000 images; 800 images need smaller batches
# and more epochs for the weights to line up with the shortcut instead of their random start.
LINEAR = {"epochs": 100, "batch_size": 128}


@pytest.fixture(scope="module")
def projected(shortcut):
    return orthogonal_projection(shortcut, **LINEAR)


def test_basis_is_orthonormal_and_spans_the_weight_rows():
    weight = torch.randn(5, 60, generator=torch.Generator().manual_seed(3)) * torch.tensor(
        [[1.0], [10], [0.1], [3], [7]]
    )
    q = orthonormal_basis(weight)
    assert q.shape == (60, 5)
    assert torch.allclose(q.t() @ q, torch.eye(5, dtype=q.dtype), atol=1e-10)
    # every weight row lies in the span: projecting it out leaves nothing
    assert project_out(weight, q).abs().max() < 1e-8 * weight.abs().max()


def test_projection_removes_the_learned_directions(shortcut, projected):
    _, q, floats = projected
    assert q.shape == (3 * SIZE * SIZE, CLASSES)
    assert torch.allclose(q.t() @ q, torch.eye(CLASSES, dtype=q.dtype), atol=1e-10)
    original = to_unit_float(shortcut.images).flatten(1).double()  # the float32 images the defense projects
    assert (original @ q).abs().max() > 1  # the images had a real component along Q ...
    assert (floats @ q).abs().max() < 1e-9  # ... and the projection leaves none
    # the rest of each image is untouched: x − x' lies in the span of Q
    assert torch.allclose(original - floats, (original @ q) @ q.t(), atol=1e-9)


def test_projection_removes_a_class_wise_additive_shortcut(shortcut, projected):
    out = projected[0]
    meta = out.meta["ortho_proj"]
    assert meta["linear_train_accuracy"] > 0.95  # the shortcut is linearly separable
    probe = {"batch_size": 128, "seed": 5}  # a fresh linear model, not the one whose directions were removed
    before = linear_accuracy(shortcut.images, shortcut.labels, CLASSES, **probe)
    after = linear_accuracy(out.images, out.labels, CLASSES, **probe)
    assert before > 0.95
    assert after < 0.45, (before, after)  # chance is 0.25
    assert out.images.dtype == torch.uint8 and out.images.shape == shortcut.images.shape
    assert torch.equal(out.labels, shortcut.labels) and out.classes == shortcut.classes
    assert out.meta["attack"] == "synthetic"
    assert set(meta) >= {"epochs", "lr", "linear_train_accuracy", "clipped_fraction", "storage", "seed"}
    assert 0 <= meta["clipped_fraction"] < 0.01
    json.dumps(meta)  # the trainer keeps it in results.json


def test_same_data_gives_the_same_bytes_and_the_seed_matters(shortcut, projected):
    again = OrthogonalProjection(**LINEAR)(shortcut)
    assert torch.equal(again.images, projected[0].images)
    other = OrthogonalProjection(seed=1, **LINEAR)(shortcut)
    assert not torch.equal(other.images, projected[0].images)


def test_global_storage_is_one_affine_map_with_few_clipped_values():
    g = torch.Generator().manual_seed(0)
    floats = torch.randn(200, 48, generator=g, dtype=torch.float64) * 0.3 + 0.1
    stored, clipped, mapping = quantize(floats, "global", clip_quantile=0.0)
    assert clipped == 0.0 and int(stored.min()) == 0 and int(stored.max()) == 255
    restored = (stored.double() - mapping["offset"]) / mapping["scale"]
    assert (restored - floats).abs().max() <= 0.5 / mapping["scale"] + 1e-9
    stored, clipped, _ = quantize(floats, "global", clip_quantile=0.01)
    assert 0 < clipped <= 0.025
    kept, clipped, mapping = quantize(floats, "offset", mean=0.2)  # the original units, the mean moved to 0.2
    assert mapping["scale"] == 255.0
    shifted = floats * 255 + mapping["offset"]
    inside = shifted.ge(0) & shifted.le(255)
    assert torch.equal(kept.double()[inside], shifted.round()[inside])
    assert float(shifted.mean()) == pytest.approx(0.2 * 255)  # before the clamp
    assert clipped == pytest.approx(float(((shifted < -0.5) | (shifted > 255.5)).double().mean()))
    assert torch.equal(kept[shifted < 0], torch.zeros_like(kept[shifted < 0]))
    per_image, clipped, mapping = quantize(floats, "per-image")
    assert clipped == 0.0 and mapping == {}
    assert torch.equal(per_image.amax(dim=1), torch.full((200,), 255, dtype=torch.uint8))
    assert torch.equal(per_image.amin(dim=1), torch.zeros(200, dtype=torch.uint8))


def test_builds_by_name_and_runs_in_a_one_epoch_training(tmp_path):
    import unlearnable.training.trainer as train_module

    defense = training_defense("ortho-proj", epochs=3, seed=2)
    assert isinstance(defense.preprocess, OrthogonalProjection)
    assert defense.preprocess.epochs == 3 and defense.preprocess.seed == 2
    assert "ortho-proj" in DEFENSES.names(stage="preprocess")
    assert isinstance(training_defense("ortho-proj+rsk").preprocess, OrthogonalProjection)
    with pytest.raises(UserInputError):
        training_defense("rsk+ortho-proj")  # a preprocessing defense goes first
    with pytest.raises(UserInputError):
        training_defense("ortho-proj+deconv")  # at most one
    data = shortcut_dataset(n=128)
    recipe = train_module.resolve_recipe("quick", epochs=1, batch_size=32, test_batch_size=64)
    config = train_module.TrainConfig(
        out=str(tmp_path / "run"),
        model="small",
        recipe=recipe,
        device="cpu",
        defense="ortho-proj",
        defense_options={"epochs": 2},
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, CLASSES))
    results = train_module.train(config, data, data, model=model, progress=False)
    assert results["status"] == "complete" and len(results["epochs"]) == 1
    # the trainer trains on the projected images
    config = train_module.resolve_config(dataclasses.replace(config, out=str(tmp_path / "again")))
    trainer = train_module.Trainer(config, data, data, model, None)
    assert torch.equal(trainer.train_loader.images.cpu(), OrthogonalProjection(epochs=2)(data).images)
    assert not torch.equal(trainer.train_loader.images.cpu(), data.images)
    assert results["preprocessed"]["ortho_proj"]["epochs"] == 2  # results.json records what it did


@pytest.mark.parametrize(
    "options",
    [
        {"epochs": 0},
        {"epochs": -1},
        {"epochs": 2.5},
        {"lr": 0},
        {"lr": -0.1},
        {"lr": float("nan")},
        {"batch_size": 0},
        {"storage": "clip"},
        {"clip_quantile": 0.5},
    ],
)
def test_bad_options_raise(options):
    with pytest.raises(UserInputError):
        OrthogonalProjection(**options)
    with pytest.raises(UserInputError):
        training_defense("ortho-proj", **options)
    with pytest.raises(UserInputError):
        orthogonal_projection(shortcut_dataset(n=8), **options)


def test_empty_or_constant_training_sets_are_refused_clearly():
    empty = ImageDataset(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), ["a", "b"])
    with pytest.raises(UserInputError, match="empty"):
        orthogonal_projection(empty)
