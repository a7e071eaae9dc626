"""Atomic writes: a result appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from unlearnable.errors import UserInputError


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to `out` when the block succeeds.

    On any exception (Ctrl-C included) the temporary directory is removed and `out` is untouched.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserInputError(f"output directory {out} already exists; choose another path or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def shared_atomic_directory(out: str | os.PathLike, world: Any, overwrite: bool = False) -> Iterator[Path]:
    """`atomic_directory` for several processes (`unlearnable.distributed.World`) writing one result.

    The temporary sibling has a fixed name, ``.<name>.partial``, so that every process finds it:
    rank 0 (re)creates it, every process writes its share into it, and rank 0 renames it to `out`
    once all have finished the block. With one process this is `atomic_directory`.
    """
    from unlearnable import distributed

    if not world.distributed:
        with atomic_directory(out, overwrite) as tmp:
            yield tmp
        return
    out = Path(out)
    tmp = out.parent / f".{out.name}.partial"
    exists = out.exists() and not overwrite
    if not distributed.all_agree(world, not exists):
        raise UserInputError(f"output directory {out} already exists; choose another path or pass --overwrite")
    if world.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier(world)
    try:
        yield tmp
    except BaseException:
        if world.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    distributed.barrier(world)
    if world.main:
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    distributed.barrier(world)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Write a dict as JSON with one top-level key per line (long lists stay on their line), atomically."""
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in obj.items()]
    atomic_write_bytes(path, ("{\n" + ",\n".join(lines) + "\n}\n").encode())
