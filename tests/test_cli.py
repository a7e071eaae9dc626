"""The command line: saved datasets, PNG export, the sample grid, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import unlearnable.app.poison
from unlearnable.app.cli import build_parser, defense_options, main
from unlearnable.data import load_dataset, load_saved
from unlearnable.defenses import defense_kinds


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


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--attack", "nope"], "unknown attack"),
        (["--mix", "1.5"], "--mix"),
        (["--kernel-size", "4"], "--kernel-size"),
        (["--blur-parameter", "abc"], "must be a number > 0"),
    ],
)
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
    result = subprocess.run(
        [sys.executable, "-m", "unlearnable", "poison"], capture_output=True, text=True, timeout=120
    )
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
    argv = [
        "train",
        "--train",
        str(tiny_folder),
        "--model",
        "small",
        "--recipe",
        "quick",
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
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


# --- the command modules: startup without torch, list, messages, train's defaults and cost ------------------

NO_HEAVY_IMPORTS = """
import contextlib, io, sys
from unlearnable.app.cli import COMMANDS, main
for argv in [["--help"], *([name, "--help"] for name in COMMANDS), ["list"]]:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    assert code in (0, None), (argv, code)
    heavy = [m for m in ("torch", "numpy", "PIL", "matplotlib") if m in sys.modules]
    assert not heavy, (argv, heavy)
print("ok", len(COMMANDS))
"""


def test_help_and_list_do_not_import_torch():
    """`unlearnable --help`, every `<command> --help` and `list` answer without torch, numpy, PIL or matplotlib."""
    result = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("ok 14"), result.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-m", "unlearnable", "train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "--adversarial" in result.stdout and "resnet18" in result.stdout


def test_parser_constants_match_their_owners():
    """The few constants the parsers copy (their owners import torch) are the owners' values."""
    import unlearnable.data
    from unlearnable.app import owner
    from unlearnable.app.audit import BUDGETS
    from unlearnable.app.cli import common, protect
    from unlearnable.app.cli import list as list_command
    from unlearnable.attacks.multiscale import STRENGTHS

    assert common.DATASET_NAMES == unlearnable.data.DATASET_NAMES
    assert common.DATASET_ALIASES == unlearnable.data.ALIASES
    assert common.BUDGET_NAMES == tuple(BUDGETS)
    assert protect.STRENGTH_NAMES == tuple(STRENGTHS)
    assert protect.FORMATS == tuple(owner.FORMATS) and protect.METADATA == tuple(owner.METADATA)
    assert tuple(list_command.DATASETS) == common.DATASET_NAMES


def test_list_names_everything_with_its_summary(capsys):
    from unlearnable.attacks import ATTACKS
    from unlearnable.defenses import DEFENSES, STAGES
    from unlearnable.models import MODELS
    from unlearnable.training import RECIPES

    run_ok("list")
    lines = capsys.readouterr().out.splitlines()
    for registry in (ATTACKS, DEFENSES, MODELS, RECIPES):
        for entry in registry.entries():
            row = next(line for line in lines if line.split()[:1] == [entry.name])
            assert row.endswith(entry.summary)
    for stage, description in STAGES.items():
        assert f"  {description}: {', '.join(DEFENSES.names(stage=stage))}" in lines
    assert any(line.split()[:1] == ["cifar10"] for line in lines)
    # one column for every summary
    columns = {
        line.index(entry.summary)
        for registry in (ATTACKS, DEFENSES, MODELS, RECIPES)
        for entry in registry.entries()
        for line in lines
        if line.endswith(entry.summary)
    }
    assert len(columns) == 1


