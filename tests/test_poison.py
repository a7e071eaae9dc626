"""The poison command (app/poison.py): every attack and its options from the command line, poisoning
split over torchrun's processes, and releasing the pages of memory-mapped output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import WNIDS
from unlearnable.app.cli import main
from unlearnable.app.poison import release_pages
from unlearnable.app.show import class_label
from unlearnable.attacks import ATTACKS
from unlearnable.data import is_saved_dataset, load_saved

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name,secret", [("ops", "pixels"), ("lsp", "centres"), ("ar", "coefficients"), ("noise", "patterns")]
)
def test_cli_poison_and_show(poison, tiny_folder, tmp_path, name, secret):
    out = tmp_path / name
    assert main(["poison", "--data", str(tiny_folder), "--attack", name, "--mix", "0.8", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["attack"] == name and secret in meta and meta["params"]["mix"] == 0.8
    saved = load_saved(out)
    assert saved.images.shape == (24, 3, 16, 16)
    assert main(["show", str(out)]) == 0 and (out.parent / f"{out.name}-samples.png").stat().st_size > 0


def test_cli_passes_the_options_the_attack_takes(poison, tiny_folder, tmp_path):
    out = tmp_path / "lsp"
    assert (
        main(
            [
                "poison",
                "--data",
                str(tiny_folder),
                "--attack",
                "lsp",
                "--eps",
                "0.05",
                "--patch-size",
                "2",
                "--seed",
                "9",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["eps"] == 0.05 and meta["params"]["patch_size"] == 2 and meta["seed"] == 9
    assert np.array(meta["centres"]).shape == (3, 3 * 8 * 8)


@pytest.mark.parametrize(
    "attack,option",
    [
        ("ops", ["--eps", "0.1"]),
        ("cuda", ["--norm", "1"]),
        ("noise", ["--patch-size", "4"]),
        ("ar", ["--kernel-size", "3"]),
        ("lsp", ["--grayscale"]),
    ],
)
def test_cli_refuses_an_option_the_attack_does_not_take(poison, tiny_folder, tmp_path, capsys, attack, option):
    code = main(["poison", "--data", str(tiny_folder), "--attack", attack, *option, "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and option[0] in err and "does not apply" in err
    assert not (tmp_path / "p").exists()


def test_cli_attack_help_lists_the_registry(poison, capsys):
    with pytest.raises(SystemExit):
        main(["poison", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in ATTACKS)


def test_poisoning_splits_over_torchrun_processes(poison, torchrun, imagenet_store: Path, tmp_path: Path) -> None:
    """Two processes each blur their half of the store into one memory-mapped file: the same bytes as one."""
    args = [
        "poison",
        "--data",
        "imagenet100",
        "--data-root",
        str(imagenet_store),
        "--kernel-size",
        "9",
        "--blur-parameter",
        "0.06",
    ]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    done = torchrun([*args, "--out", str(tmp_path / "two")], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert is_saved_dataset(tmp_path / "two") and not list(tmp_path.glob(".*partial"))
    for name in ("images.npy", "labels.npy", "test/images.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    one, two = (json.loads((tmp_path / run / "meta.json").read_text()) for run in ("one", "two"))
    assert one == two and one["classes"] == WNIDS
    assert np.array_equal(load_saved(tmp_path / "two").labels.numpy(), load_saved(imagenet_store).labels.numpy())
    # `show` finds the clean images in the store and names the classes.
    assert main(["show", str(tmp_path / "two"), "--out", str(tmp_path / "two.png")]) == 0
    assert (tmp_path / "two.png").stat().st_size > 0
    assert class_label(load_saved(tmp_path / "two"), 0) == f"{WNIDS[0]} tench"


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_release_pages_drops_mapped_pages_and_leaves_memory_alone(tmp_path: Path) -> None:
    values = torch.arange(64 << 20, dtype=torch.int64).to(torch.uint8).view(-1, 4, 64, 64)
    ordinary = values.clone()
    release_pages(ordinary)  # not a file mapping: must not be touched (MADV_DONTNEED would zero it)
    assert torch.equal(ordinary, values)
    np.save(tmp_path / "a.npy", values.numpy())
    mapped = torch.from_numpy(np.load(tmp_path / "a.npy", mmap_mode="r+"))
    assert int(mapped.sum()) == int(values.sum())  # every page read: resident
    before = resident_mib()
    release_pages(mapped)
    assert before - resident_mib() > 32  # 64 MiB mapped, released
    assert torch.equal(mapped, values)  # read again from the file
