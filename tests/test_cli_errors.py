"""Every bad input, command by command: exit code 2, one line on stderr naming the problem, no
traceback, and the file system exactly as before (nothing written, nothing deleted).

Each case is (command line, a needle its message must contain, an optional setup that damages the
workspace first). Paths in the command line are relative to the workspace, which holds:

    tiny/            an ImageFolder with train/ and test/ (3 classes)
    saved/           a protected saved dataset made from it (cuda, with its key)
    run/             a finished training run of 1 epoch on saved/
    notes/           a folder of the user's own files
    afile.txt        a user's regular file
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearnable.app.cli import main


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, image_folder) -> Path:
    """The workspace, built once per module and copied for every case."""
    root = tmp_path_factory.mktemp("workspace")
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("UNLEARNABLE_CACHE")
    os.environ["UNLEARNABLE_CACHE"] = str(cache)
    try:
        image_folder(root / "tiny" / "train", ["cat", "dog", "ship"], 8, seed=1)
        image_folder(root / "tiny" / "test", ["cat", "dog", "ship"], 2, seed=2)
        assert main(["poison", "--data", str(root / "tiny"), "--out", str(root / "saved")]) == 0
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        assert (
            main(
                [
                    "train",
                    "--train",
                    str(root / "saved"),
                    "--model",
                    "small",
                    "--recipe",
                    "quick",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "8",
                    "--device",
                    "cpu",
                    "--out",
                    str(root / "run"),
                ]
            )
            == 0
        )
        torch.set_num_threads(threads)
    finally:
        if old is None:
            del os.environ["UNLEARNABLE_CACHE"]
        else:
            os.environ["UNLEARNABLE_CACHE"] = old
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("mine\n")
    (root / "afile.txt").write_text("mine too\n")
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time."""
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# Setups that damage the workspace before the command runs (the snapshot is taken after them).


def edit_meta(**fields) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        meta = json.loads((root / "saved" / "meta.json").read_text())
        meta.update(fields)
        (root / "saved" / "meta.json").write_text(json.dumps(meta))

    return setup


def labels(values) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        np.save(root / "saved" / "labels.npy", np.asarray(values(np.load(root / "saved" / "labels.npy"))))

    return setup


def empty_images(root: Path) -> None:
    (root / "saved" / "images.npy").write_bytes(b"")


