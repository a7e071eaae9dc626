"""Table-1 protocol end to end on tiny data, and (slow) the CPU demo's effect."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import WNIDS
from unlearnable.app.cli import main
from unlearnable.app.experiments import IMAGENET100, TABLE1_CONDITIONS, TrainingProtocol, run_table1, summarize
from unlearnable.data import load_saved
from unlearnable.errors import UserInputError

pytestmark = pytest.mark.usefixtures("one_thread")


def exit_code(argv: list[str]) -> int:
    """`main`'s exit status, whether it returns it or argparse exits with it (a usage error)."""
    try:
        return main(argv)
    except SystemExit as e:
        return int(e.code)


def test_table1_protocol_runs_skips_and_reports(tiny_protocol, tiny_folder, tmp_path, caplog):
    out = tmp_path / "t1"
    runs = run_table1(str(tiny_folder), out, tiny_protocol, progress=False)
    assert [r.name for r in runs] == list(TABLE1_CONDITIONS)
    for run in runs:
        results = json.loads((run / "results.json").read_text())
        assert results["status"] == "complete" and len(results["epochs"]) == 1
    at = json.loads((out / "runs" / "cuda+at" / "results.json").read_text())
    assert at["config"]["defense"] == "at-linf" and at["config"]["defense_options"]["steps"] == 1
    assert "adversarial" not in at["config"]
    assert json.loads((out / "runs" / "cuda+rsk+ff" / "results.json").read_text())["config"]["defense"] == "rsk+ff"
    # The protected set carries the published key and points back at the clean set saved beside it.
    protected = load_saved(out / "data" / "cuda")
    clean = load_saved(out / "data" / "clean")
    assert protected.meta["attack"] == "cuda" and protected.meta["seed"] == 0
    assert protected.meta["source"]["path"] == str((out / "data" / "clean").resolve())
    assert torch.equal(protected.labels, clean.labels) and not torch.equal(protected.images, clean.images)
    assert len(summarize(runs)) == 6
    # A second call finds every run finished and trains nothing.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="unlearnable.app.experiments"):
        run_table1(str(tiny_folder), out, tiny_protocol, progress=False, command="unlearnable demo --data x")
    assert [r.getMessage() for r in caplog.records].count("cuda+at: finished earlier, skipped") == 1
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 4
    # A finished run trained with other settings is never passed off as this protocol's.
    other = dataclasses.replace(tiny_protocol, overrides={**tiny_protocol.overrides, "epochs": 2})
    with pytest.raises(UserInputError, match="recipe.epochs 1 → 2"):
        run_table1(str(tiny_folder), out, other, progress=False)


def test_subset_keeps_the_published_poison_selection(tiny_folder, tmp_path):
    protocol = TrainingProtocol(model="small", recipe="quick", train_per_class=3)
    from unlearnable.app.experiments import prepare_data
    from unlearnable.attacks import cuda_key

    protected = load_saved(prepare_data(str(tiny_folder), tmp_path, protocol)["cuda"])
    keep = protected.meta["subset"]["indices"]
    assert len(keep) == 9 and protected.meta["poisoned_indices"] == list(range(9))
    kernels, _ = cuda_key(3, 24)
    np.testing.assert_allclose(np.array(protected.meta["kernels"]), kernels)


