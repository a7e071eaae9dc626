"""The trainer (training/trainer.py): the pipeline's order, what reaches the model, an end-to-end run,
bit-identical resume, and its restored state."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unlearnable.training.trainer as train_module
from helpers import AfterCropDummy
from unlearnable.defenses import DEFENSES, TrainingDefense
from unlearnable.errors import UserInputError
from unlearnable.training.augment import (
    normalization_stats,
)
from unlearnable.training.config import TrainConfig, config_to_dict, resolve_config
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.results import RunResults
from unlearnable.training.trainer import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")


TRAINING_DEFENSES = ("mixup", "cutmix", "at-linf", "at-l2", "dat", "ueraser")


# --- the pipeline ------------------------------------------------------------------------------


def test_resized_crop_in_the_pipeline(
    blobs, tiny_net, quick_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = train_module.random_resized_crop
    monkeypatch.setattr(
        train_module, "random_resized_crop", lambda x, size, g: calls.append(x.shape) or real(x, size, g)
    )
    large = blobs(64, seed=3, size=64)
    trainer = Trainer(resolve_config(quick_config(tmp_path, defense="rsk")), large, large, tiny_net(), None)
    images, _ = next(trainer.train_loader.shuffled(trainer.generator))
    assert trainer.augmentation == "resized-crop" and trainer.augment(images).shape == images.shape
    assert calls == [(64, 3, 62, 62)]  # "valid" RSK shrinks 64×64 to 62×62; the crop brings back 64×64


def test_rotation_only_when_asked(
    tiny_net, quick_config, tmp_path: Path, blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    monkeypatch.setattr(train_module, "random_rotation", lambda x, degrees, g: calls.append(degrees) or x)
    for rotate in (False, True):
        trainer = Trainer(resolve_config(quick_config(tmp_path, rotate=rotate)), *blob_data, tiny_net(), None)
        images, _ = next(trainer.train_loader.shuffled(trainer.generator))
        assert trainer.augment(images).shape == images.shape
    assert calls == [15.0]


class Recorder(nn.Module):
    """Wraps a model and records every input it sees with the mode it was in."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, x.detach().clone()))
        return self.model(x)


