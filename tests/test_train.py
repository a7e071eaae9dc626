"""The trainer: recipes, the batched pipeline, an end-to-end run, results.json, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import unlearnable.training.trainer as train_module
from conftest import crash_after_first_checkpoint
from unlearnable.data import ImageDataset
from unlearnable.defenses import TrainingDefense
from unlearnable.errors import UserInputError
from unlearnable.training.augment import (
    CIFAR10_CLASSES,
    normalization_stats,
    random_crop,
    random_flip,
    random_resized_crop,
    random_rotation,
    resized_crop_boxes,
    resolve_augment,
)
from unlearnable.training.config import TrainConfig, config_to_dict, resolve_config
from unlearnable.training.loaders import DeviceLoader, StreamLoader, make_loader
from unlearnable.training.recipes import RECIPES, Recipe, lr_factor, resolve_recipe
from unlearnable.training.results import RunResults
from unlearnable.training.trainer import Trainer, train

COLOURS = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40]], dtype=torch.float32)

pytestmark = pytest.mark.usefixtures("one_thread")



def blobs(n: int, seed: int, size: int = 32) -> ImageDataset:
    """Noisy dark images with one disc whose colour is the class (4 classes): learnable in an epoch."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(COLOURS), (n,), generator=g)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.randint(size // 4, 3 * size // 4, (2, n, 1, 1), generator=g)
    disc = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < (size // 5) ** 2).unsqueeze(1)
    noise = torch.rand(n, 3, size, size, generator=g) * 90
    images = torch.where(disc, COLOURS[labels].view(n, 3, 1, 1), noise)
    return ImageDataset(images.round().to(torch.uint8), labels, ["red", "green", "blue", "yellow"],
                        {"source": {"spec": f"blobs-{seed}", "kind": "synthetic"}})


def tiny_net(num_classes: int = 4, dropout: float = 0.0) -> nn.Module:
    """A seeded two-conv CNN with BatchNorm (and optional dropout, to exercise the global RNG)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Dropout(dropout), nn.Linear(16, num_classes))


@pytest.fixture(scope="module")
def data() -> tuple[ImageDataset, ImageDataset]:
    return blobs(256, seed=0), blobs(96, seed=1)


def quick_config(out: Path, **changes) -> TrainConfig:
    """Two epochs of the quick recipe in batches of 64 on the CPU, with `changes` to TrainConfig."""
    recipe = resolve_recipe("quick", epochs=2, batch_size=64, test_batch_size=64)
    return dataclasses.replace(TrainConfig(out=str(out), model="tiny", recipe=recipe, device="cpu"), **changes)


# --- recipes -----------------------------------------------------------------------------------

def test_published_recipes() -> None:
    paper, cuda = RECIPES["paper"], RECIPES["cuda-paper"]
    assert (paper.epochs, paper.batch_size, paper.lr, paper.momentum, paper.weight_decay) == (60, 512, 0.1, 0.9, 5e-4)
    assert (paper.schedule, paper.clip_grad_norm, paper.normalize, paper.label_smoothing) == ("cosine", 5.0, True, 0)
    assert (cuda.epochs, cuda.schedule, cuda.milestones, cuda.gamma) == (100, "step", (40, 80), 0.1)
    assert cuda.normalize is False
    assert (cuda.lr, cuda.batch_size, cuda.clip_grad_norm, cuda.weight_decay) == (0.1, 512, 5.0, 5e-4)
    assert RECIPES["quick"].epochs <= 15


def test_resolve_recipe_overrides_and_errors() -> None:
    assert resolve_recipe("paper", epochs=3, clip_grad_norm=None) == Recipe(name="paper", epochs=3, clip_grad_norm=None)
    assert [RECIPES.get(name).name for name in RECIPES] == list(RECIPES)
    assert resolve_recipe("cuda-paper", milestones=[2, 4]).milestones == (2, 4)
    with pytest.raises(UserInputError, match="paper, cuda-paper, quick"):
        resolve_recipe("fast")
    with pytest.raises(UserInputError, match="unknown recipe field 'epoch'.*epochs"):
        resolve_recipe("paper", epoch=3)
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"schedule": "exp"}, {"label_smoothing": 1.0}, {"milestones": (5, 2)},
                {"batch_size": 2.5}, {"clip_grad_norm": 0}):
        name, value = next(iter(bad.items()))
        with pytest.raises(UserInputError, match=rf"^{name} must be .* \(got {re.escape(repr(value))}\)$"):
            resolve_recipe("paper", **bad)


def test_schedules_match_torch_per_epoch_schedulers() -> None:
    """"cosine" and "step" equal CosineAnnealingLR / MultiStepLR stepped once an epoch."""
    steps_per_epoch = 3
    for recipe, make in [(resolve_recipe("paper", epochs=7),
                          lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)),
                         (resolve_recipe("cuda-paper", epochs=7, milestones=(2, 5)),
                          lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, [2, 5], 0.1))]:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=recipe.lr)
        reference, expected = make(optimizer), []
        for _ in range(recipe.epochs):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            reference.step()
        factor = lr_factor(recipe, steps_per_epoch)
        got = [recipe.lr * factor(epoch * steps_per_epoch + s) for epoch in range(recipe.epochs)
               for s in range(steps_per_epoch)]
        assert got == pytest.approx([lr for lr in expected for _ in range(steps_per_epoch)], rel=1e-12)


def test_linear_warmup_schedule() -> None:
    recipe = resolve_recipe("quick", epochs=4, warmup_fraction=0.25)
    factor = [lr_factor(recipe, 10)(step) for step in range(40)]
    assert factor[9] == 1.0 and factor[:10] == sorted(factor[:10]) and factor[0] == 0.1
    assert factor[10:] == sorted(factor[10:], reverse=True) and 0 < factor[-1] < 0.05
    short = [lr_factor(resolve_recipe("quick", epochs=1), 4)(step) for step in range(4)]  # warm-up of 0.4 steps
    assert max(short) == short[0] == 1.0


# --- the pipeline ------------------------------------------------------------------------------

def test_random_crop_reframes_30_into_32_with_zero_border() -> None:
    """Each output is F.pad(x, 4)[t:t+32, l:l+32] for offsets t, l in 0..6, and all offsets occur."""
    batch = 300
    x = (torch.arange(30 * 30, dtype=torch.float32) + 1).view(1, 1, 30, 30).repeat(batch, 2, 1, 1)
    out = random_crop(x, (32, 32), 4, torch.Generator().manual_seed(0))
    assert out.shape == (batch, 2, 32, 32)
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = set()
    for b in range(batch):
        r, c = (out[b, 0] > 0).nonzero()[0].tolist()  # a visible pixel tells where the window sits
        value = int(out[b, 0, r, c]) - 1
        top, left = value // 30 + 4 - r, value % 30 + 4 - c
        assert 0 <= top <= 6 and 0 <= left <= 6
        assert torch.equal(out[b], padded[b, :, top:top + 32, left:left + 32])
        offsets.add((top, left))
    assert len(offsets) == 49


def test_random_crop_offsets_on_32() -> None:
    x = torch.ones(400, 1, 32, 32)
    out = random_crop(x, (32, 32), 4, torch.Generator().manual_seed(1))
    visible_rows = (out[:, 0].sum(2) > 0).sum(1)
    assert set(visible_rows.tolist()) == {28, 29, 30, 31, 32}  # offsets 0..8: up to 4 zero rows either side
    assert out.sum() < x.sum()


def test_random_flip() -> None:
    x = torch.rand(200, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 70 < int(mirrored.sum()) < 130


@pytest.mark.parametrize("size", [(32, 32), (28, 36)])
def test_random_rotation_matches_torchvision(size: tuple[int, int]) -> None:
    """The same angles through torchvision's rotate (nearest, fill 0) give the same images."""
    x = torch.rand(32, 3, *size, generator=torch.Generator().manual_seed(1))
    out = random_rotation(x, 15, torch.Generator().manual_seed(0))
    angles = (torch.rand(32, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 15
    reference = torch.stack([TF.rotate(image, float(angle), InterpolationMode.NEAREST, fill=0)
                             for image, angle in zip(x, angles)])
    assert (out == reference).float().mean() > 0.999
    assert not torch.equal(out, x)


@pytest.mark.parametrize("size", [(48, 48), (40, 56)])
def test_random_resized_crop_matches_torchvision(size: tuple[int, int]) -> None:
    """Each image equals torchvision's resized_crop (bilinear, no antialias) of the same box."""
    x = torch.rand(16, 3, *size, generator=torch.Generator().manual_seed(1))
    out = random_resized_crop(x, (32, 32), torch.Generator().manual_seed(0))
    boxes = resized_crop_boxes(16, *size, torch.Generator().manual_seed(0))
    reference = torch.stack([TF.resized_crop(image, *box.tolist(), [32, 32], InterpolationMode.BILINEAR, antialias=False)
                             for image, box in zip(x, boxes)])
    assert out.shape == (16, 3, 32, 32)
    torch.testing.assert_close(out, reference, rtol=0, atol=2e-5)


def test_resized_crop_boxes_follow_torchvision_rules() -> None:
    """Boxes lie inside the image with area 8–100% and ratio 3/4–4/3; when no draw fits, the centre box."""
    top, left, h, w = resized_crop_boxes(20_000, 224, 224, torch.Generator().manual_seed(0)).unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (top + h <= 224).all() and (left + w <= 224).all())
    area = (h * w).double() / 224**2
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    reference = torch.tensor([(lambda b: b[2] * b[3])(RandomResizedCrop.get_params(torch.empty(1, 224, 224),
                                                                                    [0.08, 1.0], [3 / 4, 4 / 3]))
                              for _ in range(5000)], dtype=torch.float64) / 224**2
    assert 0.075 < area.min() and area.max() <= 1
    assert abs(area.mean() - reference.mean()) < 0.015 and abs(area.std() - reference.std()) < 0.015
    ratio = w.double() / h
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    for start, extent in ((top, h), (left, w)):  # offsets uniform over the positions that fit
        assert abs(((start + 0.5) / (225 - extent)).mean() - 0.5) < 0.01
    # A 4×200 strip: no candidate fits (h ≥ 4·0.75·... rounds above 4 for most) → central box of ratio 4/3.
    boxes = resized_crop_boxes(200, 4, 200, torch.Generator().manual_seed(0))
    assert ((boxes == torch.tensor([0, 97, 4, 5])).all(1) | (boxes[:, 2] <= 4)).all()
    assert (boxes[:, 3] <= 200).all()


def test_augment_choice() -> None:
    assert resolve_augment("auto", (32, 32)) == "crop" and resolve_augment("auto", (224, 224)) == "resized-crop"
    assert resolve_augment("auto", (64, 80)) == "resized-crop" and resolve_augment("crop", (224, 224)) == "crop"


def test_resized_crop_in_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = train_module.random_resized_crop
    monkeypatch.setattr(train_module, "random_resized_crop", lambda x, size, g: calls.append(x.shape) or real(x, size, g))
    large = blobs(64, seed=3, size=64)
    trainer = Trainer(resolve_config(quick_config(tmp_path, defense="rsk")), large, large, tiny_net(), None)
    images, _ = next(trainer.train_loader.shuffled(trainer.generator))
    assert trainer.augmentation == "resized-crop" and trainer.augment(images).shape == images.shape
    assert calls == [(64, 3, 62, 62)]  # "valid" RSK shrinks 64×64 to 62×62; the crop brings back 64×64


def test_rotation_only_when_asked(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(train_module, "random_rotation", lambda x, degrees, g: calls.append(degrees) or x)
    for rotate in (False, True):
        trainer = Trainer(resolve_config(quick_config(tmp_path, rotate=rotate)), *data, tiny_net(), None)
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


def test_defense_on_train_batches_only_and_test_is_normalize_only(tmp_path: Path, data,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    train_set, test_set = data
    defended: list[torch.Tensor] = []

    def record_defense(spec: str, **options) -> TrainingDefense:
        def defense(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
            defended.append(x.clone())
            return x[:, :, 1:-1, 1:-1]  # shrinks like "valid" RSK: the crop must re-frame it
        return TrainingDefense(before_crop=defense)

    monkeypatch.setattr(train_module, "training_defense", record_defense)
    model = Recorder(tiny_net())
    train(quick_config(tmp_path, defense="rsk", normalization="data"), train_set, test_set, model=model,
          progress=False)
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


def test_normalization_stats(data) -> None:
    train_set, _ = data
    cifar_like = ImageDataset(train_set.images, train_set.labels % 10, list(CIFAR10_CLASSES))
    assert normalization_stats("auto", cifar_like) == ("cifar10", [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
    large = ImageDataset(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["a"])
    assert normalization_stats("auto", large) == ("imagenet", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    name, mean, std = normalization_stats("auto", train_set)
    pixels = train_set.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert name == "data"
    assert mean == pytest.approx(pixels.mean(1).tolist())
    assert std == pytest.approx(pixels.std(1, unbiased=False).tolist())


# --- runs, results.json, checkpoints, resume ---------------------------------------------------

def test_end_to_end_run_writes_results(tmp_path: Path, data) -> None:
    train_set, test_set = data
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
        assert set(record) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds",
                               "images_per_s"}
        assert 0 <= record["train_acc"] <= 100 and 0 <= record["test_acc"] <= 100 and record["images_per_s"] > 0
    final = written["final"]
    assert final["test_acc_last"] == written["epochs"][-1]["test_acc"]
    assert final["test_acc_best"] == max(record["test_acc"] for record in written["epochs"])
    assert final["best_epoch"] in (1, 2) and final["wall_seconds"] > 0 and final["images_per_s"] > 0
    assert final["test_acc_last"] > 50  # chance is 25%
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 2 and len(checkpoint["history"]) == 2


def test_model_by_name_goes_through_create_model(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    built = []

    def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
        built.append((name, num_classes, in_channels))
        return tiny_net(num_classes)

    monkeypatch.setitem(sys.modules, "unlearnable.models", types.SimpleNamespace(create_model=create_model))
    config = quick_config(tmp_path, model="small", recipe=resolve_recipe("quick", epochs=1, batch_size=128))
    results = train(config, *data, progress=False)
    assert built == [("small", 4, 3)] and results["model"]["name"] == "small"


def test_resume_is_bit_identical(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 epochs straight == 1 epoch, a crash, and a resume to 2: same accuracies, same weights."""
    train_set, test_set = data

    def config(out: Path) -> TrainConfig:
        return quick_config(out, defense="rsk+ff", name="run")

    straight = train(config(tmp_path / "a"), train_set, test_set, model=tiny_net(dropout=0.2), progress=False)

    crash_after_first_checkpoint(monkeypatch, lambda: train(config(tmp_path / "b"), train_set, test_set,
                                                            model=tiny_net(dropout=0.2), progress=False))
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = train(config(tmp_path / "b"), train_set, test_set, model=tiny_net(dropout=0.2), resume=True,
                    progress=False)

    def outcome(results: dict) -> list[tuple]:
        return [(r["train_loss"], r["train_acc"], r["test_loss"], r["test_acc"], r["lr"]) for r in results["epochs"]]

    assert outcome(resumed) == outcome(straight)
    assert resumed["final"]["test_acc_last"] == straight["final"]["test_acc_last"]
    weights = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"] for run in ("a", "b")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_stream_loader_serves_the_device_loaders_batches(tmp_path: Path, data) -> None:
    """From a memory-mapped saved dataset, streaming gives the same batches as the on-device copy."""
    from unlearnable.data import load_saved, save_dataset
    save_dataset(tmp_path, data[0])
    mapped = load_saved(tmp_path)
    assert not mapped.images.is_contiguous()  # an N×C×H×W view of the N×H×W×C file
    shard = torch.arange(3, 200, 2)
    loaders = [DeviceLoader(mapped, torch.device("cpu"), 16, shard), StreamLoader(mapped, torch.device("cpu"), 16, shard)]
    epochs = [list(loader.shuffled(torch.Generator().manual_seed(5))) for loader in loaders]
    assert len(epochs[0]) == len(epochs[1]) == len(shard) // 16
    for (a, la), (b, lb) in zip(*epochs):
        assert torch.equal(a, b) and torch.equal(la, lb) and b.is_contiguous()
    ordered = [torch.cat([images for images, _ in loader.in_order()]) for loader in loaders]
    assert torch.equal(ordered[0], ordered[1]) and torch.equal(ordered[0], data[0].images[shard])
    assert isinstance(make_loader(mapped, torch.device("cpu"), 16), DeviceLoader)  # small: copied
    assert isinstance(make_loader(mapped, torch.device("cpu"), 16, placement="stream"), StreamLoader)


def test_streamed_training_is_bit_identical(tmp_path: Path, data) -> None:
    runs = [train(quick_config(tmp_path / placement, data_placement=placement, defense="rsk+ff"), *data,
                  model=tiny_net(), progress=False) for placement in ("device", "stream")]
    assert [r["pipeline"]["data_placement"] for r in runs] == ["device", "stream"]
    assert [r["epochs"][-1]["test_acc"] for r in runs[:1]] == [runs[1]["epochs"][-1]["test_acc"]]
    assert [e["train_loss"] for e in runs[0]["epochs"]] == [e["train_loss"] for e in runs[1]["epochs"]]


def test_finished_run_needs_resume(tmp_path: Path, data) -> None:
    config = quick_config(tmp_path, recipe=resolve_recipe("quick", epochs=1, batch_size=128))
    first = train(config, *data, model=tiny_net(), progress=False)
    with pytest.raises(UserInputError, match="--resume.*another --out"):
        train(config, *data, model=tiny_net(), progress=False)
    again = train(config, *data, model=tiny_net(), resume=True, progress=False)
    assert again["epochs"] == first["epochs"] and again["status"] == "complete"
    with pytest.raises(UserInputError, match="cannot resume.*seed"):
        train(dataclasses.replace(config, seed=1), *data, model=tiny_net(), resume=True, progress=False)


def test_results_record_the_command(tmp_path: Path, data) -> None:
    command = "unlearnable train --train blobs --out run"
    config = quick_config(tmp_path / "run", recipe=resolve_recipe("quick", epochs=1, batch_size=64))
    results = train(config, *data, model=tiny_net(), progress=False, command=command)
    read = RunResults.read(tmp_path / "run" / "results.json")
    assert results["command"] == read.command == command and read.complete and read.last_test_acc > 0
    assert read.world_size == 1 and read.pipeline == {"augment": "crop", "data_placement": "device"}
    # a resumed run keeps the command that started it
    again = train(config, *data, model=tiny_net(), resume=True, progress=False, command=command + " --resume")
    assert again["command"] == command


def test_results_json_of_the_previous_format_loads(tmp_path: Path) -> None:
    """A results.json written before `command` existed, with the `adversarial` option in its config."""
    from unlearnable.training.results import legacy_adversarial_chain

    old = {"name": "cuda+at", "config": {"defense": "none", "defense_options": {}, "seed": 0,
                                         "adversarial": {"norm": "linf", "eps": 4 / 255, "steps": 10,
                                                         "alpha": 1.5 * (4 / 255) / 10, "random_start": True}},
           "epochs": [{"epoch": 1, "test_acc": 40.0}], "final": {"test_acc_last": 40.0}, "status": "complete",
           "note": "n", "world_size": 1, "something_newer": [1, 2]}
    (tmp_path / "results.json").write_text(json.dumps(old))
    read = RunResults.read(tmp_path / "results.json")
    assert read.command is None and read.name == "cuda+at" and read.complete and read.last_test_acc == 40.0
    assert read.to_dict()["something_newer"] == [1, 2] and read.config["adversarial"]["steps"] == 10
    chain = legacy_adversarial_chain(read.config)
    assert chain["defense"] == "at-linf" and chain["defense_options"] == {"eps": 4 / 255, "steps": 10}
    assert "adversarial" not in chain
    assert legacy_adversarial_chain({"defense": "rsk+ff", "adversarial": {"norm": "l2", "eps": 0.5, "steps": 5}})[
        "defense"] == "rsk+ff+at-l2"
    assert "adversarial" not in legacy_adversarial_chain({"defense": "none", "adversarial": None})
    unusual = {"defense": "none", "adversarial": {"norm": "linf", "eps": 0.1, "steps": 2, "alpha": 0.5}}
    assert legacy_adversarial_chain(unusual) == unusual  # a step size the chain cannot express
    assert RunResults.from_dict({"epochs": "junk", "final": None}).epochs == []
    (tmp_path / "results.json").write_text("[1]")
    with pytest.raises(UserInputError, match="not a JSON object"):
        RunResults.read(tmp_path / "results.json")
    assert RunResults.read(tmp_path / "missing.json") is None


def test_config_validation(tmp_path: Path) -> None:
    for changes, message in [({"device": "tpu"}, "device"), ({"defense": "blur"}, "unknown defense"),
                             ({"defense": "at-linf", "defense_options": {"epsilon": 1}}, "epsilon"),
                             ({"defense": "at-l2", "defense_options": {"steps": 0}}, "steps"),
                             ({"normalization": "imagenet21k"}, "normalization"), ({"amp": "yes"}, "amp"),
                             ({"augment": "rrc"}, "augment"), ({"data_placement": "gpu"}, "data_placement"),
                             ({"sync_batchnorm": True}, "CUDA")]:
        with pytest.raises(UserInputError, match=message):
            resolve_config(quick_config(tmp_path, **changes))
    with pytest.raises(TypeError, match="adversarial"):  # adversarial training is the chain's at-linf / at-l2
        TrainConfig(out=str(tmp_path), adversarial={"norm": "linf"})  # type: ignore[call-arg]
    resolved = config_to_dict(quick_config(tmp_path, defense="at-l2", defense_options={"eps": 0.5, "steps": 5}))
    assert "adversarial" not in resolved and resolved["defense_options"] == {"eps": 0.5, "steps": 5}
    assert resolved["device"] == "cpu" and resolved["channels_last"] is True and resolved["amp"] is False and resolved["name"] == tmp_path.name


def test_too_few_images_for_a_batch(tmp_path: Path, data) -> None:
    train_set, test_set = data
    with pytest.raises(UserInputError, match="fewer than one batch"):
        train(quick_config(tmp_path, recipe=resolve_recipe("quick", batch_size=512)), train_set, test_set,
              model=tiny_net(), progress=False)
