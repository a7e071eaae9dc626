"""What results.json records (training/results.py): the command, data fingerprints, the host, and
results of the previous format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnable.data import ImageDataset
from unlearnable.errors import UserInputError
from unlearnable.training.recipes import resolve_recipe
from unlearnable.training.results import RunResults, data_fingerprint
from unlearnable.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_results_record_the_command(blobs, tiny_net, quick_config, tmp_path: Path, blob_data) -> None:
    command = "unlearnable train --train blobs --out run"
    config = quick_config(tmp_path / "run", recipe=resolve_recipe("quick", epochs=1, batch_size=64))
    results = train(config, *blob_data, model=tiny_net(), progress=False, command=command)
    read = RunResults.read(tmp_path / "run" / "results.json")
    assert results["command"] == read.command == command and read.complete and read.last_test_acc > 0
    assert read.world_size == 1 and read.pipeline == {"augment": "crop", "data_placement": "device"}
    # a resumed run keeps the command that started it
    again = train(config, *blob_data, model=tiny_net(), resume=True, progress=False, command=command + " --resume")
    assert again["command"] == command


def test_results_json_of_the_previous_format_loads(tmp_path: Path) -> None:
    """A results.json written before `command` existed, with the `adversarial` option in its config."""
    from unlearnable.training.results import legacy_adversarial_chain

    old = {
        "name": "cuda+at",
        "config": {
            "defense": "none",
            "defense_options": {},
            "seed": 0,
            "adversarial": {
                "norm": "linf",
                "eps": 4 / 255,
                "steps": 10,
                "alpha": 1.5 * (4 / 255) / 10,
                "random_start": True,
            },
        },
        "epochs": [{"epoch": 1, "test_acc": 40.0}],
        "final": {"test_acc_last": 40.0},
        "status": "complete",
        "note": "n",
        "world_size": 1,
        "something_newer": [1, 2],
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    read = RunResults.read(tmp_path / "results.json")
    assert read.command is None and read.name == "cuda+at" and read.complete and read.last_test_acc == 40.0
    assert read.to_dict()["something_newer"] == [1, 2] and read.config["adversarial"]["steps"] == 10
    chain = legacy_adversarial_chain(read.config)
    assert chain["defense"] == "at-linf" and chain["defense_options"] == {"eps": 4 / 255, "steps": 10}
    assert "adversarial" not in chain
    assert (
        legacy_adversarial_chain({"defense": "rsk+ff", "adversarial": {"norm": "l2", "eps": 0.5, "steps": 5}})[
            "defense"
        ]
        == "rsk+ff+at-l2"
    )
    assert "adversarial" not in legacy_adversarial_chain({"defense": "none", "adversarial": None})
    unusual = {"defense": "none", "adversarial": {"norm": "linf", "eps": 0.1, "steps": 2, "alpha": 0.5}}
    assert legacy_adversarial_chain(unusual) == unusual  # a step size the chain cannot express
    assert RunResults.from_dict({"epochs": "junk", "final": None}).epochs == []
    (tmp_path / "results.json").write_text("[1]")
    with pytest.raises(UserInputError, match="not a JSON object"):
        RunResults.read(tmp_path / "results.json")
    assert RunResults.read(tmp_path / "missing.json") is None


def test_results_record_data_fingerprints_and_the_host(
    blobs, tiny_net, quick_config, tmp_path: Path, small_blob_data
) -> None:
    results = train(
        quick_config(tmp_path / "run", train="blobs-0", recipe=resolve_recipe("quick", epochs=1, batch_size=64)),
        *small_blob_data,
        model=tiny_net(),
        progress=False,
    )
    assert results["train_data"]["spec"] == "blobs-0" and results["test_data"]["spec"] is None
    assert results["train_data"]["digest"] == data_fingerprint(small_blob_data[0])["digest"]
    assert results["train_data"]["num_images"] == 128 and results["train_data"]["shape"] == [3, 32, 32]
    host = results["host"]
    assert host["threads"] == torch.get_num_threads() == 1  # the one_thread fixture
    assert host["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and host["cpu"]
    assert host["deterministic_algorithms"] is torch.are_deterministic_algorithms_enabled()
    assert "threads" in results["note"] and "cpu_capability" in results["note"]


def test_data_fingerprint_tells_data_apart(poison) -> None:
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