def test_defense_on_train_batches_only_and_test_is_normalize_only(
    tiny_net, quick_config, tmp_path: Path, blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_set, test_set = blob_data
    defended: list[torch.Tensor] = []

    def record_defense(spec: str, **options) -> TrainingDefense:
        def defense(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            defended.append(x.clone())
            return x[:, :, 1:-1, 1:-1]  # shrinks like "valid" RSK: the crop must re-frame it

        return TrainingDefense(before_crop=defense)

    monkeypatch.setattr(train_module, "training_defense", record_defense)
    model = Recorder(tiny_net())
    train(quick_config(tmp_path, defense="rsk", normalization="data"), train_set, test_set, model=model, progress=False)
    train_images = {bytes(image.numpy()) for image in train_set.images}
    assert len(defended) == 2 * (len(train_set) // 64)
    for batch in defended:
        assert all(bytes(image.numpy()) in train_images for image in (batch * 255).round().to(torch.uint8))
    _, mean, std = normalization_stats("data", train_set)
    expected = (test_set.images / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    evaluated = [x for training, x in model.seen if not training]
    assert len(evaluated) == 2 * math.ceil(len(test_set) / 64)
    torch.testing.assert_close(torch.cat(evaluated[:2]), expected.float(), rtol=0, atol=1e-5)
    assert all(x.shape[-2:] == (32, 32) for _, x in model.seen)


def test_trainer_applies_the_kinds_in_pipeline_order(
    tiny_net, tmp_path: Path, square_blob_data, monkeypatch: pytest.MonkeyPatch, register
) -> None:
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
    config = resolve_config(
        TrainConfig(
            out=str(tmp_path),
            device="cpu",
            recipe=resolve_recipe("quick", batch_size=16),
            defense="test-hook+test-mix+test-after+test-before",
        )
    )
    trainer = Trainer(config, *square_blob_data, tiny_net(), ([0.5] * 3, [0.25] * 3))
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
    ((inputs, targets),) = updates
    torch.testing.assert_close(inputs, (hooked_x.flip(0) - 0.5) / 0.25)  # the hook's output, normalised
    torch.testing.assert_close(targets, hooked_targets)


def test_soft_targets_keep_label_smoothing_and_train_accuracy_uses_the_labels(
    tiny_net, tmp_path: Path, square_blob_data
) -> None:
    recipe = resolve_recipe("quick", epochs=1, batch_size=16, label_smoothing=0.2)
    trainer = Trainer(
        resolve_config(TrainConfig(out=str(tmp_path), device="cpu", recipe=recipe, defense="mixup")),
        *square_blob_data,
        tiny_net(),
        None,
    )
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 1])
    smooth = F.one_hot(labels, 4).float() * 0.8 + 0.2 / 4
    expected = -(smooth * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(trainer.criterion(logits, F.one_hot(labels, 4).float()), expected)
    torch.testing.assert_close(trainer.criterion(logits, labels), expected)


# --- runs ----------------------------------------------------------------------------------------


def test_end_to_end_run_writes_results(blobs, tiny_net, quick_config, tmp_path: Path, blob_data) -> None:
    train_set, test_set = blob_data
    config = quick_config(tmp_path / "run", name="blobs", recipe=resolve_recipe("quick", epochs=2, batch_size=32))
    results = train(config, train_set, test_set, model=tiny_net(), progress=False)
    written = json.loads((tmp_path / "run" / "results.json").read_text())
    assert written == json.loads(json.dumps(results))
    assert written["name"] == "blobs" and written["status"] == "complete" and written["seed"] == 0
    assert set(written["versions"]) == {"unlearnable", "torch", "torchvision", "python", "numpy"}
    assert written["device"].startswith("cpu (") and written["deterministic"] is True
    assert written["train_data"]["source"]["spec"] == "blobs-0" and written["train_data"]["attack"] is None
    assert written["train_data"]["num_images"] == 256 and written["test_data"]["num_images"] == 96
    assert written["config"] == config_to_dict(config)
    assert written["command"] is None and list(written)[:2] == ["name", "command"]
    assert RunResults.read(tmp_path / "run" / "results.json").to_dict() == written  # the one schema, round trip
    assert written["config"]["recipe"]["batch_size"] == 32 and written["config"]["amp"] is False
    assert [record["epoch"] for record in written["epochs"]] == [1, 2]
    for record in written["epochs"]:
        assert set(record) >= {
            "epoch",
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "lr",
            "seconds",
            "images_per_s",
        }
        assert 0 <= record["train_acc"] <= 100 and 0 <= record["test_acc"] <= 100 and record["images_per_s"] > 0
    final = written["final"]
    assert final["test_acc_last"] == written["epochs"][-1]["test_acc"]
    assert final["test_acc_best"] == max(record["test_acc"] for record in written["epochs"])
    assert final["best_epoch"] in (1, 2) and final["wall_seconds"] > 0 and final["images_per_s"] > 0
    assert final["test_acc_last"] > 50  # chance is 25%
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]) == 2


def test_model_by_name_goes_through_create_model(
    tiny_net, quick_config, tmp_path: Path, blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []

    def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
        built.append((name, num_classes, in_channels))
        return tiny_net(num_classes)

    monkeypatch.setitem(sys.modules, "unlearnable.models", types.SimpleNamespace(create_model=create_model))
    config = quick_config(tmp_path, model="small", recipe=resolve_recipe("quick", epochs=1, batch_size=128))
    results = train(config, *blob_data, progress=False)
    assert built == [("small", 4, 3)] and results["model"]["name"] == "small"


def test_too_few_images_for_a_batch(tiny_net, quick_config, tmp_path: Path, blob_data) -> None:
    train_set, test_set = blob_data
    with pytest.raises(UserInputError, match="fewer than one batch"):
        train(
            quick_config(tmp_path, recipe=resolve_recipe("quick", batch_size=512)),
            train_set,
            test_set,
            model=tiny_net(),
            progress=False,
        )


@pytest.mark.parametrize("spec", TRAINING_DEFENSES)
def test_one_epoch_with_each_training_defense(tmp_path: Path, square_blob_data, spec: str) -> None:
    config = TrainConfig(
        out=str(tmp_path / spec),
        model="small",
        device="cpu",
        defense=spec,
        recipe=resolve_recipe("quick", epochs=1, batch_size=48, test_batch_size=32),
        defense_options={"steps": 2} if spec in ("at-linf", "at-l2", "dat") else {},
    )
    results = train(config, *square_blob_data, progress=False)
    (epoch,) = results["epochs"]
    assert results["status"] == "complete" and results["config"]["defense"] == spec
    assert torch.isfinite(torch.tensor(epoch["train_loss"])) and 0 <= epoch["train_acc"] <= 100


# --- resume and the restored state ---------------------------------------------------------------


def test_resume_is_bit_identical(
    tiny_net, quick_config, crash_after_first_checkpoint, tmp_path: Path, blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 epochs straight == 1 epoch, a crash, and a resume to 2: same accuracies, same weights."""
    train_set, test_set = blob_data

    def config(out: Path) -> TrainConfig:
        return quick_config(out, defense="rsk+ff", name="run")

    straight = train(config(tmp_path / "a"), train_set, test_set, model=tiny_net(dropout=0.2), progress=False)

    crash_after_first_checkpoint(
        lambda: train(config(tmp_path / "b"), train_set, test_set, model=tiny_net(dropout=0.2), progress=False)
    )
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train(
        config(tmp_path / "b"), train_set, test_set, model=tiny_net(dropout=0.2), resume=True, progress=False
    )

    def outcome(results: dict) -> list[tuple]:
        return [(r["train_loss"], r["train_acc"], r["test_loss"], r["test_acc"], r["lr"]) for r in results["epochs"]]

    assert outcome(resumed) == outcome(straight)
    assert resumed["final"]["test_acc_last"] == straight["final"]["test_acc_last"]
    weights = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_resume_with_mixing_and_a_hook_is_bit_identical(
    tiny_net, crash_after_first_checkpoint, tmp_path: Path, square_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    def config(out: Path) -> TrainConfig:
        return TrainConfig(
            out=str(out),
            model="tiny",
            device="cpu",
            defense="rsk+cutmix+dat",
            defense_options={"steps": 2, "filter_size": 3},
            recipe=resolve_recipe("quick", epochs=2, batch_size=32, test_batch_size=32),
        )

    straight = train(config(tmp_path / "a"), *square_blob_data, model=tiny_net(), progress=False)
    crash_after_first_checkpoint(
        lambda: train(config(tmp_path / "b"), *square_blob_data, model=tiny_net(), progress=False)
    )
    resumed = train(config(tmp_path / "b"), *square_blob_data, model=tiny_net(), resume=True, progress=False)
    assert [r["train_loss"] for r in resumed["epochs"]] == [r["train_loss"] for r in straight["epochs"]]
    assert [r["test_loss"] for r in resumed["epochs"]] == [r["test_loss"] for r in straight["epochs"]]
    weights = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("a", "b")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_rng_states_reach_the_setters_as_cpu_bytes(
    tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trainer on a (pretend) GPU gets its generator and CUDA states as CPU uint8 tensors, whatever
    dtype the checkpoint held them in; the restored CPU generator continues the saved stream."""
    config = resolve_config(quick_config(tmp_path))
    trainer = Trainer(config, *small_blob_data, tiny_net(), None)
    saved = trainer.state_dict()
    expected = torch.rand(4, generator=trainer.generator)
    state = {**saved, "generator": saved["generator"].to(torch.int32), "cuda_rng": saved["torch_rng"].to(torch.int64)}
    trainer.load_state_dict(state)
    assert torch.equal(torch.rand(4, generator=trainer.generator), expected)

    received = []

    class RecordingGenerator:
        def set_state(self, value: torch.Tensor) -> None:
            received.append(("generator", value.device.type, value.dtype))

    monkeypatch.setattr(
        torch.cuda,
        "set_rng_state",
        lambda value, device=None: received.append(("cuda", value.device.type, value.dtype)),
    )
    trainer.generator, trainer.device = RecordingGenerator(), torch.device("cuda", 0)
    trainer.load_state_dict(state)
    assert received == [("generator", "cpu", torch.uint8), ("cuda", "cpu", torch.uint8)]


@pytest.mark.cuda
def test_resume_is_exact_in_its_restored_state_on_cuda(
    tiny_net,
    quick_config,
    crash_after_first_checkpoint,
    tmp_path: Path,
    small_blob_data,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    config = quick_config(out, device="cuda", defense="rsk+ff")
    crash_after_first_checkpoint(lambda: train(config, *small_blob_data, model=tiny_net(), progress=False))
    resumed = train(config, *small_blob_data, model=tiny_net(), resume=True, progress=False)
    assert [record["epoch"] for record in resumed["epochs"]] == [1, 2] and resumed["status"] == "complete"
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    trainer = Trainer(resolve_config(config), *small_blob_data, tiny_net().cuda(), None)
    trainer.load_state_dict(state)
    assert torch.equal(trainer.generator.get_state(), state["generator"])
    assert torch.equal(torch.cuda.get_rng_state(trainer.device), state["cuda_rng"])


@pytest.mark.cuda
def test_amp_training_step_on_cuda(tiny_net, quick_config, tmp_path: Path, small_blob_data) -> None:
    config = quick_config(
        tmp_path,
        device="cuda",
        defense="dat",
        defense_options={"steps": 1},
        recipe=resolve_recipe("quick", epochs=1, batch_size=32),
    )
    results = train(config, *small_blob_data, model=tiny_net(), progress=False)
    assert results["config"]["amp"] is True and results["host"]["cudnn"] and results["status"] == "complete"