def truncated_images(root: Path) -> None:
    data = (root / "saved" / "images.npy").read_bytes()
    (root / "saved" / "images.npy").write_bytes(data[: len(data) // 2])


def truncated_checkpoint(root: Path) -> None:
    data = (root / "run" / "checkpoint.pt").read_bytes()
    (root / "run" / "checkpoint.pt").write_bytes(data[: len(data) // 3])


def results_not_json(root: Path) -> None:
    (root / "run" / "results.json").write_text("{not json")


def user_png(root: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4, 4)).save(root / "mine.png")


def saved_with_extra_file(root: Path) -> None:
    (root / "saved" / "my-notes.txt").write_text("added by the user\n")


def clean_saved(root: Path) -> None:
    shutil.copytree(root / "saved", root / "saved2")


NAN_KERNELS = edit_meta(kernels=np.full((3, 3, 3), np.nan).tolist())
THREE_KERNELS_FOR_TWO = edit_meta(kernels=np.ones((2, 3, 3)).tolist())
FEWER_CLASSES = edit_meta(classes=["cat", "dog"])
BAD_POISONED = edit_meta(poisoned_indices=[0, 999])
LABELS_OUT_OF_RANGE = labels(lambda y: y + 5)
NEGATIVE_LABELS = labels(lambda y: y - 1)
FLOAT_LABELS = labels(lambda y: y.astype(np.float32))
SHORT_LABELS = labels(lambda y: y[:-1])

CORRUPT_SAVED = [
    (NAN_KERNELS, "kernels"),
    (THREE_KERNELS_FOR_TWO, "kernels"),
    (FEWER_CLASSES, "labels"),
    (BAD_POISONED, "poisoned_indices"),
    (LABELS_OUT_OF_RANGE, "labels"),
    (NEGATIVE_LABELS, "labels"),
    (FLOAT_LABELS, "labels"),
    (SHORT_LABELS, "labels"),
    (empty_images, "images"),
    (truncated_images, "images"),
    (edit_meta(classes="cat"), "classes"),
    (edit_meta(source="weird"), "source"),
    (edit_meta(source={"spec": 5}), "source"),
    (edit_meta(params={"kernel_size": "x"}), "kernel_size"),
    (edit_meta(attack=5), "attack"),
    (edit_meta(seed="abc"), "seed"),
]

POISON = ["poison", "--data", "tiny"]
RUN_AGAIN = [
    "train",
    "--train",
    "saved",
    "--model",
    "small",
    "--recipe",
    "quick",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--device",
    "cpu",
    "--out",
    "run",
]
"""The command that made run/ in the workspace."""
CASES = {
    # poison: outputs that would lose data
    "poison: --out exists": (POISON + ["--out", "saved"], "--overwrite", None),
    "poison: --overwrite a folder of the user's": (POISON + ["--out", "notes", "--overwrite"], "did not write", None),
    "poison: --overwrite a regular file": (POISON + ["--out", "afile.txt", "--overwrite"], "not a directory", None),
    "poison: --out is the input": (["poison", "--data", "saved", "--out", "saved", "--overwrite"], "input", None),
    "poison: --out contains the input": (POISON + ["--out", ".", "--overwrite"], "input", None),
    "poison: --out inside the input": (POISON + ["--out", "tiny/protected"], "inside", None),
    "poison: --overwrite a saved dataset the user added to": (
        POISON + ["--out", "saved", "--overwrite"],
        "did not write",
        saved_with_extra_file,
    ),
    # poison: parameters
    "poison: --mix 0": (POISON + ["--out", "p", "--mix", "0"], "--mix", None),
    "poison: --mix nan": (POISON + ["--out", "p", "--mix", "nan"], "--mix", None),
    "poison: --mix -1": (POISON + ["--out", "p", "--mix", "-1"], "--mix", None),
    "poison: --seed negative": (POISON + ["--out", "p", "--seed", "-1"], "--seed", None),
    "poison: --seed too large": (POISON + ["--out", "p", "--seed", str(2**40)], "--seed", None),
    "poison: --seed 1e20": (POISON + ["--out", "p", "--seed", "1e20"], "--seed", None),
    "poison: --kernel-size even": (POISON + ["--out", "p", "--kernel-size", "4"], "--kernel-size", None),
    "poison: --kernel-size 0": (POISON + ["--out", "p", "--kernel-size", "0"], "--kernel-size", None),
    "poison: --blur-parameter inf": (POISON + ["--out", "p", "--blur-parameter", "inf"], "--blur-parameter", None),
    "poison: --device foo": (POISON + ["--out", "p", "--device", "foo"], "--device", None),
    "poison: --attack unknown": (POISON + ["--out", "p", "--attack", "nope"], "unknown attack", None),
    "poison: --eps for cuda": (POISON + ["--out", "p", "--eps", "0.1"], "--eps", None),
    "poison: missing data": (["poison", "--data", "nowhere", "--out", "p"], "nowhere", None),
    **{
        f"poison: corrupt saved input ({needle}, {setup.__name__ if hasattr(setup, '__name__') else i})": (
            ["poison", "--data", "saved", "--out", "p"],
            needle,
            setup,
        )
        for i, (setup, needle) in enumerate(CORRUPT_SAVED)
    },
    # train
    "train: --model unknown": (["train", "--train", "saved", "--model", "nope", "--out", "r"], "unknown model", None),
    "train: --defense unknown": (["train", "--train", "saved", "--defense", "nope", "--out", "r"], "nope", None),
    "train: --recipe unknown": (["train", "--train", "saved", "--recipe", "nope", "--out", "r"], "nope", None),
    "train: --epochs 0": (["train", "--train", "saved", "--epochs", "0", "--out", "r"], "--epochs", None),
    "train: diffpure without a model": (
        [
            "train",
            "--train",
            "saved",
            "--model",
            "small",
            "--recipe",
            "quick",
            "--defense",
            "diffpure",
            "--diffusion-checkpoint",
            "nope",
            "--out",
            "r",
        ],
        "train_diffusion.py",
        None,
    ),
    "train: --t-star 2": (
        ["train", "--train", "saved", "--defense", "diffpure", "--t-star", "2", "--out", "r"],
        "--t-star",
        None,
    ),
    "train: --batch-size -1": (["train", "--train", "saved", "--batch-size", "-1", "--out", "r"], "--batch-size", None),
    "train: --lr 0": (["train", "--train", "saved", "--lr", "0", "--out", "r"], "--lr", None),
    "train: --train-per-class 0": (
        ["train", "--train", "saved", "--train-per-class", "0", "--out", "r"],
        "--train-per-class",
        None,
    ),
    "train: --train-per-class -1": (
        ["train", "--train", "saved", "--train-per-class", "-1", "--out", "r"],
        "--train-per-class",
        None,
    ),
    "train: --seed huge": (
        ["train", "--train", "saved", "--seed", "100000000000000000000", "--out", "r"],
        "--seed",
        None,
    ),
    "train: --device foo": (["train", "--train", "saved", "--device", "foo", "--out", "r"], "--device", None),
    "train: --filter-size 4": (
        ["train", "--train", "saved", "--filter-size", "4", "--out", "r"],
        "--filter-size",
        None,
    ),
    "train: missing data": (["train", "--train", "nowhere", "--out", "r"], "nowhere", None),
    "train: --adversarial with a hook in --defense": (
        ["train", "--train", "saved", "--defense", "rsk+dat", "--adversarial", "linf", "--out", "r"],
        "drop --adversarial",
        None,
    ),
    "train: --at-steps and --steps disagree": (
        ["train", "--train", "saved", "--adversarial", "linf", "--at-steps", "3", "--steps", "4", "--out", "r"],
        "--steps only",
        None,
    ),
    "train: over a finished run": (RUN_AGAIN, "holds a finished run", None),
    "train: --resume, damaged checkpoint": (RUN_AGAIN + ["--resume"], "checkpoint.pt", truncated_checkpoint),
    "train: --resume, damaged results.json": (RUN_AGAIN + ["--resume"], "results.json", results_not_json),
    "train: --resume with other data": (
        [
            "train",
            "--train",
            "tiny",
            "--model",
            "small",
            "--recipe",
            "quick",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            "run",
            "--resume",
        ],
        "training data",
        None,
    ),
    "train: --resume with another recipe field": (
        RUN_AGAIN[:-2] + ["--lr", "0.5", "--out", "run", "--resume"],
        "recipe.lr",
        None,
    ),
    **{
        f"train: corrupt saved input ({needle}, {i})": (
            ["train", "--train", "saved", "--model", "small", "--out", "r"],
            needle,
            setup,
        )
        for i, (setup, needle) in enumerate(CORRUPT_SAVED)
    },
    # show: the picture never goes over an input or a file of the user's
    "show: --out over the images": (["show", "saved", "--out", "saved/images.npy"], "--out", None),
    "show: --out inside the dataset": (["show", "saved", "--out", "saved/samples.png"], "inside", None),
    "show: --out over a user's PNG": (["show", "saved", "--out", "mine.png"], "not written by unlearnable", user_png),
    "show: --per-class 0": (["show", "saved", "--per-class", "0"], "--per-class", None),
    "show: not a saved dataset": (["show", "tiny"], "not a saved dataset", None),
    **{
        f"show: corrupt saved input ({needle}, {i})": (["show", "saved", "--out", "s.png"], needle, setup)
        for i, (setup, needle) in enumerate(CORRUPT_SAVED)
    },
    # recover
    "recover: --out is the input": (["recover", "saved", "--out", "saved", "--overwrite"], "input", None),
    "recover: --out exists": (["recover", "saved", "--out", "notes"], "--overwrite", None),
    "recover: --kernel-size 0": (["recover", "saved", "--out", "r", "--kernel-size", "0"], "--kernel-size", None),
    "recover: --kernel-size 11": (["recover", "saved", "--out", "r", "--kernel-size", "11"], "--kernel-size", None),
    "recover: --regularization 0": (
        ["recover", "saved", "--out", "r", "--regularization", "0"],
        "--regularization",
        None,
    ),
    # report
    "report: not a run": (["report", "notes", "--out", "rep"], "not a training run", None),
    "report: missing run": (["report", "nowhere", "--out", "rep"], "nowhere", None),
    "report: unreadable results": (["report", "run", "--out", "rep"], "unreadable", results_not_json),
    "report: --out a user's folder": (["report", "run", "--out", "notes"], "did not write", None),
    "report: --out a file": (["report", "run", "--out", "afile.txt"], "not a directory", None),
    # detect
    "detect: --max-images 0": (["detect", "saved", "--max-images", "0"], "--max-images", None),
    "detect: --device foo": (["detect", "saved", "--device", "foo"], "--device", None),
    "detect: --out inside the input": (["detect", "saved", "--out", "saved"], "inside", None),
    "detect: --out over a user's file": (
        ["detect", "saved", "--out", "notes"],
        "not written by unlearnable",
        lambda root: (root / "notes" / "detect.json").write_text("{}"),
    ),
    **{
        f"detect: corrupt saved input ({needle}, {i})": (["detect", "saved"], needle, setup)
        for i, (setup, needle) in enumerate(CORRUPT_SAVED)
    },
    # audit, reproduce, compare, demo: bad arguments refused before any data is copied
    "audit: --seed -1": (["audit", "saved", "--seed", "-1", "--out", "a"], "--seed", None),
    "audit: --device foo": (["audit", "saved", "--device", "foo", "--out", "a"], "--device", None),
    "audit: missing data": (["audit", "nowhere", "--out", "a"], "nowhere", None),
    "audit: --out inside the data": (["audit", "saved", "--out", "saved/audit"], "inside the input", None),
    "reproduce: --out inside the data": (
        ["reproduce", "--dataset", "tiny", "--out", "tiny/t1"],
        "inside the input",
        None,
    ),
    "compare: --out is the data": (
        ["compare", "--data", "tiny", "--poisons", "cuda", "--out", "tiny"],
        "inside the input",
        None,
    ),
    "reproduce: --epochs 0": (["reproduce", "--dataset", "tiny", "--epochs", "0", "--out", "o"], "--epochs", None),
    "reproduce: --model unknown": (
        ["reproduce", "--dataset", "tiny", "--model", "nope", "--out", "o"],
        "unknown model",
        None,
    ),
    "reproduce: --recipe unknown": (["reproduce", "--dataset", "tiny", "--recipe", "nope", "--out", "o"], "nope", None),
    "reproduce: --device foo": (["reproduce", "--dataset", "tiny", "--device", "foo", "--out", "o"], "--device", None),
    "compare: --poisons unknown": (["compare", "--data", "tiny", "--poisons", "nope", "--out", "c"], "nope", None),
    "compare: --defenses unknown": (["compare", "--data", "tiny", "--defenses", "nope", "--out", "c"], "nope", None),
    "compare: --poisons bad value": (
        ["compare", "--data", "tiny", "--poisons", "cuda,cuda:kernel_size=4", "--out", "c"],
        "kernel_size must be an odd integer",
        None,
    ),
    "compare: --poisons parameter the attack lacks": (
        ["compare", "--data", "tiny", "--poisons", "ops:kernel_size=3", "--out", "c"],
        "ops does not take 'kernel_size'",
        None,
    ),
    "compare: --poisons kernel larger than the images": (
        ["compare", "--data", "tiny", "--poisons", "cuda:kernel_size=31", "--out", "c"],
        "larger than the 16×16 images",
        None,
    ),
    "compare: --poisons twice the same column": (
        ["compare", "--data", "tiny", "--poisons", "cuda:mix=0.5,cuda:mix=0.50", "--out", "c"],
        "twice",
        None,
    ),
    "compare: --preset with --poisons": (
        ["compare", "--data", "tiny", "--preset", "benchmark", "--poisons", "cuda", "--out", "c"],
        "not allowed with",
        None,
    ),
    "compare: --preset unknown": (["compare", "--data", "tiny", "--preset", "all", "--out", "c"], "--preset", None),
    "demo: --device foo": (["demo", "--data", "tiny", "--device", "foo", "--out", "d"], "--device", None),
    # prepare
    "prepare: --image-size huge": (
        ["prepare", "imagenet100", "--data-root", "tiny", "--out", "s", "--image-size", "100000"],
        "--image-size",
        None,
    ),
    "prepare: --chunk-size 0": (
        ["prepare", "imagenet100", "--data-root", "tiny", "--out", "s", "--chunk-size", "0"],
        "--chunk-size",
        None,
    ),
    "prepare: chunk too large": (
        [
            "prepare",
            "imagenet100",
            "--data-root",
            "tiny",
            "--out",
            "s",
            "--chunk-size",
            "65536",
            "--image-size",
            "1024",
        ],
        "--chunk-size",
        None,
    ),
    "prepare: missing root": (["prepare", "imagenet100", "--data-root", "nowhere", "--out", "s"], "nowhere", None),
    "prepare: --out inside the root": (
        ["prepare", "imagenet100", "--data-root", "tiny", "--out", "tiny/store"],
        "inside",
        None,
    ),
    # protect / verify (tiny/train is a folder of class folders)
    "protect: --out is the input": (["protect", "tiny/train", "--out", "tiny/train"], "PHOTOS", None),
    "protect: --out inside the input": (["protect", "tiny/train", "--out", "tiny/train/pub"], "inside", None),
    "protect: --out contains the input": (["protect", "tiny/train", "--out", "tiny"], "PHOTOS", None),
    "protect: --out a user's folder": (["protect", "tiny/train", "--out", "notes", "--overwrite"], "notes", None),
    "protect: --out a file": (["protect", "tiny/train", "--out", "afile.txt"], "afile.txt", None),
    "protect: --key inside --out": (["protect", "tiny/train", "--out", "pub", "--key", "pub/k.json"], "key", None),
    "protect: --key over a user's file": (
        ["protect", "tiny/train", "--out", "pub", "--key", "afile.txt", "--overwrite"],
        "afile.txt",
        None,
    ),
    "protect: --strength unknown": (["protect", "tiny/train", "--out", "pub", "--strength", "max"], "--strength", None),
    "protect: --seed -1": (["protect", "tiny/train", "--out", "pub", "--seed", "-1"], "--seed", None),
    "protect: --workers 0": (["protect", "tiny/train", "--out", "pub", "--workers", "0"], "--workers", None),
    "protect: missing folder": (["protect", "nowhere", "--out", "pub"], "nowhere", None),
    "protect: a partial folder of the user's": (
        ["protect", "tiny/train", "--out", "pub"],
        ".pub.partial",
        lambda root: shutil.copytree(root / "notes", root / ".pub.partial"),
    ),
    "verify: missing key": (["verify", "tiny/train", "--key", "nokey.json"], "nokey.json", None),
    "verify: not a key": (["verify", "tiny/train", "--key", "afile.txt"], "afile.txt", None),
    # every command: unknown options and missing arguments are usage errors
    "unknown command": (["nope"], "invalid choice", None),
    "unknown option": (["poison", "--data", "tiny", "--out", "p", "--nope"], "unrecognized", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, template, tmp_path, monkeypatch, capsys):
    argv, needle, setup = CASES[name]
    root = tmp_path / "ws"
    shutil.copytree(template, root, symlinks=True)
    if setup is not None:
        setup(root)
    monkeypatch.chdir(root)
    before = snapshot(root)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    assert code == 2, f"{name}: exit {code}; stderr: {captured.err}"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in captured.err, captured.err
    assert needle in lines[0], lines[0]
    assert snapshot(root) == before, f"{name}: the workspace changed"
