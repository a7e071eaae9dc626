"""ImageNet-100 end to end on a synthetic tree: the store, CUDA k = 9 written to disk (split over
torchrun's processes), and the Table-1 protocol with RandomResizedCrop and FF's ImageNet variant."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_imagenet import WNIDS, free_port, write_imagenet
from unlearnable.app.cli import main
from unlearnable.app.experiments import IMAGENET100, run_table1
from unlearnable.app.poison import release_pages
from unlearnable.app.show import class_label
from unlearnable.data import is_saved_dataset, load_saved
from unlearnable.data.imagenet import build_store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_imagenet(root / "tree")
    return build_store(root / "tree", root / "store", subset="all", image_size=64, progress=False)


def test_table1_protocol_on_the_store(store: Path, tmp_path: Path) -> None:
    protocol = dataclasses.replace(IMAGENET100, model="small", at={"eps": 4 / 255, "steps": 1},
                                   overrides={"epochs": 1, "batch_size": 8, "test_batch_size": 8})
    runs = run_table1("imagenet100", tmp_path, protocol, data_root=str(store), device="cpu", progress=False)
    assert [run.name for run in runs] == ["clean", "cuda", "cuda+at", "cuda+rsk+ff"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cuda"]  # the store itself is "clean"
    poisoned, clean = load_saved(tmp_path / "data" / "cuda"), load_saved(store)
    assert poisoned.classes == clean.classes == WNIDS and poisoned.meta["imagenet"]["wnids"] == WNIDS
    assert poisoned.meta["params"]["kernel_size"] == 9 and poisoned.meta["params"]["blur_parameter"] == 0.06
    assert poisoned.meta["source"]["path"] == str(store)
    assert (poisoned.images != clean.images).float().mean() > 0.5
    results = {run.name: json.loads((run / "results.json").read_text()) for run in runs}
    assert all(r["status"] == "complete" and r["pipeline"]["augment"] == "resized-crop" for r in results.values())
    assert results["clean"]["train_data"]["num_images"] == len(clean)
    assert results["cuda"]["train_data"]["classes"] == results["cuda"]["test_data"]["classes"] == WNIDS
    assert results["cuda+rsk+ff"]["config"]["defense_options"] == {"imagenet_variant": True}
    assert results["cuda+at"]["config"]["defense"] == "at-linf"
    assert results["cuda+at"]["config"]["defense_options"]["steps"] == 1
    assert results["clean"]["normalization"]["stats"] == "imagenet"


def test_poisoning_splits_over_torchrun_processes(store: Path, tmp_path: Path) -> None:
    """Two processes each blur their half of the store into one memory-mapped file: the same bytes as one."""
    args = ["poison", "--data", "imagenet100", "--data-root", str(store), "--kernel-size", "9",
            "--blur-parameter", "0.06"]
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "unlearnable", *args, "--out", str(tmp_path / "two")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert is_saved_dataset(tmp_path / "two") and not list(tmp_path.glob(".*partial"))
    for name in ("images.npy", "labels.npy", "test/images.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    one, two = (json.loads((tmp_path / run / "meta.json").read_text()) for run in ("one", "two"))
    assert one == two and one["classes"] == WNIDS
    assert np.array_equal(load_saved(tmp_path / "two").labels.numpy(), load_saved(store).labels.numpy())
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
