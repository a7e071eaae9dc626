"""The command line: saved datasets, PNG export, the sample grid, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unlearnable.app.poison
from unlearnable.app.cli import main
from unlearnable.data import load_dataset, load_saved


def run_ok(*argv: str) -> None:
    assert main(list(argv)) == 0


def run_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run a command that must fail cleanly: exit code 2 and one line on stderr."""
    with pytest.raises(SystemExit) as exc:
        code = main(list(argv))
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err
    return err


def test_poison_writes_dataset_with_key(tiny_folder, tmp_path):
    out = tmp_path / "protected"
    run_ok("poison", "--data", str(tiny_folder), "--attack", "cuda", "--seed", "0", "--out", str(out))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["attack"] == "cuda" and meta["seed"] == 0
    assert meta["params"]["kernel_size"] == 3 and meta["params"]["blur_parameter"] == 0.3
    assert np.array(meta["kernels"]).shape == (3, 3, 3)
    assert meta["poisoned_indices"] == list(range(24))
    assert meta["classes"] == ["cat", "dog", "ship"] and meta["source"]["kind"] == "imagefolder"
    images = np.load(out / "images.npy")
    assert images.dtype == np.uint8 and images.shape == (24, 16, 16, 3)
    assert np.load(out / "labels.npy").dtype == np.int64
    # The test split is saved clean, byte for byte the source's.
    test = load_saved(out, "test")
    source_test = load_dataset(str(tiny_folder), "test")
    assert torch.equal(test.images, source_test.images) and torch.equal(test.labels, source_test.labels)
    # The training images did change.
    assert not torch.equal(load_saved(out).images, load_dataset(str(tiny_folder)).images)


def test_same_seed_same_bytes(tiny_folder, tmp_path):
    for name in ("a", "b"):
        run_ok("poison", "--data", str(tiny_folder), "--mix", "0.5", "--out", str(tmp_path / name))
    assert (tmp_path / "a" / "images.npy").read_bytes() == (tmp_path / "b" / "images.npy").read_bytes()


def test_png_export_reads_back_identical(tiny_folder, tmp_path):
    out = tmp_path / "protected"
    run_ok("poison", "--data", str(tiny_folder), "--format", "png", "--out", str(out))
    saved = load_saved(out)
    exported = load_dataset(str(out / "png"))
    # ImageFolder order is class by class; within a class, file names keep the dataset order.
    order = np.argsort(saved.labels.numpy(), kind="stable")
    assert exported.classes == saved.classes
    assert torch.equal(exported.images, saved.images[torch.from_numpy(order)])
    assert torch.equal(exported.labels, saved.labels[torch.from_numpy(order)])


def test_class_dir_names_keep_label_order():
    assert unlearnable.app.poison.class_dir_names(["a", "b"]) == ["a", "b"]
    names = unlearnable.app.poison.class_dir_names(["T-shirt/top", "Trouser", "Bag"])
    assert names == ["0-T-shirt-top", "1-Trouser", "2-Bag"] and sorted(names) == names


def test_show_writes_grid(tiny_folder, tmp_path):
    out = tmp_path / "protected"
    run_ok("poison", "--data", str(tiny_folder), "--out", str(out))
    run_ok("show", str(out), "--per-class", "2")
    with Image.open(out.parent / f"{out.name}-samples.png") as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200


def test_interrupted_poison_leaves_nothing(tiny_folder, tmp_path, monkeypatch):
    def fail(directory, train, test=None):
        raise KeyboardInterrupt  # after images.npy and labels.npy are written

    monkeypatch.setattr(unlearnable.app.poison, "write_meta_and_test", fail)
    assert main(["poison", "--data", str(tiny_folder), "--out", str(tmp_path / "p")]) == 130
    assert list(tmp_path.iterdir()) == [tiny_folder]


@pytest.mark.parametrize("args,needle", [
    (["--attack", "nope"], "unknown attack"),
    (["--mix", "1.5"], "--mix"),
    (["--kernel-size", "4"], "--kernel-size"),
    (["--blur-parameter", "abc"], "must be a number > 0"),
])
def test_bad_poison_options(tiny_folder, tmp_path, capsys, args, needle):
    err = run_error(capsys, "poison", "--data", str(tiny_folder), "--out", str(tmp_path / "p"), *args)
    assert needle in err
    assert not (tmp_path / "p").exists()


def test_bad_inputs(tiny_folder, tmp_path, capsys):
    assert "no-such" in run_error(capsys, "poison", "--data", str(tmp_path / "no-such"), "--out", str(tmp_path / "p"))
    assert "cifar10" in run_error(capsys, "poison", "--data", "imagenet-1k", "--out", str(tmp_path / "p"))
    (tmp_path / "exists").mkdir()
    assert "--overwrite" in run_error(capsys, "poison", "--data", str(tiny_folder), "--out", str(tmp_path / "exists"))
    assert "not a saved dataset" in run_error(capsys, "show", str(tiny_folder))
    bad = tiny_folder / "train" / "dog" / "999.png"
    bad.write_bytes(b"not a png")
    assert "999.png" in run_error(capsys, "poison", "--data", str(tiny_folder), "--out", str(tmp_path / "q"))
    assert not (tmp_path / "q").exists()


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "unlearnable", "list"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "cuda" in result.stdout and "rsk" in result.stdout
    result = subprocess.run([sys.executable, "-m", "unlearnable", "poison"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_interrupted_train_says_what_was_kept_and_refuses_to_restart(tiny_folder, tmp_path, monkeypatch, capsys):
    """Ctrl-C after the first epoch: the message names the kept epoch and the command with --resume;
    the same command without --resume is then refused, and with --resume it finishes."""
    import unlearnable.training.trainer as train_module
    real_save = train_module.save_checkpoint

    def save_then_interrupt(path, state):
        real_save(path, state)
        raise KeyboardInterrupt

    out = tmp_path / "run"
    argv = ["train", "--train", str(tiny_folder), "--model", "small", "--recipe", "quick", "--epochs", "2",
            "--batch-size", "8", "--device", "cpu", "--out", str(out)]
    monkeypatch.setattr(train_module, "save_checkpoint", save_then_interrupt)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "epoch 1 of 2 is kept" in err and "--resume" in err and str(out) in err
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    kept = (out / "checkpoint.pt").read_bytes()
    assert "interrupted run at epoch 1 of 2" in run_error(capsys, *argv)
    assert (out / "checkpoint.pt").read_bytes() == kept
    run_ok(*argv, "--resume")
    assert json.loads((out / "results.json").read_text())["status"] == "complete"
