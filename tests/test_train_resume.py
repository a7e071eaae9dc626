"""A run directory is never thrown away: fresh runs refuse it, --resume checks settings, data and
device, damaged files give one line, Ctrl-C says what was kept; config values are validated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import crash_after_first_checkpoint
from test_train import blobs, quick_config, tiny_net
from unlearnable.data import ImageDataset
from unlearnable.errors import UserInputError
from unlearnable.training.checkpoint import save_checkpoint
from unlearnable.training.config import TrainConfig, resolve_config
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.results import CHECKPOINT, RESULTS, RunResults, data_fingerprint
from unlearnable.training.run_dir import interrupted_message
from unlearnable.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> tuple[ImageDataset, ImageDataset]:
    return blobs(128, seed=0), blobs(64, seed=1)


def config(out: Path, **changes) -> TrainConfig:
    """Two epochs of 2 batches of 64 on the CPU."""
    return quick_config(out, **changes)


def interrupted(out: Path, data, monkeypatch: pytest.MonkeyPatch, **changes) -> None:
    """A run in `out` stopped by Ctrl-C after its first epoch (checkpoint.pt and results.json written)."""
    real_write = RunResults.write

    def write_then_stop(results: RunResults, path: Path) -> None:
        real_write(results, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunResults, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(config(out, **changes), *data, model=tiny_net(), progress=False)
    monkeypatch.setattr(RunResults, "write", real_write)


def error(call) -> str:
    with pytest.raises(UserInputError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- a run directory is never overwritten ------------------------------------------------------

def test_fresh_run_refuses_an_interrupted_run_and_keeps_its_files(tmp_path: Path, data,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch)
    kept = {name: (out / name).read_bytes() for name in (CHECKPOINT, RESULTS)}
    message = error(lambda: train(config(out), *data, model=tiny_net(), progress=False))
    assert message == f"{out} holds an interrupted run at epoch 1 of 2; continue it with --resume, or choose another --out"
    assert {name: (out / name).read_bytes() for name in kept} == kept
    resumed = train(config(out), *data, model=tiny_net(), resume=True, progress=False)
    assert [record["epoch"] for record in resumed["epochs"]] == [1, 2]
    finished = error(lambda: train(config(out), *data, model=tiny_net(), progress=False))
    assert finished == f"{out} holds a finished run (2 epochs); pass --resume to keep it as it is, or choose another --out"


def test_a_lone_checkpoint_or_results_file_is_a_run_too(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"  # stopped between writing the checkpoint and results.json: the checkpoint tells
    crash_after_first_checkpoint(monkeypatch, lambda: train(config(out), *data, model=tiny_net(), progress=False))
    assert not (out / RESULTS).exists()
    assert f"{out} holds an interrupted run at epoch 1 of 2; continue it with --resume" in error(
        lambda: train(config(out), *data, model=tiny_net(), progress=False))
    assert interrupted_message(out).startswith(f"epoch 1 of 2 is kept in {out} (checkpoint.pt);")
    (out / CHECKPOINT).write_bytes(b"damaged")
    assert "holds an earlier run (checkpoint.pt); continue it with --resume" in error(
        lambda: train(config(out), *data, model=tiny_net(), progress=False))
    other = tmp_path / "other"
    interrupted(other, data, monkeypatch)
    (other / CHECKPOINT).unlink()
    assert "epoch 1 of 2" in error(lambda: train(config(other), *data, model=tiny_net(), progress=False))
    # With --resume, results.json without its checkpoint cannot be continued.
    message = error(lambda: train(config(other), *data, model=tiny_net(), resume=True, progress=False))
    assert "checkpoint.pt is missing" in message and "choose another --out" in message


def test_interrupted_message_says_what_was_kept_and_how_to_continue(tmp_path: Path, data,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    command = f"unlearnable train --train blobs --out {out}"
    assert interrupted_message(out, command) == (f"no epoch had finished, so nothing was kept in {out}; run {command} "
                                                 "again to start over")
    interrupted(out, data, monkeypatch)
    assert interrupted_message(out, command) == (f"epoch 1 of 2 is kept in {out} (checkpoint.pt, results.json); "
                                                 f"continue with: {command} --resume")
    assert interrupted_message(out, command + " --resume").endswith(f"continue with: {command} --resume")
    assert interrupted_message(out).endswith("continue with: the same command with --resume")
    train(config(out), *data, model=tiny_net(), resume=True, progress=False)
    assert "holds the finished run" in interrupted_message(out, command)


# --- resume must continue the same run ---------------------------------------------------------

def test_resume_with_other_training_data_names_the_fields(tmp_path: Path, data,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch, train="blobs-0")
    other = blobs(128, seed=5)  # same size, shape and classes: only the content differs
    message = error(lambda: train(config(out, train="blobs-5"), other, data[1], model=tiny_net(), resume=True,
                                  progress=False))
    old, new = data_fingerprint(data[0])["digest"], data_fingerprint(other)["digest"]
    assert f"training data digest '{old[:30]}" in message and f"→ '{new[:30]}" in message
    assert "training data spec 'blobs-0' → 'blobs-5'" in message
    assert "test data" not in message and "{" not in message and "num_images" not in message
    smaller = data[0].subset(torch.arange(96))
    message = error(lambda: train(config(out), smaller, data[1], model=tiny_net(), resume=True, progress=False))
    assert "training data num_images 128 → 96" in message
    # The same data under another name is the same run.
    resumed = train(config(out, train="/elsewhere/blobs"), *data, model=tiny_net(), resume=True, progress=False)
    assert resumed["status"] == "complete" and resumed["train_data"]["spec"] == "/elsewhere/blobs"


def test_resume_refusal_names_only_the_changed_recipe_field(tmp_path: Path, data,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch)
    changed = config(out, recipe=resolve_recipe("quick", epochs=2, batch_size=64, test_batch_size=64, lr=0.3))
    message = error(lambda: train(changed, *data, model=tiny_net(), resume=True, progress=False))
    assert message == (f"cannot resume {out}: it was started with other settings or data: recipe.lr 0.2 → 0.3; use "
                       "the same ones, or choose another --out")


def test_resume_on_another_device_type_is_refused(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    state["run"]["config"]["device"] = "cuda:0"  # as if it had been started on a GPU
    save_checkpoint(out / CHECKPOINT, state)
    message = error(lambda: train(config(out), *data, model=tiny_net(), resume=True, progress=False))
    assert "device type cuda → cpu" in message


def test_checks_fall_back_to_results_json_for_older_checkpoints(tmp_path: Path, data,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    del state["run"]
    save_checkpoint(out / CHECKPOINT, state)
    assert "seed 0 → 1" in error(lambda: train(config(out, seed=1), *data, model=tiny_net(), resume=True,
                                               progress=False))
    assert train(config(out), *data, model=tiny_net(), resume=True, progress=False)["status"] == "complete"


def test_damaged_files_give_one_line_with_the_fix(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch)
    good = (out / CHECKPOINT).read_bytes()
    for damage in (good[:len(good) // 2], b"not a checkpoint", b""):
        (out / CHECKPOINT).write_bytes(damage)
        message = error(lambda: train(config(out), *data, model=tiny_net(), resume=True, progress=False))
        assert f"{out / CHECKPOINT} is damaged" in message and "choose another --out" in message
    (out / CHECKPOINT).write_bytes(good)
    (out / RESULTS).write_text('{"config": {"recipe": ')
    message = error(lambda: train(config(out), *data, model=tiny_net(), resume=True, progress=False))
    assert message.startswith(f"{out / RESULTS} is damaged") and "delete it and run again with --resume" in message
    # The fix works: the checkpoint alone continues the run (and still checks the settings).
    (out / RESULTS).unlink()
    assert "seed 0 → 3" in error(lambda: train(config(out, seed=3), *data, model=tiny_net(), resume=True,
                                               progress=False))
    resumed = train(config(out), *data, model=tiny_net(), resume=True, progress=False)
    assert [record["epoch"] for record in resumed["epochs"]] == [1, 2]
    assert json.loads((out / RESULTS).read_text())["status"] == "complete"


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch)
    wider = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(5, 4))
    message = error(lambda: train(config(out), *data, model=wider, resume=True, progress=False))
    assert "checkpoint.pt does not fit this run" in message


# --- what results.json records -----------------------------------------------------------------

def test_results_record_data_fingerprints_and_the_host(tmp_path: Path, data) -> None:
    results = train(config(tmp_path / "run", train="blobs-0", recipe=resolve_recipe("quick", epochs=1, batch_size=64)),
                    *data, model=tiny_net(), progress=False)
    assert results["train_data"]["spec"] == "blobs-0" and results["test_data"]["spec"] is None
    assert results["train_data"]["digest"] == data_fingerprint(data[0])["digest"]
    assert results["train_data"]["num_images"] == 128 and results["train_data"]["shape"] == [3, 32, 32]
    host = results["host"]
    assert host["threads"] == torch.get_num_threads() == 1  # the one_thread fixture
    assert host["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and host["cpu"]
    assert host["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()
    assert "threads" in results["note"] and "cpu_capability" in results["note"]


def test_data_fingerprint_tells_data_apart() -> None:
    images = torch.randint(0, 256, (300, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels = torch.arange(300) % 3
    base = data_fingerprint(ImageDataset(images, labels, ["a", "b", "c"]), "x")
    assert base == data_fingerprint(ImageDataset(images.clone(), labels.clone(), ["a", "b", "c"]), "x")
    relabelled = labels.clone()
    relabelled[7] = (relabelled[7] + 1) % 3
    assert data_fingerprint(ImageDataset(images, relabelled, ["a", "b", "c"]))["digest"] != base["digest"]
    # One pixel changed in every image (as a sparse poison does) changes the digest.
    poisoned = images.clone()
    poisoned[:, 1, 5, 9] ^= 1
    assert data_fingerprint(ImageDataset(poisoned, labels, ["a", "b", "c"]))["digest"] != base["digest"]
    # A memory-mapped N×H×W×C store viewed as N×C×H×W gives the same fingerprint as its contiguous copy.
    nhwc = images.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert data_fingerprint(ImageDataset(nhwc, labels, ["a", "b", "c"]), "x") == base


# --- configuration values ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", [-1, 2**32, 2**63, 10**20, 1e20, 1.0, True, "0"])
def test_seed_out_of_range_is_one_line(tmp_path: Path, seed) -> None:
    message = error(lambda: resolve_config(config(tmp_path, seed=seed)))
    assert message == f"seed must be an integer from 0 to 4294967295 (got {seed!r})"


def test_largest_seed_trains(tmp_path: Path, data) -> None:
    results = train(config(tmp_path, seed=2**32 - 1, recipe=resolve_recipe("quick", epochs=1, batch_size=64)), *data,
                    model=tiny_net(), progress=False)
    assert results["seed"] == 2**32 - 1


@pytest.mark.parametrize("field,value,expected", [
    ("epochs", 0, "epochs must be an integer >= 1 (got 0)"),
    ("epochs", -3, "epochs must be an integer >= 1 (got -3)"),
    ("batch_size", 0, "batch_size must be an integer >= 1 (got 0)"),
    ("test_batch_size", -1, "test_batch_size must be an integer >= 1 (got -1)"),
    ("lr", 0.0, "lr must be a number > 0 (got 0.0)"),
    ("lr", -0.1, "lr must be a number > 0 (got -0.1)"),
    ("lr", float("nan"), "lr must be a number > 0 (got nan)"),
    ("lr", float("inf"), "lr must be a number > 0 (got inf)"),
    ("momentum", 1.0, "momentum must be a number in [0, 1) (got 1.0)"),
    ("weight_decay", -1e-4, "weight_decay must be a number >= 0 (got -0.0001)"),
])
def test_recipe_values_are_checked_uniformly(field: str, value, expected: str) -> None:
    with pytest.raises(UserInputError) as caught:
        resolve_recipe("quick", **{field: value})
    assert str(caught.value) == expected


def test_other_config_values_are_checked_uniformly(tmp_path: Path) -> None:
    for changes, expected in [({"out": ""}, "out must be a run directory (got '')"),
                              ({"recipe": 3}, "recipe must be a Recipe or one of paper, cuda-paper, quick (got 3)"),
                              ({"amp": "yes"}, "amp must be true, false or 'auto' (got 'yes')"),
                              ({"augment": "rrc"}, "augment must be one of auto, crop, resized-crop (got 'rrc')"),
                              ({"defense_options": [1]}, "defense_options must be a dict")]:
        assert error(lambda: resolve_config(dataclasses.replace(config(tmp_path), **changes))).startswith(expected)


def test_a_checkpoint_with_the_adversarial_option_resumes_as_the_chain(tmp_path: Path, data,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A run started with the former `adversarial` option continues as the same PGD hook in the chain."""
    chain = {"defense": "at-linf", "defense_options": {"eps": 4 / 255, "steps": 1}}
    out = tmp_path / "run"
    interrupted(out, data, monkeypatch, **chain)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    recorded = state["run"]["config"]
    recorded.update(defense="none", defense_options={}, adversarial={"norm": "linf", "eps": 4 / 255, "steps": 1,
                                                                     "alpha": 1.5 * (4 / 255), "random_start": True})
    save_checkpoint(out / CHECKPOINT, state)
    assert "defense_options.steps 1 → 2" in error(lambda: train(
        config(out, defense="at-linf", defense_options={"eps": 4 / 255, "steps": 2}), *data, model=tiny_net(),
        resume=True, progress=False))
    results = train(config(out, **chain), *data, model=tiny_net(), resume=True, progress=False)
    assert results["status"] == "complete" and results["config"]["defense"] == "at-linf"
