"""The training loaders (training/loaders.py): streaming from a memory-mapped dataset serves the
batches of the on-device copy, and trains bit-identically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnable.training.loaders import DeviceLoader, StreamLoader, make_loader
from unlearnable.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_stream_loader_serves_the_device_loaders_batches(tmp_path: Path, blob_data) -> None:
    """From a memory-mapped saved dataset, streaming gives the same batches as the on-device copy."""
    from unlearnable.data import load_saved, save_dataset

    save_dataset(tmp_path, blob_data[0])
    mapped = load_saved(tmp_path)
    assert not mapped.images.is_contiguous()  # an N×C×H×W view of the N×H×W×C file
    shard = torch.arange(3, 200, 2)
    loaders = [
        DeviceLoader(mapped, torch.device("cpu"), 16, shard),
        StreamLoader(mapped, torch.device("cpu"), 16, shard),
    ]
    epochs = [list(loader.shuffled(torch.Generator().manual_seed(5))) for loader in loaders]
    assert len(epochs[0]) == len(epochs[1]) == len(shard) // 16
    for (a, la), (b, lb) in zip(*epochs):
        assert torch.equal(a, b) and torch.equal(la, lb) and b.is_contiguous()
    ordered = [torch.cat([images for images, _ in loader.in_order()]) for loader in loaders]
    assert torch.equal(ordered[0], ordered[1]) and torch.equal(ordered[0], blob_data[0].images[shard])
    assert isinstance(make_loader(mapped, torch.device("cpu"), 16), DeviceLoader)  # small: copied
    assert isinstance(make_loader(mapped, torch.device("cpu"), 16, placement="stream"), StreamLoader)


def test_streamed_training_is_bit_identical(tiny_net, quick_config, tmp_path: Path, blob_data) -> None:
    runs = [
        train(
            quick_config(tmp_path / placement, data_placement=placement, defense="rsk+ff"),
            *blob_data,
            model=tiny_net(),
            progress=False,
        )
        for placement in ("device", "stream")
    ]
    assert [r["pipeline"]["data_placement"] for r in runs] == ["device", "stream"]
    assert [r["epochs"][-1]["test_acc"] for r in runs[:1]] == [runs[1]["epochs"][-1]["test_acc"]]
    assert [e["train_loss"] for e in runs[0]["epochs"]] == [e["train_loss"] for e in runs[1]["epochs"]]
