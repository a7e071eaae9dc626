"""checkpoint.pt: everything a run needs to continue exactly, written after every epoch.

The trainer's state (`Trainer.state_dict`: model, optimiser, schedule, random-number states) plus
``epoch``, ``history`` (the per-epoch records so far), ``run`` (`run_dir.run_identity`: what a resumed
run must share with this one) and ``command`` (the command line that started the run, or None).
Only tensors, dicts, lists, strings and numbers: loadable with ``weights_only=True``.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from unlearnable.errors import UserInputError
from unlearnable.io import atomic_write_bytes
from unlearnable.training._messages import first_line
from unlearnable.training.results import CHECKPOINT, RESULTS

__all__ = ["CHECKPOINT", "load_checkpoint", "peek_checkpoint", "save_checkpoint"]

REQUIRED = ("model", "optimizer", "scheduler", "epoch", "history")
"""Keys every checkpoint has; one without them is not a training checkpoint."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` `state` to `path` atomically (loadable with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint `save_checkpoint` wrote, every tensor on the CPU; UserInputError when it is damaged.

    Loaded with ``map_location="cpu"``: the random-number states must reach ``Generator.set_state``
    and ``torch.(cuda.)set_rng_state`` as CPU byte tensors, and ``load_state_dict`` moves the model's
    and the optimiser's tensors to wherever the model lives.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # not damage: the CLI reports these as they are
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise UserInputError(
            f"cannot resume: {path} is damaged ({first_line(e)}); it cannot be continued: move it "
            f"and {path.with_name(RESULTS).name} away to start over, or choose another --out"
        ) from None
    missing = [key for key in REQUIRED if key not in state] if isinstance(state, dict) else ["everything"]
    if missing:
        raise UserInputError(
            f"cannot resume: {path} is not a training checkpoint (no {missing[0]!r}); move it away "
            "to start over, or choose another --out"
        )
    return state


def peek_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path` read lazily (memory-mapped: no tensor data is read); raises whatever loading raises."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
