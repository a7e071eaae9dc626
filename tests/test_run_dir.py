"""A run directory is never thrown away (training/run_dir.py): fresh runs refuse it, --resume checks
settings, data and device, damaged files give one line, Ctrl-C says what was kept."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from helpers import one_line_error
from unlearnable.errors import UserInputError
from unlearnable.training.checkpoint import save_checkpoint
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.results import CHECKPOINT, RESULTS, RunResults, data_fingerprint
from unlearnable.training.run_dir import interrupted_message
from unlearnable.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def interrupted(tiny_net, quick_config):
    """``interrupted(out, data, monkeypatch, **changes)``: a run in `out` stopped by Ctrl-C after its first
    epoch (checkpoint.pt and results.json written)."""

    def stop(out: Path, data, monkeypatch: pytest.MonkeyPatch, **changes) -> None:
        real_write = RunResults.write

        def write_then_stop(results: RunResults, path: Path) -> None:
            real_write(results, path)
            raise KeyboardInterrupt

        monkeypatch.setattr(RunResults, "write", write_then_stop)
        with pytest.raises(KeyboardInterrupt):
            train(quick_config(out, **changes), *data, model=tiny_net(), progress=False)
        monkeypatch.setattr(RunResults, "write", real_write)

    return stop


# --- a run directory is never overwritten ------------------------------------------------------


def test_finished_run_needs_resume(tiny_net, quick_config, tmp_path: Path, blob_data) -> None:
    config = quick_config(tmp_path, recipe=resolve_recipe("quick", epochs=1, batch_size=128))
    first = train(config, *blob_data, model=tiny_net(), progress=False)
    with pytest.raises(UserInputError, match="--resume.*another --out"):
        train(config, *blob_data, model=tiny_net(), progress=False)
    again = train(config, *blob_data, model=tiny_net(), resume=True, progress=False)
    assert again["epochs"] == first["epochs"] and again["status"] == "complete"
    with pytest.raises(UserInputError, match="cannot resume.*seed"):
        train(dataclasses.replace(config, seed=1), *blob_data, model=tiny_net(), resume=True, progress=False)


def test_fresh_run_refuses_an_interrupted_run_and_keeps_its_files(
    interrupted, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch)
    kept = {name: (out / name).read_bytes() for name in (CHECKPOINT, RESULTS)}
    message = one_line_error(lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), progress=False))
    assert (
        message == f"{out} holds an interrupted run at epoch 1 of 2; continue it with --resume, or choose another --out"
    )
    assert {name: (out / name).read_bytes() for name in kept} == kept
    resumed = train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    assert [record["epoch"] for record in resumed["epochs"]] == [1, 2]
    finished = one_line_error(lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), progress=False))
    assert (
        finished == f"{out} holds a finished run (2 epochs); pass --resume to keep it as it is, or choose another --out"
    )


def test_a_lone_checkpoint_or_results_file_is_a_run_too(
    interrupted,
    tiny_net,
    quick_config,
    crash_after_first_checkpoint,
    tmp_path: Path,
    small_blob_data,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"  # stopped between writing the checkpoint and results.json: the checkpoint tells
    crash_after_first_checkpoint(lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), progress=False))
    assert not (out / RESULTS).exists()
    assert f"{out} holds an interrupted run at epoch 1 of 2; continue it with --resume" in one_line_error(
        lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), progress=False)
    )
    assert interrupted_message(out).startswith(f"epoch 1 of 2 is kept in {out} (checkpoint.pt);")
    (out / CHECKPOINT).write_bytes(b"damaged")
    assert "holds an earlier run (checkpoint.pt); continue it with --resume" in one_line_error(
        lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), progress=False)
    )
    other = tmp_path / "other"
    interrupted(other, small_blob_data, monkeypatch)
    (other / CHECKPOINT).unlink()
    assert "epoch 1 of 2" in one_line_error(
        lambda: train(quick_config(other), *small_blob_data, model=tiny_net(), progress=False)
    )
    # With --resume, results.json without its checkpoint cannot be continued.
    message = one_line_error(
        lambda: train(quick_config(other), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    )
    assert "checkpoint.pt is missing" in message and "choose another --out" in message


def test_interrupted_message_says_what_was_kept_and_how_to_continue(
    interrupted, blobs, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    command = f"unlearnable train --train blobs --out {out}"
    assert interrupted_message(out, command) == (
        f"no epoch had finished, so nothing was kept in {out}; run {command} again to start over"
    )
    interrupted(out, small_blob_data, monkeypatch)
    assert interrupted_message(out, command) == (
        f"epoch 1 of 2 is kept in {out} (checkpoint.pt, results.json); continue with: {command} --resume"
    )
    assert interrupted_message(out, command + " --resume").endswith(f"continue with: {command} --resume")
    assert interrupted_message(out).endswith("continue with: the same command with --resume")
    train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    assert "holds the finished run" in interrupted_message(out, command)


# --- resume must continue the same run ---------------------------------------------------------


def test_resume_with_other_training_data_names_the_fields(
    interrupted, blobs, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch, train="blobs-0")
    other = blobs(128, seed=5)  # same size, shape and classes: only the content differs
    message = one_line_error(
        lambda: train(
            quick_config(out, train="blobs-5"), other, small_blob_data[1], model=tiny_net(), resume=True, progress=False
        )
    )
    old, new = data_fingerprint(small_blob_data[0])["digest"], data_fingerprint(other)["digest"]
    assert f"training data digest '{old[:30]}" in message and f"→ '{new[:30]}" in message
    assert "training data spec 'blobs-0' → 'blobs-5'" in message
    assert "test data" not in message and "{" not in message and "num_images" not in message
    smaller = small_blob_data[0].subset(torch.arange(96))
    message = one_line_error(
        lambda: train(quick_config(out), smaller, small_blob_data[1], model=tiny_net(), resume=True, progress=False)
    )
    assert "training data num_images 128 → 96" in message
    # The same data under another name is the same run.
    resumed = train(
        quick_config(out, train="/elsewhere/blobs"), *small_blob_data, model=tiny_net(), resume=True, progress=False
    )
    assert resumed["status"] == "complete" and resumed["train_data"]["spec"] == "/elsewhere/blobs"


def test_resume_refusal_names_only_the_changed_recipe_field(
    interrupted, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch)
    changed = quick_config(out, recipe=resolve_recipe("quick", epochs=2, batch_size=64, test_batch_size=64, lr=0.3))
    message = one_line_error(lambda: train(changed, *small_blob_data, model=tiny_net(), resume=True, progress=False))
    assert message == (
        f"cannot resume {out}: it was started with other settings or data: recipe.lr 0.2 → 0.3; use "
        "the same ones, or choose another --out"
    )


def test_resume_on_another_device_type_is_refused(
    interrupted, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    state["run"]["config"]["device"] = "cuda:0"  # as if it had been started on a GPU
    save_checkpoint(out / CHECKPOINT, state)
    message = one_line_error(
        lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    )
    assert "device type cuda → cpu" in message


def test_checks_fall_back_to_results_json_for_older_checkpoints(
    interrupted, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    del state["run"]
    save_checkpoint(out / CHECKPOINT, state)
    assert "seed 0 → 1" in one_line_error(
        lambda: train(quick_config(out, seed=1), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    )
    assert (
        train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)["status"]
        == "complete"
    )


def test_damaged_files_give_one_line_with_the_fix(
    interrupted, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch)
    good = (out / CHECKPOINT).read_bytes()
    for damage in (good[: len(good) // 2], b"not a checkpoint", b""):
        (out / CHECKPOINT).write_bytes(damage)
        message = one_line_error(
            lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
        )
        assert f"{out / CHECKPOINT} is damaged" in message and "choose another --out" in message
    (out / CHECKPOINT).write_bytes(good)
    (out / RESULTS).write_text('{"config": {"recipe": ')
    message = one_line_error(
        lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    )
    assert message.startswith(f"{out / RESULTS} is damaged") and "delete it and run again with --resume" in message
    # The fix works: the checkpoint alone continues the run (and still checks the settings).
    (out / RESULTS).unlink()
    assert "seed 0 → 3" in one_line_error(
        lambda: train(quick_config(out, seed=3), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    )
    resumed = train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    assert [record["epoch"] for record in resumed["epochs"]] == [1, 2]
    assert json.loads((out / RESULTS).read_text())["status"] == "complete"


def test_a_checkpoint_of_another_model_is_refused(
    interrupted, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch)
    wider = torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 4)
    )
    message = one_line_error(
        lambda: train(quick_config(out), *small_blob_data, model=wider, resume=True, progress=False)
    )
    assert "checkpoint.pt does not fit this run" in message


def test_a_checkpoint_with_the_adversarial_option_resumes_as_the_chain(
    interrupted, tiny_net, quick_config, tmp_path: Path, small_blob_data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started with the former `adversarial` option continues as the same PGD hook in the chain."""
    chain = {"defense": "at-linf", "defense_options": {"eps": 4 / 255, "steps": 1}}
    out = tmp_path / "run"
    interrupted(out, small_blob_data, monkeypatch, **chain)
    state = torch.load(out / CHECKPOINT, weights_only=True)
    recorded = state["run"]["config"]
    recorded.update(
        defense="none",
        defense_options={},
        adversarial={"norm": "linf", "eps": 4 / 255, "steps": 1, "alpha": 1.5 * (4 / 255), "random_start": True},
    )
    save_checkpoint(out / CHECKPOINT, state)
    assert "defense_options.steps 1 → 2" in one_line_error(
        lambda: train(
            quick_config(out, defense="at-linf", defense_options={"eps": 4 / 255, "steps": 2}),
            *small_blob_data,
            model=tiny_net(),
            resume=True,
            progress=False,
        )
    )
    results = train(quick_config(out, **chain), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    assert results["status"] == "complete" and results["config"]["defense"] == "at-linf"


def test_largest_seed_trains(tiny_net, quick_config, tmp_path: Path, small_blob_data) -> None:
    results = train(
        quick_config(tmp_path, seed=2**32 - 1, recipe=resolve_recipe("quick", epochs=1, batch_size=64)),
        *small_blob_data,
        model=tiny_net(),
        progress=False,
    )
    assert results["seed"] == 2**32 - 1