def test_library_logs_and_warnings_are_rendered(monkeypatch, capsys):
    """INFO from an "unlearnable" logger: a plain stdout line; warnings (warnings.warn and logger WARNING):
    one stderr line `unlearnable <command>: warning: ...`; afterwards logging and warnings are as before."""
    import logging
    import warnings

    from unlearnable.app.cli import list as list_command

    def chatty(args):
        logging.getLogger("unlearnable.data.example").info("read %d images", 24)
        logging.getLogger("unlearnable.training.example").warning("slow\ndisk")
        warnings.warn("clean source not used: gone", stacklevel=2)
        logging.getLogger("elsewhere").info("not ours")

    before = (
        logging.getLogger("unlearnable").handlers[:],
        logging.getLogger("unlearnable").level,
        warnings.showwarning,
    )
    monkeypatch.setattr(list_command, "run", chatty)
    run_ok("list")
    captured = capsys.readouterr()
    assert captured.out == "read 24 images\n"
    assert captured.err.splitlines() == [
        "unlearnable list: warning: slow disk",
        "unlearnable list: warning: clean source not used: gone",
    ]
    assert (
        logging.getLogger("unlearnable").handlers,
        logging.getLogger("unlearnable").level,
        warnings.showwarning,
    ) == before


def test_train_defaults_on_the_cpu_and_the_cost_line(tiny_folder, tmp_path, monkeypatch, capsys):
    """Without --model / --recipe a CPU run takes small / quick and says so in one stderr line; before
    training it prints the cost from the measured speed; a finished run's --resume measures nothing."""
    import unlearnable.training.cost as cost

    speeds = []

    def fake_speed(model, shape, num_classes, device, batch_size=None):
        speeds.append((model, shape, num_classes, str(device), batch_size))
        return 12.0

    monkeypatch.setattr(cost, "measure_speed", fake_speed)
    argv = [
        "train",
        "--train",
        str(tiny_folder),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "run"),
    ]
    run_ok(*argv)
    captured = capsys.readouterr()
    assert speeds == [("small", (3, 16, 16), 3, "cpu", 8)]
    assert (
        "cost: 24 images × 2 epochs = 48 image-steps; ~4 s at ~12 images/s measured here (small, cpu)"
        in captured.out.splitlines()
    )
    notes = [line for line in captured.err.splitlines() if line.startswith("unlearnable train:")]
    assert (
        len(notes) == 1 and "--model small --recipe quick" in notes[0] and "--model resnet18 --recipe paper" in notes[0]
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["model"] == "small" and results["config"]["recipe"]["name"] == "quick"
    assert results["command"] == "unlearnable " + " ".join(argv)  # for the report
    run_ok(*argv, "--resume")
    assert len(speeds) == 1 and "cost:" not in capsys.readouterr().out


def test_cost_line():
    from unlearnable.app.cli.train import cost_line

    assert (
        cost_line(50_000, 60, 205, "resnet18", "cpu", "rsk+ff", {})
        == "cost: 50,000 images × 60 epochs = 3.0 M image-steps; ~4.1 h at ~205 images/s measured here (resnet18, cpu)"
    )
    assert cost_line(50_000, 60, 205, "resnet18", "cuda:0", "rsk+ff+at-linf", {"steps": 10}, processes=2, done=20) == (
        "cost: 50,000 images × 40 epochs (of 60; 20 done) = 2.0 M image-steps × 11 passes (at-linf, 10 PGD "
        "steps); ~14.9 h at ~205 images/s measured here (resnet18, cuda:0, 2 processes)"
    )
    assert cost_line(500, 1, None, "small", "cpu", "none", {}) == "cost: 500 images × 1 epoch = 500 image-steps"


def test_measure_speed_is_quick_and_leaves_the_random_state_alone():
    from unlearnable.training.cost import measure_speed

    torch.manual_seed(3)
    state = torch.get_rng_state()
    speed = measure_speed("small", (3, 16, 16), 3, "cpu", batch_size=4)
    assert speed > 0 and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "argv,defense,steps,line",
    [
        (["--adversarial", "linf"], "at-linf", None, "use --defense at-linf"),
        (
            ["--adversarial", "l2", "--defense", "rsk+ff", "--at-steps", "3"],
            "rsk+ff+at-l2",
            3,
            "use --defense rsk+ff+at-l2 --steps 3",
        ),
        (["--at-steps", "3"], "none", None, "ignored without --adversarial"),
    ],
)
def test_deprecated_adversarial_flags_become_the_chain(argv, defense, steps, line):
    from unlearnable.app.cli import build_parser
    from unlearnable.app.cli.train import defense_options, rewrite_deprecated

    args = build_parser().parse_args(["train", "--train", "x", "--out", "o", "--eps", "0.1", *argv])
    rewritten, note = rewrite_deprecated(args)
    assert rewritten.defense == defense and rewritten.steps == steps and line in note
    assert rewritten.adversarial is None and rewritten.at_steps is None
    assert defense_options(rewritten)["eps"] == 0.1  # --eps: the radius of the hook in the chain


