"""Checkpoints (training/checkpoint.py): read onto the CPU whatever device wrote them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnable.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_resume_loads_the_checkpoint_onto_the_cpu(
    tiny_net,
    quick_config,
    crash_after_first_checkpoint,
    tmp_path: Path,
    small_blob_data,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    crash_after_first_checkpoint(lambda: train(quick_config(out), *small_blob_data, model=tiny_net(), progress=False))
    real_load, calls = torch.load, []

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    train(quick_config(out), *small_blob_data, model=tiny_net(), resume=True, progress=False)
    resume_loads = [kwargs for kwargs in calls if not kwargs.get("mmap")]
    assert resume_loads == [{"map_location": "cpu", "weights_only": True}]