def test_train_command_writes_results(tiny_folder, tmp_path):
    out = tmp_path / "protected"
    assert main(["poison", "--data", str(tiny_folder), "--out", str(out)]) == 0
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--train",
                str(out),
                "--model",
                "small",
                "--recipe",
                "quick",
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--defense",
                "rsk+ff",
                "--out",
                str(run),
            ]
        )
        == 0
    )
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "complete" and results["train_data"]["attack"] == "cuda"
    assert 0 <= results["final"]["test_acc_last"] <= 100
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--recipe", "nope"], "recipe"),
        (["--model", "nope"], "model"),
        (["--defense", "nope"], "defense"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_bad_train_input(tiny_folder, tmp_path, capsys, args, needle):
    code = exit_code(["train", "--train", str(tiny_folder), "--out", str(tmp_path / "run"), "--batch-size", "8", *args])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_demo_shows_the_effect(shared_cifar, tmp_path):
    """The README's main job: CUDA ≥ 25 points below clean, RSK+FF wins back at least half (≈ 10 min)."""
    assert main(["demo", "--data", str(shared_cifar), "--out", str(tmp_path / "demo")]) == 0
    acc = {
        c: json.loads((tmp_path / "demo" / "runs" / c / "results.json").read_text())["final"]["test_acc_last"]
        for c in TABLE1_CONDITIONS
    }
    assert acc["clean"] - acc["cuda"] >= 25
    assert acc["cuda+rsk+ff"] - acc["cuda"] >= (acc["clean"] - acc["cuda"]) / 2
    assert (tmp_path / "demo" / "report" / "report.html").is_file()


def test_grid_trains_every_pair_and_tabulates(tiny_protocol, tiny_folder, tmp_path):
    from unlearnable.app.experiments import grid_table, prepare_data, run_grid

    data = prepare_data(str(tiny_folder), tmp_path, tiny_protocol, poisons={"cuda": ("cuda", {}), "huda": ("huda", {})})
    assert sorted(data) == ["clean", "cuda", "huda"]
    assert load_saved(data["huda"]).meta["attack"] == "huda"
    defenses = {"none": {"defense": "none"}, "rsk+ff": {"defense": "rsk+ff"}}
    runs = run_grid(data, defenses, tmp_path, tiny_protocol, progress=False)
    assert sorted(runs) == sorted((c, r) for c in data for r in defenses)
    config = json.loads((runs["huda", "rsk+ff"] / "results.json").read_text())["config"]
    assert config["defense"] == "rsk+ff" and config["train"] == str(data["huda"])
    lines = grid_table(runs)
    assert lines[0] == "| defense | clean | cuda | huda |" and len(lines) == 4
    cell = float(lines[3].split("|")[4])
    assert cell == pytest.approx(
        json.loads((runs["huda", "rsk+ff"] / "results.json").read_text())["final"]["test_acc_last"], abs=0.01
    )


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"protocol": TrainingProtocol(model="nope")}, "unknown model 'nope'"),
        ({"seed": -1}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"protocol": TrainingProtocol(recipe="nope")}, "unknown recipe"),
        ({"conditions": ("clean", "blur")}, "unknown condition 'blur'"),
    ],
)
def test_table1_checks_every_argument_before_writing(tiny_protocol, tiny_folder, tmp_path, kwargs, needle):
    arguments = {"protocol": tiny_protocol, "seed": 0, "device": None, **kwargs}
    with pytest.raises(UserInputError, match=needle):
        run_table1(str(tiny_folder), tmp_path / "t1", progress=False, **arguments)
    assert not (tmp_path / "t1").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["reproduce", "--dataset", "{data}", "--model", "nope"], "nope"),
        (["reproduce", "--dataset", "{data}", "--recipe", "nope"], "nope"),
        (["demo", "--data", "{data}", "--device", "tpu"], "tpu"),
    ],
)
def test_reproduce_and_demo_reject_bad_arguments_before_writing(tiny_folder, tmp_path, capsys, argv, needle):
    argv = [arg.format(data=tiny_folder) for arg in argv]
    assert exit_code([*argv, "--out", str(tmp_path / "t1")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "t1").exists()


def test_output_that_is_a_file_is_refused(tiny_protocol, tiny_folder, tmp_path):
    from unlearnable.app.experiments import prepare_data

    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="is a file"):
        run_table1(str(tiny_folder), tmp_path / "file", tiny_protocol, progress=False)
    with pytest.raises(UserInputError, match="unknown attack 'blur'"):
        prepare_data(str(tiny_folder), tmp_path / "p", tiny_protocol, poisons={"x": ("blur", {})})
    assert not (tmp_path / "p").exists()


# --- the Table-1 protocol on an ImageNet store ---------------------------------------------------


def test_table1_protocol_on_the_store(imagenet_store: Path, tmp_path: Path) -> None:
    protocol = dataclasses.replace(
        IMAGENET100,
        model="small",
        at={"eps": 4 / 255, "steps": 1},
        overrides={"epochs": 1, "batch_size": 8, "test_batch_size": 8},
    )
    runs = run_table1("imagenet100", tmp_path, protocol, data_root=str(imagenet_store), device="cpu", progress=False)
    assert [run.name for run in runs] == ["clean", "cuda", "cuda+at", "cuda+rsk+ff"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cuda"]  # the store itself is "clean"
    poisoned, clean = load_saved(tmp_path / "data" / "cuda"), load_saved(imagenet_store)
    assert poisoned.classes == clean.classes == WNIDS and poisoned.meta["imagenet"]["wnids"] == WNIDS
    assert poisoned.meta["params"]["kernel_size"] == 9 and poisoned.meta["params"]["blur_parameter"] == 0.06
    assert poisoned.meta["source"]["path"] == str(imagenet_store)
    assert (poisoned.images != clean.images).float().mean() > 0.5
    results = {run.name: json.loads((run / "results.json").read_text()) for run in runs}
    assert all(r["status"] == "complete" and r["pipeline"]["augment"] == "resized-crop" for r in results.values())
    assert results["clean"]["train_data"]["num_images"] == len(clean)
    assert results["cuda"]["train_data"]["classes"] == results["cuda"]["test_data"]["classes"] == WNIDS
    assert results["cuda+rsk+ff"]["config"]["defense_options"] == {"imagenet_variant": True}
    assert results["cuda+at"]["config"]["defense"] == "at-linf"
    assert results["cuda+at"]["config"]["defense_options"]["steps"] == 1
    assert results["clean"]["normalization"]["stats"] == "imagenet"