def test_adversarial_alias_trains_exactly_as_the_chain(tiny_folder, tmp_path, monkeypatch, capsys):
    """--adversarial linf --eps E --at-steps S is --defense at-linf --eps E --steps S, bit for bit, with one
    deprecation line; with a hook already in --defense it is a usage error."""
    import unlearnable.training.cost as cost

    monkeypatch.setattr(cost, "measure_speed", lambda *args, **kwargs: 100.0)
    common = [
        "train",
        "--train",
        str(tiny_folder),
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
        "--eps",
        "0.02",
    ]
    run_ok(*common, "--adversarial", "linf", "--at-steps", "2", "--out", str(tmp_path / "old"))
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "deprecated" in line] == [
        "unlearnable train: warning: --adversarial linf --at-steps 2 is deprecated and will be removed; use "
        "--defense at-linf --steps 2 (the same training)"
    ]
    run_ok(*common, "--defense", "at-linf", "--steps", "2", "--out", str(tmp_path / "new"))
    old, new = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("old", "new"))
    assert old["config"]["defense"] == new["config"]["defense"] == "at-linf"
    assert old["config"]["defense_options"] == new["config"]["defense_options"] == {"eps": 0.02, "steps": 2}
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [[e[k] for k in keys] for e in old["epochs"]] == [[e[k] for k in keys] for e in new["epochs"]]
    capsys.readouterr()
    err = run_error(capsys, *common, "--defense", "rsk+dat", "--adversarial", "l2", "--out", str(tmp_path / "x"))
    assert "drop --adversarial" in err and not (tmp_path / "x").exists()


def test_train_defaults_follow_the_device(monkeypatch):
    """resnet18 / paper when the run trains on CUDA (no note), small / quick on the CPU; given values stay."""
    from types import SimpleNamespace

    from unlearnable.app.cli.train import resolve_defaults

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_defaults(SimpleNamespace(model=None, recipe=None, device=None)) == ("resnet18", "paper", None)
    assert resolve_defaults(SimpleNamespace(model="small", recipe=None, device="cuda:0")) == ("small", "paper", None)
    model, recipe, note = resolve_defaults(SimpleNamespace(model=None, recipe=None, device="cpu"))
    assert (model, recipe) == ("small", "quick") and "--model resnet18 --recipe paper" in note
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, recipe, note = resolve_defaults(SimpleNamespace(model="resnet18", recipe=None, device=None))
    assert (model, recipe) == ("resnet18", "quick") and "--recipe quick" in note and "--model" not in note
    assert resolve_defaults(SimpleNamespace(model="vgg16-bn", recipe="paper", device=None)) == (
        "vgg16-bn",
        "paper",
        None,
    )


# --- train's defense options ------------------------------------------------------------------


def test_cli_defense_options_and_list(capsys: pytest.CaptureFixture) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--train", "x", "--out", "o", "--defense", "rsk+ff+at-linf", "--eps", str(8 / 255), "--steps", "5"]
    )
    assert defense_options(args) == {"eps": 8 / 255, "steps": 5}
    args = parser.parse_args(
        [
            "train",
            "--train",
            "x",
            "--out",
            "o",
            "--adversarial",
            "linf",
            "--eps",
            "0.1",
            "--filter-size",
            "3",
            "--mix-alpha",
            "0.4",
        ]
    )
    assert defense_options(args) == {"filter_size": 3, "mix_alpha": 0.4}  # --eps belongs to --adversarial
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind, names in defense_kinds().items():
        assert f"{kind}: {', '.join(names)}" in out
